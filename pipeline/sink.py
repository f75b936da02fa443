"""The ClickHouse sink: Kafka records -> deterministic insert blocks for the three core tables.

Row building and block cutting are pure. ``batch_latest`` is fed from ``batch_snapshots`` by a
materialized view (``sql/002_fleet.sql``), so a snapshot is inserted once. A block holds the
records of one topic partition over
a contiguous offset range, cut at offsets aligned to a fixed size and at month boundaries of the
observation time (each insert then lands as one part, so it is atomic), and its
``insert_deduplication_token`` names the table, topic, partition and offset range it covers.

:class:`ClickHouseSink` writes a block and returns only once ClickHouse acknowledged it, so the
caller acknowledges the Kafka offsets afterwards. Replays are absorbed twice over: rows at or
below the partition's high-water mark already stored in ClickHouse (``max(kafka_offset)``) are
skipped, and a retried block carries the same token. Retriable failures are retried with capped,
jittered backoff while the caller's :class:`Backpressure` pauses the partitions.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Protocol, TypeVar

import orjson

from pipeline.codec import orjson_dumps
from pipeline.errors import InvalidRecord, StoreError
from pipeline.models import ChangeEvent, Snapshot, loads_object
from pipeline.store import AsyncStore
from pipeline.timeutil import iso_to_ms
from pipeline.transitions import RANK

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
SNAPSHOTS, CHANGES = "batch_snapshots", "batch_changes"
Row = tuple[int, bytes]  # (Kafka offset, one JSONEachRow line)
T = TypeVar("T")
SNAPSHOT_NAMES = frozenset(f.name for f in fields(Snapshot))
REQUIRED = tuple(f.name for f in fields(Snapshot) if f.default is MISSING and f.default_factory is MISSING)


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Block:
    """Rows bound for the tables, with the Kafka positions they came from."""

    snapshots: list[Row] = field(default_factory=list)
    changes: list[Row] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)

    def add_snapshot(self, snap: Snapshot, pos: Position) -> None:
        iso_to_ms(snap.observed_at)  # the latest-state version needs it: refuse the record here
        kafka = {"kafka_topic": pos.topic, "kafka_partition": pos.partition, "kafka_offset": pos.offset}
        self.snapshots.append((pos.offset, orjson_dumps({**snapshot_row(snap), **kafka})))
        self.positions.append(pos)

    def add_snapshot_json(self, value: bytes, obj: dict[str, Any], pos: Position) -> None:
        """The record's own bytes as the row, the Kafka fields spliced in before the closing brace.

        ``obj`` is ``value`` parsed and checked by :func:`read_snapshot`. ClickHouse reads the
        nested ``errors`` array and ``usage`` object into their String columns as JSON text
        (``input_format_json_read_arrays_as_strings`` / ``..._objects_as_strings``), the same text
        :func:`snapshot_row` writes for compact JSON, and skips the fields it has no column for.
        A snapshot without an ``errors`` list (the column would get ``''``, not ``[]``) or with a
        ``usage`` that is neither an object nor null takes the :meth:`add_snapshot` path.
        """
        body = value.rstrip()
        usage = obj.get("usage")
        if type(obj.get("errors")) is not list or not (usage is None or type(usage) is dict) \
                or not body.endswith(b"}"):
            self.add_snapshot(Snapshot(**obj), pos)
            return
        kafka = b',"kafka_topic":%b,"kafka_partition":%d,"kafka_offset":%d}' % (
            orjson.dumps(pos.topic), pos.partition, pos.offset)
        self.snapshots.append((pos.offset, body[:-1] + kafka))
        self.positions.append(pos)

    def add_change(self, event: ChangeEvent, pos: Position) -> None:
        kafka = {"kafka_topic": pos.topic, "kafka_partition": pos.partition, "kafka_offset": pos.offset}
        self.changes.append((pos.offset, orjson_dumps({**change_row(event), **kafka})))
        self.positions.append(pos)

    def tables(self) -> Iterator[tuple[str, list[Row]]]:
        """The tables this block inserts into (batch_latest follows batch_snapshots by itself)."""
        for table, rows in ((SNAPSHOTS, self.snapshots), (CHANGES, self.changes)):
            if rows:
                yield table, rows

    @property
    def marker(self) -> str:
        """The table whose ``max(kafka_offset)`` says how far this block's partition was stored."""
        return CHANGES if self.changes else SNAPSHOTS



def snapshot_row(snap: Snapshot) -> dict[str, Any]:
    row = snap.to_dict()
    row["errors"] = orjson.dumps(snap.errors).decode()
    row["usage"] = orjson.dumps(snap.usage).decode() if snap.usage is not None else None
    return row


def version(snap: Snapshot) -> int:
    """Grows along the lifecycle first, then with observation time (ms fit in 42 bits).

    The materialized view ``batch_latest_feed`` computes the same in SQL; tests keep them equal.
    """
    return (RANK.get(snap.status, 0) << 42) | iso_to_ms(snap.observed_at)


def change_row(event: ChangeEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id, "kind": event.kind, "source": event.source,
        "provider": event.provider, "batch_id": event.batch_id, "observed_at": event.observed_at,
        "at": event.at, "from_status": event.from_status, "to_status": event.to_status,
        "seconds_in_previous": event.seconds_in_previous, "status": event.snapshot.status,
        "snapshot": event.snapshot.to_json().decode(), "schema_version": event.schema_version,
    }


def token(table: str, pos: Position, rows: Sequence[Row]) -> str:
    """The deduplication token of an insert: table, topic, partition and offset range."""
    return f"{table}:{pos.topic}/{pos.partition}:{rows[0][0]}-{rows[-1][0]}"


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the sink sees it."""

    pos: Position
    value: bytes


Bad = list[tuple[Record, str]]


def cut(records: Sequence[Record], align: int, changes_topic: str) -> tuple[list[Block], Bad]:
    """Blocks per topic partition, cut at offsets aligned to ``align`` and at month changes.

    The same records always give the same blocks, whatever batches they arrived in, up to where a
    batch ended. Records that cannot be read are returned with the reason, for the DLQ.
    """
    blocks: list[Block] = []
    bad: Bad = []
    current: dict[tuple[str, int], tuple[tuple[int, str], Block]] = {}
    for rec in sorted(records, key=lambda r: (r.pos.topic, r.pos.partition, r.pos.offset)):
        part = (rec.pos.topic, rec.pos.partition)
        try:
            parsed = parse(rec, changes_topic)
        except InvalidRecord as exc:
            bad.append((rec, str(exc)))
            continue
        key = (rec.pos.offset // align, observed(parsed)[:7])
        if part not in current or current[part][0] != key:
            current[part] = (key, Block())
            blocks.append(current[part][1])
        block = current[part][1]
        try:
            add(block, parsed, rec.pos)
        except InvalidRecord as exc:
            bad.append((rec, str(exc)))
    return [b for b in blocks if b.positions], bad


def read_snapshot(value: bytes) -> dict[str, Any]:
    """A snapshot record parsed and checked as :meth:`Snapshot.from_json` does (a JSON object with
    every required field and no unknown one) plus a readable ``observed_at``, without building
    the dataclass: the sink stores the record's own bytes."""
    obj = loads_object(value, "snapshot")
    unknown = obj.keys() - SNAPSHOT_NAMES
    if unknown:
        raise InvalidRecord(f"snapshot: unexpected field {sorted(unknown)[0]!r}")
    missing = [name for name in REQUIRED if name not in obj]
    if missing:
        raise InvalidRecord(f"snapshot: missing field {missing[0]!r}")
    observed = obj["observed_at"]
    if not isinstance(observed, str):
        raise InvalidRecord("snapshot: 'observed_at' is not a string")
    iso_to_ms(observed)  # the latest-state version needs it: refuse the record here
    return obj


Parsed = tuple[bytes, dict[str, Any]] | ChangeEvent


def parse(rec: Record, changes_topic: str) -> Parsed:
    if rec.pos.topic == changes_topic:
        return ChangeEvent.from_json(rec.value)
    return rec.value, read_snapshot(rec.value)


def observed(parsed: Parsed) -> str:
    return parsed.observed_at if isinstance(parsed, ChangeEvent) else str(parsed[1]["observed_at"])


def add(block: Block, parsed: Parsed, pos: Position) -> None:
    if isinstance(parsed, ChangeEvent):
        block.add_change(parsed, pos)
    else:
        block.add_snapshot_json(parsed[0], parsed[1], pos)


class Backpressure(Protocol):
    """Stops and restarts the flow of records into the sink while ClickHouse is unavailable."""

    def pause(self) -> None: ...

    async def resume(self) -> None: ...


class NoBackpressure:
    def pause(self) -> None:
        return None

    async def resume(self) -> None:
        return None


class ClickHouseSink:
    """Writes blocks; returns only once ClickHouse has acknowledged every table's insert."""

    def __init__(self, store: AsyncStore, backpressure: Backpressure | None = None) -> None:
        self._store = store
        self._flow = backpressure or NoBackpressure()
        self._marks: dict[str, dict[tuple[str, int], int]] = {}
        self.paused = False
        self.rows_written = 0
        self.rows_skipped = 0

    def forget(self) -> None:
        """Reload the high-water marks before the next write (after a rebalance)."""
        self._marks.clear()

    async def write(self, block: Block) -> None:
        if not block.positions:
            return
        first = block.positions[0]
        marks = await self._marks_of(block.marker)
        mark = marks.get((first.topic, first.partition), -1)
        for table, rows in block.tables():
            fresh = await self._not_stored(table, first, rows, mark)
            self.rows_skipped += len(rows) - len(fresh)
            if fresh:
                await self._insert(table, [line for _, line in fresh], token(table, first, fresh))
                self.rows_written += len(fresh)
        last = max(p.offset for p in block.positions)
        marks[(first.topic, first.partition)] = max(mark, last)

    async def _not_stored(self, table: str, pos: Position, rows: list[Row], mark: int) -> list[Row]:
        """The rows ClickHouse does not hold yet. Rows above the partition's high-water mark are
        new; rows at or below it (a replay) are looked up one by one, because Faust does not
        always deliver a partition contiguously (a record dropped at a pause or a rebalance comes
        back only after a rewind, below the mark of the records that passed it)."""
        below = [offset for offset, _ in rows if offset <= mark]
        if not below:
            return rows
        stored = await self._retrying(
            f"reading the stored offsets of {table}",
            lambda: self._store.store.stored_offsets(table, pos.topic, pos.partition, below[0], below[-1]))
        return [(offset, line) for offset, line in rows if offset > mark or offset not in stored]

    async def _marks_of(self, table: str) -> dict[tuple[str, int], int]:
        if table not in self._marks:
            self._marks[table] = await self._retrying(
                f"reading the high-water marks of {table}",
                lambda: self._store.store.high_water(table))
        return self._marks[table]

    async def _insert(self, table: str, rows: list[bytes], token: str) -> None:
        await self._retrying(f"insert into {table}",
                             lambda: self._store.store.insert_json(table, rows, token))

    async def _retrying(self, what: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                result = await self._store.run(call)
            except StoreError as exc:
                if not exc.retriable:
                    raise
                attempt += 1
                self._pause()
                delay = random.uniform(0, min(MAX_BACKOFF, 0.5 * 2**attempt))  # full jitter
                log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
                await asyncio.sleep(delay)
            else:
                await self._resume()
                return result

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            log.warning("ClickHouse unavailable: pausing the sink's partitions until an insert succeeds")
            self._flow.pause()

    async def _resume(self) -> None:
        if self.paused:
            self.paused = False
            log.warning("ClickHouse is back: resuming the sink's partitions")
            await self._flow.resume()
