"""A record the consumer drops is read again, once, and the partition drains.

Faust 0.15 can drop a record at a rebalance: its read offset moves past a record no agent ever
received, so the committed offset stops below it for good (reliability scenario 2 stalled this
way). The worker here (normalise + track, real broker) has one raw record dropped on purpose
(``BATCHSCOPE_FAULT_DROP``, see ``agents.redelivery.drop_once``); the hole repair must find the
hole, read the partition again from it, and skip the records after it that were already done:
every raw record becomes exactly one snapshot, the group's lag drains to zero, no event id has
two contents, and every batch's tracked state ends at its true final status. (The dropped record
is processed after the later observations of its batch, so the transition it alone revealed may
be folded into the next one: a repair cannot restore the order, only the record.)
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agents.redelivery import FAULT_ENV
from bench.broker import Worker, publish, read_all, write_config
from bench.workload import envelopes, expected_changes
from pipeline.config import KafkaConfig
from pipeline.kafka import ensure_topics
from pipeline.normalise import normalise
from pipeline.transitions import Rules
from tests.reliability.harness import lag

pytestmark = pytest.mark.integration

BATCHES = 100
RULES = Rules(stall_seconds=3600.0, progress_min_interval=0.0)
DEADLINE = 90.0
DROPPED = (0, 7)  # raw partition, offset


def test_a_dropped_record_is_read_again_once(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> None:
    kafka = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=4)
    asyncio.run(ensure_topics(kafka))
    observed = envelopes(BATCHES)
    expected = {e.event_id: e.to_json() for e in expected_changes(observed, RULES)}
    raw = [(e.key.encode(), e.to_json()) for e in observed]
    asyncio.run(publish(kafka_bootstrap, kafka.topic("raw"), raw))

    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, RULES)
    spec = f"{kafka.topic('raw')}:{DROPPED[0]}:{DROPPED[1]}"
    worker = Worker(config, tmp_path / "worker.log", env={FAULT_ENV: spec})
    worker.start()
    topics = [kafka.topic("raw"), kafka.topic("snapshots")]
    try:
        deadline = time.monotonic() + DEADLINE
        while asyncio.run(lag(kafka_bootstrap, topic_prefix, topics)) or not worker.running():
            assert worker.running(), worker.tail()
            assert time.monotonic() < deadline, f"the group never drained:\n{worker.tail()}"
            time.sleep(1.0)
    finally:
        worker.kill(signal.SIGTERM)

    log = worker.log.read_text(errors="replace")
    assert "fault injected" in log, "the fault was not injected: the test proves nothing"
    assert "reading the partition again" in log, log[-4000:]

    snapshots = asyncio.run(read_all(kafka_bootstrap, kafka.topic("snapshots")))
    doubled = [k for k, n in Counter((r.key, r.value) for r in snapshots).items() if n > 1]
    assert not doubled, f"{len(doubled)} snapshots produced twice"
    assert len(snapshots) == len(raw)

    records = asyncio.run(read_all(kafka_bootstrap, kafka.topic("changes")))
    ids = Counter(orjson.loads(r.value)["event_id"] for r in records)
    assert not [i for i, n in ids.items() if n > 1], "an event emitted twice"
    assert len(set(ids) & expected.keys()) >= len(expected) - 2  # all but the dropped record's own

    final = {e.key.encode(): normalise(e).status for e in observed}  # round-robin: the last is final
    table = {}
    for r in sorted(asyncio.run(read_all(kafka_bootstrap, f"{topic_prefix}-batch_state-changelog")),
                    key=lambda r: (r.partition, r.offset)):
        table[r.key] = orjson.loads(r.value)["status"]
    assert table == final
