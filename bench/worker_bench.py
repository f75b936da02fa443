"""The worker draining the poller's records: ``batchscope worker`` against a bare aiokafka loop,
today's code against a baseline git ref, in the same run.

Per run and code tree (:mod:`bench.baseline`; the trees alternate):

1. the simulator (``batchscope simulate``, today's, the same fleet for both trees) serves
   ``--sources`` sources of ``--batches`` batches; the tree's real poller (``batchscope poll``,
   every active batch due each poll interval) fills fresh topics' ``<prefix>.raw`` for ``--fill``
   seconds after its first record, while no worker runs; then poller and simulator stop;
2. the tree's ``batchscope worker`` (normalise, track, sink; embedded chDB) drains it, timed
   from its first snapshot record (broker timestamp) to the moment the consumer group has
   committed every record on raw, snapshots and changesets (committed offsets polled against end
   offsets); observations/s = rows in ``batch_snapshots`` / that time;
3. the bare loop (:mod:`bench.bareloop`) runs over the same raw topic.

Today's code is also measured as the split deployment: ``batchscope worker --agents
normalise,track`` and ``batchscope worker --agents sink``, two processes (the sink in its own
consumer group, ``<app_id>-sink``), timed until both groups have committed everything.

The share is the worker's observations/s over the bare loop's, on the same topic; and, since the
baseline's raw topic holds one observation a record, over the bare loop's records/s there (the
per-observation ceiling). Target (issue 13): a share of 0.25; stretch 0.5.

    python -m bench.worker_bench [--batches N] [--sources S] [--fill SECONDS] [--runs R] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import baseline
from bench.bareloop import BareResult, bare_loop
from bench.baseline import Tree
from bench.report import save
from pipeline.config import KafkaConfig, SimulatorConfig
from pipeline.kafka import ensure_topics
from simulator.server import Simulator
from tests.support.kafka import (
    FAST_GROUP,
    PARTITIONS,
    CommitWatch,
    count,
    delete_topics,
    first_timestamp,
    run_toml,
)
from tests.support.kafka import drained as drained  # re-exported: moved to tests/support
from tests.support.kafka import group_done as group_done  # re-exported: moved to tests/support
from tests.support.processes import free_port as free_port  # re-exported: moved to tests/support
from tests.support.processes import stop_run

DRAINED = ("raw", "snapshots", "changesets")  # what `batchscope worker` reads
TIMEOUT = 600.0
TARGET = 0.25
LOOK = 0.02  # seconds between looks at the group's commits


# The two workers of the split deployment, and what each one's consumer group must have committed
# (a sink without the track agent reads in <app_id>-sink: agents.app.group_of).
SPLIT = (("normalise,track", "", ("raw", "snapshots")), ("sink", "-sink", ("snapshots", "changesets")))
ONE = (("", "", DRAINED),)  # `batchscope worker` as it comes: all three agents


@dataclass(frozen=True, slots=True)
class Drain:
    tree: str
    raw_records: int
    rows: int  # in batch_snapshots
    seconds: float
    bare: BareResult

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def share(self) -> float:
        return self.rate / self.bare.observations_per_s


def write_config(tmp: Path, args: argparse.Namespace, prefix: str, sim_port: int, *, history: int = 0,
                 metrics_port: int = 0, name: str = "batchscope.toml") -> Path:
    """A config both trees accept: fresh topics, group and data directory; the simulator's
    sources as ``[[sources]]``, each active batch due every poll interval; ``history`` of each
    source's batches ended before start (terminal history)."""
    sim = SimulatorConfig(batches=args.batches, sources=args.sources, seed=args.seed, speed=args.speed,
                          port=sim_port, poll_interval=args.poll_interval)
    names = Simulator(sim)  # only for each source's provider and API root
    sources = "".join(f"""
[[sources]]
name = "{source}"
provider = "{names.provider(source)}"
base_url = "{names.source_url(source)}"
poll_interval = {args.poll_interval}
active_interval = {args.poll_interval}
max_rps = 100.0
""" for source in names.sources)
    path = tmp / name
    path.write_text(run_toml(tmp, args.bootstrap, prefix) + f"""metrics_port = {metrics_port}
log_level = "warning"

[simulator]
batches = {sim.batches}
history = {history}
sources = {sim.sources}
seed = {sim.seed}
speed = {sim.speed}
port = {sim.port}
poll_interval = {sim.poll_interval}
{sources}""", encoding="utf-8")
    return path


class Command:
    """``python -m <the tree's CLI module> --config CONFIG <args>`` of one code tree, logging to a file."""

    def __init__(self, tree: Tree, config: Path, log: Path, *args: str) -> None:
        self.tree, self.config, self.log, self.args = tree, config, log, args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Command:
        env = {**self.tree.env(), **FAST_GROUP, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.tree.cli, "--config", str(self.config), *self.args],
                cwd=self.tree.path, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_run(self.proc, timeout=60)

    def fail(self, what: str) -> SystemExit:
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return SystemExit(f"{self.tree.label}: {what}\n{tail}")


def wait_port(port: int, proc: Command, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise proc.fail("the simulator exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.2)
    raise proc.fail(f"the simulator did not listen on {port} within {timeout:.0f} s")


def fill(args: argparse.Namespace, tree: Tree, current: Tree, config: Path, tmp: Path, kafka: KafkaConfig,
         sim_port: int) -> int:
    """The poller fills ``<prefix>.raw`` for ``args.fill`` seconds after its first record; the raw
    records."""
    sim = Command(current, config, tmp / "simulate.log", "simulate").start()
    poll = Command(tree, config, tmp / "poll.log", "poll")
    try:
        wait_port(sim_port, sim)
        poll.start()
        deadline = time.monotonic() + 120.0
        while asyncio.run(count(args.bootstrap, kafka.topic("raw"))) == 0:
            if not poll.alive() or time.monotonic() > deadline:
                raise poll.fail("the poller published nothing")
            time.sleep(0.2)
        time.sleep(args.fill)
    finally:
        poll.stop()
        sim.stop()
    return asyncio.run(count(args.bootstrap, kafka.topic("raw")))


def snapshot_rows(current: Tree, config: Path) -> int:
    done = subprocess.run([sys.executable, "-m", current.cli, "--config", str(config), "query",
                           "SELECT count() AS n FROM batch_snapshots", "--format", "json"],
                          cwd=current.path, env=current.env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"counting batch_snapshots failed: {done.stderr.strip()}")
    return int(orjson.loads(done.stdout)[0]["n"])


def drain(args: argparse.Namespace, tree: Tree, current: Tree, *, split: bool = False) -> Drain:
    prefix = f"bench-worker-{uuid.uuid4().hex[:8]}"
    kafka = KafkaConfig(bootstrap=args.bootstrap, topic_prefix=prefix, app_id=prefix, partitions=PARTITIONS)
    sim_port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmpdir:
        tmp = Path(tmpdir)
        config = write_config(tmp, args, prefix, sim_port)
        try:
            asyncio.run(ensure_topics(kafka))
            raw = fill(args, tree, current, config, tmp, kafka, sim_port)
            layout = SPLIT if split else ONE
            workers = [Command(tree, config, tmp / f"worker-{i}.log", "worker",
                               *(("--agents", agents) if agents else ())).start()
                       for i, (agents, _, _) in enumerate(layout)]
            try:
                groups = [(prefix + suffix, [kafka.topic(sink_feed(tree, t)) for t in topics])
                          for _, suffix, topics in layout]
                done = wait_drained(args, workers, groups, kafka)
            finally:
                for worker in workers:
                    worker.stop()
            seconds = done - asyncio.run(first_timestamp(args.bootstrap, kafka.topic("snapshots")))
            rows = snapshot_rows(current, config)
            bare = asyncio.run(bare_loop(args.bootstrap, kafka.topic("raw")))
            return Drain(tree.label, raw, rows, seconds, bare)
        finally:
            asyncio.run(delete_topics(args.bootstrap, prefix))


def sink_feed(tree: Tree, topic: str) -> str:
    """``topic``, or for a tree whose sink still reads ``<prefix>.changes`` (before the change
    sets, ``sql/007_change_sets.sql``) that topic in place of ``changesets``."""
    if topic == "changesets" and not (tree.path / "sql" / "007_change_sets.sql").exists():
        return "changes"
    return topic


Groups = Sequence[tuple[str, Sequence[str]]]  # consumer groups, each with the topics it must drain


def wait_drained(args: argparse.Namespace, workers: list[Command], groups: Groups,
                 kafka: KafkaConfig) -> float:
    """When the last of ``groups`` was seen to have committed everything on its topics (looked at
    every :data:`LOOK` seconds, with clients kept open: :class:`~tests.support.kafka.CommitWatch`)."""
    return asyncio.run(watch_drained(args.bootstrap, workers, groups, kafka.topic("snapshots")))


async def watch_drained(bootstrap: str, workers: list[Command], groups: Groups, first: str) -> float:
    deadline = time.monotonic() + TIMEOUT
    done: dict[str, float] = {}
    async with CommitWatch(bootstrap) as watch:
        while True:
            for worker in workers:
                if not worker.alive() or time.monotonic() > deadline:
                    raise worker.fail("the worker stopped or did not drain in time")
            if await watch.count(first):
                for group, topics in groups:
                    if group not in done and (seen := await watch.done(group, topics)) is not None:
                        done[group] = seen
                if len(done) == len(groups):
                    return max(done.values())
            await asyncio.sleep(LOOK)


def label(tree: Tree, split: bool) -> str:
    return f"{tree.label} ({tree.short})" + (", split: normalise,track | sink" if split else "")


def summary_row(code: str, runs: list[Drain], per_observation: float) -> dict[str, Any]:
    rate = statistics.median(r.rate for r in runs)
    bare = statistics.median(r.bare.observations_per_s for r in runs)
    share = statistics.median(r.share for r in runs)
    return {"code": code, "runs": len(runs),
            "snapshot rows": statistics.median(r.rows for r in runs),
            "observations on raw": statistics.median(r.bare.observations for r in runs),
            "raw records": statistics.median(r.raw_records for r in runs),
            "drain (s)": statistics.median(r.seconds for r in runs), "worker obs/s": rate,
            "bare loop rec/s": statistics.median(r.bare.records_per_s for r in runs),
            "bare loop obs/s": bare, "share (same topic)": round(share, 3),
            "share of the per-observation loop": round(rate / per_observation, 3),
            ">= 0.25 of the per-observation loop": "met" if rate / per_observation >= TARGET else "NOT met"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1000, help="simulated batches per source")
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--fill", type=float, default=10.0,
                        help="seconds the poller publishes after its first record")
    parser.add_argument("--speed", type=float, default=600.0, help="simulated seconds per wall second")
    parser.add_argument("--poll-interval", type=float, default=1.0, dest="poll_interval")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--no-split", action="store_true", dest="no_split",
                        help="skip the split deployment (normalise,track and sink as two workers)")
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    baseline.add_arguments(parser)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    with baseline.materialise(args.baseline_ref) as base:
        current = baseline.current()
        variants = [(current, False), (current, True), (base, False)]  # the split: today's code only
        if args.no_split:
            variants.remove((current, True))
        runs: dict[str, list[Drain]] = {label(t, split): [] for t, split in variants}
        for i in range(args.runs):
            for tree, split in variants:
                d = drain(args, tree, current, split=split)
                code = label(tree, split)
                runs[code].append(d)
                print(f"run {i + 1} {code}: {d.rows:,} rows of {d.bare.observations:,} observations "
                      f"in {d.raw_records:,} raw records in "
                      f"{d.seconds:.2f} s: {d.rate:,.0f} obs/s; bare loop {d.bare.records_per_s:,.0f} rec/s, "
                      f"{d.bare.observations_per_s:,.0f} obs/s; share {d.share:.3f}", flush=True)
    per_observation = statistics.median(r.bare.records_per_s for r in runs[label(base, False)])
    rows = [summary_row(code, rs, per_observation) for code, rs in runs.items()]
    for code, drains in runs.items():
        for d in drains:
            if d.rows != d.bare.observations:
                print(f"WARNING {code}: {d.rows:,} rows in batch_snapshots for {d.bare.observations:,} "
                      "observations on raw: the worker did not write each observation once", flush=True)
    for row in rows:
        print(f"{row['code']:>60}: {row['worker obs/s']:10,.0f} obs/s, share {row['share (same topic)']} "
              f"(same topic), of the per-observation loop {row['share of the per-observation loop']} "
              f"(target 0.25: {row['>= 0.25 of the per-observation loop']})", flush=True)
    if args.record:
        notes = NOTES.format(batches=args.batches, sources=args.sources, fill=args.fill, speed=args.speed,
                             poll=args.poll_interval)
        save("worker", TITLE, rows, notes)


TITLE = "Worker: batchscope worker draining the poller's records, beside a bare aiokafka loop"
NOTES = """
Per run and code tree (trees alternate; `bench/baseline.py`): the simulator (today's, {sources}
sources x {batches:,} batches, speed x{speed:g}) serves while the tree's real poller (`batchscope
poll`, poll interval {poll:g} s, every active batch due each interval, 100 requests/s per source)
fills fresh topics' `<prefix>.raw` for {fill:g} s after its first record, with no worker running.
Then the tree's `batchscope worker` (normalise, track, sink; embedded chDB) drains it, timed from
its first snapshot record (broker timestamp) to the moment its consumer group has committed
everything it reads: raw, snapshots, and the sink's feed of change events (`changesets` today,
`changes` in the baseline). Commits are looked at every 20 ms with clients kept open (since
cf20cdb; before it, every 0.5 s or so, with clients started for each look, which made a drain look
up to that much longer); today's worker commits every 0.25 s and
the baseline's every second, so up to that much of this is commit interval. `worker obs/s`
= rows in `batch_snapshots` / that time
(`observations on raw` beside it: they must be equal). The bare loop (`bench/bareloop.py`: aiokafka
consume -> orjson parse -> produce, one fetched batch in flight) then reads the same raw topic.
The split row is today's code as two workers, `worker --agents normalise,track` and
`worker --agents sink` (the sink in its own group), timed until both groups committed everything.
`share (same topic)` = worker obs/s / bare-loop obs/s on that topic: today's raw records hold
about 18 observations each, so that loop parses and produces once per 18 observations and does
no work per observation. `share of the per-observation loop` = worker obs/s / the bare loop's
records/s on the baseline's topic, whose records hold one observation each: the loop of issue 13
(23,000 records/s when it was written, one observation a record), and the share its target is
judged on (0.25; stretch 0.5).
"""


if __name__ == "__main__":
    main()
