"""A vanish on its way: the poller's raw record (version 3), the normalise agent's marker, the
track agent's one ``purged`` or ``vanished`` event (once, under redelivery and replay), and the
sink, which writes no snapshot row for it. The agents as units (tests/unit/test_agent_units.py)."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from agents.counters import Counters
from agents.normalise import NormaliseAgent
from agents.track import TrackAgent
from pipeline.clickhouse.sink import Position, Record, cut, snapshots_of
from pipeline.core.codec import ORJSON
from pipeline.core.models import TERMINAL, Envelope, Snapshot
from pipeline.core.normalise import normalise, normalise_raw
from pipeline.core.records import (
    VANISHED,
    is_vanish,
    pack_raw,
    pack_snapshots,
    partition_of,
    read_raw,
    read_snapshots,
)
from pipeline.core.transitions import Rules
from tests.change_schema import validate
from tests.support.workload import envelopes
from tests.unit.test_agent_units import NONE, PARTITIONS, Producer, Table, dead, event, settled

AT = "2026-12-03T10:00:00.000Z"
LATER = "2026-12-03T11:00:00.000Z"


def gone(batch_id: str, source: str = "s", observed_at: str = LATER) -> Envelope:
    return Envelope.vanish(source, "openai", observed_at, batch_id)


# The raw record.

def test_vanishes_are_packed_apart_in_version_3_records_by_partition() -> None:
    page = [Envelope("s", "openai", LATER, e.payload, e.batch_id) for e in envelopes(6)[:6]]
    ids = [f"batch_{i}" for i in range(12)]
    packed = pack_raw(page + [gone(b) for b in ids], PARTITIONS)
    vanishes = [p for p in packed if orjson.loads(p.value).get("v") == VANISHED]
    assert sorted(b for p in vanishes for b in orjson.loads(p.value)["vanished"]) == sorted(ids)
    assert all(orjson.loads(p.value)["source"] == "s" for p in vanishes)
    for record in vanishes:
        read = read_raw(record.value)
        assert all(isinstance(e, Envelope) and e.vanished for e in read)
        assert {partition_of(cast(Envelope, e).key.encode(), PARTITIONS) for e in read} == {record.partition}
    others = [e for p in packed if p not in vanishes for e in read_raw(p.value)]
    assert not any(cast(Envelope, e).vanished for e in others)
    assert len(others) == len(page)


def test_a_lone_vanish_is_its_own_version_3_record() -> None:
    one = gone("b1")
    [record] = pack_raw([one], PARTITIONS)
    assert orjson.loads(record.value) == orjson.loads(one.to_json()) == {
        "v": 3, "source": "s", "provider": "openai", "observed_at": LATER, "vanished": ["b1"]}
    assert read_raw(record.value) == [one]


def test_a_provider_object_cannot_pass_for_a_vanish() -> None:
    forged = Envelope("s", "openai", AT, {"vanished": True, "batch_id": "b1", "id": "b1"})
    [entry] = read_raw(forged.to_json())
    assert isinstance(entry, Envelope)
    assert not entry.vanished


@pytest.mark.parametrize("bad", [None, "", 7, "x" * 2000])
def test_a_bad_batch_id_is_a_rejected_observation_alone(bad: Any) -> None:
    value = orjson.dumps({"v": 3, "source": "s", "provider": "openai", "observed_at": LATER,
                          "vanished": ["b1", bad]})
    items, rejected = normalise_raw(value)
    assert [orjson.loads(v)["batch_id"] for _, v, _ in items] == ["b1"]
    [why] = rejected
    assert why.index == 1
    assert why.reason == "raw record: vanished 1 is not a batch id"


@pytest.mark.parametrize("head", [{"vanished": "b1"}, {"vanished": ["b1"], "source": ""}, {}])
def test_a_version_3_record_that_cannot_be_read_is_one_dead_letter(head: dict[str, Any]) -> None:
    value = orjson.dumps({"v": 3, "source": "s", "provider": "openai", "observed_at": LATER, **head})
    items, [why] = normalise_raw(value, b"s/b1")
    assert items == []
    assert (why.index, why.original, why.key) == (0, value, b"s/b1")
    assert why.reason.startswith("raw record: ")


def test_an_unknown_provider_or_a_bad_time_is_rejected() -> None:
    for head in ({"provider": "nope", "observed_at": LATER}, {"provider": "openai", "observed_at": "soon"}):
        value = orjson.dumps({"v": 3, "source": "s", **head, "vanished": ["b1"]})
        items, [why] = normalise_raw(value)
        assert items == []
        assert (why.index, why.key) == (0, b"s/b1")


# The normalise agent.

async def test_normalise_passes_each_vanish_on_as_a_marker_to_its_partition() -> None:
    producer, counters = Producer(), Counters()
    agent = NormaliseAgent(producer.send, "t.snapshots", PARTITIONS, ORJSON, 512 * 1024,
                           dead(producer, counters), NONE, NONE, counters)
    for record in pack_raw([gone(f"b{i}") for i in range(8)], PARTITIONS):
        futures, then = await agent.one(event("t.raw", record.partition, 0, record.key, record.value))
        await agent.packer.flush()
        await then(await settled(futures))
    markers = [(p, m) for _, _, value, p in producer.on("t.snapshots") for m in read_snapshots(value)]
    assert len(markers) == 8
    assert producer.on("t.dlq") == []
    for partition, marker in markers:
        assert isinstance(marker, dict)
        assert is_vanish(marker)
        assert marker == {"vanished": True, "source": "s", "provider": "openai",
                          "batch_id": marker["batch_id"], "observed_at": LATER}
        assert partition == partition_of(f"s/{marker['batch_id']}".encode(), PARTITIONS)


# The track agent.

def track_agent() -> tuple[TrackAgent, Producer, Table]:
    producer, counters, table = Producer(), Counters(), Table()
    agent = TrackAgent(producer.send, "t.changes", "t.changesets", cast(Any, table), "t.changelog",
                       PARTITIONS, Rules(),
                       ORJSON, 1_000_000, producer.handed, dead(producer, counters), NONE, NONE, counters)
    return agent, producer, table


async def fold(agent: TrackAgent, producer: Producer, key: bytes, value: bytes, offset: int) -> list[bytes]:
    """One snapshot record through the agent, its states written; the change events it sent."""
    before = len(producer.on("t.changes"))
    e = event("t.snapshots", partition_of(key, PARTITIONS), offset, key, value)
    out, writes, emitted, entries = await agent.fold_record(e)
    await agent.settle(e, out, writes, emitted, entries, await settled(out.futures))
    return [v for _, _, v, _ in producer.on("t.changes")[before:]]


def marker(snap: Snapshot, observed_at: str = LATER) -> tuple[bytes, bytes]:
    """The normalise agent's marker of a vanish of the snapshot's batch."""
    items, _ = normalise_raw(gone(snap.batch_id, snap.source, observed_at).to_json())
    [(key, value, _)] = items
    return key, value


@pytest.mark.parametrize(("final", "kind"), [(True, "purged"), (False, "vanished")])
async def test_track_reports_a_vanish_once_as_purged_or_vanished(final: bool, kind: str) -> None:
    agent, producer, table = track_agent()
    snap = normalise(envelopes(1)[-1] if final else envelopes(1)[0])
    assert (snap.status in TERMINAL) == final
    key = snap.key.encode()
    await fold(agent, producer, key, snap.to_json(), 0)
    before = table.data[key]
    mkey, mvalue = marker(snap)
    assert mkey == key
    [change] = await fold(agent, producer, key, mvalue, 1)
    event_ = validate(change)
    assert (event_["kind"], event_["at"], event_["observed_at"]) == (kind, LATER, LATER)
    assert event_["snapshot"]["status"] == snap.status
    assert (event_["schema_version"], event_["from_status"], event_["to_status"]) == (2, None, None)
    assert orjson.loads(table.data[key])["purged"] is True
    # redelivered (or the poller says it again): nothing more
    assert await fold(agent, producer, key, mvalue, 2) == []
    assert await fold(agent, producer, key, marker(snap, "2026-12-04T00:00:00.000Z")[1], 3) == []
    # replayed from the state before it (a crash before the state was written): the same event
    table.data[key] = before
    assert await fold(agent, producer, key, mvalue, 1) == [change]


async def test_track_reports_nothing_for_a_batch_it_never_tracked() -> None:
    agent, producer, table = track_agent()
    key, value = marker(normalise(envelopes(1)[0]))
    assert await fold(agent, producer, key, value, 0) == []
    assert table.data == {}
    assert producer.on("t.dlq") == []


async def test_a_marker_in_a_record_of_many_is_folded_in_its_place() -> None:
    agent, producer, _table = track_agent()
    snap = normalise(envelopes(1)[-1])
    key = snap.key.encode()
    _, value = pack_snapshots([(key, snap.to_json()), marker(snap)])
    changes = [orjson.loads(c)["kind"] for c in await fold(agent, producer, key, value, 0)]
    assert changes == ["discovered", "purged"]


# The sink.

def test_the_sink_writes_no_snapshot_row_for_a_marker() -> None:
    snap = normalise(envelopes(1)[0])
    key = snap.key.encode()
    _, many = pack_snapshots([(key, snap.to_json()), marker(snap), (key, snap.to_json())])
    rec = Record(Position("t.snapshots", 0, 5), many, key)
    assert [cast(tuple[int, bytes, Any], found)[0] for found in snapshots_of(rec)] == [0, 2]
    lone = Record(Position("t.snapshots", 0, 6), marker(snap)[1], key)
    assert list(snapshots_of(lone)) == []
    blocks, dead_letters = cut([rec, lone], 100, "t.changes")
    assert dead_letters == []
    assert [(o, i) for b in blocks for o, i, _ in b.snapshots] == [(5, 0), (5, 2)]

