"""pipeline.polling.buffer: observations held while Kafka is unreachable, in order, none lost."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError

from pipeline.config import KafkaConfig
from pipeline.core.errors import BatchscopeError
from pipeline.core.models import Envelope
from pipeline.core.records import partition_of
from pipeline.kafka import KafkaUnavailable, Publisher
from pipeline.polling.buffer import BufferedPublisher


def healthy(buffer: BufferedPublisher) -> bool:
    """Read through a call, so mypy does not narrow the flag across awaits."""
    return buffer.healthy


class FlakyKafka:
    def __init__(self) -> None:
        self.up = True
        self.sent: list[str] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        if not self.up:
            raise BatchscopeError("broker down")
        self.sent.extend(e.payload["id"] for e in envelopes)


async def drained(buffer: BufferedPublisher, tries: int = 200) -> None:
    """Wait (up to ``tries`` x 10 ms) for the retry task to deliver what is held."""
    for _ in range(tries):
        if buffer.pending == 0:
            return
        await asyncio.sleep(0.01)


def envs(*ids: str) -> list[Envelope]:
    return [Envelope("s", "openai", "2026-11-29T00:00:00.000Z", {"id": i}, i) for i in ids]


async def test_passes_through_while_healthy() -> None:
    kafka = FlakyKafka()
    buffer = BufferedPublisher(kafka)
    await buffer.publish(envs("a", "b"))
    assert kafka.sent == ["a", "b"]
    assert buffer.pending == 0


async def test_holds_during_an_outage_and_delivers_in_order_after() -> None:
    kafka = FlakyKafka()
    buffer = BufferedPublisher(kafka, retry_every=0.01)
    await buffer.start()
    kafka.up = False
    await buffer.publish(envs("a"))
    await buffer.publish(envs("b", "c"))  # returns at once: the poller keeps polling
    assert buffer.pending == 3
    assert not healthy(buffer)
    kafka.up = True
    await drained(buffer, 100)
    assert kafka.sent == ["a", "b", "c"]
    assert healthy(buffer)
    assert buffer.outages == 1
    assert buffer.held == 3  # all three went through the buffer
    await buffer.publish(envs("d"))  # healthy again: passed through, not held
    assert buffer.held == 3
    await buffer.stop()


async def test_full_buffer_pauses_the_caller_instead_of_dropping() -> None:
    kafka = FlakyKafka()
    buffer = BufferedPublisher(kafka, max_pending=2, retry_every=0.01)
    await buffer.start()
    kafka.up = False
    await buffer.publish(envs("a", "b"))
    blocked = asyncio.create_task(buffer.publish(envs("c")))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    kafka.up = True
    await asyncio.wait_for(blocked, timeout=2)
    await buffer.flush()
    assert kafka.sent == ["a", "b", "c"]
    await buffer.stop()


class OnceBroken(FlakyKafka):
    """Raises an error no code path expects on its first call, then delivers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def publish(self, envelopes: list[Envelope]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug in the publisher")
        await super().publish(envelopes)


async def test_an_unexpected_error_is_logged_and_held_and_the_retry_task_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = OnceBroken()
    buffer = BufferedPublisher(kafka, retry_every=0.01)
    await buffer.start()
    await buffer.publish(envs("a"))  # not raised into the poller's cycle
    assert buffer.pending == 1
    assert not healthy(buffer)
    await drained(buffer, 500)
    assert kafka.sent == ["a"]
    assert healthy(buffer)
    assert "publishing 1 observations failed unexpectedly: holding them" in caplog.text
    assert "RuntimeError: a bug in the publisher" in caplog.text
    await buffer.stop()


class SlowKafka(FlakyKafka):
    """Acknowledges nothing until ``answer`` is set, like a broker down with the records queued
    in the producer: a delivery that outlasts the buffer's timeout still lands afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.calls = 0

    async def publish(self, envelopes: list[Envelope]) -> None:
        self.calls += 1
        await self.answer.wait()
        await super().publish(envelopes)


async def test_a_delivery_that_outlasts_the_timeout_is_waited_on_never_sent_again() -> None:
    kafka = SlowKafka()
    buffer = BufferedPublisher(kafka, timeout=0.02, retry_every=0.01)
    await buffer.start()
    await buffer.publish(envs("a", "b"))
    assert not healthy(buffer)
    await buffer.publish(envs("c"))
    await asyncio.sleep(0.1)  # several retries, each timing out on the same delivery
    assert kafka.calls == 1
    kafka.answer.set()
    await drained(buffer)
    assert kafka.sent == ["a", "b", "c"]  # each once, in order
    assert kafka.calls == 2  # the held chunk, then "c"
    assert healthy(buffer)
    await buffer.stop()


async def test_stop_abandons_a_delivery_still_unanswered() -> None:
    kafka = SlowKafka()
    buffer = BufferedPublisher(kafka, timeout=0.02, retry_every=0.01)
    await buffer.start()
    await buffer.publish(envs("a"))
    await buffer.stop()
    assert buffer.pending == 1
    assert kafka.sent == []


class PartlyDelivered:
    """A broker killed mid-chunk: the first publish stores some envelopes, then fails."""

    def __init__(self, stored: set[int]) -> None:
        self.stored = stored
        self.calls: list[list[str]] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        self.calls.append([e.payload["id"] for e in envelopes])
        if len(self.calls) == 1:
            raise KafkaUnavailable("broker killed", delivered=self.stored)


async def test_a_chunk_that_failed_part_way_is_sent_again_without_what_the_broker_stored() -> None:
    kafka = PartlyDelivered({0, 2})
    buffer = BufferedPublisher(kafka, retry_every=0.01)
    await buffer.start()
    await buffer.publish(envs("a", "b", "c", "d"))
    assert not healthy(buffer)
    assert buffer.pending == 2  # "a" and "c" are stored: held no more
    await drained(buffer, 100)
    await buffer.stop()
    assert kafka.calls == [["a", "b", "c", "d"], ["b", "d"]]  # the rest, in order, once
    assert buffer.pending == 0


class HalfBroker:
    """An aiokafka producer whose records for partition 0 land and for partition 1 time out."""

    async def send(self, topic: str, value: bytes, key: bytes, partition: int) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if partition == 0:
            future.set_result(object())
        else:
            future.set_exception(KafkaTimeoutError())
        return future


async def test_a_publish_that_fails_part_way_names_the_envelopes_the_broker_stored() -> None:
    publisher = Publisher(KafkaConfig(partitions=2))
    publisher._producer = cast(Any, HalfBroker())
    envelopes = envs(*(f"b{i}" for i in range(12)))
    on_0 = {i for i, e in enumerate(envelopes) if partition_of(e.key.encode(), 2) == 0}
    assert 0 < len(on_0) < len(envelopes)  # both partitions are in the page
    with pytest.raises(KafkaUnavailable) as failed:
        await publisher.publish(envelopes)
    assert failed.value.delivered == on_0
