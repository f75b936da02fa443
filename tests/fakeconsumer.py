"""A stand-in for Faust's consumer with the private books :mod:`agents.faustcore` reads.

Its books have Faust 0.15's shapes (``Consumer.__init__``: defaultdicts, a set of paused
partitions, the records handed to the streams) and its ``ack`` and ``_new_offset`` keep them the
way Faust's do, including the flaw the redelivery guard exists for: ``_new_offset`` commits past
a one-record hole at the head. Records are delivered, acknowledged and committed by hand, so a
test sets up exactly the state a rebalance or a start-up leaves behind.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka.structs import TopicPartition
from faust.types import TP, Message


def message(tp: TP, offset: int, generation: int | None = 1) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp,
                   generation_id=generation)


class FakeFlow:
    """The app's flow control: inactive while a rebalance holds the streams."""

    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active

    async def acquire(self) -> None:
        return None


class FakeClient:
    """The aiokafka consumer on Faust's consumer thread: the group's committed offsets."""

    def __init__(self) -> None:
        self.group: dict[TopicPartition, int] = {}
        self._fetch_max_wait_ms = 1500  # what Faust passes
        self._fetcher: FakeFetcher | None = None  # built by start (on the consumer thread)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.group.get(tp)


class FakeFetcher:
    """aiokafka's Fetcher: the getmany calls waiting for new records."""

    def __init__(self) -> None:
        self._fetch_waiters: set[asyncio.Future[None]] = set()


class FakeThread:
    """Faust's consumer thread: the aiokafka client, its factory, calls on its loop, and the loop."""

    def __init__(self) -> None:
        self.client = FakeClient()
        self.thread_loop: asyncio.AbstractEventLoop | None = None  # the thread's own loop, once started

    def _ensure_consumer(self) -> FakeClient:
        return self.client

    def _create_worker_consumer(self, transport: Any) -> FakeClient:
        return self.client

    async def call_thread(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        return await fn()


class FakeConsumer:
    def __init__(self, assigned: Iterable[TP], earliest: dict[TP, int] | None = None) -> None:
        self.assigned = set(assigned)
        self.earliest = dict(earliest or {})
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._unacked_messages: set[Message] = set()
        self._paused_partitions: set[TP] = set()
        self._gaps: list[tuple[TP, int, int]] = []
        self._thread = FakeThread()
        self.seeks: list[tuple[TP, int]] = []
        self.ends: dict[TP, int] = {}  # each partition's end (highwater), when fetched
        self.delivered: list[Message] = []
        self.callback: Callable[[Message], Awaitable[None]] = self._deliver
        self.commits_fail = False  # the group rebalanced while a commit ran (aiokafka's "already rebalanced")
        self.on_commit: Callable[[], None] | None = None
        self.stops: list[str] = []  # what ran when the consumer stopped, in order
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.put_back: list[TP] = []  # partitions on_buffer_drop put back

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109 (mode's signature)
        """mode's, in short: the first coroutine to finish (the fetch loop's use)."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=timeout)
        for task in pending:
            task.cancel()
        return [t.result() for t in done]

    async def _deliver(self, msg: Message) -> None:
        self.delivered.append(msg)

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def highwater(self, tp: TP) -> int | None:
        return self.ends.get(tp)

    def hand(self, msg: Message) -> None:
        """The record is handed to a stream (Faust's ``track_message``)."""
        self._unacked_messages.add(msg)
        self._read_offset[msg.tp] = msg.offset

    def ack(self, msg: Message) -> bool:
        committed = self._committed_offset[msg.tp]
        if msg.acked or (committed is not None and msg.offset < committed):
            return False
        msg.acked = True
        self._unacked_messages.discard(msg)
        self._acked_index[msg.tp].add(msg.offset)
        self._acked[msg.tp].append(msg.offset)
        return True

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's: the run of consecutive acknowledged offsets from the lowest one, dropped from
        the books; None when the lowest is more than one past the committed offset."""
        acked = sorted(self._acked[tp])
        if not acked:
            return None
        committed = self._committed_offset[tp]
        if committed and acked[0] - committed > 1:
            return None
        end = acked[0]
        while end + 1 in acked:
            end += 1
        self._acked[tp] = [o for o in acked if o > end]
        self._acked_index[tp].difference_update(range(acked[0], end + 1))
        return end + 1

    def commit(self, tp: TP) -> int | None:
        """What Faust's commit does with ``_new_offset``'s answer."""
        offset = self._new_offset(tp)
        if offset is not None:
            self._committed_offset[tp] = offset
        return offset

    async def on_stop(self) -> None:
        """Faust's: the last commit, when the consumer stops."""
        self.stops.append("last commit")

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        """The driver's commit: False when the group rebalanced while it ran; ``on_commit``
        (when set) runs first, as a revocation or an assignment would while it waits."""
        if self.on_commit is not None:
            self.on_commit()
        return not self.commits_fail

    async def _commit_offsets(self, offsets: dict[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's: the driver's commit, then the offsets are the committed ones, whether the
        commit succeeded or not."""
        did_commit = await self._commit(offsets)
        self._committed_offset.update(offsets)
        return did_commit

    async def _add_gap(self, tp: TP, first: int, last: int) -> None:
        self._gaps.append((tp, first, last))

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._read_offset[tp] = offset

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest.get(tp, 0) for tp in tps}

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        self._paused_partitions.update(tps)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        self._paused_partitions.difference_update(tps)

    def on_buffer_drop(self, tp: TP) -> None:
        """A stream's queue drained: Faust puts the partition back in its fetch loop's active set."""
        self.put_back.append(tp)


class FakeApp:
    """What :class:`agents.faustcore.ConsumerView` reads of a ``faust.App``."""

    def __init__(self, consumer: FakeConsumer, generation: int = 1) -> None:
        self.consumer = consumer
        self.consumer_generation_id = generation
        self.flow_control = FakeFlow()
