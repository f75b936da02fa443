"""``purged`` and ``vanished`` end to end: ``batchscope run`` polls its in-process simulator with
the vanish knobs on (some batches leave the list while active, some hours after they end), on
the real Kafka broker and chDB. Each vanished batch the poller was served must reach ClickHouse as
exactly one ``purged`` (the poller last saw it terminal) or one ``vanished`` (it last saw it
active) event, as the simulator's ground truth says; no vanish becomes a snapshot row or a dead
letter, and every event validates against the published schema.

Four providers cover the ways a vanish is found: OpenAI (id cursor) and Together (one page),
whose listings can prove a batch gone, and Mistral (page numbers) and Gemini (page tokens), where
a GET's 404 confirms it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.queries import query_running, saved
from pipeline.clickhouse.status import ACTIVE_SQL
from pipeline.core.models import TERMINAL
from tests.change_schema import validate
from tests.integration.test_end_to_end import get_json, wait_for, write_config
from tests.support.kafka import read_all, wait_committed
from tests.support.processes import free_port, start_run, stop_run

pytestmark = pytest.mark.integration

PROVIDERS = ("openai", "together", "mistral", "gemini")
SOURCES, PER_SOURCE = 4, 120  # more than a list page (100): the sweeps list a second page
SPEED = 6000.0  # simulated seconds per second: 24 simulated hours in 14.4 s
VANISH_AFTER = 4 * 3600.0  # simulated: 2.4 s, about ten poll cycles to see a batch end first
KNOBS = f"vanish_share = 0.4\nvanish_after = {VANISH_AFTER}\nvanish_active = 0.5\n"


@pytest.fixture
def pipeline(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Iterator[dict[str, Any]]:
    sim_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port, http_port, providers=PROVIDERS,
                          sources=SOURCES, batches=PER_SOURCE, malformed=0, speed=SPEED, simulator=KNOBS)
    log = tmp_path / "run.log"
    proc = start_run(config, tmp_path, log)
    try:
        yield {"proc": proc, "log": log, "truth": f"http://127.0.0.1:{sim_port}/_sim/truth",
               "query": tmp_path / "data", "bootstrap": kafka_bootstrap, "prefix": topic_prefix}
    finally:
        stop_run(proc)


def expected(truth: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Per batch that vanished after the poller was served it: the kind its vanish must give."""
    return {(b["source"], b["batch_id"]): "purged" if b["served"][-1] in TERMINAL else "vanished"
            for b in truth["batches"] if b["vanishes_at"] is not None and b["served"]}


def saved_queries(data: Path, want: dict[tuple[str, str], str]) -> None:
    """The saved query ``gone`` lists them; a vanished batch stays non-terminal in batch_current
    (its last status) but is left out of the active batches, at risk and stalled, and the
    dashboard's active list."""
    def run(name: str) -> list[tuple[Any, ...]]:
        query = saved(name)
        return query_running(data, query.sql, params=dict(query.defaults)).rows

    assert {(s, b): k for s, _, b, k, *_ in run("gone")} == want
    vanished = {key for key, kind in want.items() if kind == "vanished"}
    left = query_running(data, "SELECT source, batch_id FROM batch_current WHERE NOT terminal").rows
    assert vanished <= {(s, b) for s, b in left}
    active = {(s, b) for s, b in left} - vanished
    assert sum(r[3] for r in run("active_batches")) == len(active)
    assert not vanished & {(r[0], r[2]) for r in (*run("at_risk"), *run("stalled"))}
    assert not vanished & {(r[0], r[1]) for r in query_running(data, ACTIVE_SQL).rows}


def test_each_vanished_batch_is_purged_or_vanished_once(pipeline: dict[str, Any]) -> None:
    proc, log, prefix = pipeline["proc"], pipeline["log"], pipeline["prefix"]

    def sql(text: str) -> list[tuple[Any, ...]]:
        return query_running(pipeline["query"], text).rows

    # Every batch ended and every vanish happened: the truth is final (the poller finds the last
    # ones within a sweep, ten cycles of 0.25 s).
    truth = wait_for(lambda: (t := get_json(pipeline["truth"]))["all_terminal"] and t["now"] > max(
        b["vanishes_at"] or 0 for b in t["batches"]) and t, "every batch to end and every vanish", proc, log)
    want = expected(truth)
    assert {b["provider"] for b in truth["batches"]} == set(PROVIDERS)
    assert "purged" in want.values()
    assert "vanished" in want.values()
    gone_kinds = "kind IN ('purged', 'vanished')"
    wait_for(lambda: sql(f"SELECT count() FROM batch_changes WHERE {gone_kinds}")[0][0] >= len(want),
             "ClickHouse to hold a purged or vanished event per vanished batch", proc, log)
    topics = [f"{prefix}.{t}" for t in ("raw", "snapshots", "changesets")]
    wait_committed(pipeline["bootstrap"], prefix, topics)  # anything extra (a duplicate) has landed

    rows = sql(f"SELECT source, batch_id, kind, event_id, status FROM batch_changes WHERE {gone_kinds}")
    assert {(s, b): k for s, b, k, *_ in rows} == want
    assert len(rows) == len({r[3] for r in rows}) == len(want)  # exactly once each
    assert all((status in TERMINAL) == (kind == "purged") for *_, kind, _, status in rows)
    # A vanish is a change event, not an observation: no snapshot row, no dead letter.
    assert sql("SELECT count() FROM batch_snapshots WHERE provider_status = ''")[0][0] == 0
    assert asyncio.run(read_all(pipeline["bootstrap"], f"{prefix}.dlq")) == []
    saved_queries(pipeline["query"], want)

    by_id: dict[str, bytes] = {}
    for record in asyncio.run(read_all(pipeline["bootstrap"], f"{prefix}.changes")):
        event = validate(record.value)
        assert by_id.setdefault(event["event_id"], record.value) == record.value
    kinds = [orjson.loads(v)["kind"] for v in by_id.values()]
    assert (kinds.count("purged"), kinds.count("vanished")) == (
        sum(k == "purged" for k in want.values()), sum(k == "vanished" for k in want.values()))
