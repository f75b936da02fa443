"""The alerts service against the real broker and a local webhook receiver that verifies the
Standard Webhooks signature: every matching change event is delivered once, through 429s and
500s and a restart mid-stream; a burst becomes digests; a bad event is a dead letter."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiohttp import web

from pipeline.alerts.deliver import Target
from pipeline.alerts.messages import signing_key
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.service import AlertService
from pipeline.config import KafkaConfig
from pipeline.core.secret import Secret
from pipeline.core.webhooks import Refused, verify
from pipeline.kafka import ALERTS_SENT, ensure_topics
from tests.loopback import serving, until
from tests.support.kafka import PARTITIONS, publish, read_all

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"alerts-test-signing-key-32-bytes").decode()


class Receiver:
    """A webhook endpoint: refuses a bad signature (401); answers 429 (with Retry-After) or 500
    to every third and fifth delivery attempt; counts the deliveries it accepted, by id."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.refused = 0
        self.bad_signatures = 0
        self._attempts = itertools.count()
        self._key = signing_key(SECRET)

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.read()
        try:
            msg_id = verify([self._key], request.headers, payload, now=time.time()).msg_id
        except Refused:
            self.bad_signatures += 1
            return web.Response(status=401)
        n = next(self._attempts)
        if n % 3 == 1:
            self.refused += 1
            return web.Response(status=429, headers={"Retry-After": "0.05"})
        if n % 5 == 2:
            self.refused += 1
            return web.Response(status=500)
        self.accepted[msg_id] += 1
        self.bodies[msg_id] = orjson.loads(payload)
        return web.Response(status=204)


def change(i: int, kind: str, to_status: str | None) -> tuple[bytes, bytes]:
    key = f"acct/batch_{i}"
    event = {"event_id": f"ev-{i}", "kind": kind, "to_status": to_status, "source": "acct",
             "provider": "openai", "batch_id": f"batch_{i}", "at": "2026-12-03T09:00:00.000Z",
             "snapshot": {"model": "gpt-4o-mini", "requests_total": 10, "requests_failed": 10,
                          "requests_completed": 0, "metadata": {"team": "ml"}}}
    return key.encode(), orjson.dumps(event)


def targets(url: str, **table: Any) -> list[Target]:
    rules = parse_rules([{"name": "bad-ends", "destination": "webhook", "url_env": "HOOK_URL",
                          "signing_key_env": "HOOK_KEY", "to_status": ["failed", "expired"], **table},
                         {"name": "risk", "destination": "webhook", "url_env": "HOOK_URL",
                          "signing_key_env": "HOOK_KEY", "kind": "expiry_risk"}])
    return [Target(r, Secret(url), signing_key(SECRET)) for r in rules]


async def run_for(service: AlertService, condition: Any, within: float) -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(service.run(stop))
    try:
        await until(lambda: condition() or task.done(), within)
        if task.done():
            task.result()  # raises what ended it
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_each_matching_event_is_delivered_once_through_refusals_and_a_restart(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, app_id=topic_prefix,
                         partitions=PARTITIONS)
    await ensure_topics(config, ("changes", "dlq", ALERTS_SENT))
    kinds = [("status_changed", "failed"), ("status_changed", "expired"), ("expiry_risk", None),
             ("progress", None), ("status_changed", "completed")]
    events = [change(i, *kinds[i % len(kinds)]) for i in range(100)]
    expected = {f"ev-{i}" for i in range(100) if i % len(kinds) < 3}
    await publish(kafka_bootstrap, config.topic("changes"), [*events, (b"acct/x", b"not json")])
    receiver = Receiver()
    async with serving({"/hook": receiver.handle}, "POST") as base:
        url = base + "/hook"
        first = AlertService(config, targets(url), {}, "team", from_start=True)
        await run_for(first, lambda: len(receiver.accepted) >= 20, 60)  # stopped mid-stream
        second = AlertService(config, targets(url), {}, "team", from_start=True)
        await run_for(second, lambda: set(receiver.accepted) >= expected, 90)
    assert set(receiver.accepted) == expected
    assert receiver.refused > 0
    assert receiver.bad_signatures == 0
    assert sum(receiver.accepted.values()) == len(expected)  # none twice, across the restart
    assert second.counts.deduplicated  # the second read the first one's events again, and skipped them
    metrics = first.counts.exposition() + second.counts.exposition()
    assert 'batchscope_alerts_sent_total{rule="bad-ends"}' in metrics
    assert 'batchscope_alerts_deduplicated_total{rule="risk"}' in metrics
    assert receiver.bodies["ev-0"]["event"]["batch_id"] == "batch_0"
    dead = await read_all(kafka_bootstrap, config.topic("dlq"))
    assert [orjson.loads(r.value)["reason"] for r in dead] == ["the change event is not a JSON object"]
    assert url not in str([r.value for r in dead])


async def test_a_burst_becomes_a_few_alerts_and_digests_each_event_in_one_of_them(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, app_id=topic_prefix,
                         partitions=PARTITIONS)
    await ensure_topics(config, ("changes", "dlq", ALERTS_SENT))
    await publish(kafka_bootstrap, config.topic("changes"),
                  [change(i, "status_changed", "failed") for i in range(500)])
    receiver = Receiver()
    async with serving({"/hook": receiver.handle}, "POST") as base:
        url = base + "/hook"
        service = AlertService(config, targets(url, digest_after=5, digest_window=2.0, digest_list=10),
                               {}, "team", from_start=True)

        def digests() -> list[dict[str, Any]]:
            return [b for b in receiver.bodies.values() if b["type"] == "batchscope.digest"]

        await run_for(service, lambda: sum(d["total"] for d in digests()) + 5 >= 500, 60)
    singles = [b for b in receiver.bodies.values() if b["type"] == "batchscope.alert"]
    assert len(singles) == 5
    assert sum(d["total"] for d in digests()) == 495
    assert len(digests()) <= 3  # 500 failures in well under a window or two: at most a digest per window
    assert all(len(d["event_ids"]) <= 10 for d in digests())
    assert {"source": "acct", "status": "failed", "count": digests()[0]["total"]} in digests()[0]["breakdown"]
    assert service.counts.digested["bad-ends"] == 495
