"""The sink agent: snapshots and change events -> ClickHouse, batch by batch (one INSERT per table
per batch, :meth:`~pipeline.clickhouse.sink.ClickHouseSink.write_all`). ``take_events``
acknowledges a batch only when the loop asks for the next one, i.e. after every block of it was
acknowledged by ClickHouse or its records were dead-lettered; a bad snapshot of a record of many
is a dead letter alone, the record's others are written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.faustcore import withhold_acks
from pipeline.clickhouse.sink import BlockSink, Position, Record, cut, refused_letters

STAGE = "sink"


@dataclass(slots=True)
class SinkAgent:
    """What the agent needs, given: where blocks go, the batch size (also the block alignment)
    and the longest wait for a batch, the changes topic (whose rows go to ``batch_changes``),
    the dead letters and the worker's counters."""

    sink: BlockSink
    batch_size: int
    within: float  # seconds
    changes_topic: str
    dead: DeadLetters
    counters: Counters

    async def run(self, stream: StreamT[bytes]) -> AsyncIterator[None]:
        batches = cast(Stream[bytes], stream).take_events(self.batch_size, within=self.within)
        async for batch in batches:
            try:
                await self.write(batch)
            except asyncio.CancelledError:
                withhold_acks(batch)  # stopped while ClickHouse was down: replay them next time
                raise
            yield None

    async def write(self, batch: Sequence[EventT[bytes]]) -> None:
        """Write one batch; its dead letters are with the broker when this returns."""
        events = {_position(e): e for e in batch}
        records = {pos: Record(pos, e.value, e.message.key) for pos, e in events.items()
                   if isinstance(e.value, bytes)}
        for e in batch:
            if not isinstance(e.value, bytes):
                await self.dead.record(e.message, STAGE, f"expected bytes, got {type(e.value).__name__}")
        blocks, dead = cut(list(records.values()), self.batch_size, self.changes_topic)
        rejected = await self.sink.write_all(blocks)
        for block, exc in rejected:
            dead += refused_letters(block, records, f"ClickHouse rejected the block: {exc}")
        for one in dead:
            await self.dead.deliver(events[one.pos].message, STAGE, [one.rejected], one.count)
        self.counters.sunk += sum(b.rows for b in blocks) - sum(b.rows for b, _ in rejected)


def _position(event: EventT[bytes]) -> Position:
    msg = event.message
    return Position(msg.topic, msg.partition, msg.offset)
