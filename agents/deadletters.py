"""The normalise agent's dead letters, produced in bursts instead of one Faust send per record.

A dead letter used to cost the normalise agent as much as a snapshot (one ``topic.send`` through
Faust's message machinery, and most of the time a produce request of its own), so a stream with
14% bad records moved valid records about 20% slower. Here a dead letter is built, held with its
event unacknowledged, and handed to the producer with the others in one burst (no await between
them yields to the loop, so they leave in one produce request per partition) when
:data:`BURST` are held or when the agent's timer calls :meth:`DeadLetterBurst.flush`.

The DLQ contract is unchanged: one ``<prefix>.dlq`` record per bad record. An event is
acknowledged only once its dead letter is in the producer, and Faust flushes the producer
before it commits offsets; a worker that dies holding dead letters has not committed their
offsets, so the records are read and dead-lettered again (at least once, like snapshots).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import EventT

from pipeline.dlq import dlq_key

log = logging.getLogger(__name__)

BURST = 500  # dead letters held at most before they are produced
FLUSH_SECONDS = 0.2  # how often the agent's timer produces what is held


class DeadLetterBurst:
    """Held dead letters of one agent; ``send`` is the producer's raw send, ``ack`` the stream's."""

    def __init__(self, topic: str, send: Callable[..., Awaitable[Awaitable[Any]]],
                 on_error: Callable[[BaseException], None], limit: int = BURST) -> None:
        self._topic, self._send, self._on_error, self._limit = topic, send, on_error, limit
        self._held: list[tuple[EventT[bytes], bytes]] = []
        self._ack: Callable[[EventT[bytes]], Awaitable[bool]] | None = None
        self._flushing = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def bind(self, ack: Callable[[EventT[bytes]], Awaitable[bool]]) -> None:
        """The acknowledgement of the (manually acked) stream the held events come from."""
        self._ack = ack

    async def add(self, event: EventT[bytes], value: bytes) -> None:
        """Hold ``value`` (a dead letter's JSON) for ``event``; produce the burst when full."""
        self._held.append((event, value))
        if len(self._held) >= self._limit:
            await self.flush()

    async def flush(self) -> None:
        """Hand every held dead letter to the producer, then acknowledge their events."""
        if not self._held:
            return
        async with self._flushing:  # the agent and its timer may both flush
            held, self._held = self._held, []
            sent = [await self._send(self._topic, dlq_key(event.message.key), value, None, None, None)
                    for event, value in held]
            for fut in sent:
                asyncio.ensure_future(fut).add_done_callback(self._delivered)
            assert self._ack is not None, "bind() the stream before dead letters are added"
            for event, _ in held:
                await self._ack(event)

    def _delivered(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("a dead letter could not be produced: %r", exc)
            self._on_error(exc)
