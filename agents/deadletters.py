"""The one dead-letter path of the agents: a record (or one observation of a record of many) an
agent cannot process becomes a ``<prefix>.dlq`` record with its reason, counted and logged (at
most :data:`LOGS` lines per :data:`WINDOW` seconds), and the stream goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from faust.types import Message

from agents.counters import Counters
from agents.outputs import Outputs, Send
from pipeline.core.dlq import dead_letter, dlq_key, source_of
from pipeline.core.records import Rejected

log = logging.getLogger(__name__)

LOGS, WINDOW = 20, 10.0  # dead letters logged one by one per window


class LogLimit:
    """At most ``limit`` log lines per ``window`` seconds; then one line saying how many were held back.

    A storm of bad records must not turn into a storm of log lines (each one costs the agent time
    and fills the disk); every dead letter is still in the DLQ with its reason.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit, self._window, self._clock = limit, window, clock
        self._start = clock()
        self._count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._start >= self._window:
            if self.suppressed:
                log.warning("%d more dead letters in the last %.0f s (not logged one by one)",
                            self.suppressed, now - self._start)
            self._start, self._count, self.suppressed = now, 0, 0
        self._count += 1
        if self._count <= self._limit:
            return True
        self.suppressed += 1
        return False


class DeadLetters:
    """Dead letters to ``topic`` through the producer's ``send``, counted in ``counters``."""

    def __init__(self, send: Send, topic: str, counters: Counters, limit: LogLimit | None = None) -> None:
        self._send, self._topic, self._counters = send, topic, counters
        self._limit = limit or LogLimit(LOGS, WINDOW)

    def letter(self, msg: Message, stage: str, reason: str, rejected: Rejected | None = None,
               count: int = 1) -> tuple[bytes | None, bytes]:
        """(key, value) of the dead letter of a record, or of one observation in it (``rejected``,
        of ``count``; a record of one is dead-lettered whole, with its own key and bytes)."""
        self._counters.dead_letters += 1
        one = rejected if rejected is not None and count > 1 else None
        key = one.key if one is not None and one.key is not None else msg.key
        if one is not None:
            reason = f"observation {one.index + 1} of {count}: {reason}"
        if self._limit.allow():
            log.warning("dead letter from %s %s[%d]@%d: %s", stage, msg.topic, msg.partition, msg.offset,
                        reason[:300])
        whole = msg.value if isinstance(msg.value, bytes) else None  # bytes, from the raw serializer
        value = dead_letter(reason=reason, stage=stage, topic=msg.topic, partition=msg.partition,
                            offset=msg.offset, original=whole if one is None else one.original, key=key,
                            source=source_of(key), index=None if one is None else one.index)
        return dlq_key(key), value

    async def hand(self, msg: Message, stage: str, rejected: Sequence[Rejected], count: int,
                   out: Outputs) -> None:
        """Hand the dead letters of a record's bad observations to the producer, into ``out``
        (acknowledged with the record's other outputs)."""
        for rej in rejected:
            key, value = self.letter(msg, stage, rej.reason, rej, count)
            refused = await out.send(self._topic, key, value, None, -1)
            if refused is not None:
                raise refused  # a dead letter is far under any record limit: Kafka is not well

    async def deliver(self, msg: Message, stage: str, rejected: Sequence[Rejected], count: int) -> None:
        """Send dead letters and wait until the broker has them (found after the record was sent
        on, or outside any record's outputs)."""
        out = Outputs(self._send)
        await self.hand(msg, stage, rejected, count, out)
        for result in await asyncio.gather(*out.futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def record(self, msg: Message, stage: str, reason: str) -> None:
        """Dead-letter a whole record (its own key and bytes) and wait for the broker."""
        await self.deliver(msg, stage, [Rejected(reason, 0, b"")], 1)
