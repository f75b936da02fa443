"""The ``spend`` saved query over a fleet of N batches in chDB, against reading the latest state.

A fresh migrated database with the shipped prices loaded (``pipeline.clickhouse.spend.load``) gets
N batches (default 1,000,000) generated server side (``INSERT ... SELECT FROM numbers(N)``): ten
sources, five models (one unpriced), teams in the metadata, typed usage, created over the 30 days
from the shipped prices' valid_from, each observed twice (in progress, then completed), so
``batch_latest FINAL`` has replaced rows to fold. Then, interleaved, ``--runs`` times each: the
``spend`` saved query (the ``batch_spend`` view: latest state, price selection, Decimal cost,
grouped), the ``unpriced`` saved query, and the baseline: the same grouping of tokens over
``batch_current`` with no price at all (what reading the latest state costs by itself). Peak RSS
is the benchmark process's (chDB runs in it).

    python -m bench.spend_bench [--batches N] [--runs R] [--record]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

from bench.report import save
from pipeline.clickhouse import spend
from pipeline.clickhouse.queries import SavedQuery, saved
from pipeline.clickhouse.store import Store
from pipeline.config import Settings

FILL = """INSERT INTO {db}.batch_snapshots
    (source, provider, batch_id, status, provider_status, observed_at, model, created_at, metadata,
     errors, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, usage_source,
     kafka_topic, kafka_partition, kafka_offset, kafka_index)
SELECT
    concat('sim-', toString(number % 10)) AS source, 'openai', concat('batch_', toString(number)),
    step, step,
    created + toIntervalMinute(30 + 60 * (step = 'completed')),
    ['gpt-4o-mini', 'gpt-4.1', 'o4-mini', 'text-embedding-3-small', 'gpt-unpriced'][number % 5 + 1],
    created,
    map('team', ['search', 'ads', 'eval'][number % 3 + 1]),
    '[]',
    1000 * (number % 97 + 1), 100 * (number % 7), 300 * (number % 13 + 1), 10 * (number % 3), 'object',
    'bench', 0, number * 2 + (step = 'completed'), 0
FROM
(
    SELECT number, arrayJoin(['in_progress', 'completed']) AS step,
           toDateTime64('2026-12-03 00:00:00', 3, 'UTC') + toIntervalSecond(number % (30 * 86400)) AS created
    FROM numbers({batches})
)"""
BASELINE = """SELECT toDate(created_at) AS day, metadata['team'] AS team, source, provider, model,
    count() AS batches, sum(coalesce(input_tokens, 0)) AS input_tokens,
    sum(coalesce(output_tokens, 0)) AS output_tokens
FROM batch_current
GROUP BY day, team, source, provider, model"""


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    rows = fn()
    return time.perf_counter() - start, rows


def rows_of(store: Store, query: SavedQuery) -> Callable[[], int]:
    return lambda: len(store.query(query.sql, params=query.defaults).rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spend-bench-") as tmp:
        store = Store(f"chdb://{tmp}/clickhouse", "bench")
        store.migrate()
        loaded = spend.load(store, Settings())
        start = time.perf_counter()
        store.command(FILL.format(db="bench", batches=args.batches))
        fill = time.perf_counter() - start
        queries = {"spend": saved("spend"), "unpriced": saved("unpriced"),
                   "baseline": SavedQuery("baseline", BASELINE, "")}
        times: dict[str, list[float]] = {"spend": [], "unpriced": [], "baseline": []}
        rows: dict[str, int] = {}
        for _ in range(args.runs):
            for name, query in queries.items():
                took, rows[name] = timed(rows_of(store, query))
                times[name].append(took)
        (counted,) = store.query("SELECT count() FROM batch_spend").rows
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = statistics.median(times["baseline"])
    figures = [{"query": name, "batches": int(counted[0]), "result rows": rows[name],
                "seconds (median)": statistics.median(times[name]),
                "batches/s": int(counted[0]) / statistics.median(times[name]),
                "vs baseline": statistics.median(times[name]) / base}
               for name in ("spend", "unpriced", "baseline")]
    for row in figures:
        print(row)
    print(f"fill: {fill:.1f} s for {args.batches:,} batches x 2 observations; {loaded.line()}; "
          f"peak RSS {peak:,.0f} MiB")
    if args.record:
        title = f"Spend: the spend saved query over {args.batches:,} batches in chDB (issue 16)"
        save("spend", title, figures, notes=NOTES.format(peak=peak, fill=fill))


NOTES = """
Each batch is observed twice (in progress, then completed) with typed usage; five models, one
unpriced; ten sources; three teams in the metadata; created over 30 days. `spend` and `unpriced`
are the saved queries over the `batch_spend` view (latest state by `batch_latest FINAL`, price
chosen per batch by provider, model prefix and `valid_from`, exact Decimal cost); the baseline
groups the same tokens over `batch_current` with no price (reading the latest state alone).
"vs baseline" is the time ratio (lower is better). Peak RSS of the benchmark process, chDB
included: {peak:,.0f} MiB. Filling the tables (server side, 2 rows a batch): {fill:.1f} s.
"""


if __name__ == "__main__":
    main()
