"""pipeline.sink: pure row building, versions, offset ranges, tokens, and the retrying writer."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidRecord, StoreError
from pipeline.models import ChangeEvent, Snapshot
from pipeline.sink import (
    Block,
    ClickHouseSink,
    Position,
    Record,
    change_row,
    cut,
    snapshot_row,
    token,
    version,
)
from pipeline.store import AsyncStore, Store
from pipeline.timeutil import iso_to_ms
from pipeline.transitions import BatchState, apply


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
        "status": "in_progress", "snapshot": e.snapshot.to_json().decode(), "schema_version": 1,
    }
    assert Snapshot.from_json(row["snapshot"].encode()) == e.snapshot


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
    ((offset, snapshot_line),) = block.snapshots
    ((change_offset, change_line),) = block.changes
    assert (offset, change_offset) == (10, 4)
    stored = orjson.loads(snapshot_line)
    kafka = (stored["kafka_topic"], stored["kafka_partition"], stored["kafka_offset"])
    assert kafka == ("t.snapshots", 0, 10)
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
    assert [r.pos.offset for r, _ in bad] == [5]
    assert "not valid JSON" in bad[0][1]


def test_marker_table() -> None:
    snaps, _ = cut(records([1]), 10, "t.changes")
    assert snaps[0].marker == "batch_snapshots"
    changes, _ = cut([Record(Position("t.changes", 0, 1), event().to_json())], 10, "t.changes")
    assert changes[0].marker == "batch_changes"
    assert [t for t, _ in changes[0].tables()] == ["batch_changes"]
    assert [t for t, _ in snaps[0].tables()] == ["batch_snapshots"]


def test_token_names_table_partition_and_range() -> None:
    rows = [(3, b"a"), (4, b"b"), (9, b"c")]
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

    def insert_json(self, table: str, rows: Sequence[bytes], token: str) -> None:
        self.calls.append((table, list(rows), token))
        if self.failures:
            raise self.failures.pop(0)

    def high_water(self, table: str) -> dict[tuple[str, int], int]:
        return dict(self.marks)

    def stored_offsets(self, table: str, topic: str, partition: int, first: int, last: int) -> set[int]:
        mark = self.marks.get((topic, partition), -1)
        inserted = {orjson.loads(row)["kafka_offset"]
                    for t, rows, _ in self.calls if t == table for row in rows}
        return {o for o in range(first, last + 1) if (o <= mark and o not in self.holes) or o in inserted}


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
        assert store.calls[0][1] == [line for _, line in block.snapshots]
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
    from pipeline.store import migrations
    from pipeline.transitions import RANK

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
    ((offset, line),) = block.snapshots
    assert offset == 7
    assert line == s.to_json()[:-1] + b',"kafka_topic":"t.snapshots","kafka_partition":1,"kafka_offset":7}'
    old = Block()
    old.add_snapshot(s, Position("t.snapshots", 1, 7))
    # Same row once ClickHouse reads the nested fields as their JSON text.
    stored, expected = orjson.loads(line), orjson.loads(old.snapshots[0][1])
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
    stored = orjson.loads(block.snapshots[0][1])
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
    assert [r.pos.offset for r, _ in bad] == [2]
    assert reason in bad[0][1]
