"""bench.poller_calls / bench.poller_delay: the poller bench's counting, on a tiny fleet (no timing)."""

from __future__ import annotations

import math

from bench.poller_calls import count_calls, count_missed, lower_bound, revealable
from bench.poller_delay import percentile
from pipeline.models import TERMINAL
from pipeline.simulator import build_fleet

BATCHES, LIMIT = 200, 10
PAGES = math.ceil(BATCHES / LIMIT)


async def test_naive_lists_every_page_and_nobody_misses_a_transition() -> None:
    r = await count_calls(BATCHES, 0.9, 5, 10.0, page_limit=LIMIT)
    assert 0.9 <= r.share < 0.95
    assert r.naive == [PAGES] * 5
    assert r.ours[0] == PAGES  # discovery: nothing is known yet
    assert all(0 < ours <= PAGES for ours in r.ours)
    assert all(bound <= ours for bound, ours in zip(r.bounds, r.ours, strict=True))
    assert r.missed.revealable > 0  # the run saw transitions, so "missed == 0" says something
    assert r.missed.missed == {"ours": 0, "naive": 0}
    assert r.missed.wrong == {"ours": 0, "naive": 0}
    assert r.missed.naive_equals_truth


async def test_ours_lists_one_page_once_the_fleet_is_terminal_history() -> None:
    fleet = build_fleet(42, BATCHES, "sim-1")
    ended = max(b.timeline[-1][1] for b in fleet) + 60.0
    r = await count_calls(BATCHES, 0.9, 4, 10.0, page_limit=LIMIT, start=ended)
    assert r.active == 0
    assert r.bounds == [1] * 4
    assert r.naive == [PAGES] * 4
    assert r.ours == [PAGES, 1, 1, 1]
    assert r.ratio == PAGES


def test_a_dropped_observation_is_a_missed_transition() -> None:
    fleet = build_fleet(7, BATCHES, "sim-1")
    instants = [3.3 * 3600 + i * 600.0 for i in range(6)]
    oracle = {b.id: [(c, s) for c, t in enumerate(instants) if b.created <= t
                     for s in [b.status_at(t) or ""]] for b in fleet}
    assert count_missed(fleet, instants, {"naive": oracle}).missed == {"naive": 0}
    moved = next(b for b in fleet if len(revealable(b, instants)) > 1)
    last = revealable(moved, instants)[-1]
    dropped = {**oracle, moved.id: [(c, s) for c, s in oracle[moved.id] if s != last]}
    result = count_missed(fleet, instants, {"naive": dropped})
    assert result.missed == {"naive": 1}
    assert not result.naive_equals_truth
    lying = {**oracle, moved.id: [(c, "cancelled") for c, _ in oracle[moved.id]]}
    assert count_missed(fleet, instants, {"naive": lying}).wrong["naive"] > 0


def test_lower_bound_counts_pages_and_stragglers() -> None:
    fleet = build_fleet(42, BATCHES, "sim-1")
    t = 3.3 * 3600
    active = sum(1 for b in fleet if b.status_at(t) not in TERMINAL)
    assert 1 <= lower_bound(fleet, t, LIMIT) <= min(PAGES, 1 + active)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
