"""Backfill: a first start against accounts with long histories, from the first poll to every row
in ClickHouse, today's code against a baseline git ref in the same run.

Per run and code tree (:mod:`bench.baseline`; the trees alternate), ``--sources`` simulated
sources of ``--batches`` batches each, all of them terminal history (``simulator.history`` =
``simulator.batches``: created 2 to 30 simulated days before start, so every one is ended by the
first poll). The poller's first cycle lists every page of every source and publishes each batch
once; nothing is active afterwards. In one of two shapes (``--topology``):

- ``services`` (the target, as compose deploys it): ``batchscope simulate`` (today's; the
  providers, on their own process as remote APIs are), and the tree's ``batchscope worker``
  (embedded chDB) and ``batchscope poll``. Timed from the first raw record (broker timestamp) to
  the moment the poller's ``/metrics`` counts every batch published and the worker's group has
  committed every record on raw, snapshots and changesets (the sink commits after its insert); the
  rows are counted afterwards.
- ``run``: ``batchscope run`` of that tree (its in-process simulator, poller, agents and sink in
  one process: one interpreter lock for all of it). Timed to the first moment the query endpoint
  counts every batch in ``batch_snapshots`` (every ``POLL_SECONDS``).

The listing alone is bounded by each source's rate limit: the simulator's sources get 100
requests/s (burst 100) and the sources are listed concurrently.

    python -m bench.backfill_bench [--topology services|run] [--batches 10000] [--sources 10]
                                   [--runs 3] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baseline
from bench.baseline import Tree
from bench.report import save
from bench.worker_bench import DRAINED, Command, free_port, sink_feed, snapshot_rows, wait_port
from bench.worker_bench import write_config as services_config
from pipeline.clickhouse.queries import query_running
from pipeline.config import KafkaConfig, SourceConfig
from pipeline.core.errors import BatchscopeError
from pipeline.kafka import ensure_topics
from tests.support.kafka import (
    FAST_GROUP,
    PARTITIONS,
    CommitWatch,
    delete_topics,
    first_timestamp,
    last_timestamp,
    run_toml,
)
from tests.support.processes import stop_run

POLL_SECONDS = 0.25
TOPOLOGIES = {"services": "simulate | poll | worker", "run": "batchscope run"}
TIMEOUT = 900.0
STALL = 60.0  # seconds without a new row after which a run is reported incomplete
TARGET = 60.0
SIM_RPS = 100.0  # agents.runner.simulator_sources: max_rps of an in-process simulator's source
PAGE = 100  # the poller's default page_limit (some providers' lists are one page)
# a configured source's default rate limit, for comparison
DEFAULT_RPS = SourceConfig(name="x", provider="openai", base_url="https://x.invalid").max_rps


@dataclass(frozen=True, slots=True)
class Backfill:
    tree: str
    rows: int
    seconds: float  # first raw record -> every row in batch_snapshots
    listing: float  # first -> last raw record
    complete: bool  # every batch reached batch_snapshots


def listing_bound(batches: int, rps: float = SIM_RPS, page: int = PAGE) -> float:
    """Seconds the rate limiter alone needs to list one source (sources go in parallel): its
    pages beyond the bucket's burst (``int(rps)`` requests) at ``rps``."""
    pages = math.ceil(batches / page)
    return max(0, pages - max(1, int(rps))) / rps


def write_config(tmp: Path, args: argparse.Namespace, prefix: str, ports: dict[str, int]) -> Path:
    path = tmp / "batchscope.toml"
    path.write_text(run_toml(tmp, args.bootstrap, prefix) + f"""http_port = {ports['http']}
metrics_port = 0
log_level = "warning"

[simulator]
batches = {args.batches}
history = {args.batches}
sources = {args.sources}
seed = {args.seed}
port = {ports['sim']}
poll_interval = {args.poll_interval}
""", encoding="utf-8")
    return path


def count_rows(data_dir: Path) -> int | None:
    try:
        return int(query_running(data_dir, "SELECT count() FROM batch_snapshots").rows[0][0])
    except BatchscopeError:
        return None  # not serving yet


def one_run(args: argparse.Namespace, tree: Tree) -> Backfill:
    prefix = f"bench-backfill-{uuid.uuid4().hex[:8]}"
    want = args.batches * args.sources
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmpdir:
        tmp = Path(tmpdir)
        config = write_config(tmp, args, prefix, {"http": free_port(), "sim": free_port()})
        log = tmp / "run.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", tree.cli, "--config", str(config), "run"],
                                    cwd=tree.path, env={**tree.env(), **FAST_GROUP}, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            done, rows = wait_rows(proc, tmp / "data", want, log)
            first = asyncio.run(first_timestamp(args.bootstrap, f"{prefix}.raw"))
            last = asyncio.run(last_timestamp(args.bootstrap, f"{prefix}.raw"))
            return Backfill(tree.label, rows, max(0.0, done - first), last - first, rows >= want)
        finally:
            stop_run(proc, timeout=60)
            asyncio.run(delete_topics(args.bootstrap, prefix))


def services_run(args: argparse.Namespace, tree: Tree, current: Tree) -> Backfill:
    """The deployed shape (compose): ``batchscope simulate`` (today's; the providers, on their own
    core), and the tree's ``batchscope worker`` and ``batchscope poll`` as separate processes.
    Done when the poller has published every batch and the worker's group has committed every
    record on raw, snapshots and changesets (the sink commits after its insert); the rows are
    counted afterwards."""
    prefix = f"bench-backfill-{uuid.uuid4().hex[:8]}"
    kafka = KafkaConfig(bootstrap=args.bootstrap, topic_prefix=prefix, app_id=prefix, partitions=PARTITIONS)
    want = args.batches * args.sources
    sim_port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmpdir:
        tmp = Path(tmpdir)
        config = services_config(tmp, args, prefix, sim_port, history=args.batches)
        poll_config = services_config(tmp, args, prefix, sim_port, history=args.batches,
                                      metrics_port=metrics_port, name="poll.toml")
        sim = Command(current, config, tmp / "simulate.log", "simulate").start()
        worker = Command(tree, config, tmp / "worker.log", "worker")
        poll = Command(tree, poll_config, tmp / "poll.log", "poll")
        try:
            asyncio.run(ensure_topics(kafka))
            wait_port(sim_port, sim)
            worker.start()
            poll.start()
            done = wait_services(args, tree, poll, worker, metrics_port, want, prefix, kafka)
            first = asyncio.run(first_timestamp(args.bootstrap, kafka.topic("raw")))
            last = asyncio.run(last_timestamp(args.bootstrap, kafka.topic("raw")))
        finally:
            for proc in (poll, worker, sim):
                proc.stop()
        try:
            rows = snapshot_rows(current, config)
            return Backfill(tree.label, rows, max(0.0, done - first), last - first, rows >= want)
        finally:
            asyncio.run(delete_topics(args.bootstrap, prefix))


def published(metrics_port: int) -> int | None:
    """Observations the poller has published (its ``/metrics``), or None before it serves."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
            return observations_total(answer.read().decode())
    except OSError:
        return None


def observations_total(metrics: str) -> int:
    """The sum of ``batchscope_poller_observations_total`` over the sources, from Prometheus text."""
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith("batchscope_poller_observations_total{"))


def wait_services(args: argparse.Namespace, tree: Tree, poll: Command, worker: Command, metrics_port: int,
                  want: int, group: str, kafka: KafkaConfig) -> float:
    """The wall time the group was seen drained after the poller published ``want`` observations."""
    return asyncio.run(watch_services(args.bootstrap, poll, worker, metrics_port, want, group,
                                      [kafka.topic(sink_feed(tree, t)) for t in DRAINED]))


async def watch_services(bootstrap: str, poll: Command, worker: Command, metrics_port: int, want: int,
                         group: str, topics: list[str]) -> float:
    deadline = time.monotonic() + TIMEOUT
    async with CommitWatch(bootstrap) as watch:
        while time.monotonic() < deadline:
            for proc in (poll, worker):
                if not proc.alive():
                    raise proc.fail("exited during the backfill")
            if (published(metrics_port) or 0) >= want:
                done = await watch.done(group, topics)
                if done is not None:
                    return done
            await asyncio.sleep(POLL_SECONDS)
    raise worker.fail(f"not drained within {TIMEOUT:.0f} s")


def wait_rows(proc: subprocess.Popen[bytes], data_dir: Path, want: int, log: Path) -> tuple[float, int]:
    """The wall time the query endpoint first counted ``want`` snapshot rows, and the count; or,
    when the count stopped growing for :data:`STALL` seconds, the time of its last growth and the
    count then (an incomplete run, reported as such)."""
    deadline = time.monotonic() + TIMEOUT
    last, grew = -1, time.time()  # rows seen (-1: the endpoint has not answered yet), when they last grew
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"batchscope run exited ({proc.returncode}):\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        rows = count_rows(data_dir)
        if rows is not None and rows >= want:
            return time.time(), rows
        if rows is not None and rows > last:
            last, grew = rows, time.time()
        elif last >= 0 and time.time() - grew > STALL:
            print(f"  incomplete: {last:,} of {want:,} rows, none for {STALL:.0f} s", flush=True)
            return grew, last
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"not every row in ClickHouse within {TIMEOUT:.0f} s; log: {log}")


def summary_row(tree: Tree, topology: str, runs: list[Backfill], args: argparse.Namespace) -> dict[str, Any]:
    seconds = statistics.median(r.seconds for r in runs)
    return {"code": f"{tree.label} ({tree.short})", "processes": TOPOLOGIES[topology], "runs": len(runs),
            "batches": args.batches * args.sources, "sources": args.sources,
            "rows": min(r.rows for r in runs), "first poll -> all rows (s)": seconds,
            "listing (s)": statistics.median(r.listing for r in runs),
            f"listing bound at {SIM_RPS:g} req/s (s)": listing_bound(args.batches),
            f"bound at the default {DEFAULT_RPS:g} req/s (s)": listing_bound(args.batches, DEFAULT_RPS),
            "rows/s": min(r.rows for r in runs) / seconds if seconds > 0 else None,
            "<= 60 s": verdict(seconds, all(r.complete for r in runs))}


def verdict(seconds: float, complete: bool) -> str:
    if not complete:
        return "incomplete: rows missing"
    return "met" if seconds <= TARGET else "NOT met"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10_000, help="terminal history batches per source")
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--topology", choices=list(TOPOLOGIES), default="services",
                        help="services: simulate, poll and worker apart (compose); run: batchscope run")
    parser.add_argument("--speed", type=float, default=600.0, help="simulated seconds per wall second")
    parser.add_argument("--poll-interval", type=float, default=1.0, dest="poll_interval")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    baseline.add_arguments(parser)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    print(f"{args.batches * args.sources:,} terminal history batches over {args.sources} sources; listing "
          f"bound by the rate limit: {listing_bound(args.batches):.2f} s a source", flush=True)
    topology = args.topology
    with baseline.materialise(args.baseline_ref) as base:
        current = baseline.current()
        runs: dict[Tree, list[Backfill]] = {current: [], base: []}
        for i in range(args.runs):
            for tree, done in runs.items():
                r = services_run(args, tree, current) if topology == "services" else one_run(args, tree)
                done.append(r)
                print(f"run {i + 1} {topology} {tree.label}: {r.rows:,} rows in {r.seconds:.1f} s "
                      f"(listing {r.listing:.1f} s)", flush=True)
    rows = [summary_row(t, topology, rs, args) for t, rs in runs.items()]
    for row in rows:
        print(f"{row['code']:>40} {row['processes']}: {row['first poll -> all rows (s)']:.1f} s, "
              f"{row['rows']:,} rows, "
              f"{row['rows/s'] or 0:,.0f} rows/s (target 60 s: {row['<= 60 s']})", flush=True)
    if args.record:
        name, title, notes = SHAPES[topology]
        save(name, f"Backfill ({title}): terminal history, first poll to every row in ClickHouse", rows,
             notes.format(batches=args.batches * args.sources, sources=args.sources, rps=SIM_RPS,
                          poll=args.poll_interval) + COMMON_NOTES.format(rps=SIM_RPS))


SERVICES_NOTES = """
Per run and code tree (trees alternate; `bench/baseline.py`), as compose deploys it: `batchscope
simulate` (today's, in its own process, as remote provider APIs are), and the tree's `batchscope
poll` and `batchscope worker` (normalise, track, sink; embedded chDB), against {sources} simulated
sources holding {batches:,} batches in all, every one terminal history (`simulator.history` =
`simulator.batches`: created 2 to 30 simulated days before start). The first poll cycle lists every
page of every source (newest first, 100 a page where the provider pages) and publishes each batch
once; nothing is active afterwards. Time = first raw record (broker timestamp: the first page
published) -> the moment the poller's `/metrics` counts every batch published and the worker's
consumer group has committed every record on raw, snapshots and changesets (the sink commits after
its insert); `rows` = `batch_snapshots` counted afterwards.
"""

RUN_NOTES = """
Per run and code tree (trees alternate; `bench/baseline.py`): the tree's `batchscope run`
(in-process simulator, poller, real Kafka, Faust agents, embedded chDB: one process, one
interpreter lock) against {sources} simulated sources holding {batches:,} batches in all, every one
terminal history (`simulator.history` = `simulator.batches`: created 2 to 30 simulated days before
start). The first poll cycle lists every page of every source (newest first, 100 a page where the
provider pages) and publishes each batch once; nothing is active afterwards. Time = first raw
record (broker timestamp: the first page published) -> the first moment `batch_snapshots` holds
every batch (counted through the query endpoint every 0.25 s; a run whose count stops growing for
a minute short of every batch is reported incomplete, timed to its last row).
"""

COMMON_NOTES = """`listing` = first -> last raw record: the poller's share. The rate limit bounds the
listing at (pages - burst) / rate per source, sources in parallel: the simulator's sources get {rps:g}
requests/s with a burst of {rps:g}; beside it, the bound for a configured source at its default
`max_rps`. Target (issue 13): 100,000 batches in at most 60 s, in the deployed shape.
"""

SHAPES = {"services": ("backfill", "simulate | poll | worker", SERVICES_NOTES),
          "run": ("backfill_run", "batchscope run", RUN_NOTES)}


if __name__ == "__main__":
    main()
