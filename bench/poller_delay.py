"""Part (b) of the poller bench: time from a simulated status change to its raw record in Kafka.

The simulator runs in real time (``speed`` simulated seconds per wall second) from the instant
at which the fleet is ``share`` terminal (:func:`bench.poller_calls.start_for_share`), one of the
fleets of :mod:`bench.poller_calls`. Our :class:`~pipeline.polling.poller.SourcePoller` (its schedule on
the simulator's clock) polls it as :meth:`SourcePoller.run` does (a cycle, then the poll
interval) and publishes as the pipeline does, through :class:`pipeline.polling.buffer.BufferedPublisher`
into :class:`pipeline.kafka.Publisher`, to the ``raw`` topic of a bench-only prefix, which a
concurrent aiokafka consumer reads.

A transition's wall instant is ``wall_ref + (at - sim_ref) / speed``, with ``(wall_ref,
sim_ref)`` read together after the first (discovery) cycle. Its delay is the consume time of the
first raw record of that batch carrying that status, minus that instant (the record's producer
timestamp gives a second figure, without the consumer's fetch). Counted: transitions from the end
of the discovery cycle to ``margin`` before the end of polling, so that no transition is cut off
by the end of the run (``margin``: the active interval, two poll intervals and 5 s). A counted
transition never seen in Kafka is reported: as ``superseded`` when its status lasted less than
the active interval plus the longest measured poll period (cycle start to next cycle start: the
cycle's own duration plus the poll interval), so a per-batch schedule may step over it, else as
``lost``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from bench.poller_calls import SOURCE, sim_clock, sim_config, source_config, start_for_share
from pipeline.config import KafkaConfig
from pipeline.kafka import Publisher, ensure_topics
from pipeline.polling.buffer import BufferedPublisher
from pipeline.polling.poller import SourcePoller
from simulator.server import Simulator
from tests.support.kafka import delete_topics


class ShiftedClock:
    """``time.monotonic()`` plus a shift, so the simulator can start at a chosen instant."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


@dataclass(slots=True)
class DelayResult:
    consume: list[float] = field(default_factory=list)  # seconds, one per detected transition
    produce: list[float] = field(default_factory=list)  # by the record's producer timestamp
    superseded: int = 0
    lost: int = 0
    cycles: list[float] = field(default_factory=list)  # wall seconds per cycle after the first
    period: float = 0.0  # longest wall seconds from one cycle start to the next
    hold: float = 0.0  # wall seconds a status must last to count as lost when unseen
    records: int = 0


Arrivals = dict[tuple[str, str], tuple[float, float]]  # (batch, status) -> (consumed, produced)


async def consume(consumer: AIOKafkaConsumer, arrivals: Arrivals, stop: asyncio.Event) -> int:
    """Note the first arrival of each (batch, status) until ``stop``; returns records read."""
    n = 0
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100)
        now = time.time()
        for records in batch.values():
            for r in records:
                n += 1
                payload = orjson.loads(r.value)["payload"]
                arrivals.setdefault((payload["id"], str(payload.get("status"))), (now, r.timestamp / 1000))
    return n


async def poll(poller: SourcePoller, interval: float, until: float,
               progress: Callable[[str], None]) -> list[float]:
    """Cycles (each followed by the interval) until the monotonic time ``until``; their durations."""
    durations: list[float] = []
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            started = time.monotonic()
            await poller.poll_once(session)
            durations.append(time.monotonic() - started)
            if len(durations) % 10 == 0:
                progress(f"  cycle {len(durations)}: {durations[-1]:.2f} s")
            await asyncio.sleep(interval)
    return durations


def tally(fleet: list[Any], window: tuple[float, float], ref: tuple[float, float], speed: float,
          period: float, arrivals: Arrivals, active: float = 0.0) -> DelayResult:
    """``period`` and ``active`` in wall seconds."""
    result = DelayResult(period=period, hold=period + active)
    wall_ref, sim_ref = ref
    for b in fleet:
        steps = list(b.timeline)
        for i, (status, at) in enumerate(steps):
            if not window[0] < at <= window[1]:
                continue
            seen = arrivals.get((b.id, status))
            if seen is None:
                lasted = (steps[i + 1][1] if i + 1 < len(steps) else float("inf")) - at
                result.superseded += lasted < result.hold * speed
                result.lost += lasted >= result.hold * speed
                continue
            true_wall = wall_ref + (at - sim_ref) / speed
            result.consume.append(seen[0] - true_wall)
            result.produce.append(seen[1] - true_wall)
    return result


@dataclass(frozen=True, slots=True)
class Setup:
    batches: int
    share: float
    interval: float  # poll interval, wall seconds
    active: float  # active interval, wall seconds
    fleet: str = "sim"
    seed: int = 42
    speed: float = 60.0
    page_limit: int = 100


async def measure(bootstrap: str, setup: Setup, duration: float,
                  progress: Callable[[str], None] = lambda _: None) -> DelayResult:
    kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=f"bench-poller-{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka, ("raw",))
    try:
        return await _measure(kafka, setup, duration, progress)
    finally:
        await delete_topics(bootstrap, kafka.topic_prefix + ".")


async def _measure(kafka: KafkaConfig, setup: Setup, duration: float,
                   progress: Callable[[str], None]) -> DelayResult:
    interval, speed = setup.interval, setup.speed
    clock, stop = ShiftedClock(), asyncio.Event()
    arrivals: Arrivals = {}
    consumer = AIOKafkaConsumer(kafka.topic("raw"), bootstrap_servers=kafka.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    reader = asyncio.create_task(consume(consumer, arrivals, stop))
    try:
        config = sim_config(setup.batches, setup.seed, speed, setup.fleet, setup.share)
        async with Simulator(config, clock=clock) as sim, Publisher(kafka) as pub:
            buffer = BufferedPublisher(pub)
            await buffer.start()
            fleet = sim.sources[SOURCE].fleet
            clock.shift = start_for_share(fleet, setup.share) / speed
            source = source_config(sim, interval * speed, setup.active * speed, setup.page_limit)
            poller = SourcePoller(source, buffer, clock=sim_clock(sim))
            progress("  discovery cycle (the whole fleet)...")
            async with aiohttp.ClientSession() as session:
                await poller.poll_once(session)
            ref, first = (time.time(), sim.now()), sim.now()
            margin = setup.active + 2 * interval + 5.0
            try:
                durations = await poll(poller, interval, time.monotonic() + duration + margin, progress)
            finally:
                await buffer.stop()
            window = (first, sim.now() - margin * speed)
        await asyncio.sleep(1.0)  # the consumer catches up with the last acknowledged records
    finally:
        stop.set()
        records = await reader
        await consumer.stop()
    period = max(durations, default=0.0) + interval
    result = tally(fleet, window, ref, speed, period, arrivals, setup.active)
    result.cycles, result.records = durations, records
    return result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]

