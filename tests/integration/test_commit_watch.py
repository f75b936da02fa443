"""The benchmarks' commit watch (:class:`tests.support.kafka.CommitWatch`) against the real broker:
a group is drained only once it has committed every record of every topic named."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import KafkaConfig
from pipeline.kafka import ensure_topics
from tests.support.kafka import PARTITIONS, CommitWatch, end_offsets, publish

pytestmark = pytest.mark.integration


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def scenario(bootstrap: str, prefix: str) -> None:
    await ensure_topics(KafkaConfig(bootstrap=bootstrap, topic_prefix=prefix, app_id=prefix,
                                    partitions=PARTITIONS))
    raw, snapshots = f"{prefix}.raw", f"{prefix}.snapshots"
    await publish(bootstrap, raw, [(b"a/%d" % i, b"{}") for i in range(5)])
    async with CommitWatch(bootstrap) as watch:
        assert await watch.count(raw) == 5
        assert await watch.done(prefix, [raw, snapshots]) is None  # nothing committed yet
        short = {TopicPartition(raw, p): end for p, end in (await end_offsets(bootstrap, raw)).items() if end}
        first = next(iter(short))
        await commit(bootstrap, prefix, {**short, first: short[first] - 1})
        assert await watch.done(prefix, [raw, snapshots]) is None  # one record left
        await commit(bootstrap, prefix, short)
        before = time.time()
        seen = await watch.done(prefix, [raw, snapshots])  # the empty snapshots topic needs nothing
        assert seen is not None
        assert before <= seen <= time.time()


async def test_a_group_is_done_once_it_committed_every_record(kafka_bootstrap: str,
                                                              topic_prefix: str) -> None:
    await scenario(kafka_bootstrap, topic_prefix)
