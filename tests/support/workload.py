"""Raw envelopes, snapshots and records of a simulated fleet, and the changes they imply.

:func:`envelopes` (the track-recovery and redelivery tests): each batch is observed when it
enters each status and halfway to the next one (request counts move), in time order per batch,
interleaved across batches. :func:`deliveries` (the transitions equivalence test and
``bench.track_logic_bench``): those observations as snapshot records, some twice and some late.

:func:`pages` (the broker benchmark): the same fleets as a poller sees them, one list page at a
time: every ``interval`` simulated seconds each source is listed newest first, ``PAGE`` batches a
page, and a page publishes the batches it holds that are not yet known to be terminal (a batch
is published once more when it turns terminal, then never again), all with the page's one
``observed_at``. That is what :class:`pipeline.polling.poller.SourcePoller` publishes with every active
batch due each interval, one ``Publisher.publish`` call per page.

:func:`fleet_snapshots` and :func:`as_records` (the sink tests and ``bench.sink_bench``): one
snapshot per status of each batch, as the sink's Kafka records.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise, zip_longest

from pipeline.clickhouse.sink import ClickHouseSink, Position, Record, cut
from pipeline.clickhouse.store import AsyncStore
from pipeline.core.models import TERMINAL, ChangeEvent, Envelope, Snapshot
from pipeline.core.normalise import normalise
from pipeline.core.timeutil import from_unix, iso_ms
from pipeline.core.transitions import BatchState, Rules, apply
from simulator.fleet import SimBatch, build_fleet
from simulator.server import openai_object

EPOCH = 1_790_000_000.0  # 2026-09-21: a fixed clock, so the workload is a pure function of its seed
POLL_LAG = 7.0
PAGE = 100  # batches per list page: the poller's default page_limit, the most every provider allows
INTERVAL = 300.0  # simulated seconds between two observations of an active batch: the default active_interval
# The fleet's busy hours: batches are created over the first 4 (CREATION_SPAN), and all but the
# expiring ones (24 h) have ended 2 h later. The hours after that observe a few expiring batches
# a page, a tail that would make the benchmark about them.
HOURS = 6.0


def observation_times(batch: SimBatch) -> list[float]:
    """Simulated times at which one batch is observed: each entry into a status and a midpoint."""
    times = [batch.created]
    for (_, start), (_, end) in pairwise(batch.timeline):
        times += [(start + end) / 2, end]
    return times


def batch_envelopes(batch: SimBatch, source: str) -> list[Envelope]:
    return [Envelope(source, "openai", iso_ms(from_unix(EPOCH + t + POLL_LAG)),
                     openai_object(batch, t, EPOCH), batch.id) for t in observation_times(batch)]


def envelopes(batches: int, seed: int = 11, source: str = "load") -> list[Envelope]:
    """Every observation of ``batches`` batches, round-robin across batches."""
    per_batch = [batch_envelopes(b, source) for b in build_fleet(seed, batches, source)]
    return [e for row in zip_longest(*per_batch) for e in row if e is not None]


def expected_changes(observed: list[Envelope], rules: Rules) -> Iterator[ChangeEvent]:
    """The change events the track agent must emit for these envelopes, delivered in order."""
    states: dict[str, BatchState] = {}
    for envelope in observed:
        snap = normalise(envelope)
        states[snap.key], events = apply(states.get(snap.key), snap, rules)
        yield from events


def pages(batches: int, sources: int = 1, interval: float = INTERVAL, seed: int = 11,
          page: int = PAGE, hours: float = HOURS) -> list[list[Envelope]]:
    """The poller's pages of ``sources`` sources of ``batches // sources`` batches each (at least
    one), cycle after cycle from the first batch's creation for ``hours`` simulated hours or until
    every batch is terminal and published as such; within a cycle, source after source, pages in
    list order. No page is empty; a batch is on at most one page of a cycle."""
    fleets = {f"{source_name(i)}": build_fleet(seed, max(1, batches // sources), source_name(i))
              for i in range(sources)}
    start = min(b.created for fleet in fleets.values() for b in fleet)
    newest_first = {s: sorted(f, key=lambda b: (b.created, b.id), reverse=True) for s, f in fleets.items()}
    settled: set[str] = set()
    out: list[list[Envelope]] = []
    total = sum(len(f) for f in fleets.values())
    cycle = 0
    while len(settled) < total and cycle * interval <= hours * 3600:
        t = start + cycle * interval
        observed_at = iso_ms(from_unix(EPOCH + t + POLL_LAG))
        for source, listed in newest_first.items():
            visible = [b for b in listed if b.created <= t]
            for first in range(0, len(visible), page):
                if due := [b for b in visible[first:first + page] if b.id not in settled]:
                    out.append([_observe(b, t, source, observed_at, settled) for b in due])
        cycle += 1
    return out


def source_name(index: int) -> str:
    return f"load-{index + 1}"


def _observe(batch: SimBatch, t: float, source: str, observed_at: str, settled: set[str]) -> Envelope:
    if batch.status_at(t) in TERMINAL:
        settled.add(batch.id)
    return Envelope(source, "openai", observed_at, openai_object(batch, t, EPOCH), batch.id)


# --- snapshot records as the track agent receives them: some twice, some late ------------------

DUPLICATE = 0.15  # share of observations delivered twice
LATE = 0.10  # share of observations delivered after the next one of the same batch
Delivery = tuple[bytes, bytes]  # (key, snapshot JSON)


def deliveries(batches: int, seed: int = 11) -> list[Delivery]:
    """Every batch's snapshot records, with duplicates and late ones, round-robin across batches."""
    rng = random.Random(seed)
    per_batch = []
    for batch in build_fleet(seed, batches, "load"):
        snaps = [normalise(e) for e in batch_envelopes(batch, "load")]
        per_batch.append(disorder([(s.key.encode(), s.to_json()) for s in snaps], rng))
    return [r for row in zip_longest(*per_batch) for r in row if r is not None]


def disorder(records: list[Delivery], rng: random.Random) -> list[Delivery]:
    """One batch's records with some repeated and some swapped with the next one."""
    out: list[Delivery] = []
    for record in records:
        out += [record, record] if rng.random() < DUPLICATE else [record]
    for i in range(len(out) - 1):
        if rng.random() < LATE:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


# --- snapshots as the sink's records ----------------------------------------------------------

SNAPSHOTS_TOPIC = "bench.snapshots"
SNAPSHOTS_EPOCH = datetime(2026, 10, 31, 20, 0, tzinfo=UTC).timestamp()  # the fleet's life spans two months


def fleet_snapshots(count: int, source: str = "bench", seed: int = 1) -> list[Snapshot]:
    """One snapshot per status each simulated batch goes through, observed when it got there,
    in observation order (as the poller publishes them)."""
    snaps = []
    for batch in build_fleet(seed=seed, count=count, source=source):
        for _, at in batch.timeline:
            observed = datetime.fromtimestamp(SNAPSHOTS_EPOCH + at + 1, UTC).isoformat()
            payload = openai_object(batch, at, SNAPSHOTS_EPOCH)
            snaps.append(normalise(Envelope(source, "openai", observed, payload)))
    return sorted(snaps, key=lambda s: s.observed_at)


def as_records(snaps: list[Snapshot], partitions: int = 4, topic: str = SNAPSHOTS_TOPIC) -> list[Record]:
    """Snapshots as Kafka records spread over partitions, with consecutive offsets per partition."""
    offsets = [0] * partitions
    records = []
    for snap in snaps:
        part = zlib.crc32(snap.key.encode()) % partitions
        records.append(Record(Position(topic, part, offsets[part]), snap.to_json()))
        offsets[part] += 1
    return records


async def store_in_order(store: AsyncStore, snaps: list[Snapshot], topic: str) -> None:
    """Write snapshots through the sink's own path (``cut`` + :class:`ClickHouseSink`), as records
    of one partition in the given order; calling it again with the same snapshots is a replay."""
    records = [Record(Position(topic, 0, i), s.to_json()) for i, s in enumerate(snaps)]
    blocks, bad = cut(records, 500, f"{topic}.changes")
    assert bad == []
    sink = ClickHouseSink(store)
    for block in blocks:
        await sink.write(block)
