"""bench.backfill_bench: the rate limit's bound on a listing, and a config of terminal history
only (no Kafka, no timing)."""

from __future__ import annotations

from pathlib import Path

from bench.backfill_bench import (
    listing_bound,
    observations_total,
    parse,
    verdict,
    write_config,
)
from bench.worker_bench import write_config as services_config
from pipeline.config import load_settings
from pipeline.polling.metrics import SourceMetrics, render
from simulator.server import Simulator


def test_the_burst_lists_the_first_pages_the_rate_the_rest() -> None:
    assert listing_bound(10_000, 100.0) == 0.0  # 100 pages: all within the burst of 100
    assert listing_bound(10_000, 5.0) == 19.0  # 100 pages, 5 at once, 95 at 5 a second
    assert listing_bound(10_050, 5.0) == 19.2  # a partial page is a page
    assert listing_bound(50, 0.5) == 0.0  # one page, a burst of one


def test_every_simulated_batch_is_terminal_history(tmp_path: Path) -> None:
    args = parse(["--batches", "30", "--sources", "2"])
    settings = load_settings(str(write_config(tmp_path, args, "bench-b", {"http": 1, "sim": 2})))
    sim = settings.simulator
    assert (sim.batches, sim.history, sim.sources) == (30, 30, 2)
    assert settings.sources == ()  # batchscope run polls its in-process simulator
    fleet = Simulator(sim).sources["sim-1"].fleet
    assert all(b.timeline[-1][1] < 0 for b in fleet)  # every batch ended before the simulated start


def test_an_incomplete_run_is_never_met() -> None:
    assert verdict(30.0, True) == "met"
    assert verdict(61.0, True) == "NOT met"
    assert verdict(5.0, False) == "incomplete: rows missing"


def test_the_deployed_shape_polls_the_simulator_as_configured_sources(tmp_path: Path) -> None:
    args = parse(["--batches", "30", "--sources", "2"])
    assert args.topology == "services"
    poll = load_settings(str(services_config(tmp_path, args, "bench-b", 7, history=30, metrics_port=9,
                                             name="poll.toml")))
    assert (poll.simulator.batches, poll.simulator.history, poll.simulator.port) == (30, 30, 7)
    assert [s.name for s in poll.sources] == ["sim-1", "sim-2"]  # poll and worker need no simulator
    assert poll.pipeline.metrics_port == 9


def test_the_published_count_sums_every_source() -> None:
    a, b = SourceMetrics("sim-1", "openai"), SourceMetrics("sim-2", "mistral")
    a.observations, b.observations = 1_200, 34
    assert observations_total(render([a, b])) == 1_234
    assert observations_total("") == 0
