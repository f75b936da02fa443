"""The sink agent (a ``batchscope worker --agents sink`` on the real broker, chDB) with a snapshot
record of many whose second and third snapshots are bad, and a change set whose second event is
bad: the good ones are stored at their (offset, index), each bad one is a dead letter alone
naming its index, and the group commits past the records (issue 13)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import KafkaConfig
from pipeline.core.models import Snapshot
from pipeline.core.records import pack_changes
from pipeline.core.transitions import apply
from pipeline.kafka import ensure_topics
from tests.reliability.harness import Fleet, Proc, dump_offline, wait_for, write_config
from tests.support.kafka import PARTITIONS, committed, delete_topics, read_all

pytestmark = pytest.mark.integration

SNAP = Snapshot(source="sink-test", provider="openai", batch_id="a", status="in_progress",
                provider_status="in_progress", observed_at="2026-12-02T10:00:00.000Z",
                created_at="2026-12-02T09:00:00.000Z", requests_total=10, requests_completed=1)


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    name = f"sinkrec-{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(delete_topics(kafka_bootstrap, name))


async def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value=value, key=key, partition=0)
    finally:
        await producer.stop()


def test_a_bad_snapshot_of_many_is_a_dead_letter_alone(tmp_path: Path, kafka_bootstrap: str,
                                                       prefix: str) -> None:
    snapshots, changes = f"{prefix}.snapshots", f"{prefix}.changesets"
    kafka = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS, app_id=prefix)
    asyncio.run(ensure_topics(kafka, ("snapshots", "changesets", "dlq")))
    no_id = {k: v for k, v in orjson.loads(SNAP.to_json()).items() if k != "batch_id"}
    entries = [orjson.loads(SNAP.to_json()), 17, no_id, orjson.loads(replace(SNAP, batch_id="c").to_json())]
    _, (change,) = apply(None, replace(SNAP, batch_id="e"))
    asyncio.run(produce(kafka_bootstrap, [
        (snapshots, b"sink-test/a", orjson.dumps({"v": 2, "snapshots": entries})),
        (snapshots, b"sink-test/d", replace(SNAP, batch_id="d").to_json()),
        (changes, None, pack_changes([change.to_json(), b'{"kind": "status_changed"}'])[0]),
    ]))
    config = write_config(tmp_path, kafka_bootstrap, prefix, sim_port=1, fleet=Fleet(), extern_sim=False)
    worker = Proc(config, tmp_path / "worker.log", "worker", "--agents", "sink").start()
    group = f"{prefix}-sink"  # a sink without the track agent reads in its own group (agents.app.group_of)
    try:
        wait_for(lambda: asyncio.run(committed(kafka_bootstrap, group)).get((snapshots, 0), -1) >= 2
                 and asyncio.run(committed(kafka_bootstrap, group)).get((changes, 0), -1) >= 1,
                 "the sink to commit past every record", 90, worker)
        letters = wait_for(lambda: (found := asyncio.run(read_all(kafka_bootstrap, f"{prefix}.dlq")))
                           and len(found) >= 3 and found, "three dead letters", 30, worker)
        assert worker.alive()
    finally:
        worker.stop()

    tables = dump_offline(config)
    rows = sorted((r[1], r[5], r[6]) for r in tables["snapshots"])  # batch_id, offset, index
    assert rows == [("a", 0, 0), ("c", 0, 3), ("d", 1, 0)]
    assert len(tables["changes"]) == 1
    dead = sorted((orjson.loads(r.value) for r in letters), key=lambda d: (d["topic"], d["index"]))
    assert [(d["stage"], d["topic"], d["offset"], d["index"]) for d in dead] == [
        ("sink", changes, 0, 1), ("sink", snapshots, 0, 1), ("sink", snapshots, 0, 2)]
    # The bad event of the change set is a dead letter alone; the good one is stored.
    assert dead.pop(0)["reason"] == "observation 2 of 2: change event: 'snapshot' missing or not an object"
    assert dead[0]["reason"].startswith("observation 2 of 4: ")  # counted from 1; index from 0
    assert dead[1]["reason"] == "observation 3 of 4: snapshot: missing field 'batch_id'"
    assert [d["key"] for d in dead] == ["sink-test/a", "sink-test/a"]  # no batch_id of their own
    assert [orjson.loads(base64.b64decode(d["original_b64"])) for d in dead] == [17, no_id]
