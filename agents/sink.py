"""The sink agent: snapshots and change events -> ClickHouse, batch by batch (one INSERT per table
per batch, :meth:`~pipeline.clickhouse.sink.ClickHouseSink.write_all`), the next batch cut while
the last is written. A batch is acknowledged only after every block of it was acknowledged by
ClickHouse or its records were dead-lettered (:meth:`SinkAgent.run`); a bad snapshot of a record
of many is a dead letter alone, the record's others are written."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.faustcore import hold_acks, release_acks
from pipeline.clickhouse.sink import Block, BlockSink, Dead, Position, Record, cut, refused_letters

log = logging.getLogger(__name__)

STAGE = "sink"


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
    and the longest wait for a batch, the changes topic (whose rows go to ``batch_changes``),
    the dead letters, the worker's counters, and what stops the worker when a write fails."""

    sink: BlockSink
    batch_size: int
    within: float  # seconds
    changes_topic: str
    dead: DeadLetters
    counters: Counters
    on_error: Callable[[BaseException], None]

    async def run(self, stream: StreamT[bytes]) -> AsyncGenerator[None, None]:
        """Batches are written one at a time, in order, while the next is parsed and cut: a batch
        is made ready while ClickHouse inserts the one before (on the store's thread). Its events
        are held (:func:`~agents.faustcore.hold_acks`) when it arrives, so ``take_events``' own
        acknowledgement, when the loop asks for the next batch, leaves them unacknowledged; they
        are released once the batch is written. A batch whose write never finished (the worker
        stopped, say while ClickHouse was down) is read again by the next owner."""
        batches = cast(Stream[bytes], stream).take_events(self.batch_size, within=self.within)
        writing: asyncio.Future[None] | None = None
        try:
            async for batch in batches:
                hold_acks(batch)
                prepared = self.prepare(batch)
                if writing is not None:
                    await asyncio.wait([writing])
                    if writing.cancelled() or writing.exception() is not None:
                        return  # reported by _written: the worker stops
                writing = asyncio.ensure_future(self.finish(prepared, release=True))
                writing.add_done_callback(self._written)
                yield None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)

    def _written(self, writing: asyncio.Future[None]) -> None:
        if not writing.cancelled() and (exc := writing.exception()) is not None:
            log.error("the sink could not write a batch: %r; stopping", exc)
            self.on_error(exc)

    async def write(self, batch: Sequence[EventT[bytes]]) -> None:
        """Write one batch; its dead letters are with the broker when this returns."""
        await self.finish(self.prepare(batch))

    def prepare(self, batch: Sequence[EventT[bytes]]) -> Prepared:
        """Parse and cut a batch (no I/O)."""
        events = {_position(e): e for e in batch}
        records = {pos: Record(pos, e.value, e.message.key) for pos, e in events.items()
                   if isinstance(e.value, bytes)}
        blocks, dead = cut(list(records.values()), self.batch_size, self.changes_topic)
        return Prepared(batch, events, records, blocks, dead)

    async def finish(self, ready: Prepared, *, release: bool = False) -> None:
        """Write a prepared batch and deliver its dead letters; then, with ``release``, let its
        events be acknowledged."""
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
