"""The sink agent: snapshots and change sets -> ClickHouse, batch by batch (one INSERT per table
per batch, :meth:`~pipeline.clickhouse.sink.ClickHouseSink.write_all`) by the agent's writer, the
next batch cut while the last is written. A batch is acknowledged only after every block of it
was acknowledged by ClickHouse or its records were dead-lettered (:meth:`SinkAgent.run`); a bad
snapshot of a record of many is a dead letter alone, the record's others are written."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.faustcore import hold_acks, release_acks
from agents.parsed import MadeRecords, ParsedRecords
from pipeline.clickhouse.sink import Block, BlockSink, Dead, Position, Record, cut, refused_letters
from pipeline.core.records import Counted, Made

log = logging.getLogger(__name__)

STAGE = "sink"
AHEAD = 4  # batches that may wait for the sink's writer


@dataclass(slots=True)
class Prepared:
    """A batch made ready to write: its events by position, its records, blocks and dead letters."""

    batch: Sequence[EventT[bytes]]
    events: dict[Position, EventT[bytes]]
    records: dict[Position, Record]
    blocks: list[Block]
    dead: list[Dead]


@dataclass(slots=True)
class SinkAgent:
    """What the agent needs, given: where blocks go, the batch size (also the block alignment)
    and the longest wait for a batch, the change-set topic (whose rows go to ``batch_changes``),
    the dead letters, the worker's counters, and what stops the worker when a write fails."""

    sink: BlockSink
    batch_size: int
    within: float  # seconds
    changesets_topic: str
    dead: DeadLetters
    counters: Counters
    on_error: Callable[[BaseException], None]
    parsed: ParsedRecords | None = None  # the snapshot records the track agent already read
    made: MadeRecords | None = None  # the snapshot records the normalise agent made
    _waiting: asyncio.Queue[Sequence[EventT[bytes]]] = field(
        default_factory=lambda: asyncio.Queue(AHEAD), init=False, repr=False)  # batches for the writer
    _failed: bool = field(default=False, init=False, repr=False)  # a write failed: the worker is stopping

    async def run(self, stream: StreamT[bytes]) -> AsyncGenerator[None, None]:
        """Batches are written one at a time, in order, by the agent's writer
        (:meth:`write_from`), while the next is parsed and cut. The agent only hands each batch
        over and asks for the next at once: ``take_events`` fills its buffer only while the agent
        is not holding a batch, so an agent that waited for a write there let Faust's queue fill,
        and Faust then stopped fetching the snapshots and change events, the track agent's input
        too. At most :data:`AHEAD` batches wait; beyond that the agent waits (the backpressure).

        A batch's events are held (:func:`~agents.faustcore.hold_acks`) when it arrives, so
        ``take_events``' own acknowledgement, when the loop asks for the next batch, leaves them
        unacknowledged; they are released once the batch is written. A batch whose write never
        finished (the worker stopped, say while ClickHouse was down) is read again by the next owner."""
        batches = cast(Stream[bytes], stream).take_events(self.batch_size, within=self.within)
        writer = asyncio.ensure_future(self.write_from())
        writer.add_done_callback(self._written)
        try:
            async for batch in batches:
                hold_acks(batch)
                if not await self._hand(batch, writer):
                    return  # the writer stopped on a failed write (reported by _written)
                yield None
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _hand(self, batch: Sequence[EventT[bytes]], writer: asyncio.Future[None]) -> bool:
        """Queue ``batch`` for the writer, waiting while :data:`AHEAD` batches wait; False once a
        write failed or the writer stopped."""
        if self._failed or writer.done():
            return False
        if not self._waiting.full():
            self._waiting.put_nowait(batch)
            return True
        put = asyncio.ensure_future(self._waiting.put(batch))
        try:
            await asyncio.wait([put, writer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            queued = put.done()
            if not queued:  # the writer stopped, or the agent is cancelled: the batch is not queued
                put.cancel()
        return queued

    async def write_from(self) -> None:
        """The writer: each batch handed over parsed and cut while the one before is written (on
        the store's thread), then written; returns after a failed write."""
        writing: asyncio.Future[None] | None = None
        try:
            while True:
                prepared = self.prepare(await self._waiting.get())
                if writing is not None:
                    await asyncio.wait([writing])
                    if writing.cancelled() or writing.exception() is not None:
                        return  # reported by _written: the worker stops
                writing = asyncio.ensure_future(self.finish(prepared, release=True))
                writing.add_done_callback(self._written)
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)

    def forget(self) -> int:
        """Partitions were revoked: the batches still waiting are dropped, neither written nor
        acknowledged (their partitions' new owner reads them again); how many."""
        dropped = 0
        while not self._waiting.empty():
            self._waiting.get_nowait()
            dropped += 1
        return dropped

    def _written(self, writing: asyncio.Future[None]) -> None:
        if not writing.cancelled() and (exc := writing.exception()) is not None:
            log.error("the sink could not write a batch: %r; stopping", exc)
            self._failed = True
            self.on_error(exc)

    def prepare(self, batch: Sequence[EventT[bytes]]) -> Prepared:
        """Parse and cut a batch (no I/O)."""
        events = {_position(e): e for e in batch}
        records = {pos: Record(pos, e.value, e.message.key, self._known(e))
                   for pos, e in events.items() if isinstance(e.value, bytes)}
        blocks, dead = cut(list(records.values()), self.batch_size, self.changesets_topic)
        return Prepared(batch, events, records, blocks, dead)

    def _known(self, event: EventT[bytes]) -> Counted | Made | None:
        """A snapshot record as this worker's track agent read it, or its normalise agent made
        it; None for one to read (a change set is never either)."""
        if self.parsed is not None and (parsed := self.parsed.take(event.message)) is not None:
            return parsed
        value, made = event.value, self.made
        if made is not None and isinstance(value, bytes) and event.message.topic != self.changesets_topic:
            return made.get(value)
        return None

    async def finish(self, ready: Prepared, *, release: bool = False) -> None:
        """Write a prepared batch and deliver its dead letters (with the broker when this returns);
        then, with ``release``, let its events be acknowledged."""
        for e in ready.batch:
            if not isinstance(e.value, bytes):
                await self.dead.record(e.message, STAGE, f"expected bytes, got {type(e.value).__name__}")
        dead = list(ready.dead)
        rejected = await self.sink.write_all(ready.blocks)
        for block, exc in rejected:
            dead += refused_letters(block, ready.records, f"ClickHouse rejected the block: {exc}")
        for one in dead:
            await self.dead.deliver(ready.events[one.pos].message, STAGE, [one.rejected], one.count)
        self.counters.sunk += sum(b.rows for b in ready.blocks) - sum(b.rows for b, _ in rejected)
        if release:
            release_acks(ready.batch)


def _position(event: EventT[bytes]) -> Position:
    msg = event.message
    return Position(msg.topic, msg.partition, msg.offset)
