"""bench.poller_calls / bench.poller_delay / bench.poller_bench: the poller bench's counting, on
tiny fleets (no timing)."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from bench import poller_bench, report
from bench.poller_calls import count_calls, count_missed, lower_bound, required, revealable, sim_config
from bench.poller_delay import percentile
from pipeline.core.models import TERMINAL
from simulator.fleet import build_fleet

BATCHES, LIMIT = 200, 10
PAGES = math.ceil(BATCHES / LIMIT)


async def test_naive_lists_every_page_and_nobody_misses_a_required_status() -> None:
    r = await count_calls(BATCHES, 0.9, 12, 10.0, 40.0, page_limit=LIMIT)
    assert 0.9 <= r.share < 0.95
    assert r.naive == [PAGES] * 12
    assert r.ours[0] == PAGES  # discovery: nothing is known yet
    assert all(0 < ours <= PAGES + r.active for ours in r.ours)
    assert sum(r.ours) < sum(r.naive)  # the schedule does not refresh every active batch every cycle
    assert r.missed.required > BATCHES  # every batch's status at the start, and later ones
    assert r.missed.missed_required == {"ours": 0, "naive": 0}
    assert r.missed.revealable > 0
    assert r.missed.missed["naive"] == 0
    assert r.missed.wrong == {"ours": 0, "naive": 0}
    assert r.missed.naive_equals_truth


async def test_the_history_fleet_keeps_its_active_batches_on_the_newest_pages() -> None:
    r = await count_calls(BATCHES, 0.9, 4, 10.0, 40.0, fleet_name="history", page_limit=LIMIT)
    assert r.share >= 0.9
    assert r.active > 0
    assert max(r.bounds) <= math.ceil(BATCHES * 0.1 / LIMIT) + 1  # actives within the newest tenth
    assert r.missed.missed_required == {"ours": 0, "naive": 0}
    config = sim_config(BATCHES, 42, 60.0, "history", 0.9)
    assert config.history == int(BATCHES * 0.9)


async def test_ours_lists_one_page_once_the_fleet_is_terminal_history() -> None:
    fleet = build_fleet(42, BATCHES, "sim-1")
    ended = max(b.timeline[-1][1] for b in fleet) + 60.0
    r = await count_calls(BATCHES, 0.9, 4, 10.0, 40.0, page_limit=LIMIT, start=ended)
    assert r.active == 0
    assert r.bounds == [1] * 4
    assert r.naive == [PAGES] * 4
    assert r.ours == [PAGES, 1, 1, 1]
    assert r.ratio == r.mean_ratio == PAGES


def test_a_dropped_observation_is_a_missed_transition() -> None:
    fleet = build_fleet(7, BATCHES, "sim-1")
    instants = [3.3 * 3600 + i * 600.0 for i in range(6)]
    oracle = {b.id: [(c, s) for c, t in enumerate(instants) if b.created <= t
                     for s in [b.status_at(t) or ""]] for b in fleet}
    step = instants[1] - instants[0]  # a status that lasted a step was sampled: it is required
    clean = count_missed(fleet, instants, {"naive": oracle}, hold=step)
    assert (clean.missed, clean.missed_required) == ({"naive": 0}, {"naive": 0})
    moved = next(b for b in fleet if len(revealable(b, instants)) > 1
                 and revealable(b, instants)[-1] in required(b, instants[0], instants[-1], step))
    last = revealable(moved, instants)[-1]
    dropped = {**oracle, moved.id: [(c, s) for c, s in oracle[moved.id] if s != last]}
    result = count_missed(fleet, instants, {"naive": dropped}, hold=step)
    assert result.missed == {"naive": 1}
    assert result.missed_required == {"naive": 1}
    assert not result.naive_equals_truth
    lying = {**oracle, moved.id: [(c, "cancelled") for c, _ in oracle[moved.id]]}
    assert count_missed(fleet, instants, {"naive": lying}).wrong["naive"] > 0


def test_required_statuses_are_the_first_and_those_that_lasted() -> None:
    batch = next(b for b in build_fleet(42, BATCHES, "sim-1") if b.final_status == "completed")
    (start_status, began), *later = batch.timeline
    end = batch.timeline[-1][1] + 10.0
    assert required(batch, began, end, 0.0) == [s for s, _ in batch.timeline]
    assert required(batch, began, end, float("inf")) == [start_status]
    short = min(later, key=lambda step: step[1])  # a later status, lasting its own time
    assert start_status in required(batch, began, end, 1e9)
    assert short[0] in required(batch, began, end, 0.0)


def test_lower_bounds_count_pages_and_stragglers() -> None:
    fleet = build_fleet(42, BATCHES, "sim-1")
    t = 3.3 * 3600
    active = sum(1 for b in fleet if b.status_at(t) not in TERMINAL)
    assert 1 <= lower_bound(fleet, t, LIMIT) <= min(PAGES, 1 + active)
    changed = sum(1 for b in fleet if b.status_at(t) != b.status_at(t - 600))
    assert 1 <= lower_bound(fleet, t, LIMIT, t - 600) <= 1 + changed
    assert lower_bound(fleet, t, LIMIT, t) == 1  # nothing changed: one page to discover


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_bench_arguments_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    args = poller_bench.parse(["--fleets", "history", "--active-interval", "3", "--record"])
    assert (args.fleets, args.active, args.record) == (("history",), 3.0, True)
    for bad in (["--fleets", "nope"], ["--interval", "2", "--active-interval", "1"]):
        with pytest.raises(SystemExit):
            poller_bench.parse(bad)
    assert "--active-interval" in capsys.readouterr().err


async def test_record_saves_one_row_per_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved: dict[str, object] = {}

    def save(**kwargs: object) -> Path:
        saved.update(kwargs)
        return tmp_path / "poller.json"

    monkeypatch.setattr(report, "save", save)
    args = poller_bench.parse(["--batches", str(BATCHES), "--page-limit", str(LIMIT), "--cycles", "3",
                               "--no-kafka", "--record"])
    await poller_bench.run(args)
    assert saved["name"] == "poller"
    rows = saved["rows"]
    assert isinstance(rows, list)
    assert [r["fleet"] for r in rows] == ["sim", "history"]
    assert all("ratio (mean; median)" in r for r in rows)
    orjson.dumps(saved)  # what report.save writes must be JSON
