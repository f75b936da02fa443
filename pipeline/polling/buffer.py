"""Holds the poller's observations while Kafka is unreachable, so polling goes on.

``publish`` hands envelopes to Kafka directly while it is healthy. When a publish fails, the
envelopes (and every later one, in order) wait in a bounded buffer that a background task retries
every ``retry_every`` seconds; the poller keeps polling. When the buffer is full, ``publish``
waits for room: the poller pauses rather than drop an observation it would never re-send.

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
        self.healthy = True
        self.outages = 0

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

    async def flush(self) -> None:
        """Send what is held, oldest first; on failure keep it and mark Kafka unhealthy."""
        async with self._lock:
            while self._pending:
                chunk = [self._pending[i] for i in range(min(CHUNK, len(self._pending)))]
                try:
                    await asyncio.wait_for(self._downstream.publish(chunk), self._timeout)
                except (BatchscopeError, TimeoutError) as exc:
                    self._unhealthy(exc)
                    return
                except Exception as exc:
                    if self.healthy:
                        log.exception("publishing %d observations failed unexpectedly: holding them",
                                      len(chunk))
                    self._unhealthy(exc)
                    return
                for _ in chunk:
                    self._pending.popleft()
                self._room.set()
            if not self.healthy:
                log.warning("Kafka reachable again: held observations delivered")
                self.healthy = True

    def _unhealthy(self, exc: Exception) -> None:
        if self.healthy:
            self.outages += 1
            log.warning("Kafka unreachable (%s): holding %d observations, polling goes on",
                        type(exc).__name__, self.pending)
        self.healthy = False

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self._retry_every)
            if not self.healthy and self._pending:
                await self.flush()
