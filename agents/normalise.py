"""The normalise agent: one raw record of one or many envelopes -> its snapshots, in the same
order, to the partition of their keys (the raw record's, for the poller's records), packed with
the snapshots of the raw records after it into one snapshot record per partition
(:mod:`agents.packing`); a bad observation is a dead letter of its own. Acknowledged by hand,
in offset order, once the broker has all of a record's outputs (:mod:`agents.inflight`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.inflight import InFlight
from agents.outputs import Outputs, Send
from agents.outputs import refusal as refused_reason
from agents.packing import Item, Objects, Packer
from agents.parsed import MadeRecords
from agents.redelivery import Redelivery, Verdict
from pipeline.core.codec import Codec
from pipeline.core.normalise import normalise_raw
from pipeline.core.records import Rejected, by_partition

log = logging.getLogger(__name__)

STAGE = "normalise"
# A snapshot record holding some of a raw record's snapshots: its partition, delivery, and those snapshots.
Share = tuple[int, asyncio.Future[Any], list[Item]]
Then = Callable[[list[Any]], Awaitable[None]]  # what to do once the outputs are settled


@dataclass(slots=True)
class NormaliseAgent:
    """What the agent needs, given: the producer's ``send``, the snapshots topic and its
    partition count, the codec, the largest snapshot (bytes), the dead letters, the in-flight
    queue, the redelivery guard and the worker's counters; the open snapshot records are its own."""

    send: Send
    topic: str
    partitions: int
    codec: Codec
    max_record: int
    dead: DeadLetters
    in_flight: InFlight[EventT[bytes]]
    redelivery: Redelivery
    counters: Counters
    made: MadeRecords | None = None  # the records sent, kept for the track agent and sink of this worker
    packer: Packer = field(init=False)

    def __post_init__(self) -> None:
        self.packer = Packer(self.send, self.topic, made=self.made)

    def forget(self) -> None:
        """Partitions were revoked: the snapshot records not sent are dropped with their raw records."""
        self.packer.drop()

    async def run(self, stream: StreamT[bytes]) -> None:
        """The agent: a coroutine, not a generator (Faust's per-value ``_slurp``, with its eager
        debug log, cost 2% of the worker for nothing)."""
        manual = cast(Stream[bytes], stream).noack()
        self.in_flight.bind(manual.ack)
        async for event in manual.events():
            verdict = await self.redelivery.admit(STAGE, event.message)
            if verdict is Verdict.DONE:  # finished before a seek read it again
                await manual.ack(event)
            if verdict is Verdict.PROCESS:
                futures, then = await self.one(event)
                await self.in_flight.add(event, futures, then)
            # The open records go after their linger (the packer's timer), when enough raw records
            # wait on them, or before a record is held back (an earlier one is read again first).
            if verdict is not Verdict.PROCESS or self.packer.due():
                await self.packer.flush()

    async def one(self, event: EventT[bytes]) -> tuple[list[Awaitable[Any]], Then]:
        """Hand one raw record's dead letters to the producer and its snapshots to the open
        snapshot records; the futures, and what to do once they are settled."""
        out = Outputs(self.send)
        msg = event.message
        if not isinstance(event.value, bytes):
            why = f"expected bytes from the raw serializer, got {type(event.value).__name__}"
            await self.dead.hand(msg, STAGE, [Rejected(why, 0, b"")], 1, out)
            return out.futures, partial(self.settle, event, out, [], 1)
        objects: Objects | None = {} if self.made is not None else None
        items, rejected = normalise_raw(event.value, msg.key, self.codec, self.max_record, objects)
        count = len(items) + len(rejected)
        await self.dead.hand(msg, STAGE, rejected, count, out)
        shares: list[Share] = []
        for partition, group in by_partition(items, self.partitions).items():
            added = self.packer.add(partition, group, objects)
            shares += [(partition, rec.delivered, part) for rec, part in added]
        if shares:
            self.packer.held()
        self.counters.normalised += len(items)
        return [*out.futures, *(delivered for _, delivered, _ in shares)], partial(self.settle, event, out,
                                                                                  shares, count)

    async def settle(self, event: EventT[bytes], out: Outputs, shares: list[Share], count: int,
                     results: list[Any]) -> None:
        """Once a raw record's outputs are settled: its snapshots in a snapshot record the
        broker refused are sent again one by one, and a snapshot refused alone is a dead letter."""
        mine = len(out.futures)
        for owner, reason in (await out.refused(results[:mine], "snapshot")).items():
            log.error("a dead letter was refused by Kafka: %s (observation %d)", reason, owner)
        for (partition, _, part), result in zip(shares, results[mine:], strict=True):
            if isinstance(result, BaseException):
                size = sum(len(key) + len(value) for key, value, _ in part)
                refused_reason(result, "snapshot", size)  # raises anything but a size refusal
                await self.dead.deliver(event.message, STAGE, await self.alone(partition, part), count)

    async def alone(self, partition: int, part: list[Item]) -> list[Rejected]:
        """Send the snapshots of a refused record one by one (the broker refuses a whole batch
        for one record too large); those refused again as :class:`Rejected`."""
        rejected = []
        for key, value, index in part:
            try:
                await (await self.send(self.topic, key, value, partition, None, None))
            except Exception as exc:  # noqa: BLE001 - a size refusal is a dead letter; anything else raised
                why = refused_reason(exc, "snapshot", len(key) + len(value))
                rejected.append(Rejected(why, index, value, key))
        return rejected
