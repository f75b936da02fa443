"""Every query of the Grafana fleet dashboard runs on the real ClickHouse engine (chDB) and returns rows.

The data is a simulated fleet observed up to now: simulator batches (``simulator.server``) as
OpenAI objects, normalised (``pipeline.core.normalise``), folded into change events
(``pipeline.core.transitions``) and written by the sink's own path (``cut`` + ``ClickHouseSink``)
into a migrated chDB database, the same tables and views the dashboard reads in compose. The
simulated clock is aligned with the wall clock, so ``now64()`` in the at-risk queries sees the
fleet as it would live. Macros are expanded as the Grafana ClickHouse plugin does
(``tests/deploy_files.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.clickhouse import spend
from pipeline.clickhouse.sink import ClickHouseSink, Position, Record, cut
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.config import Settings
from pipeline.core.models import Envelope, Snapshot
from pipeline.core.normalise import normalise
from pipeline.core.transitions import BatchState, apply
from simulator.fleet import build_fleet
from simulator.server import openai_object
from tests.deploy_files import TimeRange, dashboard_variables, expand, load_dashboard, panel_queries
from tests.support.workload import as_records

pytestmark = pytest.mark.integration

HOUR = 3600.0
SIM_NOW = 3 * HOUR  # simulated seconds since the simulator's epoch at the moment of the test
SNAPSHOTS_TOPIC, CHANGES_TOPIC = "dash.snapshots", "dash.changes"


def observed_fleet(epoch: float, count: int = 150) -> list[Snapshot]:
    """What a poller would have seen: each batch at every status change so far, and now."""
    snaps = []
    for source in ("sim-1", "sim-2"):
        for batch in build_fleet(seed=11, count=count, source=source):
            moments = [at for _, at in batch.timeline if at <= SIM_NOW] + [SIM_NOW]
            for at in moments:
                if at < batch.created:
                    continue
                seen = datetime.fromtimestamp(epoch + at, UTC).isoformat()
                snaps.append(normalise(Envelope(source, "openai", seen, openai_object(batch, at, epoch))))
    return sorted(snaps, key=lambda s: s.observed_at)


def change_records(snaps: list[Snapshot]) -> list[Record]:
    states: dict[str, BatchState] = {}
    records: list[Record] = []
    for snap in snaps:
        states[snap.key], events = apply(states.get(snap.key), snap)
        records += [Record(Position(CHANGES_TOPIC, 0, len(records)), e.to_json()) for e in events]
    return records


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    plain = Store(f"chdb://{tmp_path / 'clickhouse'}", "batchscope")
    plain.migrate()
    spend.load(plain, Settings())  # the shipped prices, as `batchscope migrate` loads them
    wrapped = AsyncStore(plain)
    yield wrapped
    wrapped.close_now()


async def test_every_dashboard_query_returns_rows_on_simulator_data(store: AsyncStore) -> None:
    now = time.time()
    snaps = observed_fleet(epoch=now - SIM_NOW)
    records = as_records(snaps, topic=SNAPSHOTS_TOPIC) + change_records(snaps)
    blocks, bad = cut(records, 500, CHANGES_TOPIC)
    assert bad == []
    sink = ClickHouseSink(store)
    for block in blocks:
        await sink.write(block)

    dashboard = load_dashboard()
    end = datetime.fromtimestamp(now, UTC)
    when = TimeRange(end - timedelta(hours=6), end + timedelta(minutes=1), 300)
    queries = panel_queries(dashboard)
    assert len(queries) >= 6
    empty = []
    for title, sql in queries:
        result = await store.run(store.store.query, expand(sql, when, dashboard_variables(dashboard)))
        if not result.rows or result.rows == [(0,)]:
            empty.append(title)
    assert empty == [], f"panels with no rows on a live simulated fleet: {empty}"


async def test_time_series_panels_are_bounded_by_the_range(store: AsyncStore) -> None:
    """The time filter is real: a range before any observation gives the time series nothing."""
    now = time.time()
    snaps = observed_fleet(epoch=now - SIM_NOW, count=20)
    blocks, _ = cut(as_records(snaps, topic=SNAPSHOTS_TOPIC), 500, CHANGES_TOPIC)
    sink = ClickHouseSink(store)
    for block in blocks:
        await sink.write(block)
    dashboard = load_dashboard()
    past = datetime.fromtimestamp(now, UTC) - timedelta(days=30)
    when = TimeRange(past - timedelta(hours=6), past, 300)
    series = [(p["title"], t["rawSql"]) for p in dashboard["panels"] if p["type"] == "timeseries"
              for t in p["targets"]]
    assert series
    for title, sql in series:
        result = await store.run(store.store.query, expand(sql, when, dashboard_variables(dashboard)))
        assert result.rows == [], title
