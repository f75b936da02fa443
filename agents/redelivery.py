"""Records Faust drops are read again, in order, and never committed unread.

Faust 0.15 can lose track of records fetched around a rebalance or at start-up, while its read
offset moves past them:

* at start-up the fetch loop runs while the table recovery still holds the streams' flow, and a
  stream skips what it is handed then, unacknowledged;
* a record fetched before a rebalance and handed to a stream after it is skipped (its generation
  is stale), and on Faust's pure-Python path acknowledged; a record whose hand-over was cut short
  by the flow suspension never reaches an agent.

Faust then commits past such a record: it counts as done every offset its read position jumped
over (``Consumer._add_gap``, meant for compacted topics; ours have no gaps), and a one-record
hole at the head (its test is ``> 1``). Otherwise the commit stops below the record for good and
the partition's lag never drains. (How reliability scenario 2 found this, and what it cost:
docs/reliability.md, "Findings".)

The guards. :meth:`Redelivery.install` refuses the acknowledgement of a record from an older
generation, and makes the commit exact: up to the first offset no agent acknowledged
(:func:`commit_limit`), whatever Faust's own figure. :meth:`Redelivery.admit` keeps the
order-keeping agents (normalise, track) in offset order: a record arriving after a hole is held,
unacknowledged, and the partition is read again from the hole at once, so a batch's
observations are never processed out of order (a hole repaired later would fold the transition
the dropped record alone shows into the next one); a copy of a record still being processed
(Faust hands records over at start-up before and after its seek to the committed offsets) is
dropped, its first copy acknowledged. :meth:`Redelivery.repair`, on a timer, is
the backstop for the other topics (a hole at the committed offset that persists: the sink's
``changesets``) and for records retention deleted before they were read. Records read again that
an agent already finished are recognised by :meth:`Redelivery.done` and skipped, so nothing is
produced twice; the sink has its own high-water marks.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from faust.types import TP, Message

from agents.faustcore import ConsumerView

log = logging.getLogger(__name__)

REPAIR_INTERVAL = 5.0  # seconds between hole checks
PATIENCE = 2  # checks in a row that must see the same hole before the partition is read again
# The same for a hole at a partition's end, which no later record proves (:func:`tail_hole`).
TAIL_PATIENCE = 4
STUCK_CHECKS = 6  # checks a partition's commit may stand still below its end before it is reported
RESEEK_SECONDS = 1.0  # an order-keeping agent still held behind a hole seeks again after this long
LOOKUP_SECONDS = 10.0  # the longest wait for the broker's answer to a start lookup
SETTLE_SECONDS = 0.2  # a paused partition's fetched records pass before it is sought (_rewind)


class Verdict(enum.Enum):
    """What an order-keeping agent does with a record (:meth:`Redelivery.admit`)."""

    PROCESS = "process"
    DONE = "done"  # finished before (read again after a seek): acknowledge it, nothing else
    HOLD = "hold"  # an earlier record has not come yet: neither process nor acknowledge it
    AGAIN = "again"  # a copy of a record being processed (its first copy is acknowledged): drop it


@dataclass(frozen=True, slots=True)
class PartitionView:
    """What the consumer knows of one partition: committed offset (the next record to process),
    offsets processed but not yet committed, offsets being processed."""

    committed: int | None
    acked: Collection[int]
    in_flight: Collection[int]
    end: int | None = None  # the partition's end (the next offset to be written), when known
    topic_idle: bool = False  # no record of the partition's topic is being processed


def hole(view: PartitionView) -> int | None:
    """The committed offset when its record is lost to the consumer: neither processed nor being
    processed, while a later record of the partition was processed. ``None`` otherwise.

    Only a later record *processed* proves it: a record fetched but still queued for a blocked
    agent (the broker down, ClickHouse down) looks like a lost one by the read offset and the
    fetch position alone, and reading it again would deliver it twice, out of order
    (docs/reliability.md, "Findings"). So a drop of a partition's last record is repaired only
    once a later record has been processed; a live partition gets one within a poll interval.
    """
    c = view.committed
    if c is None or c in view.acked or c in view.in_flight:
        return None
    return c if any(o > c for o in view.acked) else None


def tail_hole(view: PartitionView) -> int | None:
    """The committed offset when the partition's *last* records are lost to the consumer: a
    record is there (the partition ends past it), it is neither processed nor being processed,
    and no record of its topic is being processed at all. ``None`` otherwise.

    :func:`hole` cannot see this one: no later record was processed, and none comes once the
    fleet is quiet. Idleness is what tells it from a queued record: an agent blocked on a send
    holds that record in flight, and the records fetched behind it wait in the same stream, so
    an idle topic has nothing queued. Seen :data:`TAIL_PATIENCE` checks in a row before the
    partition is read again (reading from the committed offset repeats nothing processed).
    """
    c = view.committed
    if not view.topic_idle or c is None or view.end is None or c >= view.end:
        return None
    return None if c in view.acked or c in view.in_flight else c


def commit_limit(committed: int | None, processed: Collection[int]) -> int | None:
    """The offset to commit: the first one at or after ``committed`` that no agent finished.

    ``None`` when nothing can be committed: the start is not known yet, or the record at the
    committed offset is not finished.
    """
    if committed is None:
        return None
    offset = committed
    while offset in processed:
        offset += 1
    return offset if offset > committed else None


class Counts(Protocol):
    stale_acks: int  # acknowledgements refused
    rewinds: int  # partitions read again


class Redelivery:
    """The ack guard and the hole repair for the topics the agents acknowledge."""

    def __init__(self, consumer: ConsumerView, topics: Collection[str], counters: Counts,
                 patience: int = PATIENCE, tail_patience: int = TAIL_PATIENCE) -> None:
        self._consumer = consumer
        self._counters = counters
        self._topics = frozenset(topics)
        self._patience = patience
        self._tail_patience = tail_patience
        self._suspects: dict[TP, tuple[int, int]] = {}  # tp -> (hole offset, sightings)
        self._processed: dict[TP, set[int]] = defaultdict(set)  # acknowledged, not yet committed
        self._start: dict[TP, int] = {}  # where a partition never committed starts (earliest offset)
        self._lookups: set[asyncio.Future[None]] = set()  # start lookups running in the background
        self._pausing: set[TP] = set()  # paused by a rewind that a rebalance kept from resuming them
        self._next: dict[tuple[str, TP], int] = {}  # (agent, tp) -> the next offset it must see
        # tp -> agent -> offsets admitted in this generation and not yet committed: a copy of one
        # delivered again (Faust's start-up hands records over before and after its seek to the
        # committed offsets) is not processed a second time.
        self._admitted: defaultdict[TP, defaultdict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        self._holding: dict[TP, tuple[int, float]] = {}  # tp -> (offset sought back to, when)
        # Records held (:attr:`Verdict.HOLD`): never acknowledged, they stay in Faust's books of
        # records in flight until freed, but no agent works on them (see :meth:`views`).
        self._held: weakref.WeakSet[Message] = weakref.WeakSet()
        self._generation = -1
        self._installed = False
        self._standing: dict[TP, tuple[int | None, int]] = {}  # tp -> (committed offset, checks unchanged)

    def install(self) -> None:
        """Guard the consumer's acknowledgements: a record of an older generation is not
        acknowledged; and its commits: they stop at the first record no agent acknowledged."""
        if self._installed:
            return
        self._consumer.guard_acks(self._current)
        self._consumer.limit_commits(self._topics, self._commit_limit)
        self._consumer.forget_failed_commits(self._commit_failed)
        self._installed = True

    def _current(self, message: Message) -> bool:
        """Whether ``message`` may be acknowledged: of the current generation (a stale one is
        read again, and counted)."""
        if not self._of_generation(message):
            self._counters.stale_acks += 1
            return False
        return True

    def _of_generation(self, message: Message) -> bool:
        """Whether ``message`` was fetched in the current generation."""
        return message.generation_id in (None, self._consumer.generation)

    def _forget_admitted(self, tp: TP, drop: Callable[[int], bool]) -> None:
        """Forget the offsets of ``tp`` admitted for which ``drop`` holds, for every agent."""
        for admitted in self._admitted.get(tp, {}).values():
            if admitted:
                admitted.difference_update([o for o in admitted if drop(o)])

    def _commit_limit(self, tp: TP, acked: Collection[int]) -> int | None:
        """Take what the agents acknowledged (Faust's own list gets the gaps merged in) and
        commit up to the first offset not acknowledged."""
        processed = self._processed[tp]
        processed.update(acked)
        committed = self._committed(tp)
        if committed is not None:
            processed.difference_update([o for o in processed if o < committed])
            self._forget_admitted(tp, lambda o: o < committed)
        return commit_limit(committed, processed)

    def _commit_failed(self, tps: Collection[TP]) -> None:
        """A commit failed (the group rebalanced while it ran) for partitions Faust knew no
        committed offset of: where they start is looked up now, not at the next hole check (a
        worker stopped meanwhile would commit none of them)."""
        log.warning("a commit of %d partition(s) failed as the group rebalanced; their committed offsets "
                    "are read from the broker again", len(tps))
        self._look_up_starts()

    def _committed(self, tp: TP) -> int | None:
        """The next record to process: the committed offset, or where a partition never committed
        starts (its earliest offset, looked up after each assignment; until then nothing commits:
        Faust's own first commit would count every offset it jumped over as done)."""
        committed = self._consumer.committed(tp)
        return committed if committed is not None else self._start.get(tp)

    def done(self, message: Message) -> bool:
        """Whether an agent already finished this record (a record read again after a repair)."""
        committed = self._committed(message.tp)
        if committed is not None and message.offset < committed:
            return True
        return self._finished(message.tp, message.offset)

    async def admit(self, agent: str, message: Message) -> Verdict:
        """Keep ``agent`` in offset order: a record is processed only when every earlier record
        of its partition was, so a record Faust dropped (at start-up or a rebalance: handed to a
        stream whose flow was still suspended, then passed over by the fetch loop) is read again
        *before* the later ones are processed, and the observations of a batch stay in order
        (repaired later, the dropped one would arrive after its batch's newer observations and
        the transition it alone shows would be folded into the next one)."""
        if self.done(message):
            return Verdict.DONE
        tp, offset = message.tp, message.offset
        key = (agent, tp)
        admitted = self._admitted[tp][agent]
        if offset in admitted:  # delivered again while its first copy is processed (start-up's seek)
            self._held.add(message)  # never acknowledged: not a record an agent works on
            return Verdict.AGAIN
        expected = self._next.get(key, self._committed(tp))
        current = self._of_generation(message)  # a stale one's acknowledgement is refused
        if expected is None or offset < expected:  # unknown start, or read again before its ack
            if current:
                admitted.add(offset)
            return Verdict.PROCESS
        while expected < offset and self._finished(tp, expected):
            expected += 1
        if offset == expected:
            self._next[key] = offset + 1
            self._holding.pop(tp, None)
            if current:
                admitted.add(offset)
            return Verdict.PROCESS
        self._held.add(message)
        await self._seek_back(tp, expected, offset)
        return Verdict.HOLD

    def _finished(self, tp: TP, offset: int) -> bool:
        """Acknowledged by every agent of the topic, committed or not yet."""
        return offset in self._processed.get(tp, ()) or offset in self._consumer.acked(tp)

    async def _seek_back(self, tp: TP, offset: int, arrived: int | None = None) -> None:
        """Read ``tp`` again from ``offset``, once per :data:`RESEEK_SECONDS` (records fetched
        before the seek keep arriving for a while, and each of them is held too)."""
        now = time.monotonic()
        sought = self._holding.get(tp)
        if sought is not None and sought[0] == offset and now - sought[1] < RESEEK_SECONDS:
            return
        self._holding[tp] = (offset, now)
        committed = self._consumer.committed(tp)
        await self._rewind(tp, offset, f"never reached the agents (dropped by the consumer; committed "
                                       f"{committed}, arrived {'-' if arrived is None else arrived})")

    async def _rewind(self, tp: TP, offset: int, why: str) -> None:
        """Read ``tp`` again from ``offset``: paused first, for :data:`SETTLE_SECONDS`, then sought
        and resumed.

        A seek alone loses the race with the fetch loop (docs/reliability.md, "Findings"):
        records of the partition already fetched before the seek are still handed over after it,
        each moving Faust's read offset past ``offset``, so the records read again from
        ``offset`` would be dropped as already read. Paused, the partition is left out of the
        next fetches; the batch being handed over passes (its records are held); then the seek
        sets the read offset last. A partition the sink paused (ClickHouse down) is only sought:
        the sink resumes it.
        """
        log.warning("%s[%d]: the record at offset %d %s; reading the partition again from it",
                    tp.topic, tp.partition, offset, why)
        self._counters.rewinds += 1
        self._forget_admitted(tp, lambda o: o >= offset)  # whatever comes again is processed
        consumer, tp = self._consumer, TP(tp.topic, tp.partition)  # Faust's own type, not aiokafka's
        if tp in consumer.paused():
            await consumer.seek(tp, offset)
            return
        consumer.pause({tp})
        try:
            await asyncio.sleep(SETTLE_SECONDS)
            await consumer.seek(tp, offset)
        finally:
            if tp in consumer.assignment():
                consumer.resume({tp})
            else:  # a rebalance under way: Faust keeps the pause of a partition assigned again
                self._pausing.add(tp)

    def _working(self) -> list[Message]:
        """The records in flight an agent works on: of the current generation (a stale one comes
        again) and not held by :meth:`admit` (see :meth:`views`)."""
        held = self._held
        return [m for m in self._consumer.in_flight() if self._of_generation(m) and m not in held]

    def views(self) -> dict[TP, PartitionView]:
        """What the consumer knows of each partition the guards watch (not paused). A record
        in flight is one an agent works on: not one of an older generation (it comes again), and
        not one :meth:`admit` held, which stays in Faust's books, unacknowledged, until freed
        (its copy read again is the one processed). Counted, a held record would keep its
        topic busy, and a lost last record of another partition would never be read again."""
        consumer = self._consumer
        in_flight: dict[TP, set[int]] = defaultdict(set)
        for message in self._working():
            in_flight[message.tp].add(message.offset)
        paused = consumer.paused()
        assigned = {tp for tp in consumer.assignment() if tp.topic in self._topics}
        busy = {tp.topic for tp in in_flight}
        return {tp: PartitionView(self._committed(tp),
                                  self._processed.get(tp, set()) | set(consumer.acked(tp)),
                                  in_flight.get(tp, set()), consumer.end(tp), tp.topic not in busy)
                for tp in assigned if tp not in paused}

    async def due(self) -> list[tuple[TP, int]]:
        """Partitions whose hole has been seen ``patience`` times in a row (one call per check)."""
        if not self._consumer.flowing():  # a rebalance is under way
            return []
        if self._consumer.generation != self._generation:
            self._generation = self._consumer.generation
            self._suspects.clear()
        suspects: dict[TP, tuple[int, int]] = {}
        due: list[tuple[TP, int]] = []
        for tp, view in self.views().items():
            offset, patience = hole(view), self._patience
            if offset is None:
                offset, patience = tail_hole(view), self._tail_patience
            if offset is not None:
                seen = self._suspects.get(tp, (offset, 0))
                suspects[tp] = (offset, seen[1] + 1 if seen[0] == offset else 1)
                if suspects[tp][1] >= patience:
                    due.append((tp, offset))
        self._suspects = suspects
        return due

    async def repair(self) -> None:
        """The backstop: a hole no order-keeping agent ran into (the sink's topics), or one
        whose records retention deleted."""
        await self._try_find_starts()
        self._report_standing()
        stuck = {tp: offset for tp, (offset, since) in self._holding.items()
                 if time.monotonic() - since > REPAIR_INTERVAL}
        for tp, offset in [*await self.due(), *stuck.items()]:
            self._suspects.pop(tp, None)
            earliest = (await self._consumer.earliest(tp)).get(tp, 0)
            if offset < earliest:  # not a drop: retention deleted them before they were read
                log.warning("%s[%d]: records %d-%d were deleted by the topic's retention before they "
                            "were processed; going on from %d", tp.topic, tp.partition, offset,
                            earliest - 1, earliest)
                self._processed[tp].update(range(offset, earliest))
                self._holding.pop(tp, None)
                continue
            if tp in stuck:  # held, and nothing arrived since the last seek to make it seek again
                await self._seek_back(tp, offset)
                continue
            await self._rewind(tp, offset, "was dropped by the consumer at a rebalance and never processed")

    def _report_standing(self) -> None:
        """Log once (WARNING) a partition whose commit has stood below its end for
        :data:`STUCK_CHECKS` checks, with what the guards see of it: the facts to debug a lag
        that does not drain."""
        consumer, standing = self._consumer, {}
        in_flight = consumer.in_flight()
        busy = {m.tp.topic for m in self._working()}  # as the repair sees it (views)
        for tp in consumer.assignment():
            committed, end = self._committed(tp), consumer.end(tp)
            # An unknown start (None) that stands is reported too: such a partition commits nothing.
            if tp.topic not in self._topics or end is None or (committed or 0) >= end:
                continue
            was, checks = self._standing.get(tp, (committed, 0))
            checks = checks + 1 if was == committed else 1
            standing[tp] = (committed, checks)
            if checks == STUCK_CHECKS:
                mine = sorted((m.offset, m.generation_id) for m in in_flight if m.tp == tp)
                held = sorted(m.offset for m in self._held if m.tp == tp)
                log.warning("%s[%d]: the commit has stood at %s (end %d) for %d checks: acked %s, in flight "
                            "(offset, generation) %s (held %s) of generation %s, paused %s, topic busy %s, "
                            "holding %s, next %s", tp.topic, tp.partition, committed, end, checks,
                            sorted(self._processed.get(tp, set()) | set(consumer.acked(tp)))[:10],
                            mine[:10], held[:10], consumer.generation, tp in consumer.paused(),
                            tp.topic in busy, self._holding.get(tp),
                            {a: o for (a, t), o in self._next.items() if t == tp})
        self._standing = standing

    def assigned(self) -> None:
        """On partitions assigned: install the guards, and look up where the partitions never
        committed start (in the background: the rebalance is not held up by a broker call)."""
        self.install()
        self._next.clear()  # each agent starts again at the committed offsets
        self._admitted.clear()  # what was in flight was dropped: it is processed again
        self._standing.clear()  # a commit that stands in the new generation is reported again
        self._holding.clear()
        assigned = self._consumer.assignment()
        kept = self._pausing & assigned & self._consumer.paused()
        if kept:  # nothing else would ever resume them
            self._consumer.resume(kept)
        self._pausing.clear()
        for tp in set(self._processed) - assigned:  # another worker's now
            del self._processed[tp]
        # Every start is looked up again: one found before the rebalance is stale (the partition
        # has been committed since), and until Faust's seek restores the committed offset it
        # would make the records since then look dropped, and read them all again.
        self._start.clear()
        self._look_up_starts()

    def _look_up_starts(self) -> None:
        """Start :meth:`_find_starts_when_resumed` in the background (kept until it ends)."""
        lookup = asyncio.ensure_future(self._find_starts_when_resumed())
        self._lookups.add(lookup)
        lookup.add_done_callback(self._lookups.discard)

    async def _find_starts_when_resumed(self) -> None:
        """The lookup after an assignment or a failed commit, in the background."""
        await self._consumer.wait_flowing()  # the streams resume after the seek to committed
        await self._try_find_starts()

    async def _try_find_starts(self) -> None:
        """:meth:`_find_starts`, a failure logged: until a lookup succeeds, the partitions Faust
        knows no committed offset of do not commit, and the next hole check looks again."""
        try:
            await self._find_starts()
        except Exception as exc:  # noqa: BLE001 - logged, and looked up again by repair()
            log.warning("looking up where the assigned partitions start failed: %r; the next hole "
                        "check looks again within %.0f s", exc, REPAIR_INTERVAL)

    async def _find_starts(self) -> None:
        """Where the partitions start whose committed offset Faust does not know: a restarted
        worker's Faust knows none until its own first commit, so the group's
        committed offset is asked of the broker, and a partition never committed starts at its
        earliest offset. Only while the streams flow, after the recovery's seek."""
        consumer = self._consumer
        if not self._installed or not consumer.flowing():
            return
        unknown = [tp for tp in consumer.assignment() if tp.topic in self._topics
                   and consumer.committed(tp) is None and tp not in self._start]
        if not unknown:
            return
        # Time-limited: a call that hangs (the coordinator just back) must not hold the hole
        # checks behind it; the next check asks again.
        committed = await asyncio.wait_for(consumer.group_committed(unknown), LOOKUP_SECONDS)
        never = [tp for tp in unknown if committed.get(tp) is None]
        earliest = await asyncio.wait_for(consumer.earliest(*never), LOOKUP_SECONDS) if never else {}
        self._start.update({tp: committed.get(tp) or earliest[tp] for tp in unknown})
