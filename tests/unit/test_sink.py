"""pipeline.sink: pure row building, versions, offset ranges, tokens, and the retrying writer."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidRecord, StoreError
from pipeline.models import ChangeEvent, Snapshot
from pipeline.sink import Block, ClickHouseSink, Position, change_row, offset_ranges, snapshot_row, version
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


def test_offset_ranges() -> None:
    positions = [Position("t.snapshots", 1, 9), Position("t.snapshots", 0, 5), Position("t.changes", 0, 3),
                 Position("t.snapshots", 0, 2), Position("t.snapshots", 1, 7)]
    assert offset_ranges(positions) == "t.changes/0:3-3,t.snapshots/0:2-5,t.snapshots/1:7-9"
    assert offset_ranges(list(reversed(positions))) == offset_ranges(positions)
    assert offset_ranges([]) == ""


def test_block_rows_and_positions() -> None:
    block = Block()
    s = snap()
    block.add_snapshot(s, Position("t.snapshots", 0, 10))
    block.add_change(event(), Position("t.changes", 2, 4))
    (snapshot_line,) = block.snapshots
    (latest_line,) = block.latest
    (change_line,) = block.changes
    stored = orjson.loads(snapshot_line)
    assert stored["kafka_partition"] == 0
    assert stored["kafka_offset"] == 10
    assert "version" not in stored
    latest = orjson.loads(latest_line)
    assert latest["version"] == version(s)
    assert "kafka_offset" not in latest
    assert orjson.loads(change_line)["event_id"] == event().event_id
    assert block.positions == [Position("t.snapshots", 0, 10), Position("t.changes", 2, 4)]


def test_block_token_is_deterministic_and_table_specific() -> None:
    def build(order: Sequence[int]) -> Block:
        block = Block()
        for offset in order:
            block.add_snapshot(snap(), Position("t.snapshots", 0, offset))
        return block

    a, b = build([1, 2, 3]), build([3, 1, 2])
    assert a.token("batch_snapshots") == b.token("batch_snapshots") == "batch_snapshots:t.snapshots/0:1-3"
    assert a.token("batch_latest") == "batch_latest:t.snapshots/0:1-3"
    assert a.token("batch_snapshots") != a.token("batch_latest")
    assert build([4, 5]).token("batch_snapshots") != a.token("batch_snapshots")


def test_add_snapshot_is_all_or_nothing() -> None:
    block = Block()
    obj = orjson.loads(snap().to_json())
    obj["observed_at"] = "not-a-time"
    bad = Snapshot.from_json(orjson.dumps(obj))  # accepted: from_json does not validate times
    with pytest.raises(InvalidRecord):
        block.add_snapshot(bad, Position("t.snapshots", 0, 1))
    assert block.snapshots == []
    assert block.latest == []
    assert block.positions == []


# --- the writer, against a recording Store (no ClickHouse) ------------------------------------


class RecordingStore(Store):
    def __init__(self, failures: list[StoreError] | None = None) -> None:
        super().__init__("chdb:///unused", "batchscope")
        self.calls: list[tuple[str, list[bytes], str]] = []
        self.failures = failures or []

    def insert_json(self, table: str, rows: Sequence[bytes], token: str) -> None:
        self.calls.append((table, list(rows), token))
        if self.failures:
            raise self.failures.pop(0)


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


def full_block() -> Block:
    block = Block()
    block.add_snapshot(snap(), Position("t.snapshots", 0, 1))
    block.add_change(event(), Position("t.changes", 0, 1))
    return block


async def test_write_inserts_each_table_with_its_token() -> None:
    store = RecordingStore()
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        block = full_block()
        await sink.write(block)
        assert [(t, tok) for t, _, tok in store.calls] == [
            ("batch_snapshots", block.token("batch_snapshots")),
            ("batch_latest", block.token("batch_latest")),
            ("batch_changes", block.token("batch_changes")),
        ]
        assert store.calls[0][1] == block.snapshots
        assert sink.rows_written == 3


async def test_write_skips_empty_tables() -> None:
    store = RecordingStore()
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        await sink.write(Block())
        block = Block()
        block.add_change(event(), Position("t.changes", 0, 1))
        await sink.write(block)
        assert [t for t, _, _ in store.calls] == ["batch_changes"]
        assert sink.rows_written == 1


@pytest.mark.usefixtures("no_backoff")
async def test_write_retries_retriable_errors_with_the_same_token(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore([StoreError("busy", retriable=True), StoreError("busy", retriable=True)])
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        await sink.write(full_block())
        tables = [t for t, _, _ in store.calls]
        assert tables == ["batch_snapshots"] * 3 + ["batch_latest", "batch_changes"]
        assert len({tok for t, _, tok in store.calls if t == "batch_snapshots"}) == 1
        assert sink.rows_written == 3
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


async def test_write_raises_non_retriable_errors() -> None:
    store = RecordingStore([StoreError("bad row", retriable=False)])
    with async_store(store) as wrapped:
        sink = ClickHouseSink(wrapped)
        with pytest.raises(StoreError, match="bad row"):
            await sink.write(full_block())
        assert len(store.calls) == 1
        assert sink.rows_written == 0
