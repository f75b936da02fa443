"""Events per second through normalise + track on the real Kafka broker, one worker.

Each run publishes the raw envelopes of a simulated fleet (``bench.workload``) to fresh topics,
starts one worker (``python -m agents.worker``, normalise + track agents) and waits until every
expected change event is on ``<prefix>.changes``. The rate is the envelopes divided by the time
from the first snapshot the normalise agent produced to the last change event the track agent
produced (broker timestamps), so worker start-up and group join are not counted. The baseline
is the same agents with the stdlib ``json`` codec per event; runs alternate between the two.

    python -m bench.track_bench [--batches N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.broker import Worker, count, delete_topics, publish, read_all, write_config
from bench.report import save
from bench.workload import envelopes, expected_changes
from pipeline.config import KafkaConfig
from pipeline.kafka import ensure_topics
from pipeline.transitions import Rules

RULES = Rules(progress_min_interval=0.0)  # every count change is a progress event: the most work
TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Run:
    codec: str
    envelopes: int
    changes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.envelopes / self.seconds


async def window(bootstrap: str, prefix: str) -> float:
    """Seconds from the first snapshot to the last change event, by broker timestamps."""
    snaps = await read_all(bootstrap, f"{prefix}.snapshots")
    changes = await read_all(bootstrap, f"{prefix}.changes")
    return float(max(r.timestamp for r in changes) - min(r.timestamp for r in snaps)) / 1000.0


def one_run(bootstrap: str, codec: str, raw: list[tuple[bytes, bytes]], want: int) -> Run:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=prefix)
    with tempfile.TemporaryDirectory(prefix="batchscope-bench-") as tmp:
        worker = Worker(write_config(Path(tmp), bootstrap, prefix, RULES), Path(tmp) / "worker.log", codec)
        try:
            asyncio.run(ensure_topics(kafka))
            asyncio.run(publish(bootstrap, kafka.topic("raw"), raw))
            worker.start()
            deadline = time.monotonic() + TIMEOUT
            while asyncio.run(count(bootstrap, kafka.topic("changes"))) < want:
                if not worker.running() or time.monotonic() > deadline:
                    raise SystemExit(f"worker stopped or timed out:\n{worker.tail()}")
                time.sleep(0.2)
            return Run(codec, len(raw), want, asyncio.run(window(bootstrap, prefix)))
        finally:
            worker.kill(signal.SIGTERM)
            asyncio.run(delete_topics(bootstrap, prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = parser.parse_args()
    observed = envelopes(args.batches)
    raw = [(e.key.encode(), e.to_json()) for e in observed]
    want = sum(1 for _ in expected_changes(observed, RULES))
    runs: dict[str, list[Run]] = {"json": [], "orjson": []}
    for i in range(args.runs):
        for codec in runs:
            run = one_run(args.bootstrap, codec, raw, want)
            runs[codec].append(run)
            print(f"run {i + 1} {codec:6}: {run.rate:8,.0f} envelopes/s ({run.seconds:.2f} s)", flush=True)
    base = statistics.median(r.rate for r in runs["json"])
    fast = statistics.median(r.rate for r in runs["orjson"])
    print(f"machine: {platform.machine()} python {platform.python_version()}, one worker, "
          f"{len(raw)} envelopes -> {want} change events, median of {args.runs} runs")
    print(f"orjson codec:   {fast:10,.0f} envelopes/s ({fast * want / len(raw):,.0f} change events/s)")
    print(f"stdlib json:    {base:10,.0f} envelopes/s (baseline)")
    print(f"speed-up:      {fast / base:10.2f}x")
    if args.record:
        save("track", "Broker path: normalise + track on the real Kafka broker, one worker", [{
            "envelopes": len(raw), "change events": want, "runs": args.runs,
            "orjson codec (env/s)": fast, "stdlib json baseline (env/s)": base,
            "speed-up": round(fast / base, 2)}], NOTES)


NOTES = """
Each run publishes the raw envelopes of the simulated batches (each observed on entering each
status and halfway to the next) to fresh topics, starts one worker (`python -m agents.worker`:
the normalise and track agents, memory store, every count change an event) and waits for every
expected change event. Rate = envelopes / (first snapshot -> last change event, broker
timestamps): start-up and group join are not counted. Baseline: the same agents with the stdlib
`json` codec; runs alternate between the two.
"""


if __name__ == "__main__":
    main()
