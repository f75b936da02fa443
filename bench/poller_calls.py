"""Part (a) of the poller bench: API calls per poll cycle, ours against a naive poller.

Both pollers poll the same in-process simulator at the same simulated instants. The simulator's
clock is a :class:`StepClock` the bench moves by one active poll interval per cycle, so a whole
cycle sees one frozen instant, both pollers see the same fleet state, and the run is exactly
reproducible (no timing involved). The fleet starts at the first simulated instant, after every
batch was created, at which the requested share of it is terminal (:func:`start_for_share`).

Two fleets of the simulator's own model (:func:`fleet_config`): ``sim``, the default fleet
(created over 4 simulated hours) at the first instant at which the requested share is terminal;
``history``, the oldest ``share`` of the batches created 2-30 simulated days earlier (terminal
history at the back of the list) and the newest created over the last half hour, at the first
instant after the last creation. Our poller reads the simulator's clock (simulated unix seconds),
its poll interval is one cycle step and its active interval ``active`` simulated seconds.

Missed transitions, precisely (``required``, the definition that fits a per-batch schedule):
cycle instants are ``t_0 < ... < t_n``. A batch's status is *required* when it is its status at
``t_0`` (discovery), or when it began after ``t_0`` and lasted, within ``[t_0, t_n]``, at least
``hold`` = the active interval plus one poll interval (a per-batch schedule refreshes an active
batch at least every active interval, on the next cycle: up to one poll interval later). A
poller *missed* a required status when it never observed it for that batch. Every terminal
status that began ``hold`` before the end of the run is required, so a missed final status
counts. Second definition (``revealable``, as before the schedule): the true status sampled at
every cycle instant, consecutive repeats removed; a transition is missed when that status was
never observed. A poller that refreshes every batch every cycle misses none of these; a
per-batch schedule may step over a status that lasted less than ``hold`` (counted, not hidden).
A status that began and ended between two instants is revealable by no poller
(``hidden_by_granularity``). An observation whose status differs from the truth at its cycle
instant is ``wrong``. The naive poller's observed sequence must equal the revealable one; the
bench checks that as a control of the definitions.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.core.models import TERMINAL, Envelope
from pipeline.polling.poller import SourcePoller
from simulator.server import Simulator

SOURCE = "sim-1"
FLEETS = ("sim", "history")
HISTORY_SPAN = 0.5  # simulated hours over which the history fleet's newest batches are created
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


def lower_bound(fleet: Sequence[Any], t: float, page_limit: int, before: float | None = None) -> int:
    """Fewest calls at ``t`` for any poller that refreshes every active batch each cycle; with
    ``before`` (the previous cycle instant), for any poller that sees every batch whose status
    changed since ``before`` in this cycle.

    It lists ``k >= 1`` pages newest first (new batches only appear there) and GETs each batch it
    must see beyond them: ``min over k of k + such batches beyond page k``.
    """
    visible = sorted((b for b in fleet if b.created <= t), key=lambda b: (b.created, b.id), reverse=True)
    if before is None:
        must = [b.status_at(t) not in TERMINAL for b in visible]
    else:
        must = [b.status_at(t) != b.status_at(before) for b in visible]
    pages = max(1, -(-len(visible) // page_limit))
    beyond, best = sum(must), len(must) + pages
    for k in range(1, pages + 1):
        beyond -= sum(must[(k - 1) * page_limit:k * page_limit])
        best = min(best, k + beyond)
    return best


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
    required: int = 0  # statuses a per-batch schedule must observe (module docstring)
    missed_required: dict[str, int] = field(default_factory=dict)  # poller -> required never observed
    hold: float = 0.0  # simulated seconds a status must last to be required


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


def required(batch: Any, start: float, end: float, hold: float) -> list[str]:
    """The statuses of ``batch`` a per-batch schedule must observe in ``[start, end]``."""
    out: list[str] = []
    steps = list(batch.timeline)
    for i, (status, began) in enumerate(steps):
        ended = steps[i + 1][1] if i + 1 < len(steps) else float("inf")
        if began <= start < ended or (start < began <= end and min(ended, end) - began >= hold):
            out.append(status)
    return out


def count_missed(fleet: Sequence[Any], instants: Sequence[float], seen: dict[str, Observations],
                 hold: float = float("inf")) -> Missed:
    result = Missed(missed=dict.fromkeys(seen, 0), wrong=dict.fromkeys(seen, 0),
                    missed_required=dict.fromkeys(seen, 0), hold=hold)
    naive_ok = True
    for b in fleet:
        must = required(b, instants[0], instants[-1], hold) if b.created <= instants[0] else []
        result.required += len(must)
        truth = revealable(b, instants)
        result.revealable += max(0, len(truth) - 1)
        during = [s for s, at in b.timeline if instants[0] < at <= instants[-1]]
        result.hidden_by_granularity += sum(1 for s in during if s not in truth)
        for name, obs in seen.items():
            got = obs.get(b.id, [])
            statuses = {x for _, x in got}
            result.missed[name] += sum(1 for s in truth if s not in statuses)
            result.missed_required[name] += sum(1 for s in must if s not in statuses)
            result.wrong[name] += sum(1 for c, s in got if b.status_at(instants[c]) != s)
            if name == "naive" and _dedup(got) != truth:
                naive_ok = False
    result.naive_equals_truth = naive_ok
    return result


@dataclass(slots=True)
class CallsResult:
    fleet: str
    batches: int
    start: float  # simulated seconds
    share: float
    ours: list[int]  # calls per cycle, cycle 0 first
    naive: list[int]
    bounds: list[int]  # lower_bound() at each cycle instant
    change_bounds: list[int]  # lower_bound(before=previous instant) at each later cycle instant
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
    def mean_change_bound(self) -> float:
        return statistics.fmean(self.change_bounds or [0])

    @property
    def ratio(self) -> float:
        """Median calls of later cycles, naive over ours."""
        return self.steady_naive / max(self.steady_ours, 1e-9)

    @property
    def mean_ours(self) -> float:
        return statistics.fmean(self.ours[1:] or self.ours)

    @property
    def mean_naive(self) -> float:
        return statistics.fmean(self.naive[1:] or self.naive)

    @property
    def mean_ratio(self) -> float:
        """All calls of the later cycles, naive over ours: the amortised figure the target is held to."""
        return self.mean_naive / max(self.mean_ours, 1e-9)


def sim_config(batches: int, seed: int, speed: float, fleet: str = "sim",
               share: float = 0.9) -> SimulatorConfig:
    """The simulator of one fleet (module docstring)."""
    if fleet == "history":
        return SimulatorConfig(batches=batches, seed=seed, speed=speed, port=0, sources=1,
                               history=int(batches * share), creation_span=HISTORY_SPAN)
    return SimulatorConfig(batches=batches, seed=seed, speed=speed, port=0, sources=1)


def source_config(sim: Simulator, interval: float, active: float, page_limit: int) -> SourceConfig:
    """Our poller's source; ``interval`` and ``active`` in simulated seconds (it reads the
    simulator's clock)."""
    return SourceConfig(name=SOURCE, provider="openai", base_url=sim.source_url(SOURCE),
                        poll_interval=interval, active_interval=active, page_limit=page_limit, max_rps=1e6)


def sim_clock(sim: Simulator) -> Callable[[], float]:
    """Simulated unix seconds: the time base of the timestamps the simulator serves."""
    return lambda: sim.epoch + sim.now()


async def count_calls(batches: int, share: float, cycles: int, interval: float, active: float, *,
                      fleet_name: str = "sim", seed: int = 42, speed: float = 60.0, page_limit: int = 100,
                      start: float | None = None,
                      progress: Callable[[str], None] | None = None) -> CallsResult:
    """Run ``cycles`` cycles of both pollers at the same simulated instants; count their calls.

    ``interval`` (the poll interval) and ``active`` (the active interval) are wall seconds, as
    simulated ``x speed``. The first cycle is at ``start`` simulated seconds if given, else at
    :func:`start_for_share`.
    """
    clock = StepClock()
    async with Simulator(sim_config(batches, seed, speed, fleet_name, share), clock=clock) as sim:
        fleet = sim.sources[SOURCE].fleet
        start = start_for_share(fleet, share) if start is None else start
        clock.value = start / speed
        sink = RecordingSink()
        source = source_config(sim, interval * speed, active * speed, page_limit)
        ours = SourcePoller(source, sink, clock=sim_clock(sim))
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
        hold = (active + interval) * speed
        missed = count_missed(fleet, instants, {"ours": sink.seen, "naive": naive.seen}, hold)
        actives = sum(1 for b in fleet if b.created <= start and b.status_at(start) not in TERMINAL)
        bounds = [lower_bound(fleet, t, page_limit) for t in instants]
        changes = [lower_bound(fleet, t, page_limit, before) for before, t in itertools.pairwise(instants)]
        return CallsResult(fleet_name, len(fleet), start, terminal_share(fleet, start), calls["ours"],
                           calls["naive"], bounds, changes, actives, missed)
