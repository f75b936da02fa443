"""The poller's side of the webhooks: it reads ``<prefix>.hints`` and fetches each hinted batch.

:class:`HintReader` consumes the topic in its own consumer group (``<app_id>-hints``) and hands
each hint to its source's poller (:meth:`pipeline.polling.poller.SourcePoller.hinted`), which
fetches that batch with one GET through its provider client (rate limiter, breaker, retry
policy) and publishes the observation as a cycle would; a hint for a batch it already knows
terminal costs no call, a batch it does not know is discovered so. The offsets are committed only
once every hint of a fetch was handled: a poller stopped meanwhile leaves them in the topic, and
its successor reads them again. Polling goes on as the fallback and for the intermediate statuses,
which providers do not push. A source handles its hints between its cycles (and as soon as one
arrives while it waits for the next), never during one: the tracker sees one thing at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from pipeline.config import KafkaConfig
from pipeline.core.webhooks import Hint

log = logging.getLogger("pipeline.polling.poller")

MAX_RECORDS = 500  # hints read per fetch
GROUP_SUFFIX = "-hints"
RESTART_AFTER = 1.0  # seconds before the reader starts again after a Kafka error


class Hinted(Protocol):
    async def hinted(self, batch_id: str) -> None: ...


class HintQueue:
    """One source's hints waiting for its poller, each with the future its reader awaits."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()

    async def put(self, batch_id: str) -> None:
        """Queue a hint and wait until the poller handled it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((batch_id, done))
        await done

    async def serve(self, stop: asyncio.Event, seconds: float,
                    handle: Callable[[str], Awaitable[None]]) -> None:
        """For ``seconds`` or until ``stop``: handle each hint as it arrives. A hint is marked
        done once handled (whatever the outcome: polling is the fallback), not if stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not stop.is_set() and (left := deadline - loop.time()) > 0:
            item = await _first(self._queue.get(), stop, left)
            if item is None:
                return
            batch_id, done = item
            await handle(batch_id)
            if stop.is_set():  # cut short: left for the reader's successor
                return
            if not done.done():
                done.set_result(None)


async def _first(get: Awaitable[tuple[str, asyncio.Future[None]]], stop: asyncio.Event,
                 seconds: float) -> tuple[str, asyncio.Future[None]] | None:
    """The next hint, or None after ``seconds`` or once ``stop`` is set."""
    got = asyncio.ensure_future(get)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((got, stopped), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (got, stopped):
            task.cancel()
        await asyncio.gather(got, stopped, return_exceptions=True)
    if got.cancelled():
        return None
    return got.result()


class HintReader:
    """``<prefix>.hints`` -> the pollers of its sources, committed once handled."""

    def __init__(self, config: KafkaConfig, pollers: Mapping[str, Hinted]) -> None:
        self._config = config
        self._pollers = pollers
        self.read = 0
        self.skipped = 0  # records that are not hints, or for a source this poller does not poll
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        """Until cancelled; a Kafka error is logged and the reader starts again a second later
        (from the committed offsets: nothing handled is lost, a hint may be handled twice)."""
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                log.warning("hints: reading %s failed (%r): again in %g s", self._config.topic("hints"),
                            exc, RESTART_AFTER)
                await asyncio.sleep(RESTART_AFTER)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            self._config.topic("hints"), bootstrap_servers=self._config.bootstrap,
            group_id=f"{self._config.app_id}{GROUP_SUFFIX}", enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
        await consumer.start()
        self._consumer = consumer
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
                records = [r for batch in fetched.values() for r in batch]
                if not records:
                    continue
                await asyncio.gather(*(self._one(r.value) for r in records))
                await consumer.commit()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _one(self, value: bytes | None) -> None:
        try:
            hint = Hint.from_json(value or b"")
        except ValueError as exc:
            self.skipped += 1
            log.warning("hints: a record skipped: %s", exc)
            return
        poller = self._pollers.get(hint.source)
        if poller is None:
            self.skipped += 1
            log.warning("hints: a hint for source %s, which this poller does not poll, skipped", hint.source)
            return
        self.read += 1
        await poller.hinted(hint.batch_id)
