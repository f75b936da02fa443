"""The whole pipeline on the real Kafka broker and chDB, checked against the simulator's truth.

``batchscope run`` runs as a subprocess (simulator in process: 2,000 batches over 20 sources in
accelerated time, speaking seven providers' APIs round-robin, 10% of API requests answered with
injected faults (429 in both Retry-After forms, 5xx, 529, hangs, truncated and malformed bodies),
and a few batches served as malformed objects). When the fleet is terminal and ClickHouse has
caught up, ClickHouse must hold every batch with its true final status and exactly one
``status_changed`` row for each transition the poller could have seen: each consecutive pair of
statuses the simulator served; the DLQ must hold exactly the malformed objects.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.queries import query_running
from tests.change_schema import validate
from tests.support.kafka import read_all, run_toml, wait_committed
from tests.support.processes import free_port, start_run, stop_run

pytestmark = pytest.mark.integration

SPEED = 3000.0  # 24 simulated hours in under 30 s: expiries happen within the test
DEADLINE = 240.0


E2E_PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "mistral", "together", "vertex")
SOURCES, PER_SOURCE, MALFORMED, FAULT_RATE = 20, 100, 5, 0.10


def write_config(tmp: Path, bootstrap: str, prefix: str, sim_port: int, http_port: int, *,
                 providers: tuple[str, ...] = E2E_PROVIDERS, sources: int = SOURCES,
                 batches: int = PER_SOURCE, malformed: int = MALFORMED, fault_rate: float = 0.0,
                 speed: float = SPEED, simulator: str = "") -> Path:
    """The settings of ``batchscope run`` with its in-process simulator; ``simulator`` adds keys
    to its table."""
    path = tmp / "batchscope.toml"
    path.write_text(run_toml(tmp, bootstrap, prefix) + f"""http_port = {http_port}
sink_flush_seconds = 0.5

[simulator]
batches = {batches}
sources = {sources}
providers = [{", ".join(f'"{p}"' for p in providers)}]
seed = 7
malformed = {malformed}
fault_rate = {fault_rate}
retry_after = 0.5
hang_seconds = 1.0
speed = {speed}
port = {sim_port}
poll_interval = 0.25
{simulator}""", encoding="utf-8")
    return path


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
        return json.loads(resp.read())


def wait_for(predicate: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"batchscope run exited ({proc.returncode}) while waiting for {what}:\n"
                        + log.read_text(errors="replace")[-4000:])
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:]
    pytest.fail(f"timed out after {DEADLINE:.0f}s waiting for {what}:\n{tail}")


@pytest.fixture
def pipeline(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Iterator[dict[str, Any]]:
    sim_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port, http_port, fault_rate=FAULT_RATE)
    log = tmp_path / "run.log"
    proc = start_run(config, tmp_path, log)
    try:
        yield {"proc": proc, "log": log, "truth": f"http://127.0.0.1:{sim_port}/_sim/truth",
               "query": tmp_path / "data", "bootstrap": kafka_bootstrap,
               "changes": f"{topic_prefix}.changes", "dlq": f"{topic_prefix}.dlq", "group": topic_prefix,
               "consumed": [f"{topic_prefix}.{t}" for t in ("raw", "snapshots", "changesets")]}
    finally:
        stop_run(proc)


def expected_pairs(truth: dict[str, Any]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Per batch: the transitions the poller could have seen (consecutive served statuses)."""
    return {(b["source"], b["batch_id"]): list(zip(b["served"], b["served"][1:], strict=False))
            for b in truth["batches"]}


def all_served(truth: dict[str, Any]) -> bool:
    """Whether the poller has been served every (well-formed) batch's final status."""
    return all(b["served"] and b["served"][-1] == b["final_status"]
               for b in truth["batches"] if not b["malformed"])


def transition_diff(seen: dict[tuple[str, str], list[tuple[str, str]]],
                    expected: dict[tuple[str, str], list[tuple[str, str]]]) -> dict[str, Any]:
    """Per batch, the transitions missing from ClickHouse and those it holds beyond the truth
    (a readable failure: a whole-dict diff of 2,000 batches hides the few that differ)."""
    diff: dict[str, Any] = {}
    for key in sorted(set(seen) | set(expected)):
        have, want = Counter(seen.get(key, [])), Counter(expected.get(key, []))
        if have != want:
            diff["/".join(key)] = {"missing": sorted((want - have).elements()),
                                   "extra": sorted((have - want).elements())}
    return diff


def test_pipeline_matches_simulator_truth(pipeline: dict[str, Any]) -> None:
    proc, log, query = pipeline["proc"], pipeline["log"], pipeline["query"]

    def sql(text: str) -> list[tuple[Any, ...]]:
        return query_running(query, text).rows

    # Terminal, and every final status served to the poller (a source under a Retry-After or an
    # open breaker may take a few cycles to see it): the transitions expected are then complete.
    truth = wait_for(lambda: (t := get_json(pipeline["truth"]))["all_terminal"] and all_served(t) and t,
                     "the simulated fleet to become terminal and be seen so", proc, log)
    finals = {(b["source"], b["batch_id"]): b["final_status"] for b in truth["batches"] if not b["malformed"]}
    expected = expected_pairs(truth)
    want_changes = sum(len(p) for p in expected.values())
    assert len(truth["batches"]) == SOURCES * PER_SOURCE
    assert len(finals) == SOURCES * PER_SOURCE - len(truth["malformed"]) == SOURCES * PER_SOURCE - MALFORMED
    assert {b["provider"] for b in truth["batches"]} == set(E2E_PROVIDERS)
    injected = truth["faults"]["injected"]
    assert sum(injected.values()) > 0, "no API fault was injected"
    assert truth["faults"]["early_requests"] == {}, "a request came before its Retry-After"
    assert all(b["final_status"] == b["transitions"][-1]["status"] for b in truth["batches"])
    # Half the fleet was created before the simulator started; the rest reveals 1-3 transitions each
    # (fewer where a provider shows fewer statuses: Anthropic, Gemini and Bedrock have no finalizing).
    assert want_changes >= SOURCES * PER_SOURCE * 0.6, f"only {want_changes} transitions served"

    def caught_up() -> bool:
        latest = sql("SELECT count() FROM batch_latest FINAL WHERE status IN "
                     "('completed','failed','expired','cancelled')")
        # The final snapshots reach batch_latest straight from the snapshots topic; their
        # status_changed events take the longer way through the track agent, so count those.
        changed = sql("SELECT count() FROM batch_changes WHERE kind = 'status_changed'")
        return bool(latest[0][0] == len(finals) and changed[0][0] >= want_changes)

    wait_for(caught_up, "ClickHouse to hold the terminal fleet", proc, log)
    # Once the group has committed every record, anything extra (a duplicate) has landed.
    wait_committed(pipeline["bootstrap"], pipeline["group"], pipeline["consumed"])

    latest = {(s, b): st for s, b, st in sql("SELECT source, batch_id, status FROM batch_latest FINAL")}
    assert latest == finals

    rows = sql("SELECT source, batch_id, from_status, to_status, event_id FROM batch_changes "
               "WHERE kind = 'status_changed' ORDER BY source, batch_id, at, to_status")
    seen: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for source, batch_id, from_status, to_status, _ in rows:
        seen.setdefault((source, batch_id), []).append((from_status, to_status))
    assert transition_diff(seen, expected) == {}
    assert len({r[4] for r in rows}) == len(rows) == want_changes

    true_order = {(b["source"], b["batch_id"]): [t["status"] for t in b["transitions"]]
                  for b in truth["batches"]}
    for key, pairs in seen.items():
        order = true_order[key]
        for from_status, to_status in pairs:
            assert order.index(from_status) < order.index(to_status), (key, from_status, to_status)

    snapshots = sql("SELECT count(), uniqExact(source, batch_id) FROM batch_snapshots")
    assert snapshots[0][1] == len(finals)

    # The change topic itself: every event validates against the published JSON Schema, and no
    # event_id appears twice with differing content.
    records = asyncio.run(read_all(pipeline["bootstrap"], pipeline["changes"]))
    by_id: dict[str, bytes] = {}
    for record in records:
        event = validate(record.value)
        assert by_id.setdefault(event["event_id"], record.value) == record.value
    kinds = {orjson.loads(v)["kind"] for v in by_id.values()}
    dead = [orjson.loads(r.value) for r in asyncio.run(read_all(pipeline["bootstrap"], pipeline["dlq"]))]
    assert sorted(d["key"] for d in dead) == sorted(truth["malformed"])  # exactly the malformed, once
    assert all(d["stage"] == "normalise" and d["reason"] for d in dead)
    assert {"discovered", "status_changed"} <= kinds
    assert sum(1 for v in by_id.values() if orjson.loads(v)["kind"] == "status_changed") == want_changes
