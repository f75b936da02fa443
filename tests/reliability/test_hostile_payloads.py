"""Scenario 4 (raw-topic half): 10,000 hostile payloads produced straight into ``<prefix>.raw``
among valid observations, against a clean run of the same valid observations.

Hostile kinds (``hostile.py``): truncated JSON, bad UTF-8, NaN and Infinity, 10 MB bodies (2
garbage, 2 valid objects with a 10 MB string), 10,000-deep nesting (100 arrays of 20 KB, 100
objects of 60 KB), wrong types, huge metadata (2 maps of 2 MB), non-objects, empty and null
bodies; about 9,800 of them small. Spread at random through about 59,000 valid observations.
Kafka's default limit is about 1 MB per record: the test's raw topic is created with
``max.message.bytes`` = 16 MiB and its producer with ``max_request_size`` = 16 MiB; the
pipeline's own topics keep the broker default, which is why a dead letter keeps at most
``pipeline.dlq.MAX_ORIGINAL`` bytes of the original and a snapshot over
``agents.app.MAX_RECORD`` bytes is a dead letter, not a crash.

Pass criteria: the worker (normalise agent) never crashes and exits cleanly; every hostile record
is in ``<prefix>.dlq`` exactly once with a reason and its position (10 MB originals cut to
``MAX_ORIGINAL`` and marked); every valid record becomes a snapshot; valid records flow at least
at 90% of the clean baseline's rate measured in the same test (time from the first to the last
snapshot: the issue's criterion), and records (valid and hostile) at least at 80%, i.e. no
hostile record stalls the stream. ``--reliability-long`` runs three times the valid records.

In CI the 10,000 hostile records are 14% of the stream. A dead letter used to cost the agent as
much as a snapshot (one Faust send each), so the valid-only rate measured 71-85% of the clean
one; the agent now produces dead letters in bursts (``agents/deadletters.py``) and what a hostile
record still costs is Faust's per-record consumer work, which a valid record pays too (figures:
``docs/reliability.md``; the machine they were taken on is shared and noisy).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.broker import PARTITIONS, delete_topics, publish, read_all
from bench.workload import envelopes
from tests.reliability.harness import Fleet, Proc, end_offsets, wait_for, write_config
from tests.reliability.hostile import bodies, raw_record

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

HOSTILE = 10_000  # fixed by the issue
VALID_BATCHES = 9_000  # about 63,000 valid observations
MAX_BYTES = 16 * 1024 * 1024


async def create_raw(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}.raw", PARTITIONS, 1,
                                            topic_configs={"max.message.bytes": str(MAX_BYTES)})])
    finally:
        await admin.close()


def count(bootstrap: str, topic: str) -> int:
    return sum(asyncio.run(end_offsets(bootstrap, topic)).values())


def process(tmp: Path, bootstrap: str, prefix: str, records: list[tuple[bytes, bytes]], valid: int,
            dead: int) -> tuple[float, Proc]:
    """Publish, then run a normalise worker until ``valid`` snapshots and ``dead`` dead letters are
    out; returns valid snapshots per second and the stopped worker.

    The rate is taken from the snapshot records' own timestamps (the producer's send time): the
    first to the last snapshot, so neither the worker's start-up nor this test's polling counts.
    """
    asyncio.run(create_raw(bootstrap, prefix))
    asyncio.run(publish(bootstrap, f"{prefix}.raw", records, max_request_size=MAX_BYTES))
    (tmp / prefix).mkdir()
    config = write_config(tmp / prefix, bootstrap, prefix, sim_port=1, fleet=Fleet(), extern_sim=False)
    worker = Proc(config, tmp / f"{prefix}.log", "worker", "--agents", "normalise").start()
    try:
        wait_for(lambda: count(bootstrap, f"{prefix}.snapshots") >= valid
                 and count(bootstrap, f"{prefix}.dlq") >= dead, "every record processed", 240, worker)
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    stamps = sorted(r.timestamp for r in asyncio.run(read_all(bootstrap, f"{prefix}.snapshots")))
    return valid / max((stamps[-1] - stamps[0]) / 1000, 1e-3), worker


@pytest.fixture
def prefixes(kafka_bootstrap: str) -> Any:
    names = [f"rel-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield names
    for name in names:
        asyncio.run(delete_topics(kafka_bootstrap, name))


def test_hostile_payloads_go_to_the_dlq_without_slowing_valid_records(
        tmp_path: Path, kafka_bootstrap: str, prefixes: list[str], long_run: bool) -> None:
    valid = [(e.key.encode(), e.to_json()) for e in envelopes(VALID_BATCHES * (3 if long_run else 1))]
    hostile = [(kind, *raw_record(kind, body, i)) for i, (kind, body) in enumerate(bodies(HOSTILE))]
    rng = random.Random(4)
    rng.shuffle(hostile)  # the large ones spread through the stream
    step = len(valid) // len(hostile)
    mixed: list[tuple[bytes, bytes]] = []
    for i, (_, key, value) in enumerate(hostile):
        mixed += [*valid[i * step:(i + 1) * step], (key, value)]
    mixed += valid[len(hostile) * step:]

    clean_prefix, mixed_prefix = prefixes
    baseline, _ = process(tmp_path, kafka_bootstrap, clean_prefix, valid, len(valid), 0)
    rate, worker = process(tmp_path, kafka_bootstrap, mixed_prefix, mixed, len(valid), len(hostile))
    per_record = rate * len(mixed) / len(valid)
    print(f"valid records: {len(valid)}; hostile: {len(hostile)}; clean {baseline:,.0f} valid/s; with "
          f"hostile {rate:,.0f} valid/s ({rate / baseline:.0%}), {per_record:,.0f} records/s "
          f"({per_record / baseline:.0%})")

    text = worker.text()
    assert "Traceback" not in text, text[-4000:]
    assert "crashed" not in text.lower(), text[-4000:]
    dead = [orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, f"{mixed_prefix}.dlq"))]
    positions = {(d["partition"], d["offset"]) for d in dead}
    assert len(dead) == len(positions) == len(hostile)
    assert all(d["reason"] and d["stage"] == "normalise" and d["source"] == "hostile" for d in dead)
    assert {d["key"].split("/")[1] for d in dead} == {key.decode().split("/")[1] for _, key, _ in hostile}
    assert all(d.get("original_truncated") for d in dead if d["key"].split("/")[1].startswith("10mb"))
    assert count(kafka_bootstrap, f"{mixed_prefix}.snapshots") == len(valid)
    # No hostile record stalls the stream: records (valid and hostile) flow at 80% of the clean rate
    # or better (a stall of a few seconds on a 10 MB record would fall below).
    assert per_record >= 0.8 * baseline, f"{per_record:,.0f} records/s against a clean {baseline:,.0f}/s"
    # The figure: valid records alone.
    assert rate >= 0.9 * baseline, f"{rate:,.0f} valid/s against a clean {baseline:,.0f}/s"
