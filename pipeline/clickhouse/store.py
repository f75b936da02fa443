"""ClickHouse through clickhouse-connect: embedded chDB (``chdb:///path``) or a server (``http://``).

Same SQL, same client API. The client is synchronous; async callers go through
:class:`AsyncStore`, which runs every call on one dedicated thread (chDB allows one engine per
process, and the event loop must never block on an insert).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time
from importlib import resources
from typing import Any, TypeVar
from uuid import UUID

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from pipeline.config import Settings
from pipeline.core.errors import StoreError
from pipeline.core.secret import Secret

log = logging.getLogger(__name__)

T = TypeVar("T")
MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
# The sink's snapshot rows are the records' own JSON: nested arrays and objects land in String
# columns as their JSON text (both settings are already ClickHouse's defaults; set to be explicit).
INSERT_SETTINGS = {"date_time_input_format": "best_effort", "input_format_skip_unknown_fields": 1,
                   "input_format_json_read_arrays_as_strings": 1,
                   "input_format_json_read_objects_as_strings": 1}
# Embedded chDB shares the process (and, here, two cores) with the agents: parsing an insert on
# one thread measured 8-10% faster than parallel parsing in interleaved runs (bench/RESULTS.md).
CHDB_INSERT_SETTINGS = {"input_format_parallel_parsing": 0}
DEFAULT_TTL_DAYS = 400
ERROR_CODE = re.compile(r"Code: (\d+)")
# Server error codes that go away on their own: retried with backoff, never dead-lettered.
TRANSIENT_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE
    60,   # UNKNOWN_TABLE: the schema is not migrated yet (a worker started before `migrate`)
    81,   # UNKNOWN_DATABASE: likewise; the sink waits, paused, instead of dead-lettering everything
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY (a replica in read-only mode)
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
})
Params = dict[str, str]
SessionSettings = Mapping[str, str | int | float]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, database: str, ttl_days: int = DEFAULT_TTL_DAYS) -> list[str]:
        """Statements end with ``;`` at the end of a line (a ``;`` inside a line is data)."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [s.strip().replace("{db}", database).replace("{ttl_days}", str(ttl_days))
                for s in STATEMENT_END.split(text) if s.strip()]


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def plain_rows(self) -> list[list[Any]]:
        """The rows as values JSON can hold (see :func:`plain`)."""
        return [[plain(v) for v in row] for row in self.rows]


def plain(value: Any) -> Any:
    """A result value as JSON can hold it, whatever the column type: IPv4/IPv6, Decimal, huge
    integers and anything else unknown become text; Map keys become text; tuples and sets lists."""
    if value is None or isinstance(value, bool | str | float | datetime | date | time | UUID):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 64) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def migrations() -> list[Migration]:
    """Every ``sql/NNN_*.sql`` file shipped with the package, in order."""
    found = []
    for entry in resources.files("sql").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


class Store:
    """A connected ClickHouse client bound to one database."""

    def __init__(self, dsn: str, database: str, password: Secret | None = None, *,
                 ttl_days: int = DEFAULT_TTL_DAYS, session: SessionSettings | None = None) -> None:
        self.dsn = dsn
        self.database = database
        self.ttl_days = ttl_days
        self._password = password
        self._session = dict(session or {})
        self._client: Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings, session: SessionSettings | None = None) -> Store:
        """The configured store; the password comes from settings loaded with
        ``Secrets.CLICKHOUSE_PASSWORD`` (refused with one line if they were not). ``session``:
        settings applied, in order, to this store's own session when it opens (each Store has its
        own client, so its own session: nothing set in one reaches another's)."""
        ch = settings.clickhouse
        return cls(settings.clickhouse_dsn, ch.database, settings.clickhouse_password(),
                   ttl_days=ch.snapshot_ttl_days, session=session)

    @property
    def client(self) -> Client:
        if self._client is None:
            kwargs: dict[str, Any] = {"dsn": self.dsn}
            if self._session:
                kwargs["settings"] = dict(self._session)
            if self._password is not None and not self.dsn.startswith("chdb:"):  # embedded: no users
                kwargs["password"] = self._password.reveal()
            try:
                self._client = clickhouse_connect.get_client(**kwargs)
            except ClickHouseError as exc:
                message = f"cannot open ClickHouse at {redact(self.dsn)}: {first_line(str(exc))}"
                raise StoreError(message, retriable=True) from exc
            self._use_database()
        return self._client

    def _use_database(self) -> None:
        """Resolve unqualified table names in the configured database, once it exists."""
        assert self._client is not None
        exists = self._client.command(
            "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": self.database})
        if exists:
            self._client.database = self.database

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def command(self, sql: str) -> None:
        self._call(lambda: self.client.command(sql))

    def migrate(self) -> list[str]:
        """Apply the migrations not applied yet and record them; returns the names applied."""
        db = self.database
        self.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self._use_database()
        self.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
            "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = MergeTree ORDER BY version")
        done = {row[0] for row in self.query(f"SELECT version FROM {db}.schema_migrations").rows}
        applied = []
        for m in migrations():
            if m.version in done:
                continue
            for statement in m.statements(db, self.ttl_days):
                self.command(statement)
            self._record(m)
            log.info("applied migration %s", m.name)
            applied.append(m.name)
        return applied

    def _record(self, m: Migration) -> None:
        self.insert_rows(f"{self.database}.schema_migrations", [[m.version, m.name, m.checksum]],
                         ["version", "name", "checksum"])

    def insert_rows(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert Python values (Decimals stay exact) into ``table`` (qualified) as one block."""
        self._call(lambda: self.client.insert(table, list(rows), column_names=list(columns)))

    def insert_json(self, table: str, rows: Sequence[bytes], token: str) -> None:
        """Insert JSONEachRow rows as one block; ``token`` makes a retried block a no-op."""
        if not rows:
            return
        body = b"\n".join(rows)
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": token}
        if self.dsn.startswith("chdb:"):
            settings.update(CHDB_INSERT_SETTINGS)
        self._call(lambda: self.client.raw_insert(
            f"{self.database}.{table}", None, body, settings=settings, fmt="JSONEachRow"))

    def query(self, sql: str, *, readonly: bool = True, params: Params | None = None) -> QueryResult:
        """Run SQL; ``params`` bind ClickHouse query parameters (``{name:Type}``) server side."""
        settings = {"readonly": 1} if readonly else {}
        try:
            result = self._call(lambda: self.client.query(sql, parameters=params or None, settings=settings))
        except StoreError:
            if readonly and self.dsn.startswith("chdb:"):
                # clickhouse-connect's chDB backend leaves a failed query's readonly=1 on the
                # session, and every later insert fails with READONLY: start a fresh session.
                self.close()
            raise
        return QueryResult(tuple(result.column_names), [tuple(r) for r in result.result_rows])

    def session_query(self, sql: str, params: Params | None = None) -> QueryResult:
        """Run SQL under this store's session settings alone (the query endpoint's sessions)."""
        result = self._call(lambda: self.client.query(sql, parameters=params or None))
        return QueryResult(tuple(result.column_names), [tuple(r) for r in result.result_rows])

    def high_water(self, table: str, indexed: bool = False) -> dict[tuple[str, int], tuple[int, int]]:
        """The highest Kafka position ``(offset, index)`` stored in ``table`` per (topic, partition);
        ``indexed``: the table has ``kafka_index`` (rows of records of many), else the index is 0."""
        position = "max((kafka_offset, kafka_index))" if indexed else "max((kafka_offset, 0))"
        rows = self.query(f"SELECT kafka_topic, kafka_partition, {position} "
                          f"FROM {self.database}.{table} GROUP BY kafka_topic, kafka_partition").rows
        return {(str(t), int(p)): (int(o[0]), int(o[1])) for t, p, o in rows}

    def stored_positions(self, table: str, topic: str, partition: int, first: int, last: int,
                         indexed: bool = False) -> set[tuple[int, int]]:
        """The Kafka positions ``(offset, index)`` of one partition with an offset between ``first``
        and ``last`` stored in ``table`` (``indexed`` as for :meth:`high_water`)."""
        index = "kafka_index" if indexed else "0"
        rows = self.query(f"SELECT DISTINCT kafka_offset, {index} FROM {self.database}.{table} "
                          "WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32} "
                          "AND kafka_offset BETWEEN {first:UInt64} AND {last:UInt64}",
                          params={"topic": topic, "partition": str(partition), "first": str(first),
                                  "last": str(last)}).rows
        return {(int(o), int(i)) for o, i in rows}

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OperationalError as exc:
            raise StoreError(f"ClickHouse unavailable: {exc}", retriable=True) from exc
        except DatabaseError as exc:
            raise StoreError(first_line(str(exc)), retriable=transient(str(exc))) from exc
        except ClickHouseError as exc:
            raise StoreError(first_line(str(exc)), retriable=True) from exc


class AsyncStore:
    """Runs :class:`Store` calls on one dedicated thread so the event loop never blocks."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        await self.run(self.store.close)
        self._pool.shutdown(wait=True)

    def close_now(self) -> None:
        """Close from synchronous code once the event loop is gone: waits for calls in flight."""
        self._pool.shutdown(wait=True)
        self.store.close()


def redact(dsn: str) -> str:
    """A DSN without its password, safe for logs and errors (the password may contain '@')."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return dsn
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return dsn
    userinfo, host = authority.rsplit("@", 1)
    if ":" not in userinfo:
        return dsn
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def error_code(message: str) -> int | None:
    """The ClickHouse error code a message names (``Code: 159``), if any."""
    match = ERROR_CODE.search(message)
    return int(match.group(1)) if match else None


def transient(message: str) -> bool:
    """True when a server error's code says that trying again later can succeed."""
    match = ERROR_CODE.search(message)
    return match is not None and int(match.group(1)) in TRANSIENT_CODES


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "unknown ClickHouse error"
