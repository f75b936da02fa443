"""Poller efficiency and detection delay against the simulator (issue 4, acceptance 4).

(a) API calls per poll cycle: our SourcePoller (discovery through the list endpoint, stopping at
the first page whose batches are all known and terminal, then a GET per active batch the listing
did not reach) against a naive poller that lists every page every cycle, same page size, same
simulated instants, on one simulated source whose fleet is --terminal-share terminal at the first
cycle (see bench.poller_calls for the simulated clock and the exact meaning of "missed").
(b) Detection delay: from a simulated status change to the raw record in Kafka (real broker,
bench-only topics, deleted afterwards), p50 and p99, at the active poll interval, in real time
(see bench.poller_delay). Needs the local broker (scripts/kafka up) unless --no-kafka.

    python -m bench.poller_bench [--batches 10000] [--cycles 8] [--interval 2] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys

from bench.poller_calls import CallsResult, count_calls
from bench.poller_delay import DelayResult, measure, percentile
from pipeline.errors import BatchscopeError


def say(line: str) -> None:
    print(line, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=10_000, help="fleet size (default 10000)")
    p.add_argument("--terminal-share", type=float, default=0.9,
                   help="terminal share at the first cycle (0.9)")
    p.add_argument("--cycles", type=int, default=8, help="poll cycles for (a), the first included (8)")
    p.add_argument("--interval", type=float, default=2.0, help="active poll interval, wall seconds (2)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second (60)")
    p.add_argument("--page-limit", type=int, default=100, help="list page size for both pollers (100)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of polling per (b) run (20)")
    p.add_argument("--runs", type=int, default=2, help="(b) runs; p50/p99 are the median over runs (2)")
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka broker (127.0.0.1:9092)")
    p.add_argument("--no-kafka", action="store_true", help="part (a) only")
    args = p.parse_args(argv)
    checks = [(args.batches >= 1, "--batches must be at least 1"),
              (0 < args.terminal_share < 1, "--terminal-share must be between 0 and 1"),
              (args.cycles >= 2, "--cycles must be at least 2"),
              (args.interval > 0 and args.speed > 0, "--interval and --speed must be positive"),
              (1 <= args.page_limit <= 100, "--page-limit must be between 1 and 100"),
              (args.duration > 0 and args.runs >= 1, "--duration must be positive, --runs at least 1")]
    for ok, message in checks:
        if not ok:
            p.error(message)
    return args


def report_calls(r: CallsResult, cycles: int) -> None:
    say(f"(a) fleet {r.batches:,} batches, {r.share:.1%} terminal ({r.active:,} active) at simulated "
        f"t={r.start / 3600:.2f} h, {cycles} cycles")
    say(f"    first cycle:            ours {r.ours[0]:6} calls   naive {r.naive[0]:6} calls")
    say(f"    later cycles (median):  ours {r.steady_ours:6g} calls   naive {r.steady_naive:6g} calls"
        f"   -> {r.ratio:.2f}x fewer (target >= 10x: {'met' if r.ratio >= 10 else 'NOT met'})")
    say(f"    per cycle: ours {r.ours}, naive {r.naive}")
    say(f"    fewest calls any poller refreshing every active batch each cycle could make (median of "
        f"later cycles): {r.steady_bound:g}; per cycle {r.bounds}")
    m = r.missed
    say(f"    transitions revealable at this interval: {m.revealable}; missed: ours {m.missed['ours']}, "
        f"naive {m.missed['naive']}; wrong observations: ours {m.wrong['ours']}, naive {m.wrong['naive']}; "
        f"hidden by the poll granularity (both): {m.hidden_by_granularity}; "
        f"naive saw exactly the sampled truth: {m.naive_equals_truth}")


def report_delay(runs: list[DelayResult], interval: float) -> None:
    p50s = [percentile(r.consume, 50) for r in runs]
    p99s = [percentile(r.consume, 99) for r in runs]
    for i, r in enumerate(runs, 1):
        say(f"    run {i}: {len(r.consume)} transitions, p50 {p50s[i - 1]:.2f} s, p99 {p99s[i - 1]:.2f} s, "
            f"max {max(r.consume):.2f} s (producer timestamp: p50 {percentile(r.produce, 50):.2f}, "
            f"p99 {percentile(r.produce, 99):.2f}); cycle median {statistics.median(r.cycles):.2f} s; "
            f"unseen: {r.superseded} superseded within a poll period ({r.period:.1f} s), {r.lost} lost")
    p99 = statistics.median(p99s)
    say(f"(b) detection delay, median over {len(runs)} runs: p50 {statistics.median(p50s):.2f} s, "
        f"p99 {p99:.2f} s (target <= interval + 1 s = {interval + 1:.1f} s: "
        f"{'met' if p99 <= interval + 1 else 'NOT met'})")


async def run(args: argparse.Namespace) -> None:
    say(f"machine: {platform.machine()}, python {platform.python_version()}")
    say(f"(a) calls per cycle: {args.batches:,} batches, page limit {args.page_limit}, "
        f"interval {args.interval:g} s x speed {args.speed:g}")
    calls = await count_calls(args.batches, args.terminal_share, args.cycles, args.interval, seed=args.seed,
                              speed=args.speed, page_limit=args.page_limit, progress=say)
    report_calls(calls, args.cycles)
    if args.no_kafka:
        return
    runs = []
    for i in range(args.runs):
        say(f"(b) detection delay, run {i + 1}/{args.runs}: {args.duration:g} s of polling "
            f"on {args.bootstrap}")
        runs.append(await measure(args.bootstrap, args.batches, args.terminal_share, args.interval,
                                  args.duration, seed=args.seed, speed=args.speed,
                                  page_limit=args.page_limit, progress=say))
        if not runs[-1].consume:
            sys.exit("no transition was detected: lengthen --duration")
    report_delay(runs, args.interval)


def main(argv: list[str] | None = None) -> None:
    try:
        asyncio.run(run(parse(argv)))
    except BatchscopeError as exc:
        sys.exit(f"poller_bench: {exc}")


if __name__ == "__main__":
    main()
