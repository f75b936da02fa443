"""One root error for batchscope, with categories below it.

Retry loops read ``retriable``; foreign errors (aiohttp, aiokafka, clickhouse-connect) are mapped
to these at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class BatchscopeError(Exception):
    """Root of every error batchscope raises on purpose."""

    retriable: bool = False


class ConfigError(BatchscopeError):
    """The configuration (file, environment or CLI argument) is invalid: one line says why."""


class InvalidRecord(BatchscopeError):
    """A record cannot be turned into the canonical form; it belongs in the dead-letter topic."""


class SourceError(BatchscopeError):
    """A provider API call failed."""

    def __init__(self, message: str, *, status: int | None = None, retriable: bool = False):
        super().__init__(message)
        self.status = status
        self.retriable = retriable


class StoreError(BatchscopeError):
    """A ClickHouse call failed."""

    def __init__(self, message: str, *, retriable: bool = False):
        super().__init__(message)
        self.retriable = retriable
