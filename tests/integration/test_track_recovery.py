"""The track agent on the real Kafka broker: SIGKILL mid-stream, restart, recover from the changelog.

A worker running the normalise and track agents (``python -m agents.worker``) consumes raw
envelopes of a simulated fleet that the test publishes itself, so the expected change events
are known exactly (the pure fold of the same envelopes). The worker is killed with SIGKILL
while it works through them and started again; the memory store rebuilds the table from the
changelog, the RocksDB store from its local files and the changelog (rocksdict is part of the
test extra).
Afterwards ``<prefix>.changes`` must hold every expected event, nothing else, and no
``event_id`` twice with different content; every record must validate against the JSON
Schema. Two unreadable records become dead letters on the way.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.config import KafkaConfig
from pipeline.core.transitions import Rules
from pipeline.kafka import ensure_topics
from tests.change_schema import validate
from tests.support.kafka import PARTITIONS, Worker, count, publish, read_all, wait_committed, write_config
from tests.support.workload import envelopes, expected_changes

pytestmark = pytest.mark.integration

BATCHES = 3000  # about 20,000 observations: several seconds of the worker's work
RULES = Rules(stall_seconds=3600.0, progress_min_interval=0.0)
DEADLINE = 150.0


@pytest.fixture(params=["memory", "rocksdb"])
def worker(request: pytest.FixtureRequest, tmp_path: Path, kafka_bootstrap: str,
           topic_prefix: str) -> Iterator[Worker]:
    if request.param == "rocksdb" and importlib.util.find_spec("rocksdict") is None:
        pytest.fail("the RocksDB store needs rocksdict, part of the test extra: pip install -e '.[test]'")
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, RULES, store=request.param)
    w = Worker(config, tmp_path / "worker.log")
    try:
        yield w
    finally:
        w.kill(signal.SIGTERM)


def wait_for_changes(bootstrap: str, topic: str, at_least: int, worker: Worker) -> None:
    """Until ``topic`` holds ``at_least`` records (its end offsets: cheap, so the kill lands
    where it is meant to)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.tail()}")
        if asyncio.run(count(bootstrap, topic)) >= at_least:
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {at_least} records in {topic}:\n{worker.tail()}")


def test_track_recovers_after_sigkill(worker: Worker, kafka_bootstrap: str, topic_prefix: str) -> None:
    kafka = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    asyncio.run(ensure_topics(kafka))
    observed = envelopes(BATCHES)
    expected = {e.event_id: e.to_json() for e in expected_changes(observed, RULES)}
    raw = [(e.key.encode(), e.to_json()) for e in observed]
    half = len(raw) // 2
    bad_raw, bad_snapshot = b"{not json", b'{"source": "x"}'
    asyncio.run(publish(kafka_bootstrap, kafka.topic("raw"), [*raw[:half], (b"x/1", bad_raw)]))
    asyncio.run(publish(kafka_bootstrap, kafka.topic("snapshots"), [(b"x/2", bad_snapshot)]))

    first = sum(1 for _ in expected_changes(observed[:half], RULES))
    worker.start()
    # The bad records are in the first half. A record processed but not yet committed when the
    # worker dies is processed again after the restart, its dead letter with it (dead letters are
    # at least once); the test counts them once, so the first half is committed before the kill.
    # (A slower worker used to be killed long after its commit; this one finishes the first half
    # in about a second.)
    wait_committed(kafka_bootstrap, topic_prefix, [kafka.topic("raw"), kafka.topic("snapshots")], worker)
    asyncio.run(publish(kafka_bootstrap, kafka.topic("raw"), raw[half:]))
    wait_for_changes(kafka_bootstrap, kafka.topic("changes"), first + (len(expected) - first) // 4, worker)
    worker.kill(signal.SIGKILL)  # mid-stream: a quarter of the second half's events are out
    before = len(asyncio.run(read_all(kafka_bootstrap, kafka.topic("changes"))))
    assert before < len(expected), "the worker finished before it was killed: use more batches"

    worker.start()
    wait_for_changes(kafka_bootstrap, kafka.topic("changes"), len(expected), worker)
    # Once the group has committed every record, anything extra (a re-discovery after a lost
    # table) has landed.
    wait_committed(kafka_bootstrap, topic_prefix, [kafka.topic("raw"), kafka.topic("snapshots")], worker)

    records = asyncio.run(read_all(kafka_bootstrap, kafka.topic("changes")))
    contents: dict[str, set[bytes]] = {}
    for record in records:
        event = validate(record.value)
        assert record.key == f"{event['source']}/{event['batch_id']}".encode()
        contents.setdefault(event["event_id"], set()).add(record.value)
    differing = {i: c for i, c in contents.items() if len(c) > 1}
    assert not differing, f"{len(differing)} event ids with differing content"
    assert {i: c.pop() for i, c in contents.items()} == expected  # none missing, none extra

    changelog = asyncio.run(read_all(kafka_bootstrap, f"{topic_prefix}-batch_state-changelog"))
    assert {r.key for r in changelog} == {e.key.encode() for e in observed}

    dead = [orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, kafka.topic("dlq")))]
    assert sorted(d["stage"] for d in dead) == ["normalise", "track"]
    for letter in dead:
        assert letter["reason"]
        assert letter["source"] == "x"
        assert isinstance(letter["partition"], int)
        assert isinstance(letter["offset"], int)
        original = base64.b64decode(letter["original_b64"])
        assert original == (bad_raw if letter["stage"] == "normalise" else bad_snapshot)
        assert letter["topic"] == kafka.topic("raw" if letter["stage"] == "normalise" else "snapshots")
