"""A record the consumer drops is read again, once, before the records after it, and the
partition drains.

Faust 0.15 can drop a record at start-up or a rebalance: its read offset moves past a record no
agent ever received (reliability scenario 2 found it). The worker here (normalise + track, real
broker) has raw records dropped on purpose (``BATCHSCOPE_FAULT_DROP``, see
``agents.redelivery.drop_once``): the first observation in partition 0 that alone shows a status
of its batch, so that processing it after the next observation would fold its transition away.
The normalise agent must hold the records after the hole and read the partition again from it
(``Redelivery.admit``): every raw record becomes exactly one snapshot, every expected change
event is emitted (nothing reordered), no event id has two contents, the group's lag drains to
zero, and every batch's tracked state ends at its true final status.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import KafkaConfig
from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise
from pipeline.core.transitions import Rules
from pipeline.kafka import ensure_topics
from tests.support.faults import FAULT_ENV, plugin_env
from tests.support.kafka import Worker, publish, read_all, snapshot_entries, wait_committed, write_config
from tests.support.workload import envelopes, expected_changes

pytestmark = pytest.mark.integration

BATCHES = 100
RULES = Rules(stall_seconds=3600.0, progress_min_interval=0.0)
DEADLINE = 90.0


def revealing(records: list[Any]) -> tuple[int, int]:
    """The offsets in raw partition 0 of the first status some batch shows in no other record:
    from its first observation to its last (the workload observes each status twice). Dropped,
    and processed after the batch's next observation, its transitions are folded into one
    (in_progress -> completed, no finalizing)."""
    seen: dict[bytes, list[tuple[int, str]]] = {}
    for r in sorted((r for r in records if r.partition == 0), key=lambda r: r.offset):
        seen.setdefault(r.key, []).append((r.offset, normalise(Envelope.from_json(r.value)).status))
    spans = []
    for observed in seen.values():
        statuses = [status for _, status in observed]
        for i in range(1, len(observed) - 1):
            if statuses[i] != statuses[i - 1] and statuses[-1] != statuses[i]:
                same = [offset for offset, status in observed if status == statuses[i]]
                spans.append((same[0], same[-1]))
    return min(spans)


@pytest.mark.parametrize("jump", [
    False,  # records never handed to the agents
    # ... and counted done, as Faust's fetch loop counts a jump of its read position
    # (Consumer._add_gap): Faust alone commits past them, and they are lost.
    True,
], ids=["dropped", "jumped"])
def test_a_dropped_record_is_read_again_once(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str,
                                             jump: bool) -> None:
    kafka = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=4)
    asyncio.run(ensure_topics(kafka))
    observed = envelopes(BATCHES)
    expected = {e.event_id: e.to_json() for e in expected_changes(observed, RULES)}
    raw = [(e.key.encode(), e.to_json()) for e in observed]
    asyncio.run(publish(kafka_bootstrap, kafka.topic("raw"), raw))

    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, RULES)
    first, last = revealing(asyncio.run(read_all(kafka_bootstrap, kafka.topic("raw"))))
    count = last - first + 1
    spec = f"{kafka.topic('raw')}:0:{first}-{last}" + (":jump" if jump else "")
    worker = Worker(config, tmp_path / "worker.log", env=plugin_env(**{FAULT_ENV: spec}))
    worker.start()
    topics = [kafka.topic("raw"), kafka.topic("snapshots")]
    try:
        wait_committed(kafka_bootstrap, topic_prefix, topics, worker, timeout=DEADLINE)
    finally:
        worker.kill(signal.SIGTERM)

    log = worker.log.read_text(errors="replace")
    assert log.count("fault injected") == count, "the fault was not injected: the test proves nothing"
    assert "reading the partition again" in log, log[-4000:]

    entries = asyncio.run(snapshot_entries(kafka_bootstrap, kafka.topic("snapshots")))
    snapshots = [orjson.dumps(s) for _, s in entries]
    doubled = [k for k, n in Counter(snapshots).items() if n > 1]
    assert not doubled, f"{len(doubled)} snapshots produced twice"
    assert len(snapshots) == len(raw)

    records = asyncio.run(read_all(kafka_bootstrap, kafka.topic("changes")))
    ids = Counter(orjson.loads(r.value)["event_id"] for r in records)
    assert not [i for i, n in ids.items() if n > 1], "an event emitted twice"
    assert set(ids) == expected.keys()  # read again before the later records: nothing reordered

    final = {e.key.encode(): normalise(e).status for e in observed}  # round-robin: the last is final
    table = {}
    for r in sorted(asyncio.run(read_all(kafka_bootstrap, f"{topic_prefix}-batch_state-changelog")),
                    key=lambda r: (r.partition, r.offset)):
        table[r.key] = orjson.loads(r.value)["status"]
    assert table == final
