"""Webhooks end to end, each part its own process as in the compose deployment: the simulator
pushing signed webhooks (duplicates, delayed and reordered, forged, lost), ``batchscope
webhooks``, ``batchscope poll`` (stopped for 20 s in the middle) and ``batchscope worker``, on the
real broker and chDB.

The fleet runs 3,000 times faster than the poller's clock. The poller refreshes an active batch
at least every 10 s (``active_interval``: 30,000 simulated seconds, longer than most batches live,
as a 300 s interval is against real ones), so terminal statuses reach it by the hints, and polling
only catches what no webhook brought. Checked: every batch's terminal status is in ClickHouse
exactly once (one event into it: ``status_changed``, or ``discovered`` for a batch first seen
ended), every forged request and every hostile one the test sends was refused and counted by
reason, and the hints published while the poller was
stopped waited in Kafka and were all handled (the hints group committed the topic's end).
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.store import Store
from pipeline.config import load_settings
from pipeline.core import webhooks as wh
from pipeline.core.models import TERMINAL
from simulator.wire import BASE_PATHS
from tests.reliability.harness import Proc
from tests.support.kafka import read_all, run_toml, wait_committed
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

SPEED = 3000.0
PROVIDERS = ("openai", "azure_openai", "gemini", "anthropic")  # anthropic: polled only
SOURCES, PER_SOURCE = 8, 40
POLL, ACTIVE = 1.0, 10.0
STOP_AT, STOPPED_FOR = 3.0, 20.0
DEADLINE = 75.0
SECRET = "whsec_" + base64.b64encode(b"end-to-end-webhook-secret-4411").decode()
METRICS_PORT = "BATCHSCOPE_PIPELINE_METRICS_PORT"
INTO = ("discovered", "status_changed")  # the kinds of event that enter a status
KNOBS = {"webhook_duplicate": 0.2, "webhook_delayed": 0.2, "webhook_delay": 3.0, "webhook_forged": 0.15,
         "webhook_lost": 0.1}


def write_config(tmp: Path, bootstrap: str, prefix: str, sim_port: int, hook_port: int) -> Path:
    sources = []
    for i in range(SOURCES):
        name, provider = f"sim-{i + 1}", PROVIDERS[i % len(PROVIDERS)]
        hook = 'webhook_secret_env = "E2E_WHSEC"' if provider in wh.BATCH_EVENTS else ""
        sources.append(f"""
[[sources]]
name = "{name}"
provider = "{provider}"
base_url = "http://127.0.0.1:{sim_port}/{name}{BASE_PATHS[provider]}"
poll_interval = {POLL}
active_interval = {ACTIVE}
max_rps = 200.0
{hook}
""")
    knobs = "\n".join(f"{k} = {v}" for k, v in KNOBS.items())
    path = tmp / "batchscope.toml"
    path.write_text(run_toml(tmp, bootstrap, prefix) + f"""sink_flush_seconds = 0.5
log_level = "info"

[webhooks]
port = {hook_port}

[simulator]
batches = {PER_SOURCE}
sources = {SOURCES}
providers = [{", ".join(f'"{p}"' for p in PROVIDERS)}]
seed = 11
speed = {SPEED}
port = {sim_port}
creation_span = 8.0
webhook_url = "http://127.0.0.1:{hook_port}/webhooks"
webhook_secret_env = "E2E_WHSEC"
{knobs}
""" + "".join(sources), encoding="utf-8")
    return path


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test servers
        return bytes(resp.read())


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus family's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"batchscope_{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def deployment(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Iterator[dict[str, Any]]:
    sim_port, hook_port, hook_metrics, poll_metrics = free_port(), free_port(), free_port(), free_port()
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port, hook_port)
    env = {"E2E_WHSEC": SECRET}
    ports = {"worker": free_port(), "webhooks": hook_metrics, "poll": poll_metrics, "simulate": free_port()}
    procs = {name: Proc(config, tmp_path / f"{name}.log", name, env={**env, METRICS_PORT: str(port)})
             for name, port in ports.items()}
    try:
        yield {"config": config, "procs": procs, "sim": f"http://127.0.0.1:{sim_port}",
               "hook": f"http://127.0.0.1:{hook_port}", "hook_metrics": f"http://127.0.0.1:{hook_metrics}/metrics",
               "poll_metrics": f"http://127.0.0.1:{poll_metrics}/metrics"}
    finally:
        for proc in procs.values():
            proc.stop()


def wait_for(what: str, predicate: Any, procs: Mapping[str, Proc], deadline: float) -> Any:
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.proc is not None and not proc.alive():
                pytest.fail(f"{name} exited while waiting for {what}:\n{proc.tail()}")
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    tails = "\n".join(f"--- {n}\n{p.tail()}" for n, p in procs.items())
    pytest.fail(f"timed out waiting for {what}:\n{tails}")


def cycles(url: str) -> float:
    return metric(get(url).decode(), "poller_cycles_total")


def hostile_requests(hook: str) -> dict[str, int]:
    """Requests no provider sends: each must be refused with its reason."""
    key = wh.decode_secret(SECRET)
    now = int(time.time())
    junk = b"this is not json"
    big = b'{"type": "batch.completed", "data": {"id": "' + b"x" * 70_000 + b'"}}'
    return {
        "not_json": post(f"{hook}/webhooks/sim-1", junk, wh.sign(key, "msg_junk", now, junk)),
        "too_large": post(f"{hook}/webhooks/sim-1", big, wh.sign(key, "msg_big", now, big)),
        "unknown_path": post(f"{hook}/webhooks/sim-4", b"{}", wh.sign(key, "msg_path", now, b"{}")),
    }


def test_webhooks_end_to_end(deployment: dict[str, Any], kafka_bootstrap: str, topic_prefix: str) -> None:
    procs: dict[str, Proc] = deployment["procs"]
    started = time.monotonic()
    deadline = started + DEADLINE
    procs["worker"].start()
    procs["webhooks"].start()
    wait_for("the receiver", lambda: get(deployment["hook_metrics"]), procs, deadline)
    procs["simulate"].start()
    truth_url = f"{deployment['sim']}/_sim/truth"
    wait_for("the simulator", lambda: get(truth_url), procs, deadline)
    procs["poll"].start()
    wait_for("the poller", lambda: cycles(deployment["poll_metrics"]) > 0, procs, deadline)
    refused = hostile_requests(deployment["hook"])
    assert refused == {"not_json": 400, "too_large": 413, "unknown_path": 404}

    time.sleep(STOP_AT)
    procs["poll"].stop()  # the hints of the next 20 s wait in Kafka
    stopped = time.monotonic()
    hints_topic = f"{topic_prefix}.hints"
    at_stop = len(asyncio.run(read_all(kafka_bootstrap, hints_topic)))
    time.sleep(max(0.0, STOPPED_FOR - (time.monotonic() - stopped)))
    waiting = len(asyncio.run(read_all(kafka_bootstrap, hints_topic))) - at_stop
    procs["poll"].start()

    def all_sent() -> dict[str, Any] | None:
        truth = orjson.loads(get(truth_url))
        return truth if truth["all_terminal"] and _deliveries_done(truth) else None

    truth = wait_for("every batch to end and its webhooks to be answered", all_sent, procs, deadline)
    batches = {(b["source"], b["batch_id"]): b["final_status"] for b in truth["batches"]}
    assert len(batches) == SOURCES * PER_SOURCE
    changes = f"{topic_prefix}.changes"

    def terminal_events() -> list[dict[str, Any]] | None:
        events = [orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, changes))]
        into = [e for e in events if e["kind"] in INTO and e["snapshot"]["status"] in TERMINAL]
        ended = {(e["source"], e["batch_id"]) for e in into}
        return into if ended == set(batches) else None

    wait_for("an event into a terminal status for every batch", terminal_events, procs, deadline)
    wait_committed(kafka_bootstrap, f"{topic_prefix}-hints", [hints_topic])
    consumed = [f"{topic_prefix}.{t}" for t in ("raw", "snapshots", "changesets")]
    wait_committed(kafka_bootstrap, topic_prefix, consumed)
    hook_text = get(deployment["hook_metrics"]).decode()
    poll_text = get(deployment["poll_metrics"]).decode()
    procs["poll"].stop()
    procs["worker"].stop()  # it holds chDB

    # Exactly once in ClickHouse: the final status of every batch, one event into it.
    store = Store.from_settings(load_settings(deployment["config"]))
    try:
        rows = store.query("SELECT source, batch_id, status FROM batch_latest FINAL").rows
        latest = {(s, b): st for s, b, st in rows}
        into = store.query("SELECT source, batch_id, status FROM batch_changes FINAL WHERE kind IN "
                           "('discovered', 'status_changed') AND status IN "
                           "('completed', 'failed', 'expired', 'cancelled')").rows
    finally:
        store.close()
    assert latest == batches
    assert Counter((s, b) for s, b, _ in into) == Counter(batches.keys())
    assert {(s, b): st for s, b, st in into} == batches

    # Every forged and hostile request refused and counted by reason; nothing else refused.
    sent = truth["webhooks"]["sent"]
    assert min(sent["bad_signature"], sent["stale"], sent["duplicate"], sent["lost"]) > 0
    assert metric(hook_text, "webhooks_refused_total", reason="bad_signature") == sent["bad_signature"]
    assert metric(hook_text, "webhooks_refused_total", reason="stale_timestamp") == sent["stale"]
    for reason in refused:
        assert metric(hook_text, "webhooks_refused_total", reason=reason) == 1
    assert metric(hook_text, "webhooks_refused_total") == sent["bad_signature"] + sent["stale"] + len(refused)
    genuine = [e for e in truth["webhooks"]["events"] if "lost" not in e["plan"]]
    assert metric(hook_text, "webhooks_accepted_total") == len(genuine)  # each webhook-id published once
    assert metric(hook_text, "webhooks_duplicates_total") == sent["duplicate"]

    # The hints published while the poller was down waited and were handled after its restart.
    assert waiting > 0, "no hint arrived while the poller was stopped"
    assert metric(poll_text, "poller_hints_total") >= waiting
    # Batches that ended after the restart (the expiries) were fetched by one GET each on their hint.
    assert metric(poll_text, "poller_hint_gets_total") > 0
    assert time.monotonic() - started < DEADLINE + 30


def _deliveries_done(truth: dict[str, Any]) -> bool:
    """Every planned delivery of every event was answered (forged ones refused, the rest 2xx)."""
    events = truth["webhooks"]["events"]
    answered = all(len([a for a in e["answers"] if a]) >= len([p for p in e["plan"] if p != "lost"])
                   for e in events)
    return truth["webhooks"]["to_come"] == 0 and answered
