"""Records whose outputs are on their way to the broker, acknowledged in offset order once they land.

The normalise and track agents never wait for a delivery on their hot path: a record's outputs
(snapshot records, change events, dead letters) are handed to the producer, and the record joins
this queue with their delivery futures. When the record at the head of the queue has every
output acknowledged by the broker (``acks=all``), its follow-up runs (the track agent's table
writes: a state reaches the changelog only after the change events it made) and the record is
acknowledged; then the next. So the committed offset never passes a record whose outputs could
still be lost, and a crash replays it from the older state, with the same event ids.

A follow-up may hand more outputs to the producer (the track agent's change sets, which name
only the change events the broker took): the record then waits for those too before it is
acknowledged, while the follow-ups of the records behind it run.

The records ready at once are released together: each one's follow-up runs, then the agent's
``before_ack`` (given to :meth:`InFlight.bind`) once for them all, then their acknowledgements.
The track agent's follow-up hands the record's states to the producer, and its ``before_ack``
waits until they are in the producer's queue (where Faust's flush before a commit covers them):
one wait a release, not one a record. A wait a record held the queue to one record per produce
request, and the track agent waited on a full queue for seconds while the normalise agent's large
snapshot records filled the requests.

A delivery that fails stops the worker (like a failed Faust send): its records are read again.
When partitions are revoked, what is queued is dropped, neither written nor acknowledged: the
partitions' new owner reads those records again from the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

STOP_SETTLE_SECONDS = 10.0  # the longest a clean stop waits for the records in flight
LIMIT = 256  # records queued at most per agent; the agent waits for the oldest beyond it

E = TypeVar("E")  # the stream's event (Faust's EventT)


# A record's follow-up: it gets the results of the record's outputs, and may return more outputs
# the record waits for before it is acknowledged.
Then = Callable[[list[Any]], Awaitable[Sequence[Awaitable[Any]] | None]]


@dataclass(slots=True)
class Pending(Generic[E]):
    event: E
    delivered: asyncio.Future[Any]
    then: Then | None


class InFlight(Generic[E]):
    """One agent's queue of records awaiting delivery, acknowledged through ``ack`` (the
    stream's) in the order they were added."""

    def __init__(self, on_error: Callable[[BaseException], None], limit: int = LIMIT) -> None:
        self._on_error = on_error
        self._limit = limit
        self._queue: deque[Pending[E]] = deque()
        self._ack: Callable[[E], Awaitable[Any]] | None = None
        self._before_ack: Callable[[], Awaitable[None]] | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._releasing = False  # records popped and being acknowledged

    def __len__(self) -> int:
        return len(self._queue)

    def busy(self) -> bool:
        """Records queued, or popped and being acknowledged."""
        return bool(self._queue) or self._releasing

    def bind(self, ack: Callable[[E], Awaitable[Any]],
             before_ack: Callable[[], Awaitable[None]] | None = None) -> None:
        """The acknowledgement of the (manually acked) stream, and what runs before the records
        released together are acknowledged; starts the releasing task."""
        self._ack = ack
        self._before_ack = before_ack
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def add(self, event: E, outputs: Sequence[Awaitable[Any]], then: Then | None = None) -> None:
        """Queue ``event`` behind its ``outputs`` (the producer's delivery futures). Once they are
        all settled, and those of the records before it, ``then`` gets their results (an
        exception for a failed one) and may return more outputs to wait for; without ``then``
        (and for the outputs ``then`` returns) a failed delivery stops the worker. Waits while
        the queue is full."""
        self._queue.append(Pending(event, self._gather(outputs), then))
        while len(self._queue) > self._limit:
            self._room.clear()
            await self._room.wait()

    def _gather(self, outputs: Sequence[Awaitable[Any]]) -> asyncio.Future[Any]:
        delivered: asyncio.Future[Any] = (asyncio.gather(*outputs, return_exceptions=True) if outputs
                                          else _done())
        delivered.add_done_callback(self._poke)
        return delivered

    def _poke(self, _: asyncio.Future[Any]) -> None:
        self._wake.set()

    async def release(self) -> None:
        """Run, in order, the follow-ups of the records whose outputs (and those of every record
        before them) were all delivered; then acknowledge, in order, the records at the head that
        wait for nothing more (the releasing task's work; raises the first failed delivery not
        given to a follow-up). ``before_ack`` runs once before the acknowledgements."""
        queue = self._queue
        index = 0
        while index < len(queue) and queue[index].delivered.done():
            entry = queue[index]
            if entry.then is not None:
                then, entry.then = entry.then, None
                entry.delivered = self._gather(await then(_results(entry)) or ())
                if index >= len(queue) or queue[index] is not entry:
                    break  # dropped meanwhile (partitions revoked)
            index += 1
        released: list[E] = []
        while queue and queue[0].then is None and queue[0].delivered.done():
            entry = queue.popleft()
            failed = next((r for r in _results(entry) if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            released.append(entry.event)
        if not released:
            return
        if self._before_ack is not None:
            await self._before_ack()
        assert self._ack is not None, "bind() the stream before records are added"
        for event in released:
            await self._ack(event)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._releasing = True
            try:
                await self.release()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported: the worker stops, records are read again
                log.error("a record's outputs could not be delivered: %r; stopping", exc)  # noqa: TRY400
                self.drop()
                self._on_error(exc)
                return
            finally:
                self._releasing = False
                self._room.set()

    async def settled(self) -> None:
        """Return once every queued record was released or dropped (at a clean stop: the
        consumer's last commit then takes them, and the next worker does not read them again)."""
        while self.busy():  # _room is set after each release and on a drop
            self._room.clear()
            await self._room.wait()

    def drop(self) -> int:
        """Forget what is queued (partitions revoked): neither written nor acknowledged."""
        dropped = len(self._queue)
        self._queue.clear()
        self._room.set()
        return dropped

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _results(entry: Pending[Any]) -> list[Any]:
    """The results of a settled entry's outputs (an exception for a failed one)."""
    if entry.delivered.cancelled():
        raise asyncio.CancelledError
    results: list[Any] = entry.delivered.result() or []
    return results


def _done() -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result([])
    return fut


async def settle(queues: Sequence[InFlight[Any]], within: float = STOP_SETTLE_SECONDS) -> None:
    """At a clean stop, before the consumer's last commit: wait up to ``within`` seconds for the
    records in flight in ``queues`` to be acknowledged (logged either way)."""
    if not any(q.busy() for q in queues):
        return
    waiting = sum(len(q) for q in queues)
    start = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(q.settled() for q in queues)), within)
    except TimeoutError:
        log.warning("stopping: %d of %d records in flight not acknowledged within %.0f s; the next "
                    "worker processes them again", sum(len(q) for q in queues), waiting, within)
    else:
        log.info("stopping: %d records in flight acknowledged in %.2f s, before the last commit",
                 waiting, time.monotonic() - start)
