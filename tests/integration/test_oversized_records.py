"""Records Kafka refuses for their size are dead letters, and their partition goes on (issue 12,
points 4 and 6).

One worker runs the normalise and track agents on the real broker. Partition 0 of its raw topic
holds a valid observation, then an envelope whose ``source`` is 500 KiB (its snapshot fits the
snapshot limit, but with its key, ``source/batch_id``, the record is over the producer's
1,000,000-byte ``max_request_size``), then another valid observation. Partition 0 of its snapshot
topic holds, besides what the normalise agent sends there, a snapshot of about 1 MB (the test's
producer may send it, but the change event that embeds it is over the producer's limit), and one of
400 KB, whose change event the producer sends but the broker refuses: the test creates the changes
topic with ``max.message.bytes`` = 300,000.

Before the fix both made the agent crash in a loop (``ProducerSendError`` outside any ``try``):
no dead letter, no later record processed, the partition's commit stalled.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.core.models import Envelope
from pipeline.core.records import partition_of
from tests.reliability.harness import Fleet, Proc, wait_for, write_config
from tests.support.kafka import PARTITIONS, committed, delete_topics, read_all, topic_ends

pytestmark = pytest.mark.integration

MAX_BYTES = 4 * 1024 * 1024  # the test topics' max.message.bytes and the test producer's limit


def envelope(source: str, batch_id: str, status: str = "in_progress") -> Envelope:
    payload = {"id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "status": status,
               "created_at": 1_790_000_000, "completion_window": "24h",
               "request_counts": {"total": 10, "completed": 1, "failed": 0}, "metadata": {}}
    return Envelope(source, "openai", "2026-12-02T10:00:00.000Z", payload, batch_id)


def in_partition_0(stem: str) -> str:
    """A batch id like ``stem`` whose key ``track-test/<id>`` belongs to partition 0: the track agent
    keeps a batch's state in its key's partition, and dead-letters a snapshot found elsewhere."""
    return next(f"{stem}_{n}" for n in range(1000)
                if partition_of(f"track-test/{stem}_{n}".encode(), PARTITIONS) == 0)


HUGE, MID = in_partition_0("batch_huge"), in_partition_0("batch_mid")


def snapshot(batch_id: str, size: int) -> bytes:
    """A snapshot record with a metadata value of ``size`` bytes."""
    return orjson.dumps({"source": "track-test", "provider": "openai", "batch_id": batch_id,
                         "status": "in_progress", "provider_status": "in_progress",
                         "observed_at": "2026-12-02T10:00:00.000Z", "metadata": {"blob": "x" * size}})


async def create_topics(bootstrap: str, prefix: str) -> None:
    """raw and snapshots with a 4 MiB record limit, so that the test can put oversized records in;
    changes with a 300,000-byte one, so that the broker refuses what the producer sends."""
    limits = {"raw": MAX_BYTES, "snapshots": MAX_BYTES, "changes": 300_000}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}.{name}", PARTITIONS, 1,
                                            topic_configs={"max.message.bytes": str(limit)})
                                   for name, limit in limits.items()])
    finally:
        await admin.close()


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """(topic, key, value) in order, all to partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_BYTES)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value=value, key=key, partition=0)
    finally:
        await producer.stop()


def records(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(read_all(bootstrap, topic))


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Any:
    name = f"big-{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(delete_topics(kafka_bootstrap, name))


def test_records_kafka_refuses_are_dead_letters_and_the_partition_goes_on(
        tmp_path: Path, kafka_bootstrap: str, prefix: str) -> None:
    raw, snapshots = f"{prefix}.raw", f"{prefix}.snapshots"
    asyncio.run(create_topics(kafka_bootstrap, prefix))
    big_source = envelope("s" * 500 * 1024, "batch_big")
    asyncio.run(produce(kafka_bootstrap, [
        (raw, b"sim/batch_before", envelope("sim", "batch_before").to_json()),
        (snapshots, f"track-test/{HUGE}".encode(), snapshot(HUGE, 1_000_000)),
        (snapshots, f"track-test/{MID}".encode(), snapshot(MID, 400_000)),
        (raw, b"sim/batch_big", big_source.to_json()),
        (raw, b"sim/batch_after", envelope("sim", "batch_after").to_json()),
    ]))
    config = write_config(tmp_path, kafka_bootstrap, prefix, sim_port=1, fleet=Fleet(), extern_sim=False)
    worker = Proc(config, tmp_path / "worker.log", "worker", "--agents", "normalise,track").start()
    try:
        letters = wait_for(lambda: (found := records(kafka_bootstrap, f"{prefix}.dlq")) and len(found) >= 3
                           and found, "three dead letters", 90, worker)
        wait_for(lambda: {r.key for r in records(kafka_bootstrap, f"{prefix}.changes")}
                 >= {b"sim/batch_before", b"sim/batch_after"}, "the later records' change events", 60, worker)
        # The worker commits past both refused records: nothing stalls the partitions.
        ends = {tp: end for tp, end in asyncio.run(topic_ends(kafka_bootstrap, [raw, snapshots])).items()
                if end}
        assert ends[(raw, 0)] == 3
        wait_for(lambda: all(asyncio.run(committed(kafka_bootstrap, prefix)).get(tp, -1) >= end
                             for tp, end in ends.items()), "commits past the refused records", 60, worker)
        assert worker.alive()
    finally:
        worker.stop()

    by_offset = {((letter := orjson.loads(r.value))["topic"], letter["offset"]): (r, letter) for r in letters}
    assert set(by_offset) == {(raw, 1), (snapshots, 0), (snapshots, 1)}, [by_offset.values()]
    record, letter = by_offset[(raw, 1)]
    assert letter["reason"].startswith("Kafka refused a snapshot of about"), letter["reason"]
    assert "MessageSizeTooLargeError" in letter["reason"]
    assert (letter["stage"], letter["partition"]) == ("normalise", 0)
    assert len(record.key) <= 1000  # the dead letter's key is cut, so the dead letter itself is sendable
    _, letter = by_offset[(snapshots, 0)]
    assert letter["stage"] == "track"
    assert letter["reason"].startswith("change event of"), letter["reason"]
    assert "over Kafka's" in letter["reason"]
    assert letter["original_truncated"] is True
    _, letter = by_offset[(snapshots, 1)]
    assert letter["stage"] == "track"
    assert letter["reason"].startswith("Kafka refused a change event of about"), letter["reason"]
    assert "MessageSizeTooLargeError" in letter["reason"]
    assert "crashed" not in worker.text().lower(), worker.tail()
