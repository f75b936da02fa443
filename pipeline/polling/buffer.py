"""Holds the poller's observations while Kafka is unreachable, so polling goes on.

``publish`` hands envelopes to Kafka directly while it is healthy. When a publish fails, the
envelopes (and every later one, in order) wait in a bounded buffer that a background task retries
every ``retry_every`` seconds; the poller keeps polling. When the buffer is full, ``publish``
waits for room: the poller pauses rather than drop an observation it would never re-send.

A delivery that outlasts ``timeout`` is not abandoned: its records are in the producer's queue
and land when the broker is back, so the next attempt waits on that same delivery instead of
sending the chunk again (a second send would store every observation of it twice). The chunk is
sent again only once its delivery has failed, and then without the envelopes the broker
acknowledged before it failed (:attr:`KafkaUnavailable.delivered <pipeline.kafka.KafkaUnavailable>`):
a broker killed mid-chunk used to get the whole chunk again, and the part it had stored twice.

Only Kafka being unreachable holds the buffer: an envelope Kafka refuses for itself (too large) is
dead-lettered or dropped by the publisher (:class:`pipeline.kafka.Publisher`), and the envelopes
behind it go on. An error the publisher did not expect is logged and held like an outage (never
silently: the retry task survives it and logs it again on the next failure after a success).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from pipeline.core.errors import BatchscopeError
from pipeline.core.models import Envelope
from pipeline.kafka import KafkaUnavailable

log = logging.getLogger(__name__)

CHUNK = 500


class Downstream(Protocol):
    async def publish(self, envelopes: list[Envelope]) -> None: ...


class BufferedPublisher:
    def __init__(self, downstream: Downstream, *, max_pending: int = 100_000,
                 timeout: float = 15.0, retry_every: float = 1.0) -> None:
        self._downstream = downstream
        self.max_pending = max_pending
        self._timeout = timeout
        self._retry_every = retry_every
        self._pending: deque[Envelope] = deque()
        self._lock = asyncio.Lock()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._delivery: asyncio.Task[None] | None = None  # the oldest chunk's, while unanswered
        self._chunk = 0  # how many of the oldest held envelopes that delivery carries
        self.healthy = True
        self.outages = 0
        self.held = 0  # observations held through an outage, in total (a counter)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._retry_loop())

    async def stop(self) -> None:
        """Try once more to deliver what is held, then stop the retry task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
        if self._delivery is not None:  # the producer's own stop still flushes its queue
            self._delivery.cancel()
            await asyncio.gather(self._delivery, return_exceptions=True)
            self._delivery = None
        if self._pending:
            log.error("stopping with %d observations Kafka never acknowledged", len(self._pending))

    async def publish(self, envelopes: list[Envelope]) -> None:
        while len(self._pending) + len(envelopes) > self.max_pending and self._pending:
            self._room.clear()
            log.warning("observation buffer full (%d): polling paused until Kafka is reachable", self.pending)
            await self._room.wait()
        self._pending.extend(envelopes)
        if self.healthy:
            await self.flush()
        else:
            self.held += len(envelopes)

    async def flush(self) -> None:
        """Send what is held, oldest first; on failure keep it and mark Kafka unhealthy."""
        async with self._lock:
            while self._pending:
                try:
                    delivered = await self._deliver_oldest()
                except Exception as exc:
                    if not isinstance(exc, (BatchscopeError, TimeoutError)) and self.healthy:
                        log.exception("publishing %d observations failed unexpectedly: holding them",
                                      self._chunk)
                    self._unhealthy(exc)
                    return
                for _ in range(delivered):
                    self._pending.popleft()
                self._room.set()
            if not self.healthy:
                log.warning("Kafka reachable again: held observations delivered")
                self.healthy = True

    async def _deliver_oldest(self) -> int:
        """Deliver the oldest chunk, or wait (up to ``timeout``) on the delivery already under
        way for it; how many envelopes were delivered. Raises what the delivery raised, or
        ``TimeoutError`` with the delivery left running for the next attempt."""
        if self._delivery is None:
            self._chunk = min(CHUNK, len(self._pending))
            chunk = [self._pending[i] for i in range(self._chunk)]
            self._delivery = asyncio.create_task(self._downstream.publish(chunk))
        done, _ = await asyncio.wait({self._delivery}, timeout=self._timeout)
        if not done:
            raise TimeoutError(f"{self._chunk} observations unacknowledged after {self._timeout:.0f} s")
        delivery, self._delivery = self._delivery, None
        try:
            delivery.result()
        except KafkaUnavailable as exc:
            self._forget_delivered(exc.delivered)
            raise
        return self._chunk

    def _forget_delivered(self, delivered: frozenset[int]) -> None:
        """Drop from the oldest chunk the envelopes (by index in it) the broker acknowledged
        before the chunk failed; the others stay at the head, in order."""
        if not delivered:
            return
        chunk = [self._pending.popleft() for _ in range(self._chunk)]
        self._pending.extendleft(reversed([e for i, e in enumerate(chunk) if i not in delivered]))
        self._room.set()

    def _unhealthy(self, exc: Exception) -> None:
        if self.healthy:
            self.outages += 1
            self.held += self.pending
            log.warning("Kafka unreachable (%s): holding %d observations, polling goes on",
                        type(exc).__name__, self.pending)
        self.healthy = False

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self._retry_every)
            if not self.healthy and self._pending:
                await self.flush()
