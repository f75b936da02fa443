"""Numbered ClickHouse migrations (``NNN_name.sql``) and saved fleet queries (``queries/``)."""
