"""Webhooks against polling alone (issue 15): terminal-state detection delay and API calls per hour.

One fleet (``--sources`` OpenAI, Azure OpenAI and Gemini sources of ``--batches`` batches each,
the simulator's seed), polled three ways in one run, each on a fresh simulator with the same seed:

- ``webhooks``: the simulator pushes signed webhooks (none lost, duplicated or forged) to the real
  receiver (:class:`pipeline.webhooks.receiver.Receiver`), which publishes the hints to Kafka
  (a bench-only prefix, deleted afterwards); :class:`pipeline.polling.hints.HintReader` hands them
  to the pollers, which poll as ``SourcePoller.run`` does (a cycle, then the poll interval,
  serving hints meanwhile) at a 30 s poll and a 300 s active interval;
- ``poll only, 300 s``: the same pollers and intervals, no webhooks;
- ``poll only, tuned``: no webhooks, poll and active interval both set to the ``webhooks`` p99,
  the interval at which polling alone would detect as fast.

Time: the first two run the simulator ``--speed`` times faster than real time (x60: the 30 s and
300 s intervals are 0.5 s and 5 s of wall time), and a polling delay in wall seconds is multiplied
by the speed to give the delay in a deployment; a push's delay is real time whatever the speed
(delivery, Kafka, the GET), so the ``webhooks`` delays are wall seconds as measured. The tuned arm
runs at speed 1, where wall and deployment time agree. A batch is detected when the poller hands
its first terminal observation to its publisher (a capture: the Kafka hop of the raw record,
measured by bench/poller_bench.py, is left out). Counted: terminal transitions from the end of the
first (discovery) cycle to the active interval + two poll intervals + 2 s before the end of
polling. Calls per hour: every request of the pollers in that window, per deployment hour.

    python -m bench.webhook_bench [--batches 1000] [--sources 3] [--seconds 60] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import report
from bench.poller_delay import percentile
from pipeline.config import KafkaConfig, Settings, SimulatorConfig, SourceConfig, WebhooksConfig
from pipeline.core.errors import BatchscopeError
from pipeline.core.models import TERMINAL, Envelope
from pipeline.core.secret import Secret
from pipeline.core.timeutil import iso_ms, utcnow
from pipeline.kafka import ensure_topics
from pipeline.polling.hints import HintReader
from pipeline.polling.poller import SourcePoller
from pipeline.providers import adapter
from pipeline.webhooks.receiver import Receiver
from simulator.server import Simulator
from tests.support.kafka import delete_topics
from tests.support.processes import free_port

SECRET = "whsec_" + base64.b64encode(b"webhook-bench-secret").decode()
PROVIDERS = ("openai", "azure_openai", "gemini")
POLL, ACTIVE = 30.0, 300.0  # deployment seconds
TUNED_SECONDS = 20.0  # wall seconds of the tuned arm (its cost needs no transitions)
NOTES = """The tuned arm polls every active batch at the webhooks' p99: its delays are few (at x1
few batches end in its window), its calls per hour are what matter. The webhooks delay starts when
the simulator's batch ends and includes its delivery (a 50 ms tick), not a real provider's own
delay before it sends. Polling alone at 300 s: p99 about the active interval (a cancellation,
failure or expiry far from a batch's expected end waits for it), p50 lower (batches in validating
and near their expected end are refreshed at the poll interval). With webhooks the calls per hour
are those of polling at 300 s plus one GET per batch end (a hint for a batch the poller already
saw terminal costs none)."""


def say(line: str) -> None:
    print(line, flush=True)


class Detections:
    """The publisher of one source's poller: notes when each batch was first seen terminal."""

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.adapter = adapter(source.provider)
        self.first: dict[str, float] = {}  # batch id -> time.monotonic() when first seen terminal

    async def publish(self, envelopes: list[Envelope]) -> None:
        now, observed = time.monotonic(), iso_ms(utcnow())
        for e in envelopes:
            if e.batch_id is None or e.batch_id in self.first:
                continue
            if self.adapter.normalise(e.payload, self.source.name, observed).status in TERMINAL:
                self.first[e.batch_id] = now


@dataclass(slots=True)
class Arm:
    name: str
    delays: list[float] = field(default_factory=list)  # deployment seconds
    missed: int = 0
    calls: int = 0
    hours: float = 0.0  # deployment hours of the window
    hint_gets: int = 0

    def row(self) -> dict[str, Any]:
        p50 = percentile(self.delays, 50) if self.delays else None
        p99 = percentile(self.delays, 99) if self.delays else None
        return {"arm": self.name, "transitions": len(self.delays), "missed": self.missed,
                "delay p50 (s)": p50, "delay p99 (s)": p99,
                "calls / hour": self.calls / self.hours if self.hours else None,
                "of which hint GETs / hour": self.hint_gets / self.hours if self.hours else None}


async def run_arm(name: str, args: argparse.Namespace, *, speed: float, poll: float, active: float,
                  seconds: float, webhooks: bool, prefix: str) -> Arm:
    """One way of polling the fleet for ``seconds`` of wall time; ``poll`` and ``active`` in
    deployment seconds."""
    hook_port = free_port()
    sim_config = SimulatorConfig(port=0, batches=args.batches, sources=args.sources, providers=PROVIDERS,
                                 seed=args.seed, speed=speed,
                                 webhook_url=f"http://127.0.0.1:{hook_port}/webhooks" if webhooks else "")
    kafka = KafkaConfig(bootstrap=args.bootstrap, topic_prefix=prefix, app_id=prefix)
    async with Simulator(sim_config, webhook_secret=SECRET) as sim:
        sources = tuple(SourceConfig(name=n, provider=sim.provider(n), base_url=sim.source_url(n),
                                     poll_interval=poll, active_interval=active, max_rps=1e6,
                                     webhook_secret_env="BENCH" if webhooks else "",
                                     webhook_secret=Secret(SECRET) if webhooks else None)
                        for n in sim.sources)
        sinks = {s.name: Detections(s) for s in sources}
        clock = lambda: sim.epoch + sim.now()  # noqa: E731 - the provider's time base
        pollers = [SourcePoller(s, sinks[s.name], clock=clock) for s in sources]
        settings = Settings(kafka=kafka, webhooks=WebhooksConfig(port=hook_port), sources=sources)
        receiver = Receiver(settings) if webhooks else None
        reader = HintReader(kafka, {p.source.name: p for p in pollers}) if webhooks else None
        if receiver is not None:
            await ensure_topics(kafka, ("hints",))
            await receiver.start()
        stop, first = asyncio.Event(), Countdown(len(pollers))
        wall_poll = poll / speed
        tasks = [asyncio.create_task(_poll(p, stop, wall_poll, first)) for p in pollers]
        if reader is not None:
            tasks.append(asyncio.create_task(reader.run()))
        try:
            await first.done.wait()
            wall_ref, sim_ref = time.monotonic(), sim.now()
            calls_before = _calls(pollers)
            gets_before = sum(p.metrics.hint_gets for p in pollers)
            await asyncio.sleep(seconds)
            arm = Arm(name, calls=_calls(pollers) - calls_before,
                      hint_gets=sum(p.metrics.hint_gets for p in pollers) - gets_before,
                      hours=seconds * speed / 3600)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if receiver is not None:
                await receiver.stop()
        margin = (active + 2 * poll) / speed + 2.0
        for src in sim.sources.values():
            for b in src.fleet:
                status, at = b.timeline[-1]
                when = wall_ref + (at - sim_ref) / speed
                if status not in TERMINAL or at < sim_ref or when > wall_ref + seconds - margin:
                    continue
                seen = sinks[src.name].first.get(src.snapshot_id(b))
                if seen is None:
                    arm.missed += 1
                else:
                    arm.delays.append((seen - when) * (1.0 if webhooks else speed))
    return arm


class Countdown:
    """Set once every poller of an arm finished its first (discovery) cycle."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()

    def one(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()


async def _poll(poller: SourcePoller, stop: asyncio.Event, wall_interval: float, first: Countdown) -> None:
    """As ``SourcePoller.run``, the interval in wall seconds (the source's is simulated)."""
    async with poller.client.session() as session:
        await _cycle(poller, session)
        first.one()
        while not stop.is_set():
            await poller.hints.serve(stop, wall_interval, lambda b: poller.on_hint(session, b))
            if not stop.is_set():
                await _cycle(poller, session)


async def _cycle(poller: SourcePoller, session: aiohttp.ClientSession) -> None:
    """One cycle; a failed one is reported and the next runs, as in ``SourcePoller.run``."""
    try:
        await poller.poll_once(session)
    except BatchscopeError as exc:
        say(f"source {poller.source.name}: cycle failed: {exc}")


def _calls(pollers: list[SourcePoller]) -> int:
    return sum(sum(p.metrics.requests.values()) for p in pollers)


async def bench(args: argparse.Namespace, progress: Callable[[str], None]) -> list[Arm]:
    prefix = f"bench-hooks-{uuid.uuid4().hex[:8]}"
    try:
        pushed = await run_arm("webhooks, active 300 s", args, speed=args.speed, poll=POLL, active=ACTIVE,
                               seconds=args.seconds, webhooks=True, prefix=prefix)
        progress(_line(pushed))
        polled = await run_arm("poll only, active 300 s", args, speed=args.speed, poll=POLL, active=ACTIVE,
                               seconds=args.seconds, webhooks=False, prefix=prefix)
        progress(_line(polled))
        target = max(0.05, percentile(pushed.delays, 99)) if pushed.delays else 1.0
        tuned = await run_arm(f"poll only, poll = active = {target:.2f} s", args, speed=1.0, poll=target,
                              active=target, seconds=TUNED_SECONDS, webhooks=False, prefix=prefix)
        progress(_line(tuned))
    finally:
        await delete_topics(args.bootstrap, prefix)
    return [pushed, polled, tuned]


def _line(arm: Arm) -> str:
    r = arm.row()
    return " | ".join(f"{k}: {report.cell(v)}" for k, v in r.items())


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=1000, help="batches per source (1000)")
    p.add_argument("--sources", type=int, default=3, help="sources, OpenAI, Azure, Gemini in turn (3)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second (60)")
    p.add_argument("--seconds", type=float, default=60.0, help="wall seconds measured per arm (60)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka broker (127.0.0.1:9092)")
    p.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.batches < 1 or args.sources < 1 or args.speed <= 0 or args.seconds <= 15:
        p.error("--batches and --sources at least 1, --speed positive, --seconds over 15")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    say(f"webhook bench: {args.sources} sources x {args.batches} batches, x{args.speed:g}, "
        f"{args.seconds:g} s per arm")
    arms = asyncio.run(bench(args, say))
    pushed = arms[0]
    p99 = percentile(pushed.delays, 99) if pushed.delays else float("inf")
    verdict = "met" if p99 <= 1.0 else "NOT met"
    say(f"webhooks p99 {p99:.3f} s: target p99 <= 1 s {verdict}")
    if args.record:
        notes = (f"{args.sources} sources (OpenAI, Azure OpenAI, Gemini) x {args.batches:,} batches, "
                 f"seed {args.seed}; {args.seconds:g} s of wall time per arm at x{args.speed:g} (the "
                 f"tuned arm: {TUNED_SECONDS:g} s at x1). Poll interval 30 s, active interval 300 s in "
                 "deployment time. Delays in deployment seconds: a polling delay is the wall delay "
                 "times the speed, a push's is wall time (see the module docstring). Target: webhooks "
                 f"p99 <= 1 s: {verdict}. " + NOTES)
        path = report.save("webhooks", "Webhooks: terminal-state detection delay and API calls per hour "
                           "against polling alone (issue 15)", [a.row() for a in arms], notes)
        say(f"recorded {path}")


if __name__ == "__main__":
    main()
