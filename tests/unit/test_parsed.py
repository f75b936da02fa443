"""Snapshot records read once per worker: the track agent's reading, taken by the sink."""

from __future__ import annotations

import gc

import orjson
from faust.types import TP

from agents.parsed import ParsedRecords
from pipeline.clickhouse.sink import Position, Record, cut
from pipeline.core.models import Snapshot
from pipeline.core.records import pack_snapshots, read_counted
from tests.fakeconsumer import message


def snap(batch: str) -> Snapshot:
    return Snapshot("src", "openai", batch, "in_progress", "in_progress", "2024-05-01T12:00:00.000Z")


def test_the_sink_cuts_a_record_from_what_the_track_agent_read() -> None:
    """The record is not read again: its bytes are not even JSON here, and its rows come from the
    entries handed over, each with its index and its own JSON."""
    snaps = [snap("a"), snap("b")]
    _, value = pack_snapshots([(s.key.encode(), s.to_json()) for s in snaps])
    counted = read_counted(value, None, orjson.loads, "snapshot")
    assert counted[1] == 2
    taken = Record(Position("t.snapshots", 0, 7), b"not json", None, counted)
    blocks, dead = cut([taken], 100, "t.changesets")
    assert dead == []
    rows = [orjson.loads(row) for block in blocks for _, _, row in block.snapshots]
    assert [(r["batch_id"], r["kafka_offset"], r["kafka_index"]) for r in rows] == [("a", 7, 0), ("b", 7, 1)]
    read_again, _ = cut([Record(Position("t.snapshots", 0, 7), value)], 100, "t.changesets")
    assert [b.snapshots for b in read_again] == [b.snapshots for b in blocks]


def test_a_record_is_taken_once_and_forgotten_with_its_message() -> None:
    parsed = ParsedRecords()
    tp = TP("p.snapshots", 0)
    first, second = message(tp, 1), message(tp, 2)
    parsed.keep(first, ([], None))
    parsed.keep(second, ([], 0))
    assert parsed.take(first) == ([], None)
    assert parsed.take(first) is None  # taken: the sink's next batch reads it itself
    del second
    gc.collect()
    assert len(parsed) == 0  # nothing kept past the message
