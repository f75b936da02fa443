"""The Faust app factory and its three agents: normalise, track and sink.

``raw --normalise--> snapshots --track--> changes``; the sink reads snapshots and changes and
writes them to ClickHouse. Agents are thin loops over the pure functions in ``pipeline``; a
record they cannot process becomes a dead letter in ``<prefix>.dlq`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError
from faust.streams import Stream
from faust.types import TP, EventT, StreamT

from agents.deadletters import FLUSH_SECONDS, DeadLetterBurst
from agents.redelivery import REPAIR_INTERVAL, Redelivery, Verdict
from pipeline.codec import ORJSON, Codec
from pipeline.config import Settings
from pipeline.dlq import dead_letter, dlq_key, source_of
from pipeline.errors import InvalidRecord
from pipeline.models import ChangeEvent, Snapshot, loads_object
from pipeline.normalise import normalise_record
from pipeline.sink import ClickHouseSink, Dead, Position, Record, cut, refused_letters
from pipeline.store import AsyncStore
from pipeline.transitions import BatchState, Rules, apply

log = logging.getLogger(__name__)

STATE_TABLE = "batch_state"
AGENTS = ("normalise", "track", "sink")
# A snapshot bigger than this is a dead letter: Kafka's default record limit is about 1 MB
# (broker ``message.max.bytes``, producer ``max_request_size``), and a change event embeds it.
MAX_RECORD = 512 * 1024
PRODUCER_BATCH = 512 * 1024  # bytes per partition batch (aiokafka's default: 16 KB)
# What a record costs the producer's max_request_size beyond its key and value (aiokafka's
# estimate for one record in its own batch is 61 bytes of batch header plus a few of varints).
RECORD_OVERHEAD = 128
SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
DEAD_LETTER_LOGS, DEAD_LETTER_WINDOW = 20, 10.0  # dead letters logged one by one per window


@dataclass(slots=True)
class Counters:
    normalised: int = 0
    changes: int = 0
    dead_letters: int = 0
    sunk: int = 0
    stale_acks: int = 0  # acknowledgements of records from an older generation, refused
    rewinds: int = 0  # partitions read again from a record dropped at a rebalance

    def metrics(self) -> dict[str, float]:
        """The counters as Prometheus gauges (``pipeline_*``)."""
        return {f"pipeline_{name}": float(getattr(self, name)) for name in self.__slots__}


def create_app(settings: Settings, store: AsyncStore, agents: Collection[str] = AGENTS,
               codec: Codec = ORJSON) -> tuple[faust.App, Counters]:
    """Build the Faust app with its topics, table and agents. Nothing is started here.

    ``agents`` selects which agents run (a track-only worker for tests and benchmarks);
    ``codec`` is the JSON codec of the normalise and track agents (stdlib: a benchmark baseline).
    """
    k = settings.kafka
    app = faust.App(
        k.app_id,
        broker=f"kafka://{k.bootstrap}",
        store=store_url(settings),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        producer_acks=-1,
        # A full batch makes the producer wait for the broker before it takes another record for
        # that partition; at aiokafka's 16 KB a burst of dead letters (agents/deadletters.py)
        # stalled the agent for round trips. A batch stays under the broker's ~1 MB limit.
        producer_max_batch_size=PRODUCER_BATCH,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.pipeline.data_path / "faust"),
        table_cleanup_interval=60.0,
        stream_wait_empty=False,
        broker_commit_interval=1.0,
    )

    raw_schema: faust.Schema[bytes, bytes] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def topic(*names: str) -> faust.TopicT:
        return app.topic(*(k.topic(n) for n in names), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", partitions=k.partitions)

    raw, snapshots, dlq = topic("raw"), topic("snapshots"), topic("dlq")
    changes_topic = k.topic("changes")
    sink_topics = topic("snapshots", "changes")
    # key_type/value_type too, not only the schema: the store and changelog recovery take their
    # serializers from the types (json otherwise, and recovery then fails on every record).
    state = app.Table(STATE_TABLE, default=None, partitions=k.partitions, schema=raw_schema,
                      key_type=bytes, value_type=bytes)
    counters = Counters()
    sink_topic_names = {k.topic("snapshots"), k.topic("changes")}
    sink = ClickHouseSink(store, PartitionPause(app, sink_topic_names))

    burst = DeadLetterBurst(k.topic("dlq"), lambda *a: app.producer.send(*a),
                            lambda exc: _crash(app, exc))

    @app.on_partitions_revoked.connect
    async def _forget_marks(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        sink.forget()  # another worker may write these partitions now
        await burst.flush()

    redelivery = Redelivery(app, {k.topic("raw"), k.topic("snapshots"), k.topic("changes")}, counters)

    @app.on_partitions_assigned.connect
    async def _guard_acks(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        redelivery.assigned()  # before the first record is handed to an agent

    async def _repair_holes() -> None:
        await redelivery.repair()

    app.timer(REPAIR_INTERVAL)(_repair_holes)

    dead_log = LogLimit(DEAD_LETTER_LOGS, DEAD_LETTER_WINDOW)

    def letter(event: EventT[bytes], stage: str, reason: str) -> bytes:
        msg = event.message
        counters.dead_letters += 1
        if dead_log.allow():
            log.warning("dead letter from %s %s[%d]@%d: %s", stage, msg.topic, msg.partition, msg.offset,
                        reason[:300])
        return dead_letter(reason=reason, stage=stage, topic=msg.topic, partition=msg.partition,
                           offset=msg.offset, original=msg.value, key=msg.key, source=source_of(msg.key))

    async def to_dlq(event: EventT[bytes], stage: str, reason: str) -> None:
        await dlq.send(key=dlq_key(event.message.key), value=letter(event, stage, reason))

    def over_limit(key: bytes, values: Sequence[bytes]) -> int | None:
        """The size of the first value the producer would refuse with ``key``, if one would."""
        limit = app.conf.producer_max_request_size - RECORD_OVERHEAD - len(key)
        return next((len(v) for v in values if len(v) > limit), None)

    async def normalise_agent(stream: StreamT[bytes]) -> AsyncIterator[None]:
        """Acknowledged by hand: a valid record once its snapshot is sent, a bad one once its
        dead letter leaves with a burst (:mod:`agents.deadletters`)."""
        manual = cast(Stream[bytes], stream).noack()
        burst.bind(manual.ack)
        async for event in manual.events():
            verdict = await redelivery.admit("normalise", event.message)
            if verdict is Verdict.DONE:  # finished before a seek read it again
                await manual.ack(event)
            if verdict is not Verdict.PROCESS:
                continue
            try:
                key, value = normalise_record(_bytes(event.value), codec)
            except InvalidRecord as exc:
                await burst.add(event, letter(event, "normalise", str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - the agent never dies on data
                await burst.add(event, letter(event, "normalise", f"unexpected {type(exc).__name__}: {exc}"))
                continue
            if len(value) > MAX_RECORD:  # the producer would refuse it and the agent would die
                await burst.add(event, letter(event, "normalise", f"snapshot of {len(value)} bytes is "
                                                                  f"over the {MAX_RECORD}-byte record limit"))
                continue
            try:
                await snapshots.send(key=key, value=value)
            except ProducerSendError as exc:
                reason = refused(exc, "snapshot", len(key) + len(value))
                await burst.add(event, letter(event, "normalise", reason))
                continue
            counters.normalised += 1
            await manual.ack(event)
            yield None

    rules = settings.track.rules()

    async def track_agent(stream: StreamT[bytes]) -> AsyncIterator[None]:
        """Fold snapshots into the table; an event is acknowledged before the state that made it.

        So a crash between the two replays the snapshot from the older state and emits the same
        event (same id, same content) again, instead of losing it. Acknowledged by hand: a
        record held behind a dropped one (:meth:`Redelivery.admit`) is not acknowledged.
        """
        manual = cast(Stream[bytes], stream).noack()
        async for event in manual.events():
            verdict = await redelivery.admit("track", event.message)
            if verdict is not Verdict.HOLD:
                await fold(event, verdict)
                await manual.ack(event)
            yield None

    async def fold(event: EventT[bytes], verdict: Verdict) -> None:
        if verdict is Verdict.DONE:
            return
        try:
            key = _bytes(event.message.key)
            prior, new_state, events = track(state.get(key), _bytes(event.value), rules, codec)
        except Exception as exc:  # noqa: BLE001 - the agent never dies on data
            await to_dlq(event, "track", reason_of(exc))
            return
        if await emit(event, key, [change.to_json(codec.dumps) for change in events]):
            counters.changes += len(events)
            if new_state != prior:
                state[key] = codec.dumps(new_state.to_dict())

    async def emit(event: EventT[bytes], key: bytes, values: list[bytes]) -> bool:
        """Send one snapshot's change events and wait for the broker; False when Kafka would refuse
        (or refused) one for its size: then the snapshot is a dead letter and the state stays."""
        size = over_limit(key, values)
        if size is not None:
            await to_dlq(event, "track", f"change event of {len(key) + size} bytes is over Kafka's "
                                         f"{app.conf.producer_max_request_size}-byte record limit")
            return False
        sent: list[Awaitable[Any]] = []
        error: BaseException | None = None
        try:
            for value in values:  # the producer's own future: a failed FutureMessage would go unread
                sent.append(await app.producer.send(changes_topic, key, value, None, None, None))
        except ProducerSendError as exc:
            error = exc
        delivered = await asyncio.gather(*sent, return_exceptions=True)  # every outcome retrieved
        error = error or next((d for d in delivered if isinstance(d, BaseException)), None)
        if error is None:
            return True
        await to_dlq(event, "track", refused(error, "change event", len(key) + max(map(len, values))))
        return False

    async def sink_agent(stream: StreamT[bytes]) -> AsyncIterator[None]:
        """take_events acknowledges a batch only when the loop asks for the next one, i.e. after
        every block of it was acknowledged by ClickHouse or sent to the DLQ."""
        cfg = settings.pipeline
        batches = cast(Stream[bytes], stream).take_events(cfg.sink_batch_size, within=cfg.sink_flush_seconds)
        async for batch in batches:
            try:
                await sink_batch(batch)
            except asyncio.CancelledError:
                _withhold_acks(batch)  # stopped while ClickHouse was down: replay them next time
                raise
            yield None

    async def sink_batch(batch: Sequence[EventT[bytes]]) -> None:
        """One INSERT per table for the whole batch (:meth:`ClickHouseSink.write_all`); a bad
        snapshot of a record of many is a dead letter alone, the record's others are written."""
        events = {_position(e): e for e in batch}
        records = {pos: Record(pos, e.value, e.message.key) for pos, e in events.items()
                   if isinstance(e.value, bytes)}
        for e in batch:
            if not isinstance(e.value, bytes):
                await to_dlq(e, "sink", f"expected bytes, got {type(e.value).__name__}")
        blocks, dead = cut(list(records.values()), settings.pipeline.sink_batch_size, k.topic("changes"))
        rejected = await sink.write_all(blocks)
        for block, exc in rejected:
            dead += refused_letters(block, records, f"ClickHouse rejected the block: {exc}")
        for one in dead:
            await sink_dead(events[one.pos], one)
        counters.sunk += sum(b.rows for b in blocks) - sum(b.rows for b, _ in rejected)

    async def sink_dead(event: EventT[bytes], dead: Dead) -> None:
        msg = event.message
        counters.dead_letters += 1
        if dead_log.allow():
            log.warning("dead letter from sink %s[%d]@%d #%d: %s", msg.topic, msg.partition, msg.offset,
                        dead.index, dead.reason[:300])
        await dlq.send(key=dlq_key(dead.key), value=dead.letter("sink"))

    chosen = {"normalise": (raw, normalise_agent), "track": (snapshots, track_agent),
              "sink": (sink_topics, sink_agent)}
    for name, (source, fn) in chosen.items():
        if name in agents:
            app.agent(source, name=name)(fn)
    if "normalise" in agents:
        app.timer(FLUSH_SECONDS, name="dead-letter-burst")(burst.flush)
    return app, counters


class LogLimit:
    """At most ``limit`` log lines per ``window`` seconds; then one line saying how many were held back.

    A storm of bad records must not turn into a storm of log lines (each one costs the agent time
    and fills the disk); every dead letter is still in the DLQ with its reason.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit, self._window, self._clock = limit, window, clock
        self._start = clock()
        self._count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._start >= self._window:
            if self.suppressed:
                log.warning("%d more dead letters in the last %.0f s (not logged one by one)",
                            self.suppressed, now - self._start)
            self._start, self._count, self.suppressed = now, 0, 0
        self._count += 1
        if self._count <= self._limit:
            return True
        self.suppressed += 1
        return False


class PartitionPause:
    """Backpressure for the sink: pauses fetching from the sink's partitions in the consumer.

    Faust shares one consumer between agents, so pausing ``<prefix>.snapshots`` also holds the
    track agent back while ClickHouse is down; ``<prefix>.raw`` (normalise) keeps flowing.
    """

    def __init__(self, app: faust.App, topics: set[str]) -> None:
        self._app = app
        self._topics = topics

    def _mine(self) -> set[TP]:
        return {tp for tp in self._app.consumer.assignment() if tp.topic in self._topics}

    def pause(self) -> None:
        self._app.consumer.pause_partitions(self._mine())

    async def resume(self) -> None:
        """Rewind each partition to the last record the consumer delivered, then resume.

        Faust drops the records it had already fetched for a partition paused meanwhile (its
        ``getmany`` filters on the live set of active partitions) and later takes the jump in
        offsets for a gap to acknowledge (as after compaction): without the rewind those records
        would be committed unread. Found by the reliability suite (ClickHouse failing
        intermittently lost hundreds of snapshots).
        """
        consumer = self._app.consumer
        mine = self._mine()
        for tp in mine:
            position = next_to_read(consumer, tp)
            if position is not None:
                await consumer.seek(tp, position)
        consumer.resume_partitions(mine)


def next_to_read(consumer: Any, tp: TP) -> int | None:
    """Where to resume a partition without skipping a record: Faust's read offset, else the
    committed one.

    The read offset is the last record delivered to the streams, or, right after a seek, the next
    one to read; resuming at it redelivers at most that one record, which the sink (high-water
    marks) and the track agent (duplicates never move a batch) absorb. Resuming one past it lost
    a record whenever nothing had been delivered since the previous seek.
    """
    read = getattr(consumer, "_read_offset", {}).get(tp)
    if read is not None:
        return int(read)
    committed = getattr(consumer, "_committed_offset", {}).get(tp)
    return int(committed) if committed is not None else None


def _position(event: EventT[bytes]) -> Position:
    msg = event.message
    return Position(msg.topic, msg.partition, msg.offset)


def _withhold_acks(batch: Sequence[EventT[bytes]]) -> None:
    """Keep offsets of events not written from being committed when take_events acks them.

    take_events acks its buffer in a ``finally`` even when the agent is cancelled; a message
    already marked acked is skipped by that final ack, so its offset is never marked safe.
    """
    for event in batch:
        event.message.acked = True


def track(previous: bytes | None, value: bytes, rules: Rules,
          codec: Codec = ORJSON) -> tuple[BatchState | None, BatchState, list[ChangeEvent]]:
    """(state before, state after, change events) for one snapshot record and its table value."""
    snap = Snapshot.from_json(value, codec.loads)
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    new_state, events = apply(prior, snap, rules)
    return prior, new_state, events


def refused(exc: BaseException, what: str, size: int) -> str:
    """The dead-letter reason of a record Kafka refused for its size; anything else is re-raised
    (Kafka unreachable: the worker stops and its records are read again, never dead-lettered)."""
    cause = exc if isinstance(exc, SIZE_ERRORS) else exc.__cause__
    if not isinstance(cause, SIZE_ERRORS):
        raise exc
    return f"Kafka refused a {what} of about {size} bytes: {type(cause).__name__}"


def reason_of(exc: Exception) -> str:
    """The DLQ reason: an :class:`InvalidRecord` says why; anything else is named as unexpected."""
    return str(exc) if isinstance(exc, InvalidRecord) else f"unexpected {type(exc).__name__}: {exc}"


def _crash(app: faust.App, exc: BaseException) -> None:
    """Stop the worker like a failed Faust send does: its unacknowledged records are read again."""
    app.add_future(app.crash(exc))


def store_url(settings: Settings) -> str:
    return f"{settings.track.store}://"


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRecord(f"expected bytes from the raw serializer, got {type(value).__name__}")
    return value


