"""Part (a) of the poller bench: API calls per poll cycle, ours against a naive poller.

Both pollers poll the same in-process simulator at the same simulated instants. The simulator's
clock is a :class:`StepClock` the bench moves by one active poll interval per cycle, so a whole
cycle sees one frozen instant, both pollers see the same fleet state, and the run is exactly
reproducible (no timing involved). The fleet starts at the first simulated instant, after every
batch was created, at which the requested share of it is terminal (:func:`start_for_share`).

Missed transitions, precisely. Cycle instants are ``t_0 < t_1 < ... < t_n``. For every batch the
*revealable* sequence is its true status (the simulator's fleet timeline) sampled at those
instants, with consecutive repeats removed: what an oracle that fetched every batch at every
instant would see. Its first element is the status at ``t_0`` (discovery); every later element is
a transition the poll granularity could reveal. A poller *missed* a transition when it never
observed that status for that batch during the run. A status that began and ended between two
instants is not revealable by any poller at that interval: it is counted apart
(``hidden_by_granularity``), for both pollers alike. Separately, an observation whose status
differs from the truth at its cycle instant is counted as ``wrong``. The naive poller fetches
every batch every cycle, so its observed sequence must equal the revealable one; the bench checks
that as a control of the definition itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.models import TERMINAL, Envelope
from pipeline.poller import SourcePoller
from pipeline.simulator import Simulator

SOURCE = "sim-1"
Observations = dict[str, list[tuple[int, str]]]  # batch id -> [(cycle, status)]


class StepClock:
    """A clock that moves only when told: ``Simulator(clock=...)`` reads it in seconds."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


class RecordingSink:
    """The poller's sink: keeps the status of every published payload, per cycle."""

    def __init__(self) -> None:
        self.cycle = 0
        self.seen: Observations = {}

    async def publish(self, envelopes: list[Envelope]) -> None:
        for e in envelopes:
            self.seen.setdefault(str(e.payload["id"]), []).append((self.cycle, str(e.payload.get("status"))))


class NaivePoller:
    """Lists every page of the source every cycle (the baseline), same aiohttp session and page size."""

    def __init__(self, base_url: str, page_limit: int) -> None:
        self.base_url, self.page_limit = base_url, page_limit
        self.requests = 0
        self.seen: Observations = {}

    async def poll_once(self, session: aiohttp.ClientSession, cycle: int) -> None:
        after: str | None = None
        while True:
            params = {"limit": str(self.page_limit), **({"after": after} if after else {})}
            async with session.get(f"{self.base_url}/batches", params=params) as resp:
                self.requests += 1
                resp.raise_for_status()
                page: dict[str, Any] = await resp.json()
            for obj in page["data"]:
                self.seen.setdefault(obj["id"], []).append((cycle, obj["status"]))
            if not page.get("has_more") or not page["data"]:
                return
            after = page["last_id"]


def lower_bound(fleet: Sequence[Any], t: float, page_limit: int) -> int:
    """Fewest calls at ``t`` for any poller that refreshes every active batch each cycle.

    It lists ``k >= 1`` pages newest first (new batches only appear there) and GETs each active
    batch beyond them: ``min over k of k + actives beyond page k``.
    """
    visible = sorted((b for b in fleet if b.created <= t), key=lambda b: (b.created, b.id), reverse=True)
    active = [b.status_at(t) not in TERMINAL for b in visible]
    pages = max(1, -(-len(visible) // page_limit))
    return min(k + sum(active[k * page_limit:]) for k in range(1, pages + 1))


def terminal_share(fleet: Sequence[Any], t: float) -> float:
    """Share of the batches created by simulated time ``t`` that are terminal at ``t``."""
    visible = [b for b in fleet if b.created <= t]
    return sum(1 for b in visible if b.status_at(t) in TERMINAL) / max(1, len(visible))


def start_for_share(fleet: Sequence[Any], share: float, step: float = 60.0) -> float:
    """The first simulated instant (whole minutes) after the last creation with ``share`` terminal."""
    t = float(int(max(b.created for b in fleet) / step) + 1) * step
    limit = t + 7 * 24 * 3600.0
    while terminal_share(fleet, t) < share:
        t += step
        if t > limit:
            raise SystemExit(f"the simulated fleet never reaches {share:.0%} terminal")
    return t


@dataclass(slots=True)
class Missed:
    revealable: int = 0  # transitions after the first instant the poll granularity could reveal
    hidden_by_granularity: int = 0
    missed: dict[str, int] = field(default_factory=dict)  # poller -> transitions never observed
    wrong: dict[str, int] = field(default_factory=dict)  # poller -> observations unlike the truth
    naive_equals_truth: bool = False


def revealable(batch: Any, instants: Sequence[float]) -> list[str]:
    """The batch's true status sampled at the cycle instants, consecutive repeats removed."""
    out: list[str] = []
    for t in instants:
        status = batch.status_at(t) if batch.created <= t else None
        if status is not None and (not out or out[-1] != status):
            out.append(status)
    return out


def _dedup(observed: Iterable[tuple[int, str]]) -> list[str]:
    out: list[str] = []
    for _, status in sorted(observed):
        if not out or out[-1] != status:
            out.append(status)
    return out


def count_missed(fleet: Sequence[Any], instants: Sequence[float], seen: dict[str, Observations]) -> Missed:
    result = Missed(missed=dict.fromkeys(seen, 0), wrong=dict.fromkeys(seen, 0))
    naive_ok = True
    for b in fleet:
        truth = revealable(b, instants)
        result.revealable += max(0, len(truth) - 1)
        during = [s for s, at in b.timeline if instants[0] < at <= instants[-1]]
        result.hidden_by_granularity += sum(1 for s in during if s not in truth)
        for name, obs in seen.items():
            got = obs.get(b.id, [])
            result.missed[name] += sum(1 for s in truth if s not in {x for _, x in got})
            result.wrong[name] += sum(1 for c, s in got if b.status_at(instants[c]) != s)
            if name == "naive" and _dedup(got) != truth:
                naive_ok = False
    result.naive_equals_truth = naive_ok
    return result


@dataclass(slots=True)
class CallsResult:
    batches: int
    start: float  # simulated seconds
    share: float
    ours: list[int]  # calls per cycle, cycle 0 first
    naive: list[int]
    bounds: list[int]  # lower_bound() at each cycle instant
    active: int  # active batches at the start instant
    missed: Missed

    @property
    def steady_ours(self) -> float:
        return float(statistics.median(self.ours[1:] or self.ours))

    @property
    def steady_naive(self) -> float:
        return float(statistics.median(self.naive[1:] or self.naive))

    @property
    def steady_bound(self) -> float:
        return float(statistics.median(self.bounds[1:] or self.bounds))

    @property
    def ratio(self) -> float:
        return self.steady_naive / max(self.steady_ours, 1e-9)


def sim_config(batches: int, seed: int, speed: float) -> SimulatorConfig:
    return SimulatorConfig(batches=batches, seed=seed, speed=speed, port=0, sources=1)


def source_config(sim: Simulator, interval: float, page_limit: int) -> SourceConfig:
    return SourceConfig(name=SOURCE, provider="openai", base_url=sim.source_url(SOURCE),
                        poll_interval=interval, page_limit=page_limit, max_rps=1e6)


async def count_calls(batches: int, share: float, cycles: int, interval: float, *, seed: int = 42,
                      speed: float = 60.0, page_limit: int = 100, start: float | None = None,
                      progress: Callable[[str], None] | None = None) -> CallsResult:
    """Run ``cycles`` cycles of both pollers at the same simulated instants; count their calls.

    The first cycle is at ``start`` simulated seconds if given, else at :func:`start_for_share`.
    """
    clock = StepClock()
    async with Simulator(sim_config(batches, seed, speed), clock=clock) as sim:
        fleet = sim.sources[SOURCE].fleet
        start = start_for_share(fleet, share) if start is None else start
        clock.value = start / speed
        sink = RecordingSink()
        ours = SourcePoller(source_config(sim, interval, page_limit), sink)
        naive = NaivePoller(sim.source_url(SOURCE), page_limit)
        calls: dict[str, list[int]] = {"ours": [], "naive": []}
        instants: list[float] = []
        async with aiohttp.ClientSession() as session:
            for cycle in range(cycles):
                instants.append(sim.now())
                sink.cycle = cycle
                before = sum(ours.metrics.requests.values())
                await ours.poll_once(session)
                calls["ours"].append(sum(ours.metrics.requests.values()) - before)
                before = naive.requests
                await naive.poll_once(session, cycle)
                calls["naive"].append(naive.requests - before)
                if progress is not None:
                    progress(f"  cycle {cycle}: ours {calls['ours'][-1]} calls, naive {calls['naive'][-1]}")
                clock.value += interval
        missed = count_missed(fleet, instants, {"ours": sink.seen, "naive": naive.seen})
        active = sum(1 for b in fleet if b.created <= start and b.status_at(start) not in TERMINAL)
        return CallsResult(len(fleet), start, terminal_share(fleet, start), calls["ours"],
                           calls["naive"], [lower_bound(fleet, t, page_limit) for t in instants], active,
                           missed)
