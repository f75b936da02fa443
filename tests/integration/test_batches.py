"""``agents.batches.Batches`` against the real broker, with an idempotent aiokafka producer as the
worker's: every record lands once, in the order appended per partition, many records share a
batch (one future), each future resolves once its whole batch is on the broker, and a record too
large for a request is refused at once with the cause the agents read as a size refusal."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faust.exceptions import ProducerSendError

from agents.batches import Batches
from agents.outputs import refusal
from pipeline.config import KafkaConfig
from pipeline.kafka import ensure_topics
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

PARTITIONS = 4  # as tests.support.kafka.read_all reads
MAX_REQUEST = 1_048_576


class Fallback:
    """Faust's ``send`` for records without a partition: kept, never sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: None, headers: None) -> asyncio.Future[Any]:
        self.calls.append((topic, key))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def started(bootstrap: str, topic_prefix: str) -> tuple[AIOKafkaProducer, str]:
    config = KafkaConfig(bootstrap=bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    await ensure_topics(config, ("raw",))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_batch_size=16_384)  # small: a burst fills many batches
    await producer.start()
    return producer, config.topic("raw")


async def test_records_land_once_in_order_with_one_future_per_batch(kafka_bootstrap: str,
                                                                    topic_prefix: str) -> None:
    producer, topic = await started(kafka_bootstrap, topic_prefix)
    try:
        batches = Batches(lambda: producer, Fallback().send, MAX_REQUEST)
        futures = []
        for i in range(6_000):
            value = f"{i:05d}".encode() + b"x" * 100
            futures.append(await batches.send(topic, f"k{i % 7}".encode(), value, i % PARTITIONS, None, None))
            if i % 25 == 0:
                await asyncio.sleep(0)  # the handing tasks run: later records start new batches
        results = await asyncio.gather(*futures)
        await batches.handed(topic, 0)
    finally:
        await producer.stop()
    records = await read_all(kafka_bootstrap, topic)
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    for partition, got in by_partition.items():
        sent = [i for i in range(6_000) if i % PARTITIONS == partition]
        assert [int(r.value[:5]) for r in got] == sent  # once each, in the order appended
    # A future's result is its batch's last record: the largest offset among the records it holds.
    last: dict[int, int] = defaultdict(int)
    offsets = {int(r.value[:5]): r.offset for r in records}
    for i, future in enumerate(futures):
        last[id(future)] = max(last[id(future)], offsets[i])
    assert all(result.offset == last[id(future)] for future, result in zip(futures, results, strict=True))
    distinct = len({id(f) for f in futures})
    assert 2 * PARTITIONS <= distinct < 6_000 // 10, distinct  # batched, and more than one batch


async def test_a_record_over_the_request_limit_is_refused_at_once(kafka_bootstrap: str,
                                                                 topic_prefix: str) -> None:
    producer, topic = await started(kafka_bootstrap, topic_prefix)
    try:
        batches = Batches(lambda: producer, Fallback().send, 10_000)
        with pytest.raises(ProducerSendError) as raised:
            await batches.send(topic, b"k", b"x" * 20_000, 0, None, None)
        assert "Kafka refused a snapshot" in refusal(raised.value, "snapshot", 20_001)
        fine = await batches.send(topic, b"k", b"small", 0, None, None)  # the partition goes on
        assert (await fine).partition == 0
    finally:
        await producer.stop()


async def test_a_record_without_a_partition_goes_through_faust(kafka_bootstrap: str) -> None:
    fallback = Fallback()
    batches = Batches(lambda: pytest.fail("no batch for a record without a partition"), fallback.send,
                      MAX_REQUEST)
    assert await (await batches.send("t.dlq", b"k", b"v", None, None, None)) is None
    assert fallback.calls == [("t.dlq", b"k")]
