"""Scenario 4 (simulator-served half): hostile payloads from the provider APIs themselves.

``batchscope simulate`` with ``simulator.hostile`` serves :data:`HOSTILE` payloads of
``simulator.hostile``'s kinds among the answers of two sources (OpenAI and Anthropic APIs): wrong
types, huge metadata and a 10 MB string as batch objects inside otherwise valid list pages;
truncated JSON, bad UTF-8, NaN and Infinity, 10 MB of garbage, 10,000-deep nesting, non-objects,
``null`` and empty bodies as whole list or GET answers. ``batchscope poll`` publishes, a
``batchscope worker`` (normalise, track, sink) writes chDB.

Pass criteria: no process logs a traceback and the worker exits cleanly; every raw record the
normaliser rejects is in ``<prefix>.dlq`` exactly once, with a reason, and those are exactly the
in-page objects the simulator served less the ones over the poller's record limit (which the
poller counted as ``oversized_object`` and did not publish); the poller counted every whole body
as a ``malformed_body`` error of its source; every batch still reaches its true final status in
ClickHouse and the checker finds nothing lost or doubled.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from pipeline.core.normalise import normalise_raw
from tests.reliability.harness import (
    Fleet,
    Proc,
    assert_clean,
    check_all,
    collect,
    dump_offline,
    get_json,
    summary,
    wait_for,
    write_config,
)
from tests.support.kafka import lag, read_all
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

HOSTILE = 60
FLEET = Fleet(batches=40, sources=2, seed=5, speed=1500.0, providers=("openai", "anthropic"))
ERRORS = re.compile(r'^batchscope_poller_errors_total\{source="[^"]+",provider="[^"]+",error="(\w+)"\} (\d+)',
                    re.M)


def poller_errors(metrics_port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, int] = {}
    for kind, n in ERRORS.findall(text):
        found[kind] = found.get(kind, 0) + int(float(n))
    return found


def rejected(value: bytes) -> set[int | None]:
    """The positions of the observations of a raw record that cannot be normalised: their index
    in a record of many (docs/records.md), ``None`` for a record of one that is bad."""
    items, bad = normalise_raw(value)
    if len(items) + len(bad) == 1:
        return {None} if bad else set()
    return {r.index for r in bad}


def test_hostile_payloads_served_by_the_simulator(tmp_path: Path, kafka_bootstrap: str,
                                                  topic_prefix: str) -> None:
    sim_port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port=sim_port, fleet=FLEET,
                          metrics_port=metrics_port, extra=f"hostile = {HOSTILE}\n")
    truth_url = f"http://127.0.0.1:{sim_port}/_sim/truth"
    sim = Proc(config, tmp_path / "sim.log", "simulate").start()
    poll = Proc(config, tmp_path / "poll.log", "poll").start()
    worker = Proc(config, tmp_path / "worker.log", "worker", "--agents", "normalise,track,sink").start()
    procs = (sim, poll, worker)
    try:
        wait_for(lambda: (t := get_json(truth_url))["all_terminal"] and t["hostile"]["left"] == 0,
                 "a terminal fleet and every hostile payload served", 120, *procs)
        time.sleep(2.0)  # one more poll after the fleet turned terminal
        truth = get_json(truth_url)
        errors = poller_errors(metrics_port)
        assert poll.stop() == 0, poll.tail()
        topics = [f"{topic_prefix}.{t}" for t in ("raw", "snapshots", "changesets")]
        wait_for(lambda: asyncio.run(lag(kafka_bootstrap, topic_prefix, topics)) == 0,
                 "the worker to drain raw, snapshots and changes", 90, worker)
        time.sleep(2.0)  # the sink's last block commits with the offsets
        assert worker.stop() == 0, worker.tail()
    finally:
        for p in (worker, poll, sim):
            p.stop()

    for p in procs:
        assert "Traceback" not in p.text(), p.tail()
    served = truth["hostile"]
    oversized = served["kinds"].get("10mb_string", 0) + served["kinds"].get("huge_metadata", 0)
    print(f"hostile served: {served}; poller errors: {errors}")
    assert served["objects"] > oversized
    assert served["bodies"] > 0
    assert errors.get("malformed_body", 0) == served["bodies"], "a whole hostile body went uncounted"
    assert errors.get("oversized_object", 0) == oversized

    raw = asyncio.run(read_all(kafka_bootstrap, f"{topic_prefix}.raw"))
    bad = {(r.partition, r.offset, index) for r in raw for index in rejected(r.value)}
    dead = [orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, f"{topic_prefix}.dlq"))]
    positions = [(d["partition"], d["offset"], d.get("index")) for d in dead]
    assert len(positions) == len(set(positions)), "a dead letter twice"
    assert set(positions) == bad
    assert all(d["reason"] and d["stage"] == "normalise" for d in dead)
    assert {d["topic"] for d in dead} == {f"{topic_prefix}.raw"}
    assert len(bad) == served["objects"] - oversized, "published hostile objects and dead letters differ"

    stored = collect(dump_offline(config), kafka_bootstrap, topic_prefix)
    latest = {(s, b): st for s, b, st in stored.tables["latest"]}
    assert latest == {(b["source"], b["batch_id"]): b["final_status"] for b in truth["batches"]}
    reports = check_all(truth, stored)
    print(summary(reports))
    assert_clean(reports)
