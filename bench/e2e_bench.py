"""End-to-end latency: a simulated status change -> its change-event row queryable in ClickHouse.

For each load (total simulated batches, spread over ``--sources`` sources) the benchmark runs the
whole pipeline as users run it, ``batchscope run`` (in-process simulator, poller, the real local
Kafka broker, the Faust agents, chDB), for ``--seconds`` of wall time, then matches every true
status transition of the simulator's ground truth that happened inside the measurement window
with the ``status_changed`` row the sink wrote for it in ``batch_changes``. Per transition:

- detection: the poller's ``observed_at`` minus the true transition instant (bounded by the
  poll interval: this is the baseline, what the raw topic gives a consumer, measured in the same
  run);
- end to end: ``sunk_at`` (the server's insert time, migration 003) minus the true transition
  instant; the pipeline's own share is the difference of the two.

The true instant of a transition is simulated time mapped back to wall time with the simulator's
speed, from the ``now`` of a ground-truth read taken at a known wall instant (error below 2/speed
seconds). Transitions shorter than a poll interval are never observed (the status was never
served): they are counted as unobserved, not as latency. Those in the last ``--tail`` seconds of
the window are left out: their rows may still be on their way.

Each load runs today's code; the loads in ``--baseline-loads`` then run the code of
``--baseline-ref`` too (:mod:`bench.baseline`), right after, in the same run. Targets (issue 13,
at 8,000 batches): e2e p99 at most 3 s, pipeline p50 at most 1 s.

    python -m bench.e2e_bench [--loads 500,2000,8000] [--seconds 60] [--baseline-loads 8000] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
from pipeline.clickhouse.queries import query_running
from pipeline.core.errors import BatchscopeError
from tests.support.kafka import delete_topics, run_toml
from tests.support.processes import free_port, stop_run

CHANGES_SQL = """
SELECT source, batch_id, to_status, toUnixTimestamp64Milli(observed_at), toUnixTimestamp64Milli(sunk_at)
FROM batch_changes FINAL WHERE kind = 'status_changed'
"""


@dataclass(frozen=True, slots=True)
class Load:
    batches: int
    sources: int

    @property
    def per_source(self) -> int:
        return max(1, self.batches // self.sources)


E2E_P99, PIPELINE_P50 = 3.0, 1.0  # issue 13's targets at 8,000 batches (seconds)


@dataclass(slots=True)
class Outcome:
    load: Load
    code: str
    transitions: int  # true transitions inside the window
    matched: int
    detection: list[float]
    total: list[float]

    def row(self) -> dict[str, Any]:
        pipeline = [t - d for t, d in zip(self.total, self.detection, strict=True)]
        e2e_p99, pipeline_p50 = pct(self.total, 99), pct(pipeline, 50)
        return {"code": self.code, "batches": self.load.per_source * self.load.sources,
                "sources": self.load.sources, "transitions": self.transitions, "observed": self.matched,
                "detection_p50": pct(self.detection, 50), "detection_p99": pct(self.detection, 99),
                "e2e_p50": pct(self.total, 50), "e2e_p99": e2e_p99,
                "pipeline_p50": pipeline_p50, "pipeline_p99": pct(pipeline, 99),
                f"e2e p99 <= {E2E_P99:g} s": met(e2e_p99, E2E_P99, self.transitions),
                f"pipeline p50 <= {PIPELINE_P50:g} s": met(pipeline_p50, PIPELINE_P50, self.transitions)}


def met(value: float | None, limit: float, transitions: int) -> str:
    """A target's verdict; a load whose transitions all went unseen in the window has not met it."""
    if value is None:
        return "NOT met: none observed" if transitions else "-"
    return "met" if value <= limit else "NOT met"


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def write_config(tmp: Path, args: argparse.Namespace, load: Load, prefix: str,
                 ports: dict[str, int]) -> Path:
    path = tmp / "batchscope.toml"
    path.write_text(run_toml(tmp, args.bootstrap, prefix) + f"""http_port = {ports['http']}
metrics_port = {ports['metrics']}
log_level = "warning"

[simulator]
batches = {load.per_source}
sources = {load.sources}
seed = {args.seed}
speed = {args.speed}
port = {ports['sim']}
poll_interval = {args.poll_interval}
""", encoding="utf-8")
    return path


def get_truth(port: int) -> tuple[float, dict[str, Any]]:
    """The ground truth and the wall instant it describes (the middle of the request)."""
    before = time.time()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/truth", timeout=60) as resp:
        body = json.loads(resp.read())
    return (before + time.time()) / 2, body


def wait_ready(data_dir: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"batchscope run exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            query_running(data_dir, "SELECT 1")
            return
        except BatchscopeError:
            time.sleep(0.5)
    sys.exit(f"the pipeline did not serve queries within {timeout:.0f} s; log: {log}")


def run_load(args: argparse.Namespace, load: Load, tree: Tree) -> Outcome:
    prefix = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    ports = {"http": free_port(), "metrics": free_port(), "sim": free_port()}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmpdir:
        tmp = Path(tmpdir)
        config, log = write_config(tmp, args, load, prefix, ports), tmp / "run.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", tree.cli, "--config", str(config), "run"],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=tree.path, env=tree.env())
        data_dir = tmp / "data"  # the endpoint's pipeline.json and token
        try:
            wait_ready(data_dir, proc, log)
            start = time.time() + args.warmup
            progress(f"  load {load.batches:,} batches, {tree.label}: pipeline up; measuring for "
                     f"{args.seconds:.0f} s")
            time.sleep(args.warmup + args.seconds)
            end = time.time() - args.tail
            wall, truth = get_truth(ports["sim"])
            time.sleep(args.tail + 2.0)  # let the rows of the window's last transitions land
            rows = query_running(data_dir, CHANGES_SQL).rows
        finally:
            stop_run(proc, timeout=60)
            asyncio.run(delete_topics(args.bootstrap, prefix))
    return match(load, truth, wall, rows, (start, end), args.speed, f"{tree.label} ({tree.short})")


def match(load: Load, truth: dict[str, Any], wall: float, rows: list[tuple[Any, ...]],
          window: tuple[float, float], speed: float, code: str = "current") -> Outcome:
    """Pair each true transition inside the window with its change row, if the pipeline saw it."""
    seen = {(r[0], r[1], r[2]): (r[3] / 1000.0, r[4] / 1000.0) for r in rows}
    now = float(truth["now"])
    outcome = Outcome(load, code, 0, 0, [], [])
    for batch in truth["batches"]:
        for step in batch["transitions"][1:]:  # the first status is the batch's discovery
            at = wall - (now - float(step["at"])) / speed
            if not window[0] <= at <= window[1]:
                continue
            outcome.transitions += 1
            hit = seen.get((batch["source"], batch["batch_id"], step["status"]))
            if hit is not None:
                outcome.matched += 1
                outcome.detection.append(max(hit[0] - at, 0.0))
                outcome.total.append(max(hit[1] - at, 0.0))
    return outcome


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default="500,2000,8000", help="total simulated batches per load")
    parser.add_argument("--sources", type=int, default=10, help="simulated sources the batches spread over")
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window per load")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds ignored after start-up")
    parser.add_argument("--tail", type=float, default=5.0, help="last seconds of the window left out")
    parser.add_argument("--speed", type=float, default=600.0, help="simulated seconds per wall second")
    parser.add_argument("--poll-interval", type=float, default=1.0, dest="poll_interval",
                        help="the poller's interval per source (wall seconds)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    parser.add_argument("--baseline-loads", default="8000", dest="baseline_loads",
                        help="loads the baseline ref also runs, after today's code (empty: none)")
    baseline.add_arguments(parser)
    args = parser.parse_args()
    try:
        loads = [Load(int(n), args.sources) for n in args.loads.split(",")]
        again = {int(n) for n in args.baseline_loads.split(",") if n.strip()}
    except ValueError:
        parser.error(f"--loads, --baseline-loads: expected comma-separated integers, got {args.loads!r}, "
                     f"{args.baseline_loads!r}")
    print(f"poll interval {args.poll_interval:g} s, speed x{args.speed:g}, "
          f"window {args.seconds:g} s per load; targets: e2e p99 <= {E2E_P99:g} s, "
          f"pipeline p50 <= {PIPELINE_P50:g} s")
    print(f"{'batches':>8} {'transitions':>11} {'observed':>8} {'detect p50':>10} {'detect p99':>10} "
          f"{'e2e p50':>8} {'e2e p99':>8} {'pipe p50':>8}  code")
    results = []
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(baseline.materialise(args.baseline_ref)) if again else None
        for load in loads:
            for tree in [baseline.current()] + ([base] if base and load.batches in again else []):
                row = run_load(args, load, tree).row()
                results.append(row)
                print(f"{row['batches']:>8,} {row['transitions']:>11,} {row['observed']:>8,} "
                      f"{fmt(row['detection_p50'])} {fmt(row['detection_p99'])} {fmt(row['e2e_p50'], 8)} "
                      f"{fmt(row['e2e_p99'], 8)} {fmt(row['pipeline_p50'], 8)}  {row['code']} "
                      f"(e2e p99: {row[f'e2e p99 <= {E2E_P99:g} s']}, pipeline p50: "
                      f"{row[f'pipeline p50 <= {PIPELINE_P50:g} s']})", flush=True)
    if args.record:
        save("e2e", "End to end: simulated status change -> change row queryable in ClickHouse", results,
             NOTES.format(poll=args.poll_interval, speed=args.speed, seconds=args.seconds))


NOTES = """
The full pipeline (`batchscope run`: simulator, poller, real Kafka, Faust agents, chDB) per load,
{seconds:g} s measured after a warm-up; poll interval {poll:g} s, simulated speed x{speed:g}.
`transitions`: true status changes inside the window; `observed`: those with a `status_changed`
row (the others lasted less than a poll interval, so no poller could see them). Seconds:
`detection` = the poller's `observed_at` minus the true instant (the baseline: what the raw topic
gives, bounded by the poll interval); `e2e` = the row's `sunk_at` (server insert time) minus the
true instant; `pipeline_p50`, `pipeline_p99` = percentiles of their difference (Kafka, agents,
sink batching). Targets (issue 13, at 8,000 batches): e2e p99 <= 3 s, pipeline p50 <= 1 s. Rows
marked baseline ran the code of that git ref (`bench/baseline.py`) right after today's, same load.
`batchscope run` is one process: when a load's observation rate (every active batch re-observed
each poll interval here) exceeds its agents' throughput (see the broker path section), a queue
builds during the window and the e2e figures measure that queue.
"""


def fmt(value: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width - 2}.2f} s"


if __name__ == "__main__":
    main()
