"""Saved fleet queries (``sql/queries/*.sql``) and running SQL wherever the database is.

A saved query is a file whose leading ``--`` comment says what it answers; a ``-- default:
name=value`` line gives a query parameter (``{name:Type}``) its default. While ``batchscope
run`` holds the embedded database, SQL goes through the running pipeline's read-only endpoint;
otherwise the database is opened directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

from pipeline.config import Settings
from pipeline.errors import BatchscopeError, ConfigError
from pipeline.store import Params, QueryResult, Store

QUERY_FILE = re.compile(r"^([a-z0-9_]+)\.sql$")
DEFAULT_LINE = re.compile(r"^--\s*default:\s*([a-z_][a-z0-9_]*)=(.*)$")


@dataclass(frozen=True, slots=True)
class SavedQuery:
    name: str
    sql: str
    description: str
    defaults: Params = field(default_factory=dict)


def parse_saved(name: str, sql: str) -> SavedQuery:
    comment: list[str] = []
    defaults: Params = {}
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        match = DEFAULT_LINE.match(line)
        if match:
            defaults[match.group(1)] = match.group(2).strip()
        else:
            comment.append(line[2:].strip())
    return SavedQuery(name, sql, " ".join(comment), defaults)


def saved_queries() -> dict[str, SavedQuery]:
    """Every saved query shipped with the package, by name."""
    found = {}
    for entry in resources.files("sql").joinpath("queries").iterdir():
        match = QUERY_FILE.match(entry.name)
        if match:
            found[match.group(1)] = parse_saved(match.group(1), entry.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def saved(name: str) -> SavedQuery:
    queries = saved_queries()
    if name not in queries:
        raise ConfigError(f"--saved: no saved query {name!r} (known: {', '.join(queries)})")
    return queries[name]


def parse_params(items: list[str] | None) -> Params:
    """``--param name=value`` arguments as a dict."""
    params: Params = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"--param: expected NAME=VALUE, got {item!r}")
        params[name] = value
    return params


def run_sql(settings: Settings, sql: str, *, params: Params | None = None,
            write: bool = False) -> QueryResult:
    """Run SQL through a running pipeline's endpoint if one holds the database, else directly."""
    from pipeline.queryserver import remote_query, running_endpoint

    url = running_endpoint(settings.pipeline.data_path) if not settings.clickhouse.dsn else None
    if url:
        return remote_query(url, sql, write=write, params=params)
    store = Store.from_settings(settings)
    try:
        return store.query(sql, readonly=not write, params=params)
    finally:
        store.close()


def run_saved(settings: Settings, name: str, params: Params | None = None) -> QueryResult:
    query = saved(name)
    merged = {**query.defaults, **(params or {})}
    try:
        return run_sql(settings, query.sql, params=merged)
    except BatchscopeError as exc:
        raise BatchscopeError(f"saved query {name}: {exc}") from exc
