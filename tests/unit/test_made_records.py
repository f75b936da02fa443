"""Snapshot records taken as made, not read again (agents.parsed.MadeRecords): the track agent and
the sink must do exactly what they do with the record read from its bytes."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any, cast

import orjson
import pytest

from agents.counters import Counters
from agents.normalise import NormaliseAgent
from agents.parsed import MadeRecords
from agents.track import TrackAgent
from pipeline.clickhouse.sink import Position, Record, cut
from pipeline.core.codec import ORJSON
from pipeline.core.models import Envelope, Snapshot
from pipeline.core.normalise import normalise_raw
from pipeline.core.records import Made, pack_raw, read_counted
from pipeline.core.timeutil import from_unix, iso_ms
from pipeline.core.transitions import Rules
from pipeline.providers import PROVIDERS
from simulator.fleet import build_fleet
from simulator.wire import render, wire_id
from tests.unit.test_agent_units import NONE, Producer, Table, dead, event

EPOCH = 1_700_000_000.0
PARTITIONS = 3


def observed(provider: str, batches: int = 12) -> list[Envelope]:
    """Each batch of a small fleet of ``provider``, rendered as its API shows it on entering each
    status and halfway to the next, round-robin across batches."""
    source = f"src-{provider}"
    out: list[tuple[float, Envelope]] = []
    for batch in build_fleet(7, batches, source):
        wire = wire_id(provider, batch, source)
        times = [batch.created] + [t for (_, a), (_, b) in pairwise(batch.timeline) for t in ((a + b) / 2, b)]
        for t in times:
            at = iso_ms(from_unix(EPOCH + t + 5.0))
            out.append((t, Envelope(source, provider, at, render(provider, batch, t, EPOCH, wire), "")))
    return [e for _, e in sorted(out, key=lambda pair: pair[0])]


def raw_records(provider: str) -> list[tuple[bytes, bytes, int]]:
    """The poller's raw records of ``provider``'s observations, a page of 10 at a time."""
    envelopes = observed(provider)
    pages = [envelopes[i:i + 10] for i in range(0, len(envelopes), 10)]
    return [(p.key, p.value, p.partition) for page in pages for p in pack_raw(page, PARTITIONS)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_object_made_is_what_reading_its_json_gives(provider: str) -> None:
    checked = 0
    for key, value, _ in raw_records(provider):
        objects: dict[int, Snapshot | dict[str, Any]] = {}
        items, rejected = normalise_raw(value, key, ORJSON, objects=objects)
        assert not rejected
        assert sorted(objects) == [index for _, _, index in items]
        for _, json, index in items:
            made = objects[index]
            read = orjson.loads(json)
            assert (made if isinstance(made, dict) else Snapshot.from_dict(read)) == \
                (read if isinstance(made, dict) else made)
            assert ORJSON.dumps(made) == json  # what the sink writes, and a dead letter's original
            checked += 1
    assert checked > 50


def test_a_vanish_marker_is_made_as_its_dict() -> None:
    gone = Envelope("s", "openai", "2026-12-01T00:00:00Z", {}, "b1", vanished=True)
    objects: dict[int, Snapshot | dict[str, Any]] = {}
    [(_, json, index)] = normalise_raw(gone.to_json(), objects=objects)[0]
    assert objects[index] == orjson.loads(json)


def test_a_record_is_found_by_its_bytes_and_the_oldest_go_past_the_limit() -> None:
    counters = Counters()
    made = MadeRecords(counters, most=100)
    first = Made([b"{}"], [{"vanished": True}], None)
    made.keep(b"x" * 60, first)
    assert made.get(bytes(bytearray(b"x" * 60))) is first  # equal bytes, another object
    assert made.get(b"y" * 60) is None
    made.keep(b"y" * 60, first)  # 120 bytes kept: the oldest goes
    assert len(made) == 1
    assert made.get(b"x" * 60) is None
    assert (counters.made_hits, counters.made_misses) == (1, 2)


async def made_and_sent(producer: Producer, counters: Counters,
                        made: MadeRecords | None) -> list[tuple[bytes, bytes, int]]:
    """The snapshot records a normalise agent sends for every provider's raw records."""
    agent = NormaliseAgent(producer.send, "t.snapshots", PARTITIONS, ORJSON, 512 * 1024,
                           dead(producer, counters), NONE, NONE, counters, made)
    for offset, (key, value, partition) in enumerate(r for p in PROVIDERS for r in raw_records(p)):
        await agent.one(event("t.raw", partition, offset, key, value))
        if agent.packer.due():
            await agent.packer.flush()
    await agent.packer.flush()
    await asyncio.sleep(0)
    return [(k or b"", v, p or 0) for _, k, v, p in producer.on("t.snapshots")]


async def test_the_records_made_are_kept_and_mean_what_their_bytes_say() -> None:
    counters = Counters()
    made = MadeRecords(counters)
    records = await made_and_sent(Producer(), counters, made)
    assert len(made) == len(records) > 3
    for key, value, _ in records:
        found = made.get(bytes(bytearray(value)))
        assert found is not None
        entries, count = read_counted(value, key, orjson.loads, "snapshot")
        assert count == found.count
        assert [orjson.loads(j) for j in found.jsons] == entries
        assert [o if isinstance(o, dict) else o.to_dict() for o in found.objects] == entries


async def fold_all(records: list[tuple[bytes, bytes, int]], made: MadeRecords | None) -> tuple[Any, ...]:
    """Every output of a track agent folding ``records``: sends and table writes."""
    producer, counters, table = Producer(), Counters(), Table()
    agent = TrackAgent(producer.send, "t.changes", "t.changesets", cast(Any, table), "t.changelog",
                       PARTITIONS, Rules(progress_min_interval=0.0), ORJSON, 1_000_000, producer.handed,
                       dead(producer, counters), NONE, NONE, counters, None, made)
    for offset, (key, value, partition) in enumerate(records):
        e = event("t.snapshots", partition, offset, key, bytes(bytearray(value)))  # read back: new bytes
        out, writes, emitted, entries = await agent.fold_record(e)
        await agent.settle(e, out, writes, emitted, entries, [None] * len(out.futures))
    return producer.sent, dict(table.data), counters.changes


async def test_the_track_agent_folds_a_record_made_as_it_folds_it_read() -> None:
    counters = Counters()
    made = MadeRecords(counters)
    records = await made_and_sent(Producer(), Counters(), made)
    taken = await fold_all(records, made)
    assert counters.made_hits == len(records)
    assert taken == await fold_all(records, None)
    assert taken[2] > len(records)  # the fleet moved: events were emitted


async def test_the_sink_cuts_a_record_made_as_it_cuts_it_read() -> None:
    made = MadeRecords(Counters())
    records = await made_and_sent(Producer(), Counters(), made)
    read, taken = [], []
    for offset, (key, value, partition) in enumerate(records):
        pos = Position("t.snapshots", partition, offset)
        read.append(Record(pos, value, key))
        taken.append(Record(pos, value, key, made.get(value)))
    assert all(isinstance(r.parsed, Made) for r in taken)
    blocks, dead_letters = cut(taken, 1000, "t.changesets")
    assert (blocks, dead_letters) == cut(read, 1000, "t.changesets")
    assert sum(b.rows for b in blocks) > 100
