"""The webhook receiver on the real broker: a verified event is in ``<prefix>.hints`` (keyed
``source/batch_id``) before the 2xx, a redelivery is not published twice, and every bad request is
refused and counted by reason, with no secret in any log line or answer."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import orjson
import pytest

from pipeline.config import KafkaConfig, Settings, SourceConfig, WebhooksConfig
from pipeline.core import webhooks as wh
from pipeline.core.errors import BatchscopeError
from pipeline.core.secret import Secret
from pipeline.kafka import ensure_topics
from pipeline.webhooks.receiver import Receiver
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

KEY = b"integration-webhook-secret-0d9a"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
NEW_KEY = b"integration-webhook-secret-new-77"
ROTATED = f"whsec_{base64.b64encode(NEW_KEY).decode()} {SECRET}"


@pytest.fixture
async def receiver(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Receiver]:
    kafka = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, app_id=topic_prefix)
    await ensure_topics(kafka, ("hints",))
    sources = (
        SourceConfig(name="oa", provider="openai", base_url="http://127.0.0.1:1/v1", webhook_secret_env="X",
                     webhook_secret=Secret(ROTATED)),
        SourceConfig(name="gm", provider="gemini", base_url="http://127.0.0.1:1/v1beta",
                     webhook_secret_env="Y", webhook_path="/hooks/gemini", webhook_secret=Secret(SECRET)),
        SourceConfig(name="an", provider="anthropic", base_url="http://127.0.0.1:1/v1"),
    )
    settings = Settings(kafka=kafka, webhooks=WebhooksConfig(port=0, max_body_kib=1, recent_ids=3),
                        sources=sources)
    async with Receiver(settings) as r:
        yield r


def event(batch_id: str, kind: str = "batch.completed") -> bytes:
    return orjson.dumps({"id": "evt_1", "object": "event", "created_at": int(time.time()), "type": kind,
                         "data": {"id": batch_id}})


async def post(r: Receiver, path: str, body: bytes, msg_id: str, *, key: bytes = KEY,
               at: int | None = None, method: str = "POST") -> int:
    headers = wh.sign(key, msg_id, int(time.time()) if at is None else at, body)
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{r.port}{path}", data=body, headers=headers) as resp:
        return resp.status


async def test_published_once_refused_and_counted(receiver: Receiver, kafka_bootstrap: str, topic_prefix: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = receiver
    assert await post(r, "/webhooks/oa", event("batch_1"), "msg_1") == 200
    assert await post(r, "/webhooks/oa", event("batch_1"), "msg_1") == 200  # redelivered
    assert await post(r, "/webhooks/oa", event("batch_2"), "msg_2", key=NEW_KEY) == 200  # rotated
    assert await post(r, "/hooks/gemini", event("g1", "batch.succeeded"), "msg_3") == 200
    assert await post(r, "/webhooks/oa", event("r1", "response.completed"), "msg_4") == 200  # ignored
    refusals = {
        "bad_signature": post(r, "/webhooks/oa", event("batch_3"), "msg_5", key=b"wrong"),
        "stale_timestamp": post(r, "/webhooks/oa", event("batch_3"), "msg_6", at=int(time.time()) - 301),
        "too_large": post(r, "/webhooks/oa", b"{" + b" " * 2000 + b"}", "msg_7"),
        "not_json": post(r, "/webhooks/oa", b"not json", "msg_8"),
        "not_an_event": post(r, "/webhooks/oa", b'{"type": "batch.completed"}', "msg_9"),
        "unknown_path": post(r, "/webhooks/an", event("b"), "msg_10"),
        "method": post(r, "/webhooks/oa", b"", "msg_11", method="GET"),
    }
    statuses = {reason: await call for reason, call in refusals.items()}
    assert statuses == {"bad_signature": 401, "stale_timestamp": 400, "too_large": 413, "not_json": 400,
                        "not_an_event": 400, "unknown_path": 404, "method": 405}
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{r.port}/webhooks/oa", data=event("x")) as resp:
        assert resp.status == 400  # no signature headers at all
    assert dict(r.refused) == {("oa", "bad_signature"): 1, ("oa", "stale_timestamp"): 1,
                               ("oa", "too_large"): 1, ("oa", "not_json"): 1, ("oa", "not_an_event"): 1,
                               ("", "unknown_path"): 1, ("oa", "method"): 1, ("oa", "missing_headers"): 1}
    assert (r.accepted["oa"], r.duplicates["oa"], r.ignored["oa"], r.accepted["gm"]) == (2, 1, 1, 1)
    text = r.metrics_text()
    assert 'batchscope_webhooks_refused_total{source="oa",reason="bad_signature"} 1' in text
    assert 'batchscope_webhooks_duplicates_total{source="oa"} 1' in text

    records = await read_all(kafka_bootstrap, f"{topic_prefix}.hints")
    hints = sorted((rec.key.decode(), wh.Hint.from_json(rec.value)) for rec in records)
    assert [k for k, _ in hints] == ["gm/batches/g1", "oa/batch_1", "oa/batch_2"]
    assert [(h.type, h.webhook_id) for _, h in hints] == [
        ("batch.succeeded", "msg_3"), ("batch.completed", "msg_1"), ("batch.completed", "msg_2")]
    logged = caplog.text + text + b"".join(rec.value for rec in records).decode()
    for secret in (SECRET, ROTATED, base64.b64encode(KEY).decode(), KEY.decode()):
        assert secret not in logged


async def test_the_recent_ids_are_bounded(receiver: Receiver) -> None:
    r = receiver
    for i in range(5):
        assert await post(r, "/webhooks/oa", event(f"b{i}"), f"m{i}") == 200
    assert len(r.routes["/webhooks/oa"].recent) == 3
    assert await post(r, "/webhooks/oa", event("b4"), "m4") == 200  # still remembered
    assert await post(r, "/webhooks/oa", event("b0"), "m0") == 200  # forgotten: published again
    assert (r.accepted["oa"], r.duplicates["oa"]) == (6, 1)



async def test_a_taken_port_is_one_line(receiver: Receiver) -> None:
    settings = replace(receiver.settings, webhooks=WebhooksConfig(port=receiver.port))
    taken = r"webhooks: cannot listen on 127\.0\.0\.1:\d+: .*webhooks\.port"
    with pytest.raises(BatchscopeError, match=taken):
        await Receiver(settings).start()
