"""The record contract of docs/records.md: packing by partition, readers, rejects by index."""

from __future__ import annotations

import orjson
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise_raw
from pipeline.core.records import (
    Rejected,
    murmur2,
    pack_changes,
    pack_raw,
    pack_snapshots,
    partition_of,
    read_changes,
    read_raw,
    read_snapshots,
)
from pipeline.providers import envelope as observed

AT = "2026-01-01T00:00:00.000Z"


def envelopes(ids: list[str], source: str = "s") -> list[Envelope]:
    return [Envelope(source, "openai", AT, {"id": i, "status": "in_progress"}, i) for i in ids]


@given(st.lists(st.text(min_size=1, max_size=30), max_size=40), st.integers(1, 12))
def test_packing_keeps_partition_and_order(ids: list[str], partitions: int) -> None:
    sent = envelopes(ids)
    records = pack_raw(sent, partitions)
    seen: list[Envelope] = []
    for rec in records:
        got = read_raw(rec.value, rec.key)
        assert all(isinstance(e, Envelope) for e in got)
        assert len(got) == rec.count
        for e in got:
            assert isinstance(e, Envelope)
            key = observed(e.source, e.provider, e.observed_at, e.payload).key  # the id read again
            assert partition_of(key.encode(), partitions) == rec.partition
        seen.extend(e for e in got if isinstance(e, Envelope))
    assert sorted(e.payload["id"] for e in seen) == sorted(ids)
    for p in {r.partition for r in records}:  # within a partition, the envelopes' order holds
        mine = [e for r in records if r.partition == p for e in read_raw(r.value)]
        assert mine == [e for e in sent if partition_of(e.key.encode(), partitions) == p]


def test_partition_of_is_kafkas_default() -> None:
    keys = [f"src/batch_{i}".encode() for i in range(500)]
    default = DefaultPartitioner()
    assert all(partition_of(k, 7) == default(k, list(range(7)), list(range(7))) for k in keys)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=1000))
def test_partition_of_matches_aiokafkas_partitioner_on_any_key(key: bytes, partitions: int) -> None:
    everyone = list(range(partitions))
    assert murmur2(key) == aiokafka_murmur2(key)
    assert partition_of(key, partitions) == DefaultPartitioner()(key, everyone, everyone)


# The Java client's own vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2), as signed ints.
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829,
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}


def test_the_hash_is_the_java_clients_murmur2() -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key
        assert partition_of(key, 2**31 - 1) == (signed & 0x7FFFFFFF) % (2**31 - 1)


def test_a_lone_envelope_is_published_as_version_1() -> None:
    (rec,) = pack_raw(envelopes(["b1"]), 4)
    assert rec.value == envelopes(["b1"])[0].to_json()
    assert rec.key == b"s/b1"


def test_records_are_cut_at_the_budget() -> None:
    sent = [Envelope("s", "openai", AT, {"id": f"b{i}", "pad": "x" * 1000}, f"b{i}") for i in range(50)]
    records = pack_raw(sent, 1, budget=10_000)
    assert len(records) > 1
    assert all(len(r.value) < 12_000 for r in records)
    assert [e for r in records for e in read_raw(r.value)] == sent


def test_a_bad_payload_is_rejected_alone_with_its_index() -> None:
    value = orjson.dumps({"v": 2, "source": "s", "provider": "openai", "observed_at": AT,
                          "payloads": [{"id": "a"}, "junk", {"id": "b"}]})
    got = read_raw(value, b"s/a")
    assert [type(x).__name__ for x in got] == ["Envelope", "Rejected", "Envelope"]
    bad = got[1]
    assert isinstance(bad, Rejected)
    assert bad.index == 1
    assert orjson.loads(bad.original)["payload"] == "junk"


def test_unreadable_records_are_one_reject() -> None:
    for value, why in [(b"not json", "not valid JSON"), (b'{"v": 9}', "unknown version"),
                       (b'{"v": 2, "source": "s", "provider": "p", "observed_at": "t"}', "'payloads'"),
                       (b'{"source": "s", "provider": "p", "observed_at": "t"}', "'payload'")]:
        (rej,) = read_raw(value, b"k")
        assert isinstance(rej, Rejected)
        assert why in rej.reason
        assert (rej.original, rej.index) == (value, 0)


def test_snapshot_records() -> None:
    items = [(b"k1", b'{"a":1}'), (b"k2", b'{"b":2}')]
    packed = pack_snapshots(items)
    assert packed == (b"k1", b'{"v":2,"snapshots":[{"a":1},{"b":2}]}')
    assert read_snapshots(packed[1]) == [{"a": 1}, {"b": 2}]
    assert pack_snapshots(items[:1]) == items[0]
    assert read_snapshots(b'{"a":1}') == [{"a": 1}]
    got = read_snapshots(b'{"v":2,"snapshots":[{"a":1},3]}', b"k")
    assert got[0] == {"a": 1}
    assert isinstance(got[1], Rejected)
    assert got[1].index == 1
    (rej,) = read_snapshots(b'{"v":2}')
    assert isinstance(rej, Rejected)
    assert "'snapshots'" in rej.reason


def test_normalise_raw_keeps_the_good_observations_and_names_the_bad_one() -> None:
    good = [Envelope("s", "openai", AT, {"id": f"b{i}", "object": "batch", "status": "in_progress",
                                         "created_at": 1_790_000_000, "endpoint": "/v1/chat/completions",
                                         "completion_window": "24h"}) for i in range(3)]
    value = orjson.dumps({"v": 2, "source": "s", "provider": "openai", "observed_at": AT,
                          "payloads": [good[0].payload, {"id": "b9", "created_at": "x"}, 7, good[2].payload]})
    items, rejected = normalise_raw(value, b"s/b0")
    assert [(k, i) for k, _, i in items] == [(b"s/b0", 0), (b"s/b2", 3)]
    assert [orjson.loads(v)["batch_id"] for _, v, _ in items] == ["b0", "b2"]
    assert [r.index for r in rejected] == [1, 2]
    assert rejected[0].key == b"s/b9"
    assert orjson.loads(rejected[0].original)["payload"]["id"] == "b9"


def test_normalise_raw_refuses_a_snapshot_over_the_limit() -> None:
    big = Envelope("s", "openai", AT, {"id": "b1", "object": "batch", "status": "in_progress",
                                       "created_at": 1_790_000_000, "metadata": {"blob": "x" * 5000}})
    items, rejected = normalise_raw(big.to_json(), b"s/b1", max_bytes=4000)
    assert items == []
    assert "over the 4000-byte record limit" in rejected[0].reason


def test_change_sets_pack_in_order_and_cut_at_the_budget() -> None:
    events = [orjson.dumps({"event_id": str(i), "pad": "x" * 40}) for i in range(5)]
    [whole] = pack_changes(events)
    assert read_changes(whole) == [orjson.loads(e) for e in events]
    cut = pack_changes(events, budget=2 * len(events[0]) + 2)
    assert [len(read_changes(v)) for v in cut] == [2, 2, 1]  # one record at least, each in budget
    assert [e for v in cut for e in read_changes(v)] == [orjson.loads(e) for e in events]
    assert pack_changes([]) == []


def test_a_change_set_reads_a_lone_event_and_names_a_bad_entry() -> None:
    assert read_changes(b'{"event_id": "a"}') == [{"event_id": "a"}]  # a record of one
    bad = read_changes(b'{"v": 2, "changes": [{"event_id": "a"}, 3]}', b"k")
    assert bad[0] == {"event_id": "a"}
    assert bad[1] == Rejected("change record: entry 1 is not an object (int)", 1, b"3", b"k")
    [whole] = read_changes(b'{"v": 2, "snapshots": []}', b"k")
    assert isinstance(whole, Rejected)
    assert whole.reason == "change record: 'changes' missing or not a list"
