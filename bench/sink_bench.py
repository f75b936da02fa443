"""Rows per second into ClickHouse (chDB): the sink's batch path against row-at-a-time inserts.

Same run, same data: simulated snapshots cut into the sink's blocks and written through
:class:`pipeline.clickhouse.sink.ClickHouseSink` (one insert per block, with its token; the materialized
view ``batch_latest_feed`` writes as many batch_latest rows in the same INSERT), then the same
snapshot rows inserted one INSERT per row (the baseline, on a prefix of the data: it is slow),
each into a fresh database. Row building (``cut``) is timed apart: it is the agents' Python
work, not ClickHouse's; the last line adds the two (the sink agent cuts a batch, then inserts it).

Then what the sink agent does with each Faust batch of ``--batch`` records (``cut`` aligned to
the batch size, then the inserts), timed together: one insert per block (``write``, the agent
before issue 13) against one insert per table for the batch (``write_all``), with snapshot
records of one snapshot each and version 2 records of ``--per-record`` snapshots each
(``docs/records.md``), the same snapshots every time.

    python -m bench.sink_bench [--records N] [--baseline-records N] [--runs R] [--block N]
        [--batch N] [--per-record N]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
import zlib
from datetime import UTC, datetime

from bench.report import save
from pipeline.clickhouse.sink import Block, ClickHouseSink, Position, Record, cut
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.core.models import Snapshot
from tests.support.workload import SNAPSHOTS_TOPIC as TOPIC
from tests.support.workload import as_records, fleet_snapshots


def as_packed(snaps: list[Snapshot], per_record: int, partitions: int = 4,
              topic: str = TOPIC) -> list[Record]:
    """The same snapshots as version 2 records of ``per_record`` snapshots of one partition each,
    in the partition's order (as the normalise agent answers a raw record of one list page)."""
    parts: list[list[bytes]] = [[] for _ in range(partitions)]
    for snap in snaps:
        parts[zlib.crc32(snap.key.encode()) % partitions].append(snap.to_json())
    records = []
    for part, values in enumerate(parts):
        for offset, start in enumerate(range(0, len(values), per_record)):
            value = b'{"v":2,"snapshots":[' + b",".join(values[start:start + per_record]) + b"]}"
            records.append(Record(Position(topic, part, offset), value))
    return records


async def agent_path(store: AsyncStore, records: list[Record], batch: int, together: bool) -> int:
    """What the sink agent does with each batch of ``batch`` records; returns the rows written."""
    sink = ClickHouseSink(store)
    for start in range(0, len(records), batch):
        blocks, _ = cut(records[start:start + batch], batch, "bench.changes")
        if together:
            await sink.write_all(blocks)
        else:
            for block in blocks:
                await sink.write(block)
    return sink.rows_written


async def write_blocks(store: AsyncStore, blocks: list[Block]) -> None:
    sink = ClickHouseSink(store)
    for b in blocks:
        await sink.write(b)


def row_at_a_time(store: Store, records: list[Record]) -> int:
    blocks, _ = cut(records, len(records) + 1, "bench.changes")
    for b in blocks:
        for offset, index, line in b.snapshots:
            store.insert_json("batch_snapshots", [line], f"row:{b.positions[0].partition}:{offset}.{index}")
    return len(records)


def fresh_store(root: str, run: int) -> Store:
    store = Store(f"chdb://{root}", f"bench_{run}")
    store.migrate()
    return store


AGENT = {"v1 write": (False, False), "v1 write_all": (False, True), "v2 write": (True, False),
         "v2 write_all": (True, True)}  # name: (version 2 records?, write_all?)


def measure(records: list[Record], baseline: list[Record], runs: int, block: int,
            packed: list[Record] | None = None, batch: int = 1000) -> dict[str, float]:
    """Median rates: building the blocks (pure Python), the sink's inserts, row-at-a-time inserts
    (both with the latest-state view attached), and the agent's path per batch (rows/s, ``cut``
    included) for each of :data:`AGENT` when ``packed`` (the same rows as version 2 records)."""
    rates: dict[str, list[float]] = {"build": [], "batch": [], "row": [], "both": []}
    with tempfile.TemporaryDirectory(prefix="batchscope-bench-") as root:
        for run in range(runs):
            for i, (name, (many, together)) in enumerate(AGENT.items() if packed else ()):
                wrapped = AsyncStore(fresh_store(root, 100 * (run + 1) + i))
                source = packed if many and packed else records
                start = time.perf_counter()
                rows = asyncio.run(agent_path(wrapped, source, batch, together))
                rates.setdefault(name, []).append(rows / (time.perf_counter() - start))
                assert rows == len(records), (name, rows, len(records))
                wrapped.store.command(f"DROP DATABASE {wrapped.store.database}")
                wrapped.close_now()
            start = time.perf_counter()
            blocks, _ = cut(records, block, "bench.changes")
            building = time.perf_counter() - start
            rates["build"].append(len(records) / building)
            wrapped = AsyncStore(fresh_store(root, 2 * run))
            start = time.perf_counter()
            asyncio.run(write_blocks(wrapped, blocks))
            writing = time.perf_counter() - start
            rates["batch"].append(len(records) / writing)
            rates["both"].append(len(records) / (building + writing))
            wrapped.store.command(f"DROP DATABASE {wrapped.store.database}")
            wrapped.close_now()
            store = fresh_store(root, 2 * run + 1)
            start = time.perf_counter()
            row_at_a_time(store, baseline)
            rates["row"].append(len(baseline) / (time.perf_counter() - start))
            store.command(f"DROP DATABASE {store.database}")
            store.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="snapshot rows for the batch path")
    parser.add_argument("--baseline-records", type=int, default=2_000, help="rows inserted one at a time")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--block", type=int, default=100_000, help="sink block alignment (sink_batch_size)")
    parser.add_argument("--partitions", type=int, default=2, help="Kafka partitions the records spread over")
    parser.add_argument("--batch", type=int, default=1000, help="records per Faust batch (sink_batch_size)")
    parser.add_argument("--per-record", type=int, default=30, help="snapshots per version 2 record")
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = parser.parse_args()
    snaps = fleet_snapshots(args.records // 3 + 1)[: args.records]
    records = as_records(snaps, args.partitions)
    packed = as_packed(snaps, args.per_record, args.partitions)
    baseline = records[: args.baseline_records]
    rates = measure(records, baseline, args.runs, args.block, packed, args.batch)
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}; runs: {args.runs} (median); block: {args.block}; "
          f"partitions: {args.partitions}")
    print(f"sink batch path:  {rates['batch']:12,.0f} snapshot rows/s into ClickHouse "
          f"({len(records):,} rows; the view writes each to batch_latest too)")
    print(f"row at a time:    {rates['row']:12,.0f} snapshot rows/s ({len(baseline):,} rows, baseline)")
    print(f"speed-up:         {rates['batch'] / rates['row']:12.1f}x")
    print(f"row building:     {rates['build']:12,.0f} records/s "
          "(cut(): parse, check + rows, pure Python, not included above)")
    print(f"both, one after the other: {rates['both']:,.0f} records/s (cut() then the inserts, as the "
          "sink agent runs a batch)")
    print(f"the agent's path, batches of {args.batch} records (cut() + inserts), snapshot rows/s:")
    for name in AGENT:
        many = name.startswith("v2")
        print(f"  {name + ':':14s} {rates[name]:10,.0f}  ({len(packed) if many else len(records):,} "
              f"records of {args.per_record if many else 1})")
    if args.record:
        save("sink", "Sink: rows per second into ClickHouse (chDB), batch path vs row at a time", [{
            "rows": len(records), "block": args.block, "sink batch path (rows/s)": rates["batch"],
            "row at a time baseline (rows/s)": rates["row"], "speed-up": round(rates["batch"] / rates["row"]),
            "cut() alone (rec/s)": rates["build"], "cut() + inserts (rec/s)": rates["both"],
            **{f"agent {name} (rows/s)": rates[name] for name in AGENT}}], NOTES)


NOTES = """
Snapshot records from the simulator's fleet, in observation order, cut into the sink's blocks
(`pipeline.clickhouse.sink.cut`, timed apart) and written with `ClickHouseSink.write`: one JSONEachRow
insert per block with its deduplication token (the materialized view `batch_latest_feed` writes
each row to `batch_latest` in the same INSERT), plus the high-water-mark reads. The baseline
inserts the first rows one INSERT per row. Each side writes into a fresh database with the full
schema. `cut() + inserts` is what the sink agent does with a batch, one after the other: that,
not ClickHouse, is the sink's ceiling. Target (issue 6): 100,000 snapshot rows/s on the batch path.
`agent ...`: the sink agent's work per Faust batch of 1,000 records (`cut()` aligned to the batch,
then the inserts), snapshot rows/s: `write` = one insert per block (the agent before issue 13),
`write_all` = one insert per table per batch; `v1` = one snapshot per record, `v2` = records of
30 snapshots (`docs/records.md`).
"""


if __name__ == "__main__":
    main()
