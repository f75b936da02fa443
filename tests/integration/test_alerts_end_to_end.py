"""Alerts end to end: the simulator's fleet through ``batchscope run``, and ``batchscope alerts``
beside it sending to a local fake Slack (failed batches) and a local Standard Webhooks receiver
(expired batches and ``expiry_risk``), both answering 30% of deliveries with 429 (Retry-After) or
500, the alerts service SIGKILLed mid-run and started again.

Every failed and expired batch and every ``expiry_risk`` event in ClickHouse must have been
accepted by its destination exactly once (at most once more for the alert in flight at the kill:
docs/alerts.md, "Delivery"), and neither the Slack URL nor the signing key may appear in any log
or metric.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from pipeline.alerts.messages import signing_key
from pipeline.clickhouse.queries import query_running
from pipeline.core.webhooks import Refused, verify
from tests.loopback import serving_in_thread
from tests.reliability.harness import Fleet, Proc, get_json, wait_for, write_config
from tests.support.kafka import lag
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

KEY = "whsec_" + base64.b64encode(b"end-to-end-signing-key-32-bytes!").decode()
SLACK_PATH = "/services/T000/B000/e2e-slack-secret-path"
FLEET = Fleet(batches=60, sources=4, speed=3000.0, providers=("openai", "anthropic", "mistral", "together"))
EVENT = re.compile(r"event `([0-9a-f-]{36})`")


class Destinations:
    """The fake Slack and the webhook receiver on one loopback server, on a thread of its own."""

    def __init__(self) -> None:
        self.slack: Counter[str] = Counter()  # event id -> deliveries accepted
        self.hooks: Counter[str] = Counter()
        self.refused = 0
        self.bad_signatures = 0
        self._rng = random.Random(17)
        self._key = signing_key(KEY)
        self.url = ""

    def _flaky(self) -> web.Response | None:
        roll = self._rng.random()
        if roll < 0.15:
            self.refused += 1
            return web.Response(status=429, headers={"Retry-After": "0.2"})
        if roll < 0.30:
            self.refused += 1
            return web.Response(status=500)
        return None

    async def slack_hook(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if (refused := self._flaky()) is not None:
            return refused
        for block in body["blocks"]:
            if block["type"] == "context":  # "rule `failures` · event `<event id>` · at ..."
                self.slack.update(EVENT.findall(block["elements"][0]["text"]))
        return web.Response(text="ok")

    async def webhook(self, request: web.Request) -> web.Response:
        payload = await request.read()
        try:
            verify([self._key], request.headers, payload, now=time.time())
        except Refused:
            self.bad_signatures += 1
            return web.Response(status=401)
        if (refused := self._flaky()) is not None:
            return refused
        self.hooks[orjson.loads(payload)["event_id"]] += 1
        return web.Response(status=204)


@pytest.fixture
def destinations() -> Iterator[Destinations]:
    dest = Destinations()
    with serving_in_thread({SLACK_PATH: dest.slack_hook, "/hook": dest.webhook}) as url:
        dest.url = url
        yield dest


RULES = """
[alerting]
from_start = true

[[alerts]]
name = "failures"
destination = "slack"
url_env = "E2E_SLACK_URL"
to_status = "failed"
digest_after = 10000

[[alerts]]
name = "expiries"
destination = "webhook"
url_env = "E2E_HOOK_URL"
signing_key_env = "E2E_HOOK_KEY"
kind = "status_changed"
to_status = "expired"
digest_after = 10000

[[alerts]]
name = "risks"
destination = "webhook"
url_env = "E2E_HOOK_URL"
signing_key_env = "E2E_HOOK_KEY"
kind = "expiry_risk"
digest_after = 10000
"""


def test_every_failure_expiry_and_risk_is_alerted_once_through_a_sigkill(
        tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, destinations: Destinations) -> None:
    sim_port, http_port = free_port(), free_port()
    # run without rules (it would run the alerts service itself); the alerts process with them
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port=sim_port, fleet=FLEET,
                          http_port=http_port, extern_sim=False)
    (tmp_path / "alerts").mkdir()
    rules = write_config(tmp_path / "alerts", kafka_bootstrap, topic_prefix, sim_port=sim_port, fleet=FLEET,
                         extern_sim=False, extra=RULES)
    env = {"E2E_SLACK_URL": destinations.url + SLACK_PATH, "E2E_HOOK_URL": destinations.url + "/hook",
           "E2E_HOOK_KEY": KEY}
    run = Proc(config, tmp_path / "run.log", "run").start()
    alerts = Proc(rules, tmp_path / "alerts.log", "alerts", env=env)
    truth_url = f"http://127.0.0.1:{sim_port}/_sim/truth"

    def sql(text: str) -> list[tuple[Any, ...]]:
        return query_running(tmp_path / "data", text).rows

    try:
        alerts.start()
        wait_for(lambda: len(destinations.slack) + len(destinations.hooks) >= 3, "the first alerts", 120,
                 run, alerts)
        alerts.kill()  # SIGKILL, mid-run
        alerts.start()
        truth = wait_for(lambda: (t := get_json(truth_url))["all_terminal"] and t, "a terminal fleet", 180,
                         run, alerts)
        time.sleep(2.0)
        terminal = len(truth["batches"])
        wait_for(lambda: sql("SELECT count() FROM batch_latest FINAL WHERE status IN "
                             "('completed','failed','expired','cancelled')")[0][0] == terminal,
                 "ClickHouse to hold the terminal fleet", 120, run, alerts)
        failed = {r[0] for r in sql("SELECT event_id FROM batch_changes FINAL WHERE kind = 'status_changed' "
                                    "AND to_status = 'failed'")}
        expired = {r[0] for r in sql("SELECT event_id FROM batch_changes FINAL WHERE kind = 'status_changed' "
                                     "AND to_status = 'expired'")}
        risks = {r[0] for r in sql("SELECT event_id FROM batch_changes FINAL WHERE kind = 'expiry_risk'")}
        wait_for(lambda: set(destinations.slack) >= failed and set(destinations.hooks) >= expired | risks,
                 "every alert delivered", 120, run, alerts)
        wait_for(lambda: asyncio.run(lag(kafka_bootstrap, f"{topic_prefix}-alerts",
                                         [f"{topic_prefix}.changes"])) == 0,
                 "the alerts group to commit every change event", 60, alerts)
        metrics = _metrics(alerts)
    finally:
        alerts.stop()
        run.stop()
    assert failed, "the fleet had no failed batch: nothing was tested"
    assert expired, "the fleet had no expired batch: nothing was tested"
    assert set(destinations.slack) == failed
    assert set(destinations.hooks) == expired | risks
    assert destinations.refused > 0
    assert destinations.bad_signatures == 0
    twice = sum(n - 1 for n in (destinations.slack + destinations.hooks).values())
    print(f"alerts: {len(failed)} failed, {len(expired)} expired, {len(risks)} expiry_risk; "
          f"{destinations.refused} deliveries refused (429/500); {twice} delivered twice")
    assert twice <= 1, f"{twice} alerts delivered more than once (one kill: at most the one in flight)"
    logs = run.text() + alerts.text() + metrics
    assert "alerts: sent" in alerts.text()
    assert 'batchscope_alerts_sent_total{rule="failures"}' in metrics
    for secret in (SLACK_PATH, KEY, KEY.removeprefix("whsec_")):
        assert secret not in logs


def _metrics(alerts: Proc) -> str:
    """The running alerts service's /metrics (its port is in its log: 'metrics on http://...';
    the last one: the first process was killed)."""
    found = re.findall(r"metrics on (http://\S+/metrics)", alerts.text())
    assert found, "the alerts service served no /metrics"
    with urllib.request.urlopen(found[-1], timeout=10) as resp:  # noqa: S310 - loopback
        return str(resp.read().decode())


def test_run_sends_the_alerts_itself_when_rules_are_configured(
        tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, destinations: Destinations) -> None:
    """No ``batchscope alerts`` beside it: ``run`` starts the service, and logs its counts."""
    sim_port = free_port()
    fleet = Fleet(batches=30, sources=2, speed=3000.0, providers=("openai", "mistral"))
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port=sim_port, fleet=fleet,
                          extern_sim=False, extra=RULES)
    env = {"E2E_SLACK_URL": destinations.url + SLACK_PATH, "E2E_HOOK_URL": destinations.url + "/hook",
           "E2E_HOOK_KEY": KEY}
    run = Proc(config, tmp_path / "run.log", "run", env=env).start()
    try:
        wait_for(lambda: destinations.slack or destinations.hooks, "an alert from batchscope run", 120, run)
        wait_for(lambda: "alerts: sent" in run.text(), "the alerts' progress line", 30, run)
    finally:
        run.stop()
    for secret in (SLACK_PATH, KEY):
        assert secret not in run.text()
