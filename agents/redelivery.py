"""Records Faust drops at a rebalance are read again, and never committed unread.

Found by reliability scenario 2 (the worker SIGKILLed ten times, a second worker started and
stopped): Faust 0.15 can lose track of records that were fetched around a rebalance.

* A record fetched before the rebalance and handed to a stream after it is skipped by the
  stream (its generation is stale) *and acknowledged*; when the partition stayed with this worker
  and the re-read from the committed offset drops it as already read, its offset is committed
  although no agent processed it: one change event missing in ClickHouse.
* A record whose hand-over to the stream was cut short by the rebalance never reaches an agent,
  while Faust's read offset moves past it: the committed offset stops below it for good and the
  partition's lag never drains (the group stalled for minutes in 1 run of 3) or, when exactly
  one record is missing, Faust commits past it (its test of the gap at the head is ``> 1``).

Three guards close these: :meth:`Redelivery.install` refuses the acknowledgement of a record from
an older generation (it is read again after the rebalance's seek) and holds the commit while the
record at the committed offset is missing (:func:`head_missing`); :meth:`Redelivery.repair`,
run on a timer, finds a *hole* (the record at the committed offset neither processed, nor being
processed, while a later one was) that persists, and seeks the partition back to it. Records
read again that an agent already finished are recognised by :meth:`Redelivery.done` and skipped,
so the repair doubles nothing; the sink has its own high-water marks.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from faust.types import TP, Message

log = logging.getLogger(__name__)

FAULT_ENV = "BATCHSCOPE_FAULT_DROP"  # test hook: TOPIC:PARTITION:OFFSET, see drop_once
REPAIR_INTERVAL = 5.0  # seconds between hole checks
PATIENCE = 2  # checks in a row that must see the same hole before the partition is read again


@dataclass(frozen=True, slots=True)
class PartitionView:
    """What the consumer knows of one partition: committed offset (the next record to process),
    offsets processed but not yet committed, offsets being processed."""

    committed: int | None
    acked: Collection[int]
    in_flight: Collection[int]


def hole(view: PartitionView) -> int | None:
    """The committed offset when its record is lost to the consumer: neither processed nor being
    processed, while a later record of the partition was processed. ``None`` otherwise.

    Only a later record *processed* proves it: a record fetched but still queued for a blocked
    agent (the broker down, ClickHouse down) looks like a lost one by the read offset and the
    fetch position alone, and reading it again would deliver it twice, out of order (found by
    scenario 1: a 20 s broker outage). So a drop of a partition's last record is repaired only
    once a later record has been processed; a live partition gets one within a poll interval.
    """
    c = view.committed
    if c is None or c in view.acked or c in view.in_flight:
        return None
    return c if any(o > c for o in view.acked) else None


def head_missing(consumer: Any, tp: TP) -> bool:
    """Whether the record at ``tp``'s committed offset is neither processed nor skipped over
    (a compaction gap) while later ones were processed."""
    committed = consumer._committed_offset.get(tp)
    acked = consumer._acked.get(tp)
    if committed is None or not acked:
        return False
    gap_starts = [gap.begin for gap in consumer._gap.get(tp) or ()]
    return bool(min([*acked, *gap_starts]) > committed)


class Counts(Protocol):
    stale_acks: int  # acknowledgements refused
    rewinds: int  # partitions read again


class Redelivery:
    """The ack guard and the hole repair for the topics the agents acknowledge."""

    def __init__(self, app: faust.App, topics: Collection[str], counters: Counts,
                 patience: int = PATIENCE) -> None:
        self._app = app
        self._counters = counters
        self._topics = frozenset(topics)
        self._patience = patience
        self._suspects: dict[TP, tuple[int, int]] = {}  # tp -> (hole offset, sightings)
        self._generation = -1
        self._installed = False

    def install(self) -> None:
        """Wrap the consumer's ``ack``: a record of an older generation is not acknowledged; and
        its ``_new_offset``: nothing is committed while the record at the committed offset is
        missing (Faust commits past a hole of exactly one record: it tests ``> 1``)."""
        if self._installed:
            return
        consumer: Any = self._app.consumer  # Faust's Consumer; _new_offset is not on its interface
        original, original_new_offset = consumer.ack, consumer._new_offset
        app = self._app

        def ack(message: Message) -> bool:
            if message.generation_id is not None and message.generation_id != app.consumer_generation_id:
                self._counters.stale_acks += 1
                return False
            return bool(original(message))

        def new_offset(tp: TP) -> int | None:
            return None if head_missing(consumer, tp) else original_new_offset(tp)

        setattr(consumer, "ack", ack)  # noqa: B010 - instance attributes, not the methods
        setattr(consumer, "_new_offset", new_offset)  # noqa: B010
        self._installed = True

    def done(self, message: Message) -> bool:
        """Whether an agent already finished this record (a record read again after a repair)."""
        consumer: Any = self._app.consumer
        committed = consumer._committed_offset.get(message.tp)
        if committed is not None and message.offset < committed:
            return True
        return message.offset in consumer._acked_index.get(message.tp, ())

    def views(self) -> dict[TP, PartitionView]:
        consumer: Any = self._app.consumer
        in_flight: dict[TP, set[int]] = defaultdict(set)
        for message in list(consumer._unacked_messages):
            if message.generation_id in (None, self._app.consumer_generation_id):  # a stale one comes again
                in_flight[message.tp].add(message.offset)
        paused = set(consumer._paused_partitions)
        return {tp: PartitionView(consumer._committed_offset.get(tp), list(consumer._acked.get(tp, ())),
                                  in_flight.get(tp, set()))
                for tp in consumer.assignment() if tp.topic in self._topics and tp not in paused}

    async def due(self) -> list[tuple[TP, int]]:
        """Partitions whose hole has been seen ``patience`` times in a row (one call per check)."""
        if not self._app.flow_control.is_active():  # a rebalance is under way
            return []
        if self._app.consumer_generation_id != self._generation:
            self._generation = self._app.consumer_generation_id
            self._suspects.clear()
        suspects: dict[TP, tuple[int, int]] = {}
        for tp, view in self.views().items():
            offset = hole(view)
            if offset is not None:
                seen = self._suspects.get(tp, (offset, 0))
                suspects[tp] = (offset, seen[1] + 1 if seen[0] == offset else 1)
        self._suspects = suspects
        return [(tp, offset) for tp, (offset, n) in suspects.items() if n >= self._patience]

    async def repair(self) -> None:
        for tp, offset in await self.due():
            log.warning("%s[%d]: the record at offset %d was dropped by the consumer at a rebalance "
                        "and never processed; reading the partition again from it",
                        tp.topic, tp.partition, offset)
            await self._app.consumer.seek(tp, offset)
            self._suspects.pop(tp, None)
            self._counters.rewinds += 1


def drop_once(app: faust.App, spec: str) -> None:
    """Fault injection (``BATCHSCOPE_FAULT_DROP=TOPIC:PARTITION:OFFSET``): the consumer loses the
    first delivery of that record, as Faust does at a rebalance; its read offset moves on.

    Installed before the worker starts, so the fetch loop picks up the wrapped callback.
    """
    topic, partition, offset = spec.rsplit(":", 2)
    target = (topic, int(partition), int(offset))
    consumer: Any = app.consumer
    deliver = consumer.callback
    armed = [True]

    async def callback(message: Message) -> None:
        if armed[0] and (message.topic, message.partition, message.offset) == target:
            armed[0] = False
            log.warning("fault injected: the record at %s[%d]@%d is not handed to the agents", *target)
            return
        await deliver(message)

    consumer.callback = callback
