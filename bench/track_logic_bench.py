"""Snapshots per second through the track agent's own logic, pure CPU (no broker, no Faust).

Each snapshot goes the whole per-snapshot track path: parse the snapshot record, parse the batch's
table value, fold (``transitions.apply``), serialise the change events and, when the state
changed, the new table value. The snapshots are those of a simulated fleet (``tests.support.workload``:
each batch observed on entering each status and halfway to the next, interleaved across
batches), delivered as a poller and Kafka would: some observations twice, some late (after a
newer one of the same batch). The baseline is the track path as it was before issue 13
(``tests/transitions_reference.py``, a frozen copy that the equivalence test holds the new code
to), run in the same process, alternating with the new path; both must give the same bytes.
Rates are per second of the thread's CPU time, the median of the runs.

    python -m bench.track_logic_bench [--batches N] [--runs R] [--record]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict

from bench.report import save
from pipeline.core.codec import ORJSON
from pipeline.core.track import track_bytes
from pipeline.core.transitions import Rules
from tests import transitions_reference as reference
from tests.support.workload import deliveries

RULES = Rules(progress_min_interval=0.0)  # every count change is a progress event: the most work
REFERENCE_RULES = reference.Rules(**asdict(RULES))
Record = tuple[bytes, bytes]  # (key, snapshot JSON)
Step = Callable[[bytes | None, bytes], tuple[bytes | None, list[bytes]]]
Outcome = tuple[list[bytes], dict[bytes, bytes]]  # (every change event in order, final table)


def new_step(previous: bytes | None, value: bytes) -> tuple[bytes | None, list[bytes]]:
    return track_bytes(previous, value, RULES)


def baseline_step(previous: bytes | None, value: bytes) -> tuple[bytes | None, list[bytes]]:
    return reference.track_bytes(previous, value, REFERENCE_RULES, ORJSON)


def run(step: Step, records: list[Record]) -> Outcome:
    """The track agent's loop over one partition: a table of state bytes, events in order."""
    table: dict[bytes, bytes] = {}
    events: list[bytes] = []
    for key, value in records:
        state, changes = step(table.get(key), value)
        events += changes
        if state is not None:
            table[key] = state
    return events, table


def timed(step: Step, records: list[Record]) -> float:
    """Snapshots per second of this thread's CPU time: other processes on a shared machine take
    wall time from a single-threaded loop without changing the work it does."""
    start = time.thread_time()
    run(step, records)
    return len(records) / (time.thread_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = parser.parse_args()
    records = deliveries(args.batches)
    events, _ = outcome = run(new_step, records)
    if outcome != run(baseline_step, records):
        raise SystemExit("track_logic_bench: the new track path's bytes differ from the reference's")
    rates: dict[str, list[float]] = {"baseline": [], "new": []}
    for i in range(args.runs):
        rates["baseline"].append(timed(baseline_step, records))
        rates["new"].append(timed(new_step, records))
        print(f"run {i + 1}: baseline {rates['baseline'][-1]:9,.0f}  "
              f"new {rates['new'][-1]:9,.0f} snapshots/s", flush=True)
    base, fast = statistics.median(rates["baseline"]), statistics.median(rates["new"])
    print(f"machine: {platform.machine()} python {platform.python_version()}; {len(records)} snapshots "
          f"of {args.batches} batches -> {len(events)} change events; median of {args.runs} runs")
    print(f"new track path:   {fast:10,.0f} snapshots/s ({1e6 / fast:.1f} µs each)")
    print(f"before issue 13:  {base:10,.0f} snapshots/s ({1e6 / base:.1f} µs each, baseline)")
    print(f"speed-up:        {fast / base:10.2f}x")
    if args.record:
        save("track_logic", "Track logic alone: parse, fold, serialise per snapshot (pure Python, no I/O)", [{
            "snapshots": len(records), "change events": len(events), "runs": args.runs,
            "new (snapshots/s)": fast, "before issue 13 baseline (snapshots/s)": base,
            "speed-up": round(fast / base, 2)}], NOTES)


NOTES = """
The track agent's per-snapshot work without Kafka or Faust: parse the snapshot record and the
batch's table value, fold (`transitions.apply`), serialise the change events and the new table
value (`pipeline.core.track.track_bytes`). Snapshots of the simulated fleet as in the broker bench,
15% delivered twice and 10% late (after the next observation of their batch), every count change
a progress event. Baseline: the track path as it was before issue 13
(`tests/transitions_reference.py`), in the same process, runs alternating; the benchmark stops if
the two give different bytes (events or table values). Rates are per second of the thread's CPU
time (the machine is shared), median of the runs.
"""


if __name__ == "__main__":
    main()
