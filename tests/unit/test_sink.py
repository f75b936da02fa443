"""pipeline.clickhouse.sink: pure row building, versions, offset ranges, tokens, and the retrying writer."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.sink import (
    Block,
    ClickHouseSink,
    Position,
    Record,
    change_row,
    cut,
    read_change,
    refused_letters,
    snapshot_row,
    token,
    version,
)
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.core.errors import InvalidRecord, StoreError
from pipeline.core.models import ChangeEvent, Snapshot
from pipeline.core.records import pack_changes
from pipeline.core.timeutil import iso_to_ms
from pipeline.core.transitions import BatchState, apply


def snap(status: str = "in_progress", observed_at: str = "2024-05-01T12:00:00.000Z",
         **kw: Any) -> Snapshot:
    base = Snapshot(source="prod", provider="openai", batch_id="b1", status=status, provider_status=status,
                    observed_at=observed_at, created_at="2024-05-01T10:00:00.000Z",
                    in_progress_at="2024-05-01T10:05:00.000Z", requests_total=10, requests_completed=4,
                    requests_failed=1, metadata={"team": "ads"})
    return replace(base, **kw)


def event() -> ChangeEvent:
    _, (change,) = apply(BatchState("validating", "2024-05-01T10:00:00.000Z"), snap())
    return change


def test_snapshot_row_serialises_nested_fields() -> None:
    s = snap(errors=[{"code": "x", "message": "m", "param": None, "line": 2}], usage={"total_tokens": 5})
    row = snapshot_row(s)
    assert row["errors"] == '[{"code":"x","message":"m","param":null,"line":2}]'
    assert row["usage"] == '{"total_tokens":5}'
    assert row["metadata"] == {"team": "ads"}
    assert row["batch_id"] == "b1"
    assert set(row) == set(s.to_dict())
    assert s.errors == [{"code": "x", "message": "m", "param": None, "line": 2}]  # input untouched


def test_snapshot_row_without_usage_or_errors() -> None:
    row = snapshot_row(snap())
    assert row["usage"] is None
    assert row["errors"] == "[]"


def test_change_row() -> None:
    e = event()
    row = change_row(e)
    assert row == {
        "event_id": e.event_id, "kind": "status_changed", "source": "prod", "provider": "openai",
        "batch_id": "b1", "observed_at": e.observed_at, "at": "2024-05-01T10:05:00.000Z",
        "from_status": "validating", "to_status": "in_progress", "seconds_in_previous": 300.0,
        "status": "in_progress", "snapshot": e.snapshot.to_json().decode(), "schema_version": 2,
    }
    assert Snapshot.from_json(row["snapshot"].encode()) == e.snapshot


def test_read_change_is_the_row_of_the_parsed_event() -> None:
    e = event()
    assert read_change(e.to_json()) == change_row(e)
    progress = replace(e, kind="progress", from_status=None, to_status=None, seconds_in_previous=None,
                       deltas={"requests_completed": 3})
    assert read_change(progress.to_json()) == change_row(progress)


def test_read_change_fills_a_partial_snapshot_as_the_dataclass_does() -> None:
    obj = orjson.loads(event().to_json())
    del obj["snapshot"]["errors"], obj["snapshot"]["usage_source"], obj["schema_version"]
    row = read_change(orjson.dumps(obj))
    assert row == change_row(ChangeEvent.from_json(orjson.dumps(obj)))
    assert orjson.loads(row["snapshot"])["errors"] == []
    assert row["schema_version"] == 2


@pytest.mark.parametrize(("change", "reason"), [
    ({"colour": "red"}, "change event: unexpected field 'colour'"),
    ({"event_id": None}, "change event: missing field 'event_id'"),
    ({"observed_at": 17}, "change event: 'observed_at' is not a string"),
    ({"snapshot": [1]}, "change event: 'snapshot' missing or not an object"),
    ({"snapshot": {"colour": "red"}}, "change event: "),
])
def test_read_change_refuses_what_the_dataclass_refuses(change: dict[str, Any], reason: str) -> None:
    obj = {**orjson.loads(event().to_json()), **change}
    obj = {k: v for k, v in obj.items() if v is not None}
    with pytest.raises(InvalidRecord) as caught:
        read_change(orjson.dumps(obj))
    assert str(caught.value).startswith(reason)
    if "'observed_at'" not in reason:  # the dataclass takes any observed_at; the row needs a string
        with pytest.raises(InvalidRecord):
            ChangeEvent.from_json(orjson.dumps(obj))


def test_version_grows_with_rank_before_time() -> None:
    early = "2024-05-01T12:00:00.000Z"
    late = "2024-05-02T12:00:00.000Z"
    assert version(snap("in_progress", late)) > version(snap("in_progress", early))
    assert version(snap("finalizing", early)) > version(snap("in_progress", late))
    assert version(snap("completed", early)) > version(snap("finalizing", late))
    assert version(snap("validating", early)) > version(snap("unknown", late))
    order = ["unknown", "validating", "in_progress", "finalizing", "cancelling", "completed"]
    versions = [version(snap(s, late if i % 2 else early)) for i, s in enumerate(order)]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def test_version_low_bits_are_observed_ms() -> None:
    s = snap("in_progress")
    assert version(s) & ((1 << 42) - 1) == iso_to_ms(s.observed_at)
    assert version(s) >> 42 == 2
    assert version(s) < 2**64


def test_block_rows_and_positions() -> None:
    block = Block()
    s = snap()
    block.add_snapshot(s, Position("t.snapshots", 0, 10))
    block.add_change(event(), Position("t.changes", 2, 4))
    ((offset, index, snapshot_line),) = block.snapshots
    ((change_offset, change_index, change_line),) = block.changes
    assert (offset, index, change_offset, change_index) == (10, 0, 4, 0)
    stored = orjson.loads(snapshot_line)
    kafka = (stored["kafka_topic"], stored["kafka_partition"], stored["kafka_offset"], stored["kafka_index"])
    assert kafka == ("t.snapshots", 0, 10, 0)
    assert "version" not in stored
    change = orjson.loads(change_line)
    assert change["event_id"] == event().event_id
    assert (change["kafka_topic"], change["kafka_offset"]) == ("t.changes", 4)
    assert block.positions == [Position("t.snapshots", 0, 10), Position("t.changes", 2, 4)]


def records(offsets: Sequence[int], partition: int = 0,
            observed: str = "2024-05-01T12:00:00.000Z") -> list[Record]:
    value = snap(observed_at=observed).to_json()
    return [Record(Position("t.snapshots", partition, o), value) for o in offsets]


def spans(blocks: Sequence[Block]) -> list[tuple[int, int, int]]:
    return [(b.positions[0].partition, b.positions[0].offset, b.positions[-1].offset) for b in blocks]


def test_cut_aligns_blocks_to_offsets_per_partition() -> None:
    recs = records([7, 3, 4, 5, 6, 8, 9]) + records([1, 2], partition=1)
    blocks, bad = cut(recs, 4, "t.changes")
    assert bad == []
    assert spans(blocks) == [(0, 3, 3), (0, 4, 7), (0, 8, 9), (1, 1, 2)]
    # The same records in other batches give the same blocks, up to where a batch ended.
    ordered = records([3, 4, 5, 6, 7, 8, 9])
    first, _ = cut(ordered[:3], 4, "t.changes")
    second, _ = cut(ordered[3:], 4, "t.changes")
    assert spans(first) + spans(second) == [(0, 3, 3), (0, 4, 5), (0, 6, 7), (0, 8, 9)]


def test_cut_at_month_changes_and_sets_bad_records_aside() -> None:
    recs = records([1, 2]) + records([3], observed="2024-06-01T00:00:00.000Z")
    recs.append(Record(Position("t.changes", 0, 5), b"not json"))
    blocks, bad = cut(recs, 100, "t.changes")
    assert spans(blocks) == [(0, 1, 2), (0, 3, 3)]
    assert [d.pos.offset for d in bad] == [5]
    assert "not valid JSON" in bad[0].reason
    assert (bad[0].original, bad[0].index) == (b"not json", 0)


def test_marker_table() -> None:
    snaps, _ = cut(records([1]), 10, "t.changes")
    assert snaps[0].marker == "batch_snapshots"
    changes, _ = cut([Record(Position("t.changes", 0, 1), event().to_json())], 10, "t.changes")
    assert changes[0].marker == "batch_changes"
    assert [t for t, _ in changes[0].tables()] == ["batch_changes"]
    assert [t for t, _ in snaps[0].tables()] == ["batch_snapshots"]


def test_token_names_table_partition_and_range() -> None:
    rows = [(3, 0, b"a"), (4, 0, b"b"), (9, 0, b"c")]
    assert token("batch_latest", Position("t.snapshots", 2, 3), rows) == "batch_latest:t.snapshots/2:3-9"


def test_add_snapshot_is_all_or_nothing() -> None:
    block = Block()
    obj = orjson.loads(snap().to_json())
    obj["observed_at"] = "not-a-time"
    bad = Snapshot.from_json(orjson.dumps(obj))  # accepted: from_json does not validate times
    with pytest.raises(InvalidRecord):
        block.add_snapshot(bad, Position("t.snapshots", 0, 1))
    assert block.snapshots == []
    assert block.positions == []


# --- the writer, against a recording Store (no ClickHouse) ------------------------------------


class RecordingStore(Store):
    def __init__(self, failures: list[StoreError] | None = None,
                 marks: dict[tuple[str, int], int] | None = None) -> None:
        super().__init__("chdb:///unused", "batchscope")
        self.calls: list[tuple[str, list[bytes], str]] = []
        self.failures = failures or []
        self.marks = marks or {}
        self.holes: set[int] = set()  # offsets below the mark that ClickHouse does not hold
        self.width = 1  # rows per record up to the mark
        self.reads: list[str] = []  # the tables whose high-water marks were read

    def insert_json(self, table: str, rows: Sequence[bytes], token: str) -> None:
        self.calls.append((table, list(rows), token))
        if self.failures:
            raise self.failures.pop(0)

    def high_water(self, table: str, indexed: bool = False) -> dict[tuple[str, int], tuple[int, int]]:
        self.reads.append(table)
        return {part: (offset, self.width - 1) for part, offset in self.marks.items()}

    def stored_positions(self, table: str, topic: str, partition: int, first: int, last: int,
                         indexed: bool = False) -> set[tuple[int, int]]:
        """Records up to the mark stored whole (but for the holes), and whatever was inserted."""
        mark = self.marks.get((topic, partition), -1)
        inserted = {(row["kafka_offset"], row.get("kafka_index", 0) if indexed else 0)
                    for t, rows, _ in self.calls if t == table for row in map(orjson.loads, rows)}
        return {(o, i) for o in range(first, last + 1) for i in range(self.width)
                if (o <= mark and o not in self.holes)} | {p for p in inserted if first <= p[0] <= last}


class Flow:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    async def resume(self) -> None:
        self.calls.append("resume")


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda a, b: 0.0)  # no backoff wait


@contextmanager
def async_store(store: RecordingStore) -> Iterator[AsyncStore]:
    wrapped = AsyncStore(store)
    try:
        yield wrapped
    finally:
        wrapped.close_now()


def snapshot_block(offsets: Sequence[int] = (1, 2)) -> Block:
    (block,), _ = cut(records(offsets), 1000, "t.changes")
    return block


async def test_write_inserts_snapshots_with_their_token() -> None:
    store = RecordingStore()
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        block = snapshot_block()
        await sink.write(block)
        assert [(t, tok) for t, _, tok in store.calls] == [
            ("batch_snapshots", "batch_snapshots:t.snapshots/0:1-2"),
        ]
        assert store.calls[0][1] == [line for *_, line in block.snapshots]
        assert sink.rows_written == 2


async def test_write_skips_rows_at_or_below_the_stored_high_water_mark() -> None:
    store = RecordingStore(marks={("t.snapshots", 0): 2})
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        await sink.write(snapshot_block([1, 2]))
        assert store.calls == []
        await sink.write(snapshot_block([2, 3, 4]))
        assert [tok for _, _, tok in store.calls] == ["batch_snapshots:t.snapshots/0:3-4"]
        await sink.write(snapshot_block([3, 4]))  # a replay in this process: the mark moved
        assert len(store.calls) == 1
        assert sink.rows_skipped == 2 + 1 + 2


async def test_write_fills_a_hole_below_the_high_water_mark() -> None:
    """A record Faust delivered late (after a rewind) is written although later ones are stored."""
    store = RecordingStore(marks={("t.snapshots", 0): 5})
    store.holes = {3}
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        await sink.write(snapshot_block([2, 3, 4, 5, 6]))
        assert [tok for _, _, tok in store.calls] == ["batch_snapshots:t.snapshots/0:3-6"]
        assert len(store.calls[0][1]) == 2
        assert sink.rows_skipped == 3


async def test_write_skips_empty_blocks() -> None:
    store = RecordingStore()
    with async_store(store) as wrapped:
        await ClickHouseSink(wrapped).write(Block())
        assert store.calls == []


@pytest.mark.usefixtures("no_backoff")
async def test_write_retries_retriable_errors_with_the_same_token_while_paused(
        caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore([StoreError("busy", retriable=True), StoreError("busy", retriable=True)])
    flow = Flow()
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped, flow)
        await sink.write(snapshot_block())
        tables = [t for t, _, _ in store.calls]
        assert tables == ["batch_snapshots"] * 3
        assert len({tok for _, _, tok in store.calls}) == 1
        assert sink.rows_written == 2
        assert flow.calls == ["pause", "resume"]
        assert not sink.paused
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


async def test_write_raises_non_retriable_errors() -> None:
    store = RecordingStore([StoreError("bad row", retriable=False)])
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        with pytest.raises(StoreError, match="bad row"):
            await sink.write(snapshot_block())
        assert len(store.calls) == 1
        assert sink.rows_written == 0


def test_the_latest_feed_view_ranks_statuses_like_the_transitions() -> None:
    from pipeline.clickhouse.store import migrations
    from pipeline.core.transitions import RANK

    sql = next(m.sql for m in migrations() if "VIEW IF NOT EXISTS {db}.batch_latest_feed" in m.sql)
    names, ranks = re.search(r"\[([^\]]*)\],\s*\[([^\]]*)\], 0\)", sql).groups()  # type: ignore[union-attr]
    statuses = [n.strip().strip("'") for n in names.split(",")]
    feed = dict(zip(statuses, (int(r) for r in ranks.split(",")), strict=True))
    assert feed == {k: v for k, v in RANK.items() if v}
    assert "bitShiftLeft(" in sql


# --- the snapshot fast path: the record's own bytes with the Kafka fields spliced in -------------


def test_cut_stores_the_records_own_bytes_with_the_kafka_fields() -> None:
    s = snap(errors=[{"code": "x", "message": "m"}], usage={"input_tokens": 5})
    (block,), bad = cut([Record(Position("t.snapshots", 1, 7), s.to_json())], 100, "t.changes")
    assert bad == []
    ((offset, index, line),) = block.snapshots
    assert (offset, index) == (7, 0)
    assert line == s.to_json()[:-1] + \
        b',"kafka_topic":"t.snapshots","kafka_partition":1,"kafka_offset":7,"kafka_index":0}'
    old = Block()
    old.add_snapshot(s, Position("t.snapshots", 1, 7))
    # Same row once ClickHouse reads the nested fields as their JSON text.
    stored, expected = orjson.loads(line), orjson.loads(old.snapshots[0][2])
    assert orjson.dumps(stored["errors"]).decode() == expected["errors"]
    assert orjson.dumps(stored["usage"]).decode() == expected["usage"]
    assert {k: v for k, v in stored.items() if k not in ("errors", "usage")}.items() >= \
        {k: v for k, v in expected.items() if k not in ("errors", "usage")}.items()


@pytest.mark.parametrize("change", [
    {"errors": None}, {"usage": [1]},
])
def test_cut_falls_back_to_the_full_row_for_unusual_nested_fields(change: dict[str, Any]) -> None:
    obj = {**orjson.loads(snap().to_json()), **change}
    (block,), bad = cut([Record(Position("t.snapshots", 0, 1), orjson.dumps(obj))], 100, "t.changes")
    assert bad == []
    stored = orjson.loads(block.snapshots[0][2])
    expected = snapshot_row(Snapshot(**obj))
    assert (stored["errors"], stored["usage"]) == (expected["errors"], expected["usage"])


@pytest.mark.parametrize(("value", "reason"), [
    (b"[1]", "expected a JSON object"),
    (b'{"source": "a"', "not valid JSON"),
    (orjson.dumps({k: v for k, v in orjson.loads(snap().to_json()).items() if k != "batch_id"}),
     "missing field 'batch_id'"),
    (orjson.dumps({**orjson.loads(snap().to_json()), "surprise": 1}), "unexpected field 'surprise'"),
    (orjson.dumps({**orjson.loads(snap().to_json()), "observed_at": "not-a-time"}), "ISO 8601"),
    (orjson.dumps({**orjson.loads(snap().to_json()), "observed_at": 17}), "not a string"),
])
def test_cut_sets_invalid_snapshots_aside(value: bytes, reason: str) -> None:
    recs = [*records([1]), Record(Position("t.snapshots", 0, 2), value), *records([3])]
    blocks, bad = cut(recs, 100, "t.changes")
    assert spans(blocks) == [(0, 1, 3)]
    assert [d.pos.offset for d in bad] == [2]
    assert reason in bad[0].reason
    assert (bad[0].original, bad[0].index) == (value, 0)


# --- records of many snapshots (docs/records.md): one row per snapshot, at (offset, index) ------


def many(*snaps: Snapshot | Any) -> bytes:
    """A version 2 snapshot record; entries that are not snapshots go in as they are."""
    return orjson.dumps({"v": 2, "snapshots": [orjson.loads(s.to_json()) if isinstance(s, Snapshot) else s
                                               for s in snaps]})


def test_cut_turns_a_record_of_many_into_one_row_per_snapshot() -> None:
    snaps = [snap(batch_id=f"b{i}") for i in range(3)]
    pos = Position("t.snapshots", 1, 5)
    (block,), bad = cut([Record(pos, many(*snaps))], 100, "t.changes")
    assert bad == []
    assert [(o, i) for o, i, _ in block.snapshots] == [(5, 0), (5, 1), (5, 2)]
    assert block.positions == [pos]  # the record once: its Kafka offset is acknowledged once
    assert (block.rows, block.last) == (3, (5, 2))
    for i, (_, _, line) in enumerate(block.snapshots):
        row = orjson.loads(line)
        assert (row["batch_id"], row["kafka_offset"], row["kafka_index"]) == (f"b{i}", 5, i)
        own = {k: v for k, v in row.items() if not k.startswith("kafka_")}
        assert own == orjson.loads(snaps[i].to_json())
    assert token("batch_snapshots", pos, block.snapshots) == "batch_snapshots:t.snapshots/1:5-5.2"


def test_a_bad_snapshot_of_many_is_a_dead_letter_alone_and_the_others_are_written() -> None:
    no_id = {k: v for k, v in orjson.loads(snap().to_json()).items() if k != "batch_id"}
    bad_time = {**orjson.loads(snap(batch_id="late").to_json()), "observed_at": "yesterday"}
    value = many(snap(batch_id="a"), 17, no_id, bad_time, snap(batch_id="e"))
    pos = Position("t.snapshots", 0, 9)
    (block,), bad = cut([Record(pos, value, b"prod/a")], 100, "t.changes")
    assert [(o, i) for o, i, _ in block.snapshots] == [(9, 0), (9, 4)]
    assert [(d.pos, d.index) for d in bad] == [(pos, 1), (pos, 2), (pos, 3)]
    assert [d.count for d in bad] == [5, 5, 5]  # the agent's letter: "observation I+1 of 5: ..."
    assert bad[0].reason == "snapshot record: entry 1 is not an object (int)"
    assert bad[1].reason == "snapshot: missing field 'batch_id'"
    assert "ISO 8601" in bad[2].reason
    assert [orjson.loads(d.original) for d in bad] == [17, no_id, bad_time]  # each its own JSON
    assert [d.key for d in bad] == [b"prod/a", b"prod/a", b"prod/late"]  # its own key when it has one


@pytest.mark.parametrize("value", [b'{"v": 3, "snapshots": []}', b'{"v": 2, "snapshots": {}}', b"[]", b"{"])
def test_a_record_that_cannot_be_read_is_one_dead_letter(value: bytes) -> None:
    pos = Position("t.snapshots", 0, 4)
    blocks, bad = cut([Record(pos, value, b"k")], 100, "t.changes")
    assert blocks == []
    assert [(d.pos, d.index, d.original, d.key, d.count) for d in bad] == [(pos, 0, value, b"k", 1)]
    assert not bad[0].reason.startswith("observation")


def test_rows_of_one_record_in_two_months_go_to_two_blocks() -> None:
    oct_, nov = "2026-10-31T23:59:59.000Z", "2026-11-01T00:00:01.000Z"
    value = many(snap(batch_id="a", observed_at=oct_), snap(batch_id="b", observed_at=nov),
                 snap(batch_id="c", observed_at=oct_))
    before = records([3], observed=oct_)
    blocks, _ = cut([*before, Record(Position("t.snapshots", 0, 4), value)], 100, "t.changes")
    assert [[(o, i) for o, i, _ in b.snapshots] for b in blocks] == [[(3, 0), (4, 0), (4, 2)], [(4, 1)]]
    assert [b.positions for b in blocks] == [[before[0].pos, Position("t.snapshots", 0, 4)],
                                             [Position("t.snapshots", 0, 4)]]


class PositionStore(RecordingStore):
    """ClickHouse as a set of stored (offset, index) positions of partition 0 of t.snapshots, plus
    what is inserted; an insert holding a row with ``poison`` in it is refused (not retriable)."""

    def __init__(self, stored: set[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.stored = set(stored or ())

    def insert_json(self, table: str, rows: Sequence[bytes], token: str) -> None:
        self.calls.append((table, list(rows), token))
        if any(b"poison" in row for row in rows):
            raise StoreError("Code: 27. Cannot parse input", retriable=False)
        if self.failures:
            raise self.failures.pop(0)
        if table == "batch_snapshots":
            self.stored |= {(r["kafka_offset"], r["kafka_index"]) for r in map(orjson.loads, rows)
                            if r["kafka_partition"] == 0}

    def high_water(self, table: str, indexed: bool = False) -> dict[tuple[str, int], tuple[int, int]]:
        self.reads.append(table)
        return {("t.snapshots", 0): max(self.stored)} if self.stored and table == "batch_snapshots" else {}

    def stored_positions(self, table: str, topic: str, partition: int, first: int, last: int,
                         indexed: bool = False) -> set[tuple[int, int]]:
        return {p for p in self.stored if first <= p[0] <= last}


def inserted(store: RecordingStore) -> list[tuple[int, int]]:
    rows = [orjson.loads(row) for _, lines, _ in store.calls for row in lines]
    return [(r["kafka_offset"], r["kafka_index"]) for r in rows if "kafka_index" in r]


async def test_a_replay_skips_what_is_stored_by_offset_and_index() -> None:
    """Record 5's first two snapshots were stored before a crash (the part of another month, or a
    batch of their own): its replay writes the other two, and record 6."""
    recs = [Record(Position("t.snapshots", 0, 5), many(*(snap(batch_id=f"b{i}") for i in range(4)))),
            Record(Position("t.snapshots", 0, 6), many(snap(batch_id="x"), snap(batch_id="y")))]
    store = PositionStore({(4, 0), (5, 0), (5, 1)})
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        blocks, _ = cut(recs, 100, "t.changes")
        assert await sink.write_all(blocks) == []
        assert inserted(store) == [(5, 2), (5, 3), (6, 0), (6, 1)]
        assert store.calls[0][2] == "batch_snapshots:t.snapshots/0:5.2-6.1"
        assert (sink.rows_written, sink.rows_skipped) == (4, 2)
        assert await sink.write_all(cut(recs, 100, "t.changes")[0]) == []  # again: the mark moved
        assert len(store.calls) == 1
        assert sink.rows_skipped == 2 + 6


async def test_a_hole_inside_a_record_of_many_is_filled() -> None:
    """Below the mark (6, 1) the snapshot (5, 1) is missing: it alone is written."""
    rec = Record(Position("t.snapshots", 0, 5), many(*(snap(batch_id=f"b{i}") for i in range(3))))
    store = PositionStore({(5, 0), (5, 2), (6, 1)})
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        await sink.write(cut([rec], 100, "t.changes")[0][0])
        assert inserted(store) == [(5, 1)]
        assert store.calls[0][2] == "batch_snapshots:t.snapshots/0:5.1-5.1"


def batch_records() -> list[Record]:
    """Two snapshot partitions (a record of many, records of one) and a change record."""
    pair = many(snap(batch_id="m0"), snap(batch_id="m1"))
    return [*records([1, 2]), Record(Position("t.snapshots", 0, 3), pair), *records([7], partition=1),
            Record(Position("t.changes", 0, 4), event().to_json())]


async def test_write_all_makes_one_insert_per_table_with_a_deterministic_token() -> None:
    tokens = []
    for _ in range(2):  # the same batch in a fresh process gives the same inserts and tokens
        store = RecordingStore()
        with async_store(store) as wrapped:
            sink = ClickHouseSink(wrapped)
            blocks, bad = cut(batch_records(), 100, "t.changes")
            assert (len(blocks), bad) == (3, [])
            assert await sink.write_all(blocks) == []
            tokens.append([tok for _, _, tok in store.calls])
            assert [t for t, _, _ in store.calls] == ["batch_snapshots", "batch_changes"]
            assert len(store.calls[0][1]) == 5
            assert sink.rows_written == 6
    assert tokens[0] == tokens[1] == ["batch_snapshots:t.snapshots/0:1-3.1,t.snapshots/1:7-7",
                                      "batch_changes:t.changes/0:4-4"]


@pytest.mark.usefixtures("no_backoff")
async def test_write_all_retries_a_failed_insert_with_the_same_token() -> None:
    store = RecordingStore([StoreError("busy", retriable=True)])
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped, Flow())
        assert await sink.write_all(cut(batch_records(), 100, "t.changes")[0]) == []
        both = "batch_snapshots:t.snapshots/0:1-3.1,t.snapshots/1:7-7"
        assert [tok for _, _, tok in store.calls] == [both, both, "batch_changes:t.changes/0:4-4"]
        assert store.calls[0][1] == store.calls[1][1]


async def test_a_refused_batch_insert_falls_back_to_block_by_block() -> None:
    """A row ClickHouse cannot take refuses the whole INSERT: then each block is written alone,
    after the marks are read again, and only the bad block comes back, for the DLQ."""
    poisoned = snap(batch_id="poison")
    recs = [*records([1, 2]), Record(Position("t.snapshots", 1, 3), many(snap(batch_id="ok"), poisoned)),
            Record(Position("t.changes", 0, 4), event().to_json())]
    store = PositionStore()
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        blocks, _ = cut(recs, 100, "t.changes")
        refused = await sink.write_all(blocks)
        assert [b.positions for b, _ in refused] == [[Position("t.snapshots", 1, 3)]]
        assert "Cannot parse input" in str(refused[0][1])
        assert [tok for _, _, tok in store.calls] == [
            "batch_snapshots:t.snapshots/0:1-2,t.snapshots/1:3-3.1",  # refused
            "batch_snapshots:t.snapshots/0:1-2",  # alone: written
            "batch_snapshots:t.snapshots/1:3-3.1",  # alone: refused
            "batch_changes:t.changes/0:4-4"]
        assert store.reads.count("batch_snapshots") == 2  # read again before writing alone
        assert store.stored == {(1, 0), (2, 0)}
        assert sink.rows_written == 3

        letters = refused_letters(refused[0][0], {r.pos: r for r in recs}, "ClickHouse rejected the block: x")
        assert [(d.pos.offset, d.index, d.key) for d in letters] == [(3, 0, b"prod/ok"),
                                                                      (3, 1, b"prod/poison")]
        assert [(d.reason, d.count) for d in letters] == [("ClickHouse rejected the block: x", 2)] * 2
        assert orjson.loads(letters[1].original) == orjson.loads(poisoned.to_json())


def test_a_refused_block_of_records_of_one_gives_one_dead_letter_per_record() -> None:
    recs = records([1, 2])
    (block,), _ = cut(recs, 100, "t.changes")
    letters = refused_letters(block, {r.pos: r for r in recs}, "ClickHouse rejected the block: x")
    assert [(d.pos.offset, d.index, d.original, d.reason, d.count) for d in letters] == [
        (r.pos.offset, 0, r.value, "ClickHouse rejected the block: x", 1) for r in recs]


async def test_write_all_returns_a_block_whose_marks_cannot_be_read() -> None:
    """As write() raised for it before: the agent dead-letters the block, the others are written."""

    class NoMarks(RecordingStore):
        def high_water(self, table: str, indexed: bool = False) -> dict[tuple[str, int], tuple[int, int]]:
            if table == "batch_changes":
                raise StoreError("Code: 47. Unknown identifier", retriable=False)
            return {}

    store = NoMarks()
    with async_store(store) as wrapped:
        refused = await ClickHouseSink(wrapped).write_all(cut(batch_records(), 100, "t.changes")[0])
        assert [(b.marker, str(e)) for b, e in refused] == [("batch_changes", "Code: 47. Unknown identifier")]
        assert [t for t, _, _ in store.calls] == ["batch_snapshots"]


def change_set(*changes: ChangeEvent | Any) -> bytes:
    """A version 2 change-set record (the track agent's ``pack_changes``); entries that are not
    change events go in as they are."""
    return pack_changes([c.to_json() if isinstance(c, ChangeEvent) else orjson.dumps(c) for c in changes])[0]


def test_cut_turns_a_change_set_into_one_row_per_event_at_its_index() -> None:
    first = event()
    second = replace(first, event_id="00000000-0000-0000-0000-000000000002", batch_id="b2")
    pos = Position("t.changesets", 3, 8)
    (block,), bad = cut([Record(pos, change_set(first, second))], 100, "t.changesets")
    assert bad == []
    assert block.snapshots == []
    assert [(o, i) for o, i, _ in block.changes] == [(8, 0), (8, 1)]
    assert (block.marker, block.last, block.positions) == ("batch_changes", (8, 1), [pos])
    rows = [orjson.loads(line) for _, _, line in block.changes]
    assert [{k: v for k, v in r.items() if not k.startswith("kafka_")} for r in rows] == [
        orjson.loads(orjson.dumps(change_row(e))) for e in (first, second)]
    assert [(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], r["kafka_index"]) for r in rows] == [
        ("t.changesets", 3, 8, 0), ("t.changesets", 3, 8, 1)]
    assert token("batch_changes", pos, block.changes) == "batch_changes:t.changesets/3:8-8.1"


def test_a_bad_event_of_a_change_set_is_a_dead_letter_alone() -> None:
    good = event()
    no_kind = {k: v for k, v in orjson.loads(good.to_json()).items() if k != "kind"}
    pos = Position("t.changesets", 0, 2)
    (block,), bad = cut([Record(pos, change_set(good, "text", no_kind, good))], 100, "t.changesets")
    assert [(o, i) for o, i, _ in block.changes] == [(2, 0), (2, 3)]
    assert [(d.pos, d.index, d.count) for d in bad] == [(pos, 1, 4), (pos, 2, 4)]
    assert bad[0].reason == "change record: entry 1 is not an object (str)"
    assert bad[1].reason == "change event: missing field 'kind'"
    assert orjson.loads(bad[1].original) == no_kind
    assert bad[1].key == b"prod/b1"


def test_a_refused_change_set_block_gives_one_dead_letter_per_event() -> None:
    rec = Record(Position("t.changesets", 1, 6), change_set(event(), event()))
    (block,), _ = cut([rec], 100, "t.changesets")
    letters = refused_letters(block, {rec.pos: rec}, "ClickHouse rejected the block: x")
    assert [(d.index, d.count, d.key) for d in letters] == [(0, 2, b"prod/b1"), (1, 2, b"prod/b1")]
    assert [orjson.loads(d.original) for d in letters] == [orjson.loads(event().to_json())] * 2
