"""Envelopes the real broker refuses (issue 12, point 4, the poller's half): each is dead-lettered
(or dropped when the DLQ refuses it too), counted and logged, and never blocks the envelopes behind
it in the shared buffer; the source that produced it goes on polling."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.config import KafkaConfig, SourceConfig
from pipeline.core.models import Envelope
from pipeline.core.records import read_raw
from pipeline.kafka import Publisher, ensure_topics
from pipeline.polling.buffer import BufferedPublisher
from pipeline.polling.poller import Poller
from tests.loopback import serving
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

BIG = 1_100_000  # bytes of metadata: an envelope over the producer's 1 MiB max_request_size
MID = 400_000  # under the poller's object limit, over the raw topic's limit in the poller test


def batch(batch_id: str, blob: int = 0) -> dict[str, Any]:
    return {"id": batch_id, "status": "in_progress", **({"metadata": {"blob": "x" * blob}} if blob else {})}


def envelope(batch_id: str, source: str = "s", blob: int = 0) -> Envelope:
    return Envelope(source, "openai", "2026-12-01T00:00:00.000Z", batch(batch_id, blob), batch_id)


async def create_topic(bootstrap: str, name: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 4, 1, topic_configs=configs)])
    finally:
        await admin.close()


def ids(records: list[Any]) -> list[str]:
    """The batch ids on the raw topic, in order, from records of one or many (docs/records.md)."""
    return [e.payload["id"] for r in records for e in read_raw(r.value) if isinstance(e, Envelope)]


@pytest.fixture
async def kafka(kafka_bootstrap: str, topic_prefix: str) -> KafkaConfig:
    return KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, app_id=topic_prefix)


@pytest.fixture
async def publisher(kafka: KafkaConfig) -> AsyncIterator[Publisher]:
    async with Publisher(kafka) as pub:
        yield pub


async def publish_in_turn(buffer: BufferedPublisher, *batches: list[Envelope]) -> None:
    for batch in batches:
        await buffer.publish(batch)
    await buffer.stop()


async def test_an_envelope_over_the_producer_limit_is_dead_lettered_and_the_rest_delivered(
    kafka: KafkaConfig, publisher: Publisher, caplog: pytest.LogCaptureFixture,
) -> None:
    await ensure_topics(kafka)
    refusals: list[tuple[str, str]] = []
    publisher.on_refused = lambda e, error: refusals.append((e.source, error))
    buffer = BufferedPublisher(publisher, retry_every=0.1)
    await buffer.start()
    await publish_in_turn(buffer, [envelope("ok-1")], [envelope("ok-2"), envelope("big-1", "big", BIG)],
                          [envelope("ok-3")])
    assert buffer.pending == 0
    assert buffer.healthy
    assert sorted(ids(await read_all(kafka.bootstrap, kafka.topic("raw")))) == ["ok-1", "ok-2", "ok-3"]
    [letter] = [orjson.loads(r.value) for r in await read_all(kafka.bootstrap, kafka.topic("dlq"))]
    assert letter["stage"] == "poll"
    assert letter["source"] == "big"
    assert letter["topic"] == kafka.topic("raw")
    assert "MessageSizeTooLargeError" in letter["reason"]
    assert letter["original_truncated"] is True
    assert letter["original_size"] > 600 * 1024
    assert base64.b64decode(letter["original_b64"]).startswith(b'{"source":"big"')
    assert refusals == [("big", "kafka_refused")]
    assert publisher.dead_lettered == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "pipeline.kafka"]
    assert any("source big: Kafka refused an envelope" in m and "dead-lettered" in m for m in logged)


async def test_an_envelope_the_broker_refuses_is_dead_lettered_and_its_batch_mates_delivered(
    kafka: KafkaConfig, publisher: Publisher,
) -> None:
    """The topic's max.message.bytes is under the record: the broker refuses the batch that holds
    it (a per-record error, not a send() error); the records that shared its batch are sent again
    alone and delivered."""
    await create_topic(kafka.bootstrap, kafka.topic("raw"), {"max.message.bytes": "50000"})
    await ensure_topics(kafka, ("dlq",))
    buffer = BufferedPublisher(publisher, retry_every=0.1)
    await buffer.start()
    mid = "m" * 100_000
    await publish_in_turn(buffer, [envelope("ok-1"), envelope(mid, "mid"), envelope("ok-2")],
                          [envelope("ok-3")])
    assert buffer.pending == 0
    assert sorted(ids(await read_all(kafka.bootstrap, kafka.topic("raw")))) == ["ok-1", "ok-2", "ok-3"]
    [letter] = [orjson.loads(r.value) for r in await read_all(kafka.bootstrap, kafka.topic("dlq"))]
    assert (letter["stage"], letter["source"]) == ("poll", "mid")
    assert "MessageSizeTooLargeError" in letter["reason"]
    assert orjson.loads(base64.b64decode(letter["original_b64"]))["payload"]["id"] == mid


async def test_an_envelope_whose_dead_letter_is_refused_too_is_dropped_and_counted(
    kafka: KafkaConfig, publisher: Publisher, caplog: pytest.LogCaptureFixture,
) -> None:
    await create_topic(kafka.bootstrap, kafka.topic("dlq"), {"max.message.bytes": "2000"})
    await ensure_topics(kafka, ("raw",))
    refusals: list[tuple[str, str]] = []
    publisher.on_refused = lambda e, error: refusals.append((e.source, error))
    buffer = BufferedPublisher(publisher, retry_every=0.1)
    await buffer.start()
    await publish_in_turn(buffer, [envelope("big-1", "big", BIG)], [envelope("ok-1")])
    assert ids(await read_all(kafka.bootstrap, kafka.topic("raw"))) == ["ok-1"]
    assert await read_all(kafka.bootstrap, kafka.topic("dlq")) == []
    assert refusals == [("big", "kafka_refused_dropped")]
    assert publisher.dropped == 1
    assert any("dropped" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


# --- through the poller: the healthy source's observations keep flowing ----------------------


@pytest.fixture
async def provider() -> AsyncIterator[str]:
    """``/big/v1/batches`` lists one batch of about 400 KB (under the poller's object limit, over
    the raw topic's in the test); ``/good/v1/batches`` ordinary batches, one more on every call
    (newest first)."""
    calls = {"good": 0}

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"data": [batch("big-1", MID)], "has_more": False})

    async def good(request: web.Request) -> web.Response:
        calls["good"] += 1
        listed = [{"id": f"batch_{n}", "status": "in_progress"} for n in range(calls["good"], 0, -1)]
        return web.json_response({"data": listed, "has_more": False})

    async with serving({"/big/v1/batches": big, "/good/v1/batches": good}) as url:
        yield url


async def test_a_refused_envelope_stops_neither_its_source_nor_the_others(
    kafka: KafkaConfig, publisher: Publisher, provider: str,
) -> None:
    await create_topic(kafka.bootstrap, kafka.topic("raw"), {"max.message.bytes": "300000"})
    await ensure_topics(kafka)
    buffer = BufferedPublisher(publisher, retry_every=0.1)
    await buffer.start()
    sources = tuple(SourceConfig(name=n, provider="openai", base_url=f"{provider}/{n}/v1", poll_interval=0.2,
                                 max_rps=100.0) for n in ("big", "good"))
    poller = Poller(sources, buffer)
    publisher.on_refused = poller.refused
    task = asyncio.create_task(poller.run())
    big, good = poller.pollers
    try:
        for _ in range(300):
            if big.cycles >= 3 and good.cycles >= 3:
                break
            await asyncio.sleep(0.1)
    finally:
        poller.stop()
        await asyncio.wait_for(task, 30)
        await buffer.stop()
    assert not task.exception()
    assert big.cycles >= 3
    assert good.cycles >= 3
    delivered = ids(await read_all(kafka.bootstrap, kafka.topic("raw")))
    assert {f"batch_{n}" for n in range(1, good.cycles + 1)} <= set(delivered)
    assert "big-1" not in delivered
    letters = [orjson.loads(r.value) for r in await read_all(kafka.bootstrap, kafka.topic("dlq"))]
    assert len(letters) == big.metrics.errors["kafka_refused"] <= 1  # not again each cycle, unchanged
    assert all((d["stage"], d["source"]) == ("poll", "big") for d in letters)
    assert not any(good.metrics.errors.values())
