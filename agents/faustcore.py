"""Every private Faust and aiokafka attribute batchscope uses, behind one boundary.

The redelivery guards (:mod:`agents.redelivery`), the sink's backpressure
(:class:`PartitionPause`), the fetch-wait fix and the track table's event context need Faust's
own books: what the consumer acknowledged, committed and read, and where the table sends a
changelog record. None of it is on Faust's interface, so it lives here and nowhere else, and
:func:`check` verifies at start-up, on the real classes and instances, that each attribute is
there: an upgraded Faust that renamed one fails with one line naming it, instead of a guard
that silently stops guarding. ``docs/faust.md`` says why each one is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import weakref
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator, Iterator, Sequence
from importlib import metadata
from time import monotonic
from typing import Any, Protocol, cast

import aiokafka
import faust.streams
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.structs import TopicPartition
from faust.exceptions import ConsumerNotStarted
from faust.sensors import Monitor
from faust.types import TP, EventT, Message
from mode.services import WaitResults

from pipeline.core.errors import BatchscopeError

# The versions the guards were validated on (pyproject.toml pins them; docs/faust.md says why).
VALIDATED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

# What each object must have. Faust's Consumer: its books and two internal steps; its consumer
# thread: the aiokafka client and its factory; Faust's producer buffer: its limit.
CONSUMER_ATTRS = ("_acked_index", "_committed_offset", "_read_offset", "_unacked_messages",
                  "_paused_partitions", "_new_offset", "_commit", "_commit_offsets", "_add_gap", "_thread",
                  "ack", "on_stop",
                  "callback", "wait_first", "_stopped", "_crashed", "on_buffer_drop", "resume_partitions")
THREAD_ATTRS = ("_ensure_consumer", "_create_worker_consumer", "call_thread", "thread_loop")
# AIOKafkaConsumer.start hands the first to the Fetcher it builds, and sets the second to it.
AIOKAFKA_START_READS = ("_fetch_max_wait_ms", "_fetcher")
FETCHER_INIT_SETS = ("_fetch_waiters",)  # aiokafka's Fetcher: the getmany calls waiting for records
BUFFER_ATTRS = ("max_messages",)
# Faust's producer: the step that adds settings to the aiokafka producer it builds, and the
# aiokafka producer it started.
PRODUCER_ATTRS = ("_settings_extra", "_ensure_producer")
# faust.streams' context variable of the event being handled: a RocksDB table store picks the
# partition (the database) of a write from it.
STREAMS_ATTRS = ("_current_event",)

Deliver = Callable[[Message], Awaitable[None]]


class FaustCompatError(BatchscopeError):
    """The installed Faust or aiokafka lacks an attribute batchscope relies on."""


class FaustApp(Protocol):
    """What the boundary needs of a Faust app (``faust.App``; a fake in the unit tests)."""

    @property
    def consumer(self) -> Any: ...

    @property
    def consumer_generation_id(self) -> int: ...

    @property
    def flow_control(self) -> Any: ...


def versions() -> str:
    """The installed versions of the pinned packages, for the error line."""
    found = []
    for name in VALIDATED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def missing(owner: str, attr: str) -> FaustCompatError:
    """The one-line error for an attribute ``owner`` lacks."""
    pins = ", ".join(f"{n}=={v}" for n, v in VALIDATED.items())
    return FaustCompatError(f"{owner} has no attribute {attr!r}: batchscope's Faust guards are "
                            f"validated on {pins} (installed: {versions()})")


def require(obj: object, owner: str, attrs: Sequence[str]) -> None:
    """Raise :class:`FaustCompatError` for the first of ``attrs`` that ``obj`` lacks."""
    for attr in attrs:
        if not hasattr(obj, attr):
            raise missing(owner, attr)


def check(app: FaustApp) -> None:
    """Verify every private attribute this module uses, before any record is handled."""
    consumer = app.consumer
    require(consumer, f"Faust consumer {type(consumer).__name__}", CONSUMER_ATTRS)
    thread = consumer._thread
    require(thread, f"Faust consumer thread {type(thread).__name__}", THREAD_ATTRS)
    # Instance attributes of a client built only on the consumer thread's loop: the check is
    # that ``start`` reads them (what builds the Fetcher), and the Fetcher's ``__init__`` sets
    # its own, from the methods' code.
    _names_used(aiokafka.AIOKafkaConsumer.start, "aiokafka AIOKafkaConsumer (as read by start)",
                AIOKAFKA_START_READS)
    _names_used(Fetcher.__init__, "aiokafka Fetcher (as set by __init__)", FETCHER_INIT_SETS)
    require(Message, "faust Message", ["acked"])
    require(faust.streams, "faust.streams", STREAMS_ATTRS)


def _names_used(function: Callable[..., Any], owner: str, attrs: Sequence[str]) -> None:
    """Raise :class:`FaustCompatError` for the first of ``attrs`` that ``function``'s code never names."""
    code = getattr(function, "__code__", None)
    for attr in attrs:
        if code is None or attr not in code.co_names:
            raise missing(owner, attr)


@contextlib.contextmanager
def handling(event: EventT[Any]) -> Iterator[None]:
    """Within the block, ``event`` is Faust's current event, as inside the stream that yielded
    it: a table write made after the stream moved on (once the record's change events are
    delivered) goes to the store of the event's partition (RocksDB asserts there is one)."""
    var = faust.streams._current_event
    token = var.set(weakref.ref(event))
    try:
        yield
    finally:
        var.reset(token)


def check_producer(app: faust.App) -> None:
    producer = app.producer
    require(producer, f"Faust producer {type(producer).__name__}", PRODUCER_ATTRS)
    require(producer.buffer, f"Faust producer buffer {type(producer.buffer).__name__}", BUFFER_ATTRS)


def idempotent_producer(app: faust.App) -> None:
    """Make the worker's aiokafka producer idempotent (Faust does so only for exactly-once).

    A produce request the broker wrote but could not answer (it was killed) is sent again by
    aiokafka when the broker is back; without idempotence both copies land, a snapshot record
    of many observations twice. With it the broker drops the copy by producer id and sequence.
    Call before the worker starts: Faust builds the aiokafka producer on start.
    """
    check_producer(app)
    producer: Any = app.producer  # the aiokafka driver's Producer: ``ProducerT`` lacks the step
    extra = producer._settings_extra

    def settings() -> dict[str, Any]:
        return {**extra(), "acks": "all", "enable_idempotence": True}

    producer._settings_extra = settings


def aiokafka_producer(app: faust.App) -> Callable[[], aiokafka.AIOKafkaProducer]:
    """The aiokafka producer Faust starts with the worker (looked up on each call: Faust builds
    it on start), for :class:`agents.batches.Batches`."""
    check_producer(app)
    producer: Any = app.producer  # the aiokafka driver's Producer: ``ProducerT`` lacks the step
    return cast(Callable[[], aiokafka.AIOKafkaProducer], producer._ensure_producer)


class ConsumerView:
    """Typed access to Faust's consumer: its books, and the two steps the guards take over."""

    def __init__(self, app: FaustApp) -> None:
        self._app = app

    @property
    def _consumer(self) -> Any:
        return self._app.consumer  # created lazily by Faust: looked up on each use

    @property
    def generation(self) -> int:
        return self._app.consumer_generation_id

    def flowing(self) -> bool:
        """False while a rebalance holds the streams."""
        return bool(self._app.flow_control.is_active())

    async def wait_flowing(self) -> None:
        await self._app.flow_control.acquire()

    def assignment(self) -> set[TP]:
        return set(self._consumer.assignment())

    def committed(self, tp: TP) -> int | None:
        """The committed offset Faust knows (None until it committed or learnt it)."""
        return cast(int | None, self._consumer._committed_offset.get(tp))

    def read_offset(self, tp: TP) -> int | None:
        """The last offset delivered to the streams, or right after a seek the next one to read."""
        return cast(int | None, self._consumer._read_offset.get(tp))

    def acked(self, tp: TP) -> Collection[int]:
        """Offsets acknowledged and not yet committed (``.get``: Faust's books are defaultdicts)."""
        return cast(Collection[int], self._consumer._acked_index.get(tp, ()))

    def end(self, tp: TP) -> int | None:
        """Where the partition ends (the next offset to be written) as of the last fetch: Faust's
        public ``highwater``; None before a fetch, or when the partition just went elsewhere."""
        try:
            return cast(int | None, self._consumer.highwater(tp))
        except (AssertionError, KeyError):  # aiokafka asserts the partition is assigned
            return None

    def in_flight(self) -> list[Message]:
        """Records handed to the streams and not acknowledged."""
        return list(self._consumer._unacked_messages)

    def paused(self) -> set[TP]:
        return set(self._consumer._paused_partitions)

    def next_to_read(self, tp: TP) -> int | None:
        """Where to resume a partition without skipping a record: Faust's read offset, else the
        committed one.

        The read offset is the last record delivered to the streams, or, right after a seek, the
        next one to read; resuming at it redelivers at most that one record, which the sink
        (high-water marks) and the track agent (duplicates never move a batch) absorb. Resuming
        one past it lost a record whenever nothing had been delivered since the previous seek.
        """
        read = self.read_offset(tp)
        return read if read is not None else self.committed(tp)

    async def seek(self, tp: TP, offset: int) -> None:
        await self._consumer.seek(tp, offset)

    async def earliest(self, *tps: TP) -> dict[TP, int]:
        return cast(dict[TP, int], await self._consumer.earliest_offsets(*tps))

    def pause(self, tps: Collection[TP]) -> None:
        """Leave ``tps`` out of the next fetches. Faust asserts its own ``TP`` type in the paused
        set (a record's ``tp`` may be aiokafka's ``TopicPartition``: the fetcher then crashed)."""
        self._consumer.pause_partitions({TP(tp.topic, tp.partition) for tp in tps})

    def resume(self, tps: Collection[TP]) -> None:
        self._consumer.resume_partitions({TP(tp.topic, tp.partition) for tp in tps})

    async def group_committed(self, tps: Collection[TP]) -> dict[TP, int | None]:
        """The group's committed offsets of ``tps`` from the broker, through Faust's consumer
        thread (the aiokafka client lives on that thread's loop)."""
        thread = self._consumer._thread
        client = thread._ensure_consumer()

        async def fetch() -> dict[TP, int | None]:
            return {tp: await client.committed(TopicPartition(tp.topic, tp.partition)) for tp in tps}

        return cast(dict[TP, int | None], await thread.call_thread(fetch))

    def guard_acks(self, accept: Callable[[Message], bool]) -> None:
        """Faust's ``ack`` goes on only for records ``accept`` lets through (instance attribute:
        the streams call ``consumer.ack``)."""
        consumer = self._consumer
        original = consumer.ack

        def ack(message: Message) -> bool:
            return accept(message) and bool(original(message))

        consumer.ack = ack

    def limit_commits(self, topics: Collection[str],
                      limit: Callable[[TP, frozenset[int]], int | None]) -> None:
        """For a partition of ``topics``, commit what ``limit(tp, acknowledged)`` says instead of
        Faust's ``_new_offset``, which counts gaps and a one-record hole at the head as done.
        Faust's step still runs, after the acknowledged offsets are taken: it tidies its books."""
        consumer = self._consumer
        original: Callable[[TP], int | None] = consumer._new_offset
        chosen = frozenset(topics)

        def new_offset(tp: TP) -> int | None:
            if tp.topic not in chosen:
                return original(tp)
            acked = frozenset(self.acked(tp))
            original(tp)
            return limit(tp, acked)

        consumer._new_offset = new_offset

    def forget_failed_commits(self, failed: Callable[[Collection[TP]], None]) -> None:
        """Keep Faust's committed offsets to commits the broker took.

        Faust's ``_commit_offsets`` records a commit's offsets as committed whether or not it
        succeeded. A commit that fails because the group rebalanced meanwhile returns quietly
        (aiokafka's "already rebalanced"), often after the revocation cleared those books and the
        new assignment wrote the group's committed offsets in them, so the new generation would
        start with offsets the broker never took: records below them are taken for done, and
        the commit stands until the partition passes them (docs/reliability.md, "Findings").
        After a failed commit, each offset it wrote is put back to what the books held when the
        driver's commit returned (the group's committed offset as Faust last knew it), or
        dropped if they held none; ``failed`` is told the partitions dropped, whose committed
        offset must be looked up again.

        Dropping every offset instead (the first version) left a partition committing nothing
        until the lookup: a worker stopped within the next hole check committed none of what it
        processed since the rebalance, and its successor read it all again (docs/reliability.md,
        "Findings").
        """
        consumer = self._consumer
        books: dict[TP, int] = consumer._committed_offset
        original: Callable[..., Awaitable[bool]] = consumer._commit_offsets
        driver: Callable[[Any], Awaitable[bool]] = consumer._commit
        held: dict[TP, int | None] = {}  # the books when the driver refused the last commit

        async def commit(offsets: Any) -> bool:
            held.clear()
            did_commit = await driver(offsets)
            if not did_commit:  # nothing runs between this and Faust's update of the books
                held.update({tp: books.get(tp) for tp in offsets})
            return did_commit

        async def commit_offsets(offsets: dict[TP, int], *args: Any, **kwargs: Any) -> bool:
            did_commit = await original(offsets, *args, **kwargs)
            if not did_commit:
                # Faust commits only past its committed offset, so an equal one is this commit's.
                wrote = [tp for tp, offset in offsets.items() if books.get(tp) == offset]
                dropped = []
                for tp in wrote:
                    before = held.get(tp)
                    if before is None:
                        del books[tp]
                        dropped.append(tp)
                    else:
                        books[tp] = before
                if dropped:
                    failed(dropped)
            return did_commit

        consumer._commit = commit
        consumer._commit_offsets = commit_offsets

    def before_last_commit(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Await ``settle`` when the consumer stops, before its last commit.

        Faust's consumer commits what the agents acknowledged when it stops (``on_stop``), after
        the app stopped its fetcher. Records an agent processed but has not acknowledged yet (its
        outputs still being delivered) are left out, and the next worker processes them again:
        duplicates after every clean restart. ``settle`` lets them be acknowledged first.
        """
        consumer = self._consumer
        original: Callable[[], Awaitable[None]] = consumer.on_stop

        async def on_stop() -> None:
            await settle()
            await original()

        consumer.on_stop = on_stop

    def intercept(self, wrap: Callable[[Deliver], Deliver]) -> None:
        """Replace the consumer's delivery callback with ``wrap(callback)``; before the worker
        starts, so the fetch loop picks it up (fault injection)."""
        consumer = self._consumer
        consumer.callback = wrap(consumer.callback)

    async def add_gap(self, tp: TP, first: int, last: int) -> None:
        """Count ``first..last`` done, as Faust's fetch loop does for offsets it jumped over."""
        await self._consumer._add_gap(tp, first, last)

    def deliver_eagerly(self) -> None:
        """Hand each fetched record to the streams without four tasks when nothing has to wait.

        Faust's fetch loop delivers every record with ``wait_first(callback(message),
        suspend_flow.wait())``: mode makes a task of each of those and of the consumer's stopped
        and crashed events, waits for the first, and cancels the other three, for every record
        (docs/faust.md, "Delivery without tasks"). The delivery almost always finishes without
        waiting (the stream's queue has room), so the consumer's ``wait_first`` (an instance
        attribute: the loop looks it up per record) first runs its first coroutine one step:
        finished, it is the winner and the others, never started, are closed. Only a delivery
        that must wait (a full queue) races the rest as before, continued from where it stopped.
        Anything else (a timeout, a stopped or crashed consumer, no coroutine first) goes to
        mode's own.
        """
        consumer = self._consumer
        original: Callable[..., Awaitable[Any]] = consumer.wait_first
        stopped, crashed = consumer._stopped, consumer._crashed

        async def wait_first(*coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109 (mode's signature)
            if timeout is not None or not coros or not inspect.iscoroutine(coros[0]) \
                    or stopped.is_set() or crashed.is_set():
                return await original(*coros, timeout=timeout)
            first, rest = coros[0], coros[1:]
            try:
                yielded = first.send(None)
            except StopIteration as finished:
                _close(rest)
                return WaitResults([first], [finished.value], False)
            except BaseException:
                _close(rest)
                raise
            return await original(Resumed(first, yielded), *rest)

        consumer.wait_first = wait_first

    def wake_fetch_on_resume(self) -> None:
        """Hand a partition's fetched records over as soon as it may be fetched again.

        Faust takes a partition out of its fetch loop's active set while a stream's queue is
        under pressure (``on_buffer_full``) and puts it back once the queue has drained to 40%
        (``on_buffer_drop``); ``resume_partitions`` puts back a paused one. The loop's ``getmany``
        meanwhile waits, on the consumer thread, up to a second for *new* records (aiokafka's
        fetch waiters), and a partition put back whose records were already fetched brings none:
        they waited the rest of that second. In a drain the sink's queue of change events passes
        the mark again and again, and the worker stood idle about a second each time
        (docs/faust.md, "Partitions put back"). So both steps are followed by a wake of the
        waiting ``getmany``, which then takes the partition's records at once.
        """
        consumer = self._consumer
        drop: Callable[[TP], None] = consumer.on_buffer_drop
        resume: Callable[[Any], None] = consumer.resume_partitions

        def on_buffer_drop(tp: TP) -> None:
            drop(tp)
            self.wake_fetch()

        def resume_partitions(tps: Any) -> None:
            resume(tps)
            self.wake_fetch()

        consumer.on_buffer_drop = on_buffer_drop
        consumer.resume_partitions = resume_partitions

    def wake_fetch(self) -> None:
        """End the consumer thread's wait for new records: its ``getmany`` looks at the active
        partitions' fetched records again. Nothing to do before the consumer has started, or once
        its thread's loop has closed."""
        thread = self._consumer._thread
        loop: asyncio.AbstractEventLoop | None = thread.thread_loop
        try:
            client = thread._ensure_consumer()
        except ConsumerNotStarted:
            return
        fetcher = client._fetcher
        if fetcher is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the thread's loop closed meanwhile: the worker is stopping
            loop.call_soon_threadsafe(_wake_waiters, fetcher)

    def set_fetch_wait(self, ms: int) -> None:
        """The aiokafka consumer's ``fetch_max_wait_ms`` (Faust hard-codes 1500).

        aiokafka keeps one fetch in flight per broker; a fetch that holds only partitions with
        nothing new waits that long, and every other partition waits behind it. The consumer is
        built on the consumer thread when the worker starts, and its Fetcher (built by ``start``)
        takes the value from ``_fetch_max_wait_ms``.
        """
        thread = self._consumer._thread
        create = thread._create_worker_consumer

        def create_with_wait(transport: Any) -> Any:
            client = create(transport)
            client._fetch_max_wait_ms = ms
            return client

        thread._create_worker_consumer = create_with_wait


class Resumed:
    """The rest of a coroutine that was run one step by hand and stopped at ``yielded``: awaiting
    it (or a task made of it) goes on from there, as if the coroutine had been awaited whole."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro, self._yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            sent, thrown = None, None
            try:
                sent = yield yielded
            except BaseException as exc:  # noqa: BLE001 (a cancellation too: thrown into the coroutine)
                thrown = exc
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as finished:
                return finished.value


def _wake_waiters(fetcher: Any) -> None:
    """On the consumer thread: settle aiokafka's fetch waiters, as a fetch with new records does."""
    for waiter in list(fetcher._fetch_waiters):
        if not waiter.done():
            waiter.set_result(None)


def _close(coros: Sequence[Any]) -> None:
    """Close coroutines that were never started (no "never awaited" warning)."""
    for coro in coros:
        if inspect.iscoroutine(coro):
            coro.close()


class LeanMonitor(Monitor):
    """Faust's Monitor sensor (the app's ``Monitor`` setting), keeping the same statistics, with
    the names of the stream and of its task remembered for the stream of the last event.

    Faust calls ``on_stream_event_in`` for every event; mode's Monitor looks both names up in
    weak-key dictionaries each time (a weak reference made and hashed per lookup), 6% of a
    sink-only worker's main thread on change events. An agent's events come in runs from one
    stream, so one remembered pair answers almost every call. The stream is held until another
    stream's event comes (one reference; streams live as long as the worker).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names: tuple[object, object, str, str] | None = None

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any,
                           event: EventT[Any]) -> dict[str, Any] | None:
        names, owner = self._names, stream.task_owner
        if names is None or names[0] is not stream or names[1] is not owner:
            stream_name = self.stream_lookup.get(stream)
            if stream_name is None:
                stream_name = self.stream_lookup[stream] = str(stream)
            task_name = self.task_lookup.get(owner)
            if task_name is None:
                task_name = self.task_lookup[owner] = str(owner)
            names = self._names = (stream, owner, stream_name, task_name)
        self.events_total += 1
        self.stream_inbound_time[tp] = monotonic()
        self.events_by_stream[names[2]] += 1
        self.events_by_task[names[3]] += 1
        self.events_active += 1
        return {"time_in": self.time(), "time_out": None, "time_total": None}


class PartitionPause:
    """Backpressure for the sink: pauses fetching from the sink's partitions in the consumer.

    Faust shares one consumer between agents, so pausing ``<prefix>.snapshots`` also holds the
    track agent back while ClickHouse is down; ``<prefix>.raw`` (normalise) keeps flowing.
    """

    def __init__(self, consumer: ConsumerView, topics: Collection[str]) -> None:
        self._consumer = consumer
        self._topics = frozenset(topics)

    def _mine(self) -> set[TP]:
        return {tp for tp in self._consumer.assignment() if tp.topic in self._topics}

    def pause(self) -> None:
        self._consumer.pause(self._mine())

    async def resume(self) -> None:
        """Rewind each partition to the last record the consumer delivered, then resume.

        Faust drops the records it had already fetched for a partition paused meanwhile (its
        ``getmany`` filters on the live set of active partitions) and later takes the jump in
        offsets for a gap to acknowledge (as after compaction): without the rewind those records
        would be committed unread (docs/reliability.md, "Findings").
        """
        mine = self._mine()
        for tp in mine:
            position = self._consumer.next_to_read(tp)
            if position is not None:
                await self._consumer.seek(tp, position)
        self._consumer.resume(mine)


def size_producer_buffer(app: faust.App, max_messages: int) -> None:
    """Faust's producer buffer (table changelog records on their way to the producer) blocks
    the fetch loop once it holds more than ``max_messages`` (100 by default)."""
    check_producer(app)
    app.producer.buffer.max_messages = max_messages


def hold_acks(events: Sequence[EventT[Any]]) -> None:
    """Keep ``events`` from being acknowledged by the stream until :func:`release_acks`.

    ``take_events`` acknowledges a batch when the agent asks for the next one (in a ``finally``,
    so also when the agent is cancelled). A message is acknowledged to the consumer when its last
    reference is dropped (one per stream that took it), so one more reference held here makes
    that acknowledgement only drop the hold's partner; until released, the offset is never
    marked safe to commit, and a batch never released is read again by the next owner.
    """
    for event in events:
        event.message.incref()


def release_acks(events: Sequence[EventT[Any]]) -> None:
    """Drop the references :func:`hold_acks` took: a message whose streams are all done with it is
    acknowledged to the consumer (through the redelivery guard's ``ack``)."""
    for event in events:
        event.ack()
