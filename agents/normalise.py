"""The normalise agent: one raw record of one or many envelopes -> its snapshot records, in the
same order, to the partition of their keys (the raw record's, for the poller's records); a bad
observation is a dead letter of its own. Acknowledged by hand, in offset order, once the broker
has all of a record's outputs (:mod:`agents.inflight`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.inflight import InFlight
from agents.outputs import Outputs, Send
from agents.outputs import refusal as refused_reason
from agents.redelivery import Redelivery, Verdict
from pipeline.core.codec import Codec
from pipeline.core.normalise import normalise_raw
from pipeline.core.records import Rejected, by_partition, pack_snapshots, snapshot_runs

log = logging.getLogger(__name__)

STAGE = "normalise"
Run = list[tuple[bytes, bytes, int]]  # (key, snapshot JSON, index in the raw record)
Then = Callable[[list[Any]], Awaitable[None]]  # what to do once the outputs are settled


@dataclass(slots=True)
class NormaliseAgent:
    """What the agent needs, given: the producer's ``send``, the snapshots topic and its
    partition count, the codec, the largest snapshot (bytes), the dead letters, the in-flight
    queue, the redelivery guard and the worker's counters."""

    send: Send
    topic: str
    partitions: int
    codec: Codec
    max_record: int
    dead: DeadLetters
    in_flight: InFlight[EventT[bytes]]
    redelivery: Redelivery
    counters: Counters

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

    async def one(self, event: EventT[bytes]) -> tuple[list[Awaitable[Any]], Then]:
        """Hand one raw record's snapshot records and dead letters to the producer; the futures,
        and what to do once they are settled."""
        out = Outputs(self.send)
        msg = event.message
        if not isinstance(event.value, bytes):
            why = f"expected bytes from the raw serializer, got {type(event.value).__name__}"
            await self.dead.hand(msg, STAGE, [Rejected(why, 0, b"")], 1, out)
            return out.futures, partial(self.settle, event, out, [], 1)
        items, rejected = normalise_raw(event.value, msg.key, self.codec, self.max_record)
        count = len(items) + len(rejected)
        await self.dead.hand(msg, STAGE, rejected, count, out)
        runs: list[tuple[int, Run]] = []
        for partition, group in by_partition(items, self.partitions).items():
            for run in snapshot_runs(group):
                runs.append((partition, run))
                key, value = pack_snapshots(run)
                refused = await out.send(self.topic, key, value, partition, len(runs) - 1)
                if refused is not None:  # refused at once: each alone, then what stays refused
                    await self.dead.deliver(msg, STAGE, await self.alone(partition, run, refused), count)
        self.counters.normalised += len(items)
        return out.futures, partial(self.settle, event, out, runs, count)

    async def settle(self, event: EventT[bytes], out: Outputs, runs: list[tuple[int, Run]], count: int,
                     results: list[Any]) -> None:
        """Once a raw record's outputs are settled: the snapshot records the broker refused are
        sent again snapshot by snapshot, and a snapshot refused alone is a dead letter."""
        refused = await out.refused(results, "snapshot")
        for owner, reason in refused.items():
            if owner < 0:
                log.error("a dead letter was refused by Kafka: %s", reason)
                continue
            partition, run = runs[owner]
            await self.dead.deliver(event.message, STAGE, await self.alone(partition, run, reason), count)

    async def alone(self, partition: int, run: Run, refusal: BaseException | str) -> list[Rejected]:
        """Send the snapshots of a refused record one by one; those refused again (or a lone one,
        refused already) as :class:`Rejected`."""
        if len(run) == 1:
            key, value, index = run[0]
            size = len(key) + len(value)
            reason = refusal if isinstance(refusal, str) else refused_reason(refusal, "snapshot", size)
            return [Rejected(reason, index, value, key)]
        rejected = []
        for key, value, index in run:
            try:
                await (await self.send(self.topic, key, value, partition, None, None))
            except Exception as exc:  # noqa: BLE001 - a size refusal is a dead letter; anything else raised
                reason = refused_reason(exc, "snapshot", len(key) + len(value))
                rejected.append(Rejected(reason, index, value, key))
        return rejected
