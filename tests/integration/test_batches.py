"""``agents.batches.Batches`` against the real broker, with an idempotent aiokafka producer as the
worker's: every record lands once, in the order appended per partition, many records share a
batch (one future), each future resolves once its whole batch is on the broker, and a record too
large for a request is refused at once with the cause the agents read as a size refusal; a record
without a partition lands where the producer's own ``send`` would put its key, and a topic's
linger gathers its records into one batch, which goes with the next batch of another topic."""

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
        batches = Batches(lambda: producer, MAX_REQUEST)
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
        batches = Batches(lambda: producer, 10_000)
        with pytest.raises(ProducerSendError) as raised:
            await batches.send(topic, b"k", b"x" * 20_000, 0, None, None)
        assert "Kafka refused a snapshot" in refusal(raised.value, "snapshot", 20_001)
        fine = await batches.send(topic, b"k", b"small", 0, None, None)  # the partition goes on
        assert (await fine).partition == 0
    finally:
        await producer.stop()


async def test_a_record_without_a_partition_goes_where_its_key_sends_it(kafka_bootstrap: str,
                                                                         topic_prefix: str) -> None:
    """A dead letter has no partition: it lands where the producer's own ``send`` puts its key."""
    producer, topic = await started(kafka_bootstrap, topic_prefix)
    keys = [f"source-{i}/batch_{i * 7919}".encode() for i in range(40)]
    try:
        batches = Batches(lambda: producer, MAX_REQUEST)
        ours = await asyncio.gather(*[await batches.send(topic, key, b"ours", None, None, None)
                                      for key in keys])
        theirs = await asyncio.gather(*[await producer.send(topic, b"theirs", key=key) for key in keys])
    finally:
        await producer.stop()
    assert len({m.partition for m in theirs}) > 1  # the keys spread: the test can tell partitions apart
    records = await read_all(kafka_bootstrap, topic)
    landed = {(r.key, r.value): r.partition for r in records}
    assert [landed[(key, b"ours")] for key in keys] == [m.partition for m in theirs]
    assert len(ours) == len(keys)


async def test_a_lingering_topic_gathers_a_stream_of_records_into_one_batch(kafka_bootstrap: str,
                                                                            topic_prefix: str) -> None:
    """Records sent 10 ms apart: without a linger each goes in a batch of its own, with the
    topic's linger they share one batch (one produce request, one future)."""
    producer, topic = await started(kafka_bootstrap, topic_prefix)

    async def futures(batches: Batches) -> set[int]:
        sent = []
        for i in range(30):
            sent.append(await batches.send(topic, b"k", f"{i}".encode(), 0, None, None))
            await asyncio.sleep(0.01)  # a record every 10 ms: the previous one is handed by then
        await asyncio.gather(*sent)
        return {id(f) for f in sent}

    try:
        alone = await futures(Batches(lambda: producer, MAX_REQUEST))
        gathered = await futures(Batches(lambda: producer, MAX_REQUEST, {topic: 0.5}))
    finally:
        await producer.stop()
    assert len(alone) > 5, len(alone)
    assert len(gathered) == 1
    assert len(await read_all(kafka_bootstrap, topic)) == 60


async def test_a_lingering_batch_goes_with_the_next_batch_of_another_topic(kafka_bootstrap: str,
                                                                           topic_prefix: str) -> None:
    producer, topic = await started(kafka_bootstrap, topic_prefix)
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    await ensure_topics(config, ("dlq",))
    dlq = config.topic("dlq")
    try:
        batches = Batches(lambda: producer, MAX_REQUEST, {dlq: 60.0})
        letter = asyncio.ensure_future(await batches.send(dlq, b"k", b"bad", None, None, None))
        await asyncio.sleep(0.3)
        assert not letter.done()  # lingering: nothing else was handed
        snapshot = await batches.send(topic, b"k", b"good", 1, None, None)
        await asyncio.wait_for(asyncio.gather(letter, snapshot), 10)  # not the 60 s linger
    finally:
        await producer.stop()
    assert [r.value for r in await read_all(kafka_bootstrap, dlq)] == [b"bad"]
