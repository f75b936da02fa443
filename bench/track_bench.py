"""Observations per second through normalise + track on the real Kafka broker, one worker,
today's code against a baseline git ref in the same run.

The workload is the poller's pages of a simulated fleet (:func:`tests.support.workload.pages`: every
active batch observed each 300 simulated seconds, up to 100 objects a page sharing their
``observed_at``). Each run publishes them to fresh topics, one ``Publisher.publish(page)`` call a
page, with the code tree's own ``pipeline.kafka.Publisher`` (``bench/pagepub.py`` in a process of
that tree: today's packs a page into records per partition, the baseline's sends one record per
envelope), then starts that tree's worker (``python -m agents.worker``: normalise and track,
memory store, every count change an event) and waits until every expected change event is on
``<prefix>.changes``. Rate = observations / (first snapshot record -> last change event, broker
timestamps): publishing, start-up and group join are not counted. The trees alternate, run by
run (:mod:`bench.baseline`).

    python -m bench.track_bench [--batches N] [--runs R] [--baseline-ref REF] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import baseline
from bench.baseline import Tree
from bench.report import save
from pipeline.config import KafkaConfig
from pipeline.core.models import Envelope
from pipeline.core.transitions import Rules
from pipeline.kafka import ensure_topics
from tests.support.kafka import PARTITIONS, Worker, count, delete_topics, read_all, write_config
from tests.support.workload import INTERVAL, expected_changes, pages

RULES = Rules(progress_min_interval=0.0)  # every count change is a progress event: the most work
TIMEOUT = 300.0
PAGEPUB = Path(__file__).resolve().parent / "pagepub.py"


@dataclass(frozen=True, slots=True)
class Run:
    tree: str
    observations: int
    raw_records: int
    snapshot_records: int
    changes: int
    seconds: float
    cpu: float  # the worker's CPU seconds from its first change event to its last

    @property
    def cpu_us(self) -> float:
        """The worker's CPU per observation, in µs (from its first change event: start-up and
        the group join left out)."""
        return self.cpu / self.observations * 1e6

    @property
    def rate(self) -> float:
        return self.observations / self.seconds


def page_lines(observed: list[list[Envelope]]) -> bytes:
    """The pages as ``bench/pagepub.py`` reads them: one JSON line a page."""
    return b"".join(orjson.dumps({"source": p[0].source, "provider": p[0].provider,
                                  "observed_at": p[0].observed_at,
                                  "payloads": [e.payload for e in p]}) + b"\n" for p in observed)


def publish_pages(tree: Tree, bootstrap: str, prefix: str, path: Path) -> str:
    """Publish the pages in ``path`` with ``tree``'s Publisher; its one-line summary."""
    done = subprocess.run([sys.executable, str(PAGEPUB), "--bootstrap", bootstrap, "--prefix", prefix,
                           "--partitions", str(PARTITIONS), str(path)], cwd=tree.path, env=tree.env(),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree.label}: publishing the pages failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


async def window(bootstrap: str, prefix: str) -> tuple[float, int]:
    """Seconds from the first snapshot record to the last change event (broker timestamps), and
    the snapshot records."""
    snaps = await read_all(bootstrap, f"{prefix}.snapshots")
    changes = await read_all(bootstrap, f"{prefix}.changes")
    return float(max(r.timestamp for r in changes) - min(r.timestamp for r in snaps)) / 1000.0, len(snaps)


def one_run(bootstrap: str, tree: Tree, pages_file: Path, observations: int, want: int) -> Run:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    with tempfile.TemporaryDirectory(prefix="batchscope-bench-") as tmp:
        worker = Worker(write_config(Path(tmp), bootstrap, prefix, RULES), Path(tmp) / "worker.log",
                        codec=None, env=tree.env(), cwd=tree.path)
        try:
            asyncio.run(ensure_topics(kafka))
            summary = publish_pages(tree, bootstrap, prefix, pages_file)
            if f", {observations} observations" not in summary:
                raise SystemExit(f"{tree.label}: expected {observations} observations published: {summary}")
            raw = asyncio.run(count(bootstrap, kafka.topic("raw")))
            worker.start()
            deadline = time.monotonic() + TIMEOUT
            first: float | None = None  # the worker's CPU when its first change event was seen
            while (seen := asyncio.run(count(bootstrap, kafka.topic("changes")))) < want:
                if seen and first is None:
                    first = worker.cpu_seconds()
                if not worker.running() or time.monotonic() > deadline:
                    raise SystemExit(f"{tree.label}: worker stopped or timed out ({seen} of {want} change "
                                     f"events):\n{worker.tail()}")
                time.sleep(0.2)
            cpu = worker.cpu_seconds() - (first or 0.0)
            seconds, snapshots = asyncio.run(window(bootstrap, prefix))
            return Run(tree.label, observations, raw, snapshots, seen, seconds, cpu)
        finally:
            worker.kill(signal.SIGTERM)
            asyncio.run(delete_topics(bootstrap, prefix))


def summary_row(tree: Tree, runs: list[Run], base: float) -> dict[str, Any]:
    rate = statistics.median(r.rate for r in runs)
    return {"code": f"{tree.label} ({tree.short})", "observations": runs[0].observations,
            "raw records": runs[0].raw_records, "snapshot records": runs[-1].snapshot_records,
            "change events": runs[0].changes, "runs": len(runs), "obs/s (median)": rate,
            "worker CPU µs/obs (median)": round(statistics.median(r.cpu_us for r in runs), 1),
            "x baseline": round(rate / base, 2), ">= 10,000 obs/s": "met" if rate >= TARGET else "NOT met"}


TARGET = 10_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=1, help="simulated sources the batches spread over")
    parser.add_argument("--interval", type=float, default=INTERVAL,
                        help="simulated seconds between two observations of an active batch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    baseline.add_arguments(parser)
    args = parser.parse_args()
    observed = pages(args.batches, args.sources, args.interval)
    flat = [e for page in observed for e in page]
    want = sum(1 for _ in expected_changes(flat, RULES))
    print(f"{len(flat):,} observations in {len(observed):,} pages -> {want:,} change events", flush=True)
    with tempfile.TemporaryDirectory(prefix="batchscope-pages-") as tmp, \
            baseline.materialise(args.baseline_ref) as base:
        pages_file = Path(tmp) / "pages.jsonl"
        pages_file.write_bytes(page_lines(observed))
        trees = [baseline.current(), base]
        runs: dict[Tree, list[Run]] = {t: [] for t in trees}
        for i in range(args.runs):
            for tree in trees:
                run = one_run(args.bootstrap, tree, pages_file, len(flat), want)
                runs[tree].append(run)
                print(f"run {i + 1} {tree.label}: {run.rate:8,.0f} obs/s ({run.seconds:.2f} s; "
                      f"{run.raw_records:,} raw, {run.snapshot_records:,} snapshot records; worker CPU "
                      f"{run.cpu_us:.0f} µs/obs)", flush=True)
    base_rate = statistics.median(r.rate for r in runs[base])
    rows = [summary_row(t, rs, base_rate) for t, rs in runs.items()]
    print(f"machine: {platform.machine()} python {platform.python_version()}, one worker, median of "
          f"{args.runs} runs")
    for row in rows:
        cpu = row["worker CPU µs/obs (median)"]
        print(f"{row['code']:>40}: {row['obs/s (median)']:10,.0f} obs/s ({row['x baseline']}x baseline; "
              f"worker CPU {cpu} µs/obs; target 10,000: {row['>= 10,000 obs/s']})")
    if args.record:
        save("track", "Broker path: normalise + track on the real Kafka broker, one worker", rows,
             NOTES.format(batches=args.batches, sources=args.sources, interval=args.interval))


NOTES = """
Workload (`tests.support.workload.pages`): {batches:,} simulated OpenAI batches over {sources} source(s),
as the poller sees them: every {interval:g} simulated seconds each source is listed newest first,
100 batches a page, and a page publishes its batches not yet known terminal (all with the page's
`observed_at`), for the fleet's 6 busy hours. Each run publishes the pages to fresh topics, one
`Publisher.publish(page)` a page, with the tree's own Publisher (`bench/pagepub.py` run with
`PYTHONPATH=<tree>`: today's packs a page into one record per partition; the baseline's sends one
record per envelope), then starts that tree's worker (`python -m agents.worker`: normalise and
track, memory store, every count change an event) and waits for every expected change event.
Rate = observations / (first snapshot record -> last change event, broker timestamps):
publishing, start-up and group join are not counted. Worker CPU = the worker process's CPU
seconds (all threads, `/proc`) from the moment its first change event is seen (polled every
0.2 s) to its last, per observation: what the code costs, less sensitive than the rate to the
broker's pauses and to the other core's load. The baseline is the code of the git ref in
its row, materialised as a worktree (`bench/baseline.py`); runs alternate between the trees.
Target (issue 13): 10,000 observations/s; stretch 30,000.
"""


if __name__ == "__main__":
    main()
