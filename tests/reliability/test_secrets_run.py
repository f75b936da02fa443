"""Scenario 6: a whole run with known fake API keys, a webhook signing secret and a ClickHouse
password; none of them may appear anywhere the pipeline writes.

The simulator (in this process, on a thread) requires ``Authorization: Bearer <KEY>`` and injects
faults on 30% of requests; ``batchscope run`` (log level debug) polls two sources with the key
from ``api_key_env`` and a third with a wrong key (401 on every request: error paths and the
breaker), receives the first source's signed webhooks (its secret from ``webhook_secret_env``;
a share forged, so refusals are logged and counted), and reads a ClickHouse password from
``clickhouse.password_env`` (chDB ignores it; the
settings and store still carry it). Nothing the test writes itself contains a secret, so any
occurrence was put there by the pipeline.

Pass criteria: no key and no password (nor its base64 form) in the run's log (every line,
tracebacks included), ``/metrics``, any record of any topic of the run's prefix (raw, snapshots,
changes, dlq, the track table's changelog; dead letters' originals decoded), the ClickHouse
tables, or the error text of a failing ``batchscope query``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.clickhouse.queries import query_running
from pipeline.config import SimulatorConfig
from pipeline.core.errors import BatchscopeError
from simulator.server import Simulator, simulator_secret
from tests.reliability.harness import Fleet, Proc, wait_for, write_config
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

KEY = "sk-proj-RELFAKE-7c1e0b9a8f6d5e4c3b2a1908"
WRONG = "sk-proj-RELWRONG-0f1e2d3c4b5a69788796a5b4"
PASSWORD = "chpw-RELFAKE-Zq8xWv7u6t5s"
HOOK_KEY = "whk-RELFAKE-3d4c5b6a7988"  # the raw HMAC key of the webhook secret
WHSEC = "whsec_" + base64.b64encode(HOOK_KEY.encode()).decode()
SECRETS = (KEY, WRONG, PASSWORD, HOOK_KEY, WHSEC)
KEY_ENV = {"openai": "REL_API_KEY", "anthropic": "REL_API_KEY", "bedrock": "REL_AWS_KEY"}


class SimThread:
    """The simulator on its own event loop thread, so the test can keep blocking calls."""

    def __init__(self, config: SimulatorConfig, api_key: str, webhook_secret: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(config, api_key=api_key, webhook_secret=webhook_secret)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Simulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(30)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def leaks(text: str | bytes, where: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    found = []
    for secret in SECRETS:
        forms = (secret.encode(), base64.b64encode(secret.encode()), secret[8:-4].encode())
        if any(form in data for form in forms):
            found.append(f"{secret[:12]}... in {where}")
    return found


async def all_records(bootstrap: str, prefix: str) -> dict[str, list[Any]]:
    """Every record of every topic of the run (Faust's own topics included), one consumer for all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    parts = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: dict[str, list[Any]] = {t: [] for t in topics}
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                found[tp.topic] += records
        return found
    finally:
        await consumer.stop()


@pytest.fixture
def hook_port() -> int:
    return free_port()


@pytest.fixture
def sim(hook_port: int) -> Iterator[Simulator]:
    # Three auth styles: a bearer token, Anthropic's x-api-key (sim-3: the wrong key), and Bedrock's
    # SigV4, whose secret key signs the request and is never sent. The OpenAI source (sim-1) also
    # pushes signed webhooks to the run's receiver, a share of them forged (refused).
    config = SimulatorConfig(port=0, batches=30, sources=3, seed=5, speed=3000.0, fault_rate=0.3,
                             retry_after=0.2, hang_seconds=0.5, providers=("openai", "bedrock", "anthropic"),
                             webhook_url=f"http://127.0.0.1:{hook_port}/webhooks", webhook_forged=0.3,
                             webhook_duplicate=0.2)
    with SimThread(config, KEY, WHSEC) as simulator:
        yield simulator


def test_no_secret_reaches_logs_metrics_topics_tables_or_errors(
        tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, sim: Simulator, hook_port: int) -> None:
    http_port, metrics_port = free_port(), free_port()
    sources = "".join(f"""
[[sources]]
name = "{name}"
provider = "{sim.provider(name)}"
base_url = "{sim.source_url(name)}"
api_key_env = "{KEY_ENV[sim.provider(name)] if name != 'sim-3' else 'REL_WRONG_KEY'}"
poll_interval = 0.25
request_timeout = 1.0
breaker_threshold = 3
breaker_reset = 1.0
max_rps = 100.0
{'webhook_secret_env = "REL_WHSEC"' if name == "sim-1" else ""}
""" for name in sim.sources)
    extra = f'\n[clickhouse]\npassword_env = "REL_CH_PASSWORD"\n\n[webhooks]\nport = {hook_port}\n'
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port=sim.port, fleet=Fleet(),
                          http_port=http_port, metrics_port=metrics_port, extern_sim=False, extra=extra)
    config.write_text(config.read_text().replace('log_level = "info"', "") + sources, encoding="utf-8")
    env = {"REL_API_KEY": KEY, "REL_AWS_KEY": simulator_secret("bedrock", KEY), "REL_WRONG_KEY": WRONG,
           "REL_CH_PASSWORD": PASSWORD, "REL_WHSEC": WHSEC,
           "BATCHSCOPE_PIPELINE_LOG_LEVEL": "debug"}
    run = Proc(config, tmp_path / "run.log", "run", env=env).start()
    query = tmp_path / "data"  # the endpoint's pipeline.json and token
    metrics = ""
    try:
        def terminal_in_clickhouse() -> bool:
            try:
                rows = query_running(query, "SELECT count() FROM batch_latest FINAL WHERE status IN "
                                            "('completed','failed','expired','cancelled')").rows
            except BatchscopeError:
                return False
            return bool(rows[0][0] == 60)  # the two sources with the right key

        wait_for(terminal_in_clickhouse, "the fleet of the keyed sources in ClickHouse", 180, run)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        tables = {t: query_running(query, f"SELECT * FROM {t}").rows
                  for t in ("batch_snapshots", "batch_latest", "batch_changes")}
        failing = subprocess.run([sys.executable, "-m", "batchscope.cli", "--config", str(config), "query",
                                  "SELECT no_such_column FROM batch_snapshots"],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                                 env={**os.environ, **env})
    finally:
        run.stop()
    time.sleep(0.5)
    log = run.text()

    refused = "401" in log or "invalid_api_key" in log or "unauthor" in log.lower()
    assert refused, "the wrong key was never refused"
    assert 'source="sim-3"' in metrics, metrics[:2000]
    assert "batchscope_poller_requests_total" in metrics, metrics[:2000]
    assert 'batchscope_webhooks_refused_total{source="sim-1",reason="' in metrics, metrics[-3000:]
    assert 'batchscope_webhooks_accepted_total{source="sim-1"} 0' not in metrics, metrics[-3000:]
    assert failing.returncode != 0
    assert failing.stderr
    found = leaks(log, "the run's log") + leaks(metrics, "/metrics")
    found += leaks(failing.stderr, "query error text")
    for topic, records in asyncio.run(all_records(kafka_bootstrap, topic_prefix)).items():
        for r in records:
            found += leaks((r.key or b"") + (r.value or b""), f"topic {topic}")
            if topic.endswith(".dlq"):
                original = orjson.loads(r.value).get("original_b64") or ""
                found += leaks(base64.b64decode(original), f"a dead letter's original in {topic}")
    for table, rows in tables.items():
        found += leaks(repr(rows), f"table {table}")
    assert not found, found
    assert len(log.splitlines()) > 100, "the debug log is suspiciously short"
