"""Snapshot records packed across raw records (``agents.packing``) and the normalise agent with
them: consecutive raw records of a partition share one snapshot record, in order; a full record
goes first; a record refused for its size makes each raw record send its own snapshots alone,
and only the one refused alone is a dead letter, named by its index in its own raw record."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from agents.counters import Counters
from agents.normalise import NormaliseAgent
from agents.packing import Packer
from pipeline.core.codec import ORJSON
from pipeline.core.models import Envelope
from pipeline.core.records import pack_raw, read_snapshots
from tests.support.workload import envelopes
from tests.unit.test_agent_units import AT, NONE, PARTITIONS, Producer, dead, event, settled


def snapshots(value: bytes) -> list[dict[str, Any]]:
    """The entries of a snapshot record, every one readable."""
    out = read_snapshots(value)
    assert all(isinstance(entry, dict) for entry in out)
    return cast(list[dict[str, Any]], out)


def item(key: str, n: int, size: int = 10) -> tuple[bytes, bytes, int]:
    return key.encode(), orjson.dumps({"key": key, "n": n, "pad": "x" * size}), n


async def test_raw_records_of_a_partition_share_one_snapshot_record_in_order() -> None:
    producer = Producer()
    packer = Packer(producer.send, "t.snapshots")
    first = packer.add(1, [item("a", 0), item("b", 1)])
    second = packer.add(1, [item("a", 2)])
    other = packer.add(2, [item("c", 0)])
    assert first[0][0] is second[0][0] is not other[0][0]
    assert not packer.due()
    assert producer.sent == []
    await packer.flush()
    sent = [(p, [s["n"] for s in snapshots(v)]) for _, _, v, p in producer.sent]
    assert sent == [(1, [0, 1, 2]), (2, [0])]
    assert (await first[0][0].delivered).offset == 1  # settled by the producer's delivery
    assert packer.holding == 0


async def test_a_record_that_would_pass_the_budget_is_closed_first() -> None:
    producer = Producer()
    packer = Packer(producer.send, "t.snapshots", budget=200)
    shares = packer.add(0, [item("a", 0, 100), item("a", 1, 100)])
    assert len(shares) == 2
    assert shares[0][0] is not shares[1][0]
    assert packer.due()  # a filled record waits
    await packer.flush()
    assert [[s["n"] for s in snapshots(v)] for _, _, v, _ in producer.sent] == [[0], [1]]


async def test_many_waiting_raw_records_make_the_records_due() -> None:
    packer = Packer(Producer().send, "t.snapshots", most=3)
    for n in range(3):
        packer.add(0, [item("a", n)])
        packer.held()
    assert packer.due()
    packer.drop()


async def test_the_first_waiting_raw_record_waits_at_most_the_linger() -> None:
    producer = Producer()
    packer = Packer(producer.send, "t.snapshots", linger=0.01)
    [(record, _)] = packer.add(0, [item("a", 0)])
    packer.held()
    assert producer.sent == []
    await asyncio.wait_for(record.delivered, timeout=5)  # sent by the timer, no flush called
    assert len(producer.sent) == 1
    assert packer.holding == 0


async def test_dropped_records_are_never_sent() -> None:
    producer = Producer()
    packer = Packer(producer.send, "t.snapshots")
    [(record, _)] = packer.add(0, [item("a", 0)])
    packer.drop()
    await packer.flush()
    assert record.delivered.cancelled()
    assert producer.sent == []


class Refusing(Producer):
    """Refuses at once any snapshot record of more than ``most`` bytes, as the producer's size
    check does (a ``ProducerSendError`` caused by ``MessageSizeTooLargeError``)."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: None, headers: None) -> asyncio.Future[Any]:
        if topic == "t.snapshots" and len(value) > self.most:
            raise ProducerSendError("too large") from MessageSizeTooLargeError("too large")
        return await super().send(topic, key, value, partition, timestamp, headers)


async def test_a_shared_record_refused_sends_each_snapshot_alone_and_dead_letters_only_the_big_one() -> None:
    page = [Envelope("s", "openai", AT, e.payload, e.batch_id) for e in envelopes(40)]
    [record, *_] = sorted((p for p in pack_raw(page, PARTITIONS) if p.count > 2), key=lambda p: -p.count)
    body = orjson.loads(record.value)
    big = dict(body["payloads"][1], metadata={"note": "x" * 3000})  # alone it is still too large
    first = orjson.dumps({**body, "payloads": [*body["payloads"][:1], big]})
    second = orjson.dumps({**body, "payloads": body["payloads"][2:]})
    producer, counters = Refusing(most=2500), Counters()
    agent = NormaliseAgent(producer.send, "t.snapshots", PARTITIONS, ORJSON, 512 * 1024,
                           dead(producer, counters), NONE, NONE, counters)
    futures_a, then_a = await agent.one(event("t.raw", record.partition, 7, record.key, first))
    futures_b, then_b = await agent.one(event("t.raw", record.partition, 8, record.key, second))
    await agent.packer.flush()  # one record of both: refused
    await then_a(await settled(futures_a))
    await then_b(await settled(futures_b))
    sent = [s["batch_id"] for *_, value, _ in producer.on("t.snapshots") for s in snapshots(value)]
    ids = [p["id"] for p in body["payloads"]]
    assert sent == [ids[0], *ids[2:]]  # each alone, in order; the big one not
    [(_, _, letter, _)] = producer.on("t.dlq")
    assert (orjson.loads(letter)["index"], orjson.loads(letter)["offset"]) == (1, 7)
