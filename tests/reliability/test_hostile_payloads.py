"""Scenario 4 (raw-topic half): 10,000 hostile payloads produced straight into ``<prefix>.raw``
among valid observations, and the valid observations' rate with them against without them.

Hostile kinds (``hostile.py``): truncated JSON, bad UTF-8, NaN and Infinity, 10 MB bodies (2
garbage, 2 valid objects with a 10 MB string), 10,000-deep nesting (100 arrays of 20 KB, 100
objects of 60 KB), wrong types, huge metadata (2 maps of 2 MB), non-objects, empty and null
bodies; about 9,800 of them small.
Kafka's default limit is about 1 MB per record: the test's raw topic is created with
``max.message.bytes`` = 16 MiB and its producer with ``max_request_size`` = 16 MiB; the
pipeline's own topics keep the broker default, which is why a dead letter keeps at most
``pipeline.core.dlq.MAX_ORIGINAL`` bytes of the original and a snapshot over
``agents.app.MAX_RECORD`` bytes is a dead letter, not a crash.

**How the rates are compared.** One normalise worker reads one raw topic made of 16 segments of
about 29,000 valid single-observation records each (after a warm-up segment, not counted):
clean and mixed alternately, the hostile records spread at random through the mixed ones (4% of
their records, the 10,000 in all). Each segment's valid records have a source of their own, so
each snapshot names its segment; a segment's rate is its snapshots over the time between its 5th
and 95th percentile snapshot timestamps (the partitions cross a segment's edges at slightly
different times). Clean and mixed rates are then of one process, interleaved in time, so the
machine's load, its clock and the process's own speed hit both alike: 93%, 95%, 93% and 94% in
four runs (2026-12-04). Two workers side by side, one clean and one mixed, gave 88-99%, and two
clean ones 99-105%: one process of the same code is a few percent faster or slower than another,
as much as the hostile records cost (docs/reliability.md, scenario 4).

Pass criteria: the worker never crashes and exits cleanly; every hostile record is in
``<prefix>.dlq`` exactly once with a reason and its position (10 MB originals cut to
``MAX_ORIGINAL`` and marked); every valid record becomes a snapshot; valid records flow in the
mixed segments at least at 90% of their rate in the clean ones (the issue's criterion); and
over the mixed segments, records (valid and hostile) flow at least at 80% of the clean rate, i.e.
no hostile record stalls the stream (a stall of a few seconds on a 10 MB record would fall
below). ``--reliability-long`` runs segments twice as long.

What a hostile record costs: Faust's per-record consumer work, as a valid single-observation
record does (50,000 small hostile records among 52,000 valid ones cost 290 µs of the worker's
CPU each, a valid one 250-290 µs), and its dead letter. So at 4% of the records the valid rate
is expected at about 96% of the clean rate.
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

from pipeline.core.records import Rejected
from tests.reliability.harness import Fleet, Proc, wait_for, write_config
from tests.reliability.hostile import bodies, raw_record
from tests.support.kafka import PARTITIONS, delete_topics, group_done, publish, read_all, snapshot_entries
from tests.support.workload import envelopes

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

HOSTILE = 10_000  # fixed by the issue
SEGMENTS = 16  # clean, mixed, clean, mixed, ...
SEGMENT_BATCHES = 4_500  # about 29,000 valid observations a segment
WARMUP_BATCHES = 3_000
MAX_BYTES = 16 * 1024 * 1024


async def create_raw(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}.raw", PARTITIONS, 1,
                                            topic_configs={"max.message.bytes": str(MAX_BYTES)})])
    finally:
        await admin.close()


def start(tmp: Path, bootstrap: str, prefix: str, records: list[tuple[bytes, bytes]]) -> Proc:
    """Publish ``records`` to ``<prefix>.raw`` and start a normalise worker on them."""
    asyncio.run(create_raw(bootstrap, prefix))
    asyncio.run(publish(bootstrap, f"{prefix}.raw", records, max_request_size=MAX_BYTES))
    (tmp / prefix).mkdir()
    config = write_config(tmp / prefix, bootstrap, prefix, sim_port=1, fleet=Fleet(), extern_sim=False)
    return Proc(config, tmp / f"{prefix}.log", "worker", "--agents", "normalise")


Records = list[tuple[bytes, bytes]]


def valid_records(batches: int, segment: str, seed: int) -> Records:
    return [(e.key.encode(), e.to_json()) for e in envelopes(batches, seed=seed, source=segment)]


def interleave(valid: Records, hostile: Records) -> Records:
    """``hostile`` spread evenly through ``valid``."""
    step = len(valid) // max(len(hostile), 1)
    out: Records = []
    for i, record in enumerate(hostile):
        out += [*valid[i * step:(i + 1) * step], record]
    return out + valid[len(hostile) * step:]


def segment_span(stamps: list[int]) -> tuple[float, float]:
    """A segment's rate as (snapshots, seconds): those between its 5th and 95th percentile
    snapshot timestamps."""
    stamps = sorted(stamps)
    lo, hi = stamps[len(stamps) // 20], stamps[len(stamps) * 19 // 20]
    return sum(lo <= t <= hi for t in stamps), max(hi - lo, 1) / 1000


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Any:
    name = f"rel-{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(delete_topics(kafka_bootstrap, name))


@pytest.mark.timeout(900)
def test_hostile_payloads_go_to_the_dlq_without_slowing_valid_records(
        tmp_path: Path, kafka_bootstrap: str, prefix: str, long_run: bool) -> None:
    size = SEGMENT_BATCHES * (2 if long_run else 1)
    hostile = [(kind, *raw_record(kind, body, i)) for i, (kind, body) in enumerate(bodies(HOSTILE))]
    random.Random(4).shuffle(hostile)  # the large ones spread through the mixed segments
    share = len(hostile) // (SEGMENTS // 2)
    stream = valid_records(WARMUP_BATCHES, "warmup", 10)
    segments: dict[str, tuple[int, int]] = {}  # name -> (valid, hostile records)
    for n in range(SEGMENTS):
        name, good = f"segment{n}", valid_records(size, f"segment{n}", 11 + n)
        mine = hostile[n // 2 * share:(n // 2 + 1) * share] if n % 2 else []
        stream += interleave(good, [(key, value) for _, key, value in mine])
        segments[name] = (len(good), len(mine))

    worker = start(tmp_path, kafka_bootstrap, prefix, stream)
    worker.start()
    try:
        # The worker commits a raw record once its snapshots and dead letters are delivered; the
        # group's committed offsets are cheap to read (counting packed snapshots is not, and would
        # take CPU from the worker while it is measured).
        wait_for(lambda: asyncio.run(group_done(kafka_bootstrap, prefix, [f"{prefix}.raw"])) is not None,
                 "every record processed", 600, worker)
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    text = worker.text()
    assert "Traceback" not in text, text[-4000:]
    assert "crashed" not in text.lower(), text[-4000:]

    entries = asyncio.run(snapshot_entries(kafka_bootstrap, f"{prefix}.snapshots"))
    assert not [e for _, e in entries if isinstance(e, Rejected)]
    assert len(entries) == len(stream) - len(hostile)
    stamps: dict[str, list[int]] = {}
    for record, entry in entries:
        if isinstance(entry, dict):
            stamps.setdefault(entry["source"], []).append(record.timestamp)
    spans = {name: segment_span(stamps[name]) for name in segments}
    assert all(len(stamps[name]) == valid for name, (valid, _) in segments.items())
    clean = [name for name, (_, bad) in segments.items() if not bad]
    mixed = [name for name, (_, bad) in segments.items() if bad]
    baseline, rate = (sum(spans[n][0] for n in names) / sum(spans[n][1] for n in names)
                      for names in (clean, mixed))
    for name in segments:
        count, seconds = spans[name]
        valid, bad = segments[name]
        print(f"{name}: {valid:,} valid, {bad:,} hostile: {count / seconds:,.0f} valid/s, "
              f"{count * (valid + bad) / valid / seconds:,.0f} records/s")
    print(f"clean segments {baseline:,.0f} valid/s; mixed {rate:,.0f} valid/s ({rate / baseline:.0%})")

    dead = [orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, f"{prefix}.dlq"))]
    positions = {(d["partition"], d["offset"]) for d in dead}
    assert len(dead) == len(positions) == len(hostile)
    assert all(d["reason"] and d["stage"] == "normalise" and d["source"] == "hostile" for d in dead)
    assert {d["key"].split("/")[1] for d in dead} == {key.decode().split("/")[1] for _, key, _ in hostile}
    assert all(d.get("original_truncated") for d in dead if d["key"].split("/")[1].startswith("10mb"))
    # No hostile record stalls the stream: over the mixed segments, records (valid and hostile) flow
    # at 80% of the clean rate or better (a stall of a few seconds on a 10 MB record would fall below).
    # Not per segment: one segment of ~10 s can lose 25% to the machine's load alone.
    records = rate * sum(v + b for v, b in (segments[n] for n in mixed)) / sum(segments[n][0] for n in mixed)
    assert records >= 0.8 * baseline, f"{records:,.0f} records/s against a clean {baseline:,.0f}/s"
    # The figure: valid records alone.
    assert rate >= 0.9 * baseline, f"{rate:,.0f} valid/s against a clean {baseline:,.0f}/s"
