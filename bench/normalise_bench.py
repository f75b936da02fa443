"""Throughput of the pure per-record path: raw envelope bytes -> snapshot -> change -> sink rows.

Compared, in the same run, with a baseline that does the same work with the stdlib ``json``
codec instead of orjson. Prints the median of several runs for each.

    python -m bench.normalise_bench [--records N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.report import save
from pipeline.clickhouse.sink import snapshot_row, version
from pipeline.core.models import Envelope, Snapshot
from pipeline.core.normalise import normalise
from pipeline.core.transitions import BatchState, apply
from simulator.fleet import build_fleet
from simulator.server import openai_object


def envelopes(count: int) -> list[Envelope]:
    fleet = build_fleet(seed=1, count=count, source="bench")
    observed = datetime.now(UTC).isoformat()
    return [Envelope("bench", "openai", observed, openai_object(b, b.timeline[-1][1], 1.7e9)) for b in fleet]


Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]
ORJSON: Codec = (orjson.loads, orjson.dumps)
STDLIB: Codec = (json.loads, lambda obj: json.dumps(obj).encode())


def run(raw: list[bytes], codec: Codec) -> int:
    """raw bytes -> envelope -> snapshot -> (Kafka hop) -> track state -> snapshot + latest rows."""
    loads, dumps = codec
    rows: list[bytes] = []
    states: dict[str, BatchState] = {}
    for data in raw:
        obj = loads(data)
        snap = normalise(Envelope(obj["source"], obj["provider"], obj["observed_at"], obj["payload"]))
        snap = Snapshot(**loads(dumps(snap.to_dict())))
        states[snap.key], _ = apply(states.get(snap.key), snap)
        row = snapshot_row(snap)
        rows.append(dumps({**row, "kafka_partition": 0, "kafka_offset": 0}))
        rows.append(dumps({**row, "version": version(snap)}))
    return len(raw)


def measure(raw: list[bytes], codec: Codec, runs: int) -> float:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        done = run(raw, codec)
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = parser.parse_args()
    raw = [orjson.dumps(e) for e in envelopes(args.records)]
    base = measure(raw, STDLIB, args.runs)
    fast = measure(raw, ORJSON, args.runs)
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"records: {args.records}, runs: {args.runs} (median)")
    print(f"orjson codec:   {fast:10,.0f} records/s")
    print(f"stdlib json:    {base:10,.0f} records/s (baseline)")
    print(f"speed-up:      {fast / base:10.2f}x")
    if args.record:
        save("normalise", "Per-record path: normalise -> track -> sink rows (pure Python, no I/O)", [{
            "records": args.records, "runs": args.runs, "orjson codec (rec/s)": fast,
            "stdlib json baseline (rec/s)": base, "speed-up": round(fast / base, 2)}], NOTES)


NOTES = """
The same pipeline code (normalise, transitions, sink row building) over simulated OpenAI batch
objects, once with orjson and once with the stdlib `json` codec (the baseline), in one process.
The broker-level figures (the agents on the real Kafka broker) are in the broker path section.
"""


if __name__ == "__main__":
    main()
