"""The ClickHouse sink: Kafka records -> deterministic insert blocks for the three core tables.

Row building and block cutting are pure. A snapshot record gives one row per snapshot it carries
(one, or a version 2 list: ``docs/records.md``), each at the Kafka position ``(topic, partition,
offset, index)``; a change-set record (``<prefix>.changesets``) one ``batch_changes`` row per
change event it carries, the same way. A vanish marker among the snapshots
(:func:`pipeline.core.records.is_vanish`) gives none: it is an observation that the batch is
gone, not of its fields; its ``purged`` or ``vanished`` change event is the row it leaves.
``batch_latest`` is fed from ``batch_snapshots`` by a materialized view (``sql/002_fleet.sql``),
so a snapshot is inserted once. A block holds the rows of one topic partition over a contiguous
offset range, cut at offsets aligned to a fixed size and at month boundaries of the observation
time, and its ``insert_deduplication_token`` names the table, topic, partition and position range it covers.

:class:`ClickHouseSink` writes and returns only once ClickHouse acknowledged, so the caller
acknowledges the Kafka offsets afterwards. :meth:`ClickHouseSink.write_all` writes a batch's
blocks with one INSERT per table (a refused one is tried again block by block, so only the bad
block is dead-lettered). Replays are absorbed twice over: rows at or below the partition's
high-water mark already stored in ClickHouse (``max((kafka_offset, kafka_index))``) are looked
up and skipped, and a retried insert carries the same token. Retriable failures are retried with
capped, jittered backoff while the caller's :class:`Backpressure` pauses the partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from pipeline.clickhouse.store import AsyncStore
from pipeline.core.backoff import full_jitter
from pipeline.core.codec import orjson_dumps
from pipeline.core.errors import InvalidRecord, StoreError
from pipeline.core.models import SCHEMA_VERSION, SNAPSHOT_FIELDS, ChangeEvent, Snapshot, loads_object
from pipeline.core.records import Counted, Made, Rejected, is_vanish, read_counted
from pipeline.core.timeutil import iso_to_ms
from pipeline.core.transitions import RANK

log = logging.getLogger(__name__)

BASE_BACKOFF, MAX_BACKOFF = 0.5, 10.0  # seconds: the first retry waits up to 1 s
SNAPSHOTS, CHANGES = "batch_snapshots", "batch_changes"
INDEXED = frozenset({SNAPSHOTS, CHANGES})  # with kafka_index: sql/004_kafka_index.sql, 007_change_sets.sql
Row = tuple[int, int, bytes]  # (Kafka offset, index in its record, one JSONEachRow line)
Mark = tuple[int, int]  # (offset, index): how far a partition is stored
NOTHING: Mark = (-1, -1)
T = TypeVar("T")
SNAPSHOT_NAMES = frozenset(f.name for f in fields(Snapshot))


def _required(cls: type[Any]) -> tuple[str, ...]:
    """The fields of a dataclass without a default."""
    return tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)


REQUIRED = _required(Snapshot)
CHANGE_NAMES = frozenset(f.name for f in fields(ChangeEvent))
CHANGE_REQUIRED = _required(ChangeEvent)


class Position(NamedTuple):
    """A Kafka record's place. A named tuple, not a frozen dataclass: the sink agent makes two
    per record, and a frozen dataclass's ``__init__`` costs one ``object.__setattr__`` per field."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Block:
    """Rows bound for the tables, with the Kafka records they came from (each once, in order)."""

    snapshots: list[Row] = field(default_factory=list)
    changes: list[Row] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)

    def _came_from(self, pos: Position) -> None:
        if not self.positions or self.positions[-1] != pos:
            self.positions.append(pos)

    def add_snapshot(self, snap: Snapshot, pos: Position, index: int = 0) -> None:
        iso_to_ms(snap.observed_at)  # the latest-state version needs it: refuse the record here
        kafka = {"kafka_topic": pos.topic, "kafka_partition": pos.partition, "kafka_offset": pos.offset,
                 "kafka_index": index}
        self.snapshots.append((pos.offset, index, orjson_dumps({**snapshot_row(snap), **kafka})))
        self._came_from(pos)

    def add_snapshot_json(self, value: bytes, obj: dict[str, Any] | Snapshot, pos: Position,
                          index: int = 0) -> None:
        """The snapshot's own JSON as the row, the Kafka fields spliced in before the closing brace.

        ``obj`` is ``value`` parsed and checked by :func:`check_snapshot`, or the snapshot the
        normalise agent of this worker serialised as ``value`` (:class:`Made`). ClickHouse reads the
        nested ``errors`` array and ``usage`` object into their String columns as JSON text
        (``input_format_json_read_arrays_as_strings`` / ``..._objects_as_strings``), the same text
        :func:`snapshot_row` writes for compact JSON, and skips the fields it has no column for.
        A snapshot without an ``errors`` list (the column would get ``''``, not ``[]``) or with a
        ``usage`` that is neither an object nor null takes the :meth:`add_snapshot` path.
        """
        body = value.rstrip()
        errors: Any
        usage: Any
        if isinstance(obj, Snapshot):
            errors, usage = obj.errors, obj.usage
        else:
            errors, usage = obj.get("errors"), obj.get("usage")
        if type(errors) is not list or not (usage is None or type(usage) is dict) or not body.endswith(b"}"):
            self.add_snapshot(obj if isinstance(obj, Snapshot) else Snapshot(**obj), pos, index)
            return
        kafka = b',"kafka_topic":%b,"kafka_partition":%d,"kafka_offset":%d,"kafka_index":%d}' % (
            orjson.dumps(pos.topic), pos.partition, pos.offset, index)
        self.snapshots.append((pos.offset, index, body[:-1] + kafka))
        self._came_from(pos)

    def add_change(self, event: ChangeEvent, pos: Position, index: int = 0) -> None:
        self.add_change_row(change_row(event), pos, index)

    def add_change_row(self, row: dict[str, Any], pos: Position, index: int = 0) -> None:
        """A ``batch_changes`` row (:func:`change_row`, :func:`change_row_of`) at its Kafka position."""
        kafka = {"kafka_topic": pos.topic, "kafka_partition": pos.partition, "kafka_offset": pos.offset,
                 "kafka_index": index}
        self.changes.append((pos.offset, index, orjson_dumps({**row, **kafka})))
        self._came_from(pos)

    def tables(self) -> Iterator[tuple[str, list[Row]]]:
        """The tables this block inserts into (batch_latest follows batch_snapshots by itself)."""
        for table, rows in ((SNAPSHOTS, self.snapshots), (CHANGES, self.changes)):
            if rows:
                yield table, rows

    @property
    def marker(self) -> str:
        """The table whose high-water mark says how far this block's partition was stored."""
        return CHANGES if self.changes else SNAPSHOTS

    @property
    def partition(self) -> tuple[str, int]:
        return self.positions[0].topic, self.positions[0].partition

    @property
    def rows(self) -> int:
        return len(self.snapshots) + len(self.changes)

    @property
    def last(self) -> Mark:
        return max((o, i) for o, i, _ in (*self.snapshots[-1:], *self.changes[-1:]))


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


def read_change(value: bytes) -> dict[str, Any]:
    """The ``batch_changes`` row of a change record of one (:func:`change_row_of`)."""
    return change_row_of(loads_object(value, "change event"))


def change_row_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The ``batch_changes`` row of a parsed change event: :func:`change_row` of
    :meth:`ChangeEvent.from_json`, checked the same way (every required field, no unknown one, in
    the event and in its snapshot) plus a string ``observed_at``, without building the dataclasses.
    A snapshot with exactly the contract's fields in the contract's order (what the track agent
    writes) is stored as its own JSON, re-serialised; any other goes through :class:`Snapshot`
    (its defaults filled in, as before).
    """
    snapshot = obj.get("snapshot")
    if not isinstance(snapshot, dict):
        raise InvalidRecord("change event: 'snapshot' missing or not an object")
    check_fields(obj, "change event", CHANGE_NAMES, CHANGE_REQUIRED)
    if tuple(snapshot) == SNAPSHOT_FIELDS:
        snapshot_json, status = orjson.dumps(snapshot), snapshot["status"]
    else:
        snap = Snapshot.from_dict(snapshot, "change event")
        snapshot_json, status = snap.to_json(), snap.status
    get = obj.get
    return {
        "event_id": obj["event_id"], "kind": obj["kind"], "source": obj["source"],
        "provider": obj["provider"], "batch_id": obj["batch_id"], "observed_at": obj["observed_at"],
        "at": obj["at"], "from_status": get("from_status"), "to_status": get("to_status"),
        "seconds_in_previous": get("seconds_in_previous"), "status": status,
        "snapshot": snapshot_json.decode(), "schema_version": get("schema_version", SCHEMA_VERSION),
    }


def _at(row: Row) -> str:
    """A row's position in a token: ``offset``, or ``offset.index`` past a record's first row."""
    return f"{row[0]}.{row[1]}" if row[1] else str(row[0])


def token(table: str, pos: Position, rows: Sequence[Row]) -> str:
    """The deduplication token of an insert: table, topic, partition and position range."""
    return f"{table}:{pos.topic}/{pos.partition}:{_at(rows[0])}-{_at(rows[-1])}"


def batch_token(table: str, pieces: Sequence[tuple[Block, Sequence[Row]]]) -> str:
    """The token of one INSERT of several blocks' rows: each block's range, in order (one block's
    alone is its :func:`token`)."""
    ranges = (f"{b.positions[0].topic}/{b.positions[0].partition}:{_at(rows[0])}-{_at(rows[-1])}"
              for b, rows in pieces)
    return f"{table}:" + ",".join(ranges)


class Record(NamedTuple):
    """One Kafka record as the sink sees it (a named tuple, like :class:`Position`)."""

    pos: Position
    value: bytes
    key: bytes | None = None
    parsed: Counted | Made | None = None  # as this worker's track agent read it or normalise agent made it


@dataclass(frozen=True, slots=True)
class Dead:
    """A dead letter of the sink: one observation of a record of ``count`` (``count`` > 1: the
    letter names its index, its original is the observation's own JSON), or a whole record."""

    pos: Position
    rejected: Rejected
    count: int = 1

    @property
    def reason(self) -> str:
        return self.rejected.reason

    @property
    def index(self) -> int:
        return self.rejected.index

    @property
    def original(self) -> bytes:
        return self.rejected.original

    @property
    def key(self) -> bytes | None:
        return self.rejected.key


def _whole(rec: Record, reason: str) -> Dead:
    return Dead(rec.pos, Rejected(reason, 0, rec.value, rec.key))


def cut(records: Sequence[Record], align: int, changesets_topic: str) -> tuple[list[Block], list[Dead]]:
    """Blocks per topic partition, cut at offsets aligned to ``align`` and at month changes.

    The same records always give the same blocks, whatever batches they arrived in, up to where a
    batch ended (the rows of one record may fall in two blocks: one per month). What cannot be
    read is returned as dead letters: a whole record, or one snapshot or change event of a record
    of many. Records of ``changesets_topic`` carry change events; any other topic's, snapshots.
    """
    blocks: dict[tuple[str, int, int, str], Block] = {}
    dead: list[Dead] = []
    for rec in sorted(records, key=lambda r: (r.pos.topic, r.pos.partition, r.pos.offset)):
        if rec.pos.topic == changesets_topic:
            for change in changes_of(rec):
                if isinstance(change, Dead):
                    dead.append(change)
                else:
                    index, row = change
                    _block(blocks, rec.pos, align, row["observed_at"]).add_change_row(row, rec.pos, index)
            continue
        for found in snapshots_of(rec):
            if isinstance(found, Dead):
                dead.append(found)
            else:
                index, value, obj = found
                observed = obj.observed_at if isinstance(obj, Snapshot) else str(obj["observed_at"])
                block = _block(blocks, rec.pos, align, observed)
                block.add_snapshot_json(value, obj, rec.pos, index)
    return [b for b in blocks.values() if b.positions], dead


def _block(blocks: dict[tuple[str, int, int, str], Block], pos: Position, align: int, observed: str) -> Block:
    key = (pos.topic, pos.partition, pos.offset // align, observed[:7])
    block = blocks.get(key)
    if block is None:
        block = blocks[key] = Block()
    return block


def entries(rec: Record, changes: bool = False) -> Counted:
    """The entries of a snapshot record (:func:`pipeline.core.records.read_snapshots`), or with
    ``changes`` of a change-set record (:func:`~pipeline.core.records.read_changes`), and, for a
    record of many (version 2), how many it carries; None for a record of one. A record another
    stage of the worker already read (``rec.parsed``) is not read again."""
    if rec.parsed is not None and not isinstance(rec.parsed, Made):
        return rec.parsed
    return read_counted(rec.value, rec.key, orjson.loads, "change" if changes else "snapshot")


def changes_of(rec: Record) -> Iterator[tuple[int, dict[str, Any]] | Dead]:
    """``(index, batch_changes row)`` of each valid change event of a change-set record, in order,
    and a :class:`Dead` for each bad one (as :func:`snapshots_of`)."""
    found, count = entries(rec, changes=True)
    for index, entry in enumerate(found):
        if isinstance(entry, Rejected):
            yield _whole(rec, entry.reason) if count is None else \
                Dead(rec.pos, replace(entry, key=entry.key or rec.key), count)
            continue
        try:
            row = change_row_of(entry)
        except InvalidRecord as exc:
            yield _whole(rec, str(exc)) if count is None else \
                Dead(rec.pos, Rejected(str(exc), index, orjson_dumps(entry), _key(entry) or rec.key), count)
            continue
        yield index, row


def snapshots_of(rec: Record) -> Iterator[tuple[int, bytes, dict[str, Any] | Snapshot] | Dead]:
    """``(index, JSON, object)`` of each valid snapshot of a snapshot record, in order, and a
    :class:`Dead` for each bad one: by its index in a record of many (original its own JSON),
    else the record as a whole. Vanish markers are skipped (no row), their indexes kept."""
    if isinstance(rec.parsed, Made):
        yield from _made_snapshots(rec, rec.parsed)
        return
    found, count = entries(rec)
    for index, entry in enumerate(found):
        if isinstance(entry, dict) and is_vanish(entry):
            continue
        if count is None:  # a record of one: the record is the observation
            if isinstance(entry, Rejected):
                yield _whole(rec, entry.reason)
            elif reason := _invalid(entry):
                yield _whole(rec, reason)
            else:
                yield 0, rec.value, entry
        elif isinstance(entry, Rejected):
            yield Dead(rec.pos, replace(entry, key=entry.key or rec.key), count)
        elif reason := _invalid(entry):
            yield Dead(rec.pos, Rejected(reason, index, orjson_dumps(entry), _key(entry) or rec.key), count)
        else:
            yield index, orjson.dumps(entry), entry


def _made_snapshots(rec: Record, made: Made) -> Iterator[tuple[int, bytes, Snapshot] | Dead]:
    """:func:`snapshots_of` a record this worker's normalise agent made: its snapshots, each with
    its own JSON, none serialised again. They have exactly the contract's fields (each is a
    :class:`Snapshot`); ``observed_at`` is checked as :func:`check_snapshot` checks it."""
    for index, (value, obj) in enumerate(zip(made.jsons, made.objects, strict=True)):
        if not isinstance(obj, Snapshot):  # a vanish marker: no row
            continue
        try:
            iso_to_ms(obj.observed_at)
        except InvalidRecord as exc:  # as check_snapshot refuses it on the read path
            yield _whole(rec, str(exc)) if made.count is None else \
                Dead(rec.pos, Rejected(str(exc), index, value, obj.key.encode()), made.count)
            continue
        yield index, value, obj


def _invalid(obj: dict[str, Any]) -> str | None:
    try:
        check_snapshot(obj)
    except InvalidRecord as exc:
        return str(exc)
    return None


def _key(obj: Mapping[str, Any]) -> bytes | None:
    source, batch_id = obj.get("source"), obj.get("batch_id")
    return f"{source}/{batch_id}".encode() if isinstance(source, str) and isinstance(batch_id, str) else None


def check_snapshot(obj: dict[str, Any]) -> dict[str, Any]:
    """A parsed snapshot checked as :meth:`Snapshot.from_json` does (every required field, no
    unknown one) plus a readable ``observed_at``, without building the dataclass: the sink
    stores the snapshot's own JSON."""
    iso_to_ms(check_fields(obj, "snapshot", SNAPSHOT_NAMES, REQUIRED))  # the latest-state version needs it
    return obj


def check_fields(obj: dict[str, Any], what: str, names: frozenset[str], required: Sequence[str]) -> str:
    """Refuse an object with a field outside ``names`` or without one of ``required``, or whose
    ``observed_at`` is not a string (the blocks are cut by its month); its ``observed_at``."""
    unknown = obj.keys() - names
    if unknown:
        raise InvalidRecord(f"{what}: unexpected field {sorted(unknown)[0]!r}")
    missing = next((name for name in required if name not in obj), None)
    if missing is not None:
        raise InvalidRecord(f"{what}: missing field {missing!r}")
    observed = obj["observed_at"]
    if not isinstance(observed, str):
        raise InvalidRecord(f"{what}: 'observed_at' is not a string")
    return observed


def refused_letters(block: Block, records: Mapping[Position, Record], reason: str) -> list[Dead]:
    """The dead letters of a block ClickHouse refused: one per observation of a record of many
    (its index and own JSON), one per record of one."""
    topic, partition = block.partition
    dead: list[Dead] = []
    read: dict[int, tuple[list[dict[str, Any] | Rejected], int | None]] = {}
    for offset, index, _ in (*block.snapshots, *block.changes):
        rec = records[Position(topic, partition, offset)]
        if offset not in read:
            read[offset] = entries(rec, changes=not block.snapshots)
        found, count = read[offset]
        entry = found[index] if count is not None else None
        if isinstance(entry, dict) and count is not None:
            own = Rejected(reason, index, orjson_dumps(entry), _key(entry) or rec.key)
            dead.append(Dead(rec.pos, own, count))
        else:
            dead.append(_whole(rec, reason))
    return dead


class Backpressure(Protocol):
    """Stops and restarts the flow of records into the sink while ClickHouse is unavailable."""

    def pause(self) -> None: ...

    async def resume(self) -> None: ...


class NoBackpressure:
    def pause(self) -> None:
        return None

    async def resume(self) -> None:
        return None


class BlockSink(Protocol):
    """Where the sink agent writes its insert blocks (:class:`ClickHouseSink`; a fake in tests)."""

    async def write_all(self, blocks: Sequence[Block]) -> list[tuple[Block, StoreError]]:
        """Write the blocks; those refused for good (a non-retriable error), each with its error.
        Returns only once every other block is acknowledged."""
        ...

    def forget(self) -> None:
        """Partitions moved: whatever the sink remembers of them is read again before a write."""
        ...


class ClickHouseSink:
    """Writes blocks; returns only once ClickHouse has acknowledged every table's insert."""

    def __init__(self, store: AsyncStore, backpressure: Backpressure | None = None) -> None:
        self._store = store
        self._flow = backpressure or NoBackpressure()
        self._marks: dict[str, dict[tuple[str, int], Mark]] = {}
        self.paused = False
        self.rows_written = 0
        self.rows_skipped = 0

    def forget(self) -> None:
        """Reload the high-water marks before the next write (after a rebalance)."""
        self._marks.clear()

    async def write(self, block: Block) -> None:
        """Write one block: one INSERT per table it has rows for."""
        if not block.positions:
            return
        marks = await self._marks_of(block.marker)
        mark = marks.get(block.partition, NOTHING)
        for table, rows in block.tables():
            fresh = await self._not_stored(table, block.partition, rows, mark)
            if fresh:
                lines = [line for *_, line in fresh]
                await self._insert(table, lines, token(table, block.positions[0], fresh))
                self.rows_written += len(fresh)
        marks[block.partition] = max(mark, block.last)

    async def write_all(self, blocks: Sequence[Block]) -> list[tuple[Block, StoreError]]:
        """Write a batch's blocks with one INSERT per table, its token the blocks' ranges in order.

        An INSERT ClickHouse refuses (a non-retriable error) is tried again block by block, after
        the high-water marks are read again (a refused INSERT may have stored some of its parts):
        the blocks refused then are returned with their error, for the DLQ. An INSERT whose rows
        span months is stored as one part per month, not atomically; a replay after a crash
        between the parts finds the missing rows below the mark by their (offset, index), and a
        retry with the same token stores only the missing parts (ClickHouse deduplicates per part).
        """
        plans: dict[str, list[tuple[Block, list[Row]]]] = {}
        refused: list[tuple[Block, StoreError]] = []
        for block in blocks:
            if block.snapshots and block.changes:  # never cut so: written alone, as write() does
                refused += await self._alone([block])
            elif block.positions:
                table, rows = next(block.tables())
                try:
                    mark = (await self._marks_of(table)).get(block.partition, NOTHING)
                    fresh = await self._not_stored(table, block.partition, rows, mark)
                except StoreError as exc:  # not retriable: as a refused insert of this block
                    refused.append((block, exc))
                    continue
                plans.setdefault(table, []).append((block, fresh))
        for table, plan in sorted(plans.items(), key=lambda item: item[0] != SNAPSHOTS):
            pieces = [(block, rows) for block, rows in plan if rows]
            try:
                if pieces:
                    await self._insert(table, [line for _, rows in pieces for *_, line in rows],
                                       batch_token(table, pieces))
            except StoreError as exc:
                log.warning("ClickHouse refused an insert of %d blocks into %s, writing them one by one: %s",
                            len(pieces), table, exc)
                self._marks.pop(table, None)
                refused += await self._alone([block for block, _ in plan])
                continue
            self.rows_written += sum(len(rows) for _, rows in pieces)
            marks = self._marks.get(table, {})  # forgotten meanwhile (a rebalance): read again later
            for block, _ in plan:
                marks[block.partition] = max(marks.get(block.partition, NOTHING), block.last)
        return refused

    async def _alone(self, blocks: Sequence[Block]) -> list[tuple[Block, StoreError]]:
        refused = []
        for block in blocks:
            try:
                await self.write(block)
            except StoreError as exc:
                refused.append((block, exc))
        return refused

    async def _not_stored(self, table: str, part: tuple[str, int], rows: list[Row], mark: Mark) -> list[Row]:
        """The rows ClickHouse does not hold yet. Rows above the partition's high-water mark are
        new; rows at or below it (a replay) are looked up one by one, because Faust does not
        always deliver a partition contiguously (a record dropped at a pause or a rebalance comes
        back only after a rewind, below the mark of the records that passed it), and the parts
        of one INSERT (one per month) are stored one by one."""
        below = [(offset, index) for offset, index, _ in rows if (offset, index) <= mark]
        if below:
            first, last = min(below)[0], max(below)[0]
            stored = await self._retrying(
                f"reading the stored positions of {table}",
                lambda: self._store.store.stored_positions(table, part[0], part[1], first, last,
                                                           indexed=table in INDEXED))
            fresh = [row for row in rows if (row[0], row[1]) > mark or (row[0], row[1]) not in stored]
        else:
            fresh = rows
        self.rows_skipped += len(rows) - len(fresh)
        return fresh

    async def _marks_of(self, table: str) -> dict[tuple[str, int], Mark]:
        if table not in self._marks:
            self._marks[table] = await self._retrying(
                f"reading the high-water marks of {table}",
                lambda: self._store.store.high_water(table, indexed=table in INDEXED))
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
                delay = full_jitter(attempt, BASE_BACKOFF, MAX_BACKOFF)
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
