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
from functools import partial
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import TP, EventT, StoreT, StreamT

from agents.faustcore import (
    ConsumerView,
    PartitionPause,
    check,
    handling,
    size_producer_buffer,
    withhold_acks,
)
from agents.inflight import InFlight
from agents.outputs import Outputs
from agents.outputs import refusal as refused_reason
from agents.redelivery import REPAIR_INTERVAL, Redelivery, Verdict
from pipeline.clickhouse.sink import ClickHouseSink, Position, Record, cut, refused_letters
from pipeline.clickhouse.store import AsyncStore
from pipeline.config import Settings
from pipeline.core.codec import ORJSON, Codec
from pipeline.core.dlq import dead_letter, dlq_key, source_of
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import ChangeEvent, Snapshot, loads_object
from pipeline.core.normalise import normalise_raw
from pipeline.core.records import (
    Rejected,
    by_partition,
    pack_snapshots,
    partition_of,
    read_snapshots,
    snapshot_runs,
)
from pipeline.core.track import fold_bytes
from pipeline.core.transitions import BatchState, Rules, apply

log = logging.getLogger(__name__)

STATE_TABLE = "batch_state"
AGENTS = ("normalise", "track", "sink")
# A snapshot bigger than this is a dead letter: Kafka's default record limit is about 1 MB
# (broker ``message.max.bytes``, producer ``max_request_size``), and a change event embeds it.
MAX_RECORD = 512 * 1024
PRODUCER_BATCH = 512 * 1024  # bytes per partition batch (aiokafka's default: 16 KB)
PRODUCER_BUFFER = 10_000  # table changelog records queued before the fetch loop waits (Faust: 100)
# What a record costs the producer's max_request_size beyond its key and value (aiokafka's
# estimate for one record in its own batch is 61 bytes of batch header plus a few of varints).
RECORD_OVERHEAD = 128
Run = list[tuple[bytes, bytes, int]]  # (key, snapshot JSON, index in the raw record)
Entries = list[dict[str, Any] | Rejected]  # a snapshot record's entries (records.read_snapshots)
Then = Callable[[list[Any]], Awaitable[None]]
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
        # that partition; at aiokafka's 16 KB a burst of dead letters
        # stalled the agent for round trips. A batch stays under the broker's ~1 MB limit.
        producer_max_batch_size=PRODUCER_BATCH,
        producer_linger=k.linger_ms / 1000.0,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.pipeline.data_path / "faust"),
        table_cleanup_interval=60.0,
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        # No on_leader timers here: the always-empty leader topic only made fetches wait.
        topic_disable_leader=True,
    )
    consumer = ConsumerView(app)
    check(app)  # every private Faust attribute the guards use, before any record is handled
    consumer.set_fetch_wait(k.fetch_wait_ms)
    size_producer_buffer(app, PRODUCER_BUFFER)

    raw_schema: faust.Schema[bytes, bytes] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def topic(*names: str) -> faust.TopicT:
        return app.topic(*(k.topic(n) for n in names), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", partitions=k.partitions)

    raw, snapshots, dlq = topic("raw"), topic("snapshots"), topic("dlq")
    changes_topic, snapshots_topic, dlq_topic = k.topic("changes"), k.topic("snapshots"), k.topic("dlq")
    sink_topics = topic("snapshots", "changes")
    # key_type/value_type too, not only the schema: the store and changelog recovery take their
    # serializers from the types (json otherwise, and recovery then fails on every record).
    state = app.Table(STATE_TABLE, default=None, partitions=k.partitions, schema=raw_schema,
                      key_type=bytes, value_type=bytes)
    changelog = state.changelog_topic.get_topic_name()
    counters = Counters()
    sink_topic_names = {k.topic("snapshots"), k.topic("changes")}
    sink = ClickHouseSink(store, PartitionPause(consumer, sink_topic_names))

    normalising = InFlight[EventT[bytes]](lambda exc: _crash(app, exc))
    tracking = InFlight[EventT[bytes]](lambda exc: _crash(app, exc))
    pending: dict[bytes, bytes] = {}  # track states whose change events are not delivered yet

    @app.on_partitions_revoked.connect
    async def _forget_marks(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        sink.forget()  # another worker may write these partitions now
        dropped = normalising.drop() + tracking.drop()  # their new owner reads them again
        pending.clear()
        if dropped:
            log.info("partitions revoked: %d records in flight left to their new owner", dropped)

    redelivery = Redelivery(consumer, {k.topic("raw"), k.topic("snapshots"), k.topic("changes")}, counters)

    @app.on_partitions_assigned.connect
    async def _guard_acks(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        redelivery.assigned()  # before the first record is handed to an agent

    async def _repair_holes() -> None:
        await redelivery.repair()

    app.timer(REPAIR_INTERVAL)(_repair_holes)

    dead_log = LogLimit(DEAD_LETTER_LOGS, DEAD_LETTER_WINDOW)
    send = app.producer.send

    def letter(event: EventT[bytes], stage: str, reason: str, rejected: Rejected | None = None,
               count: int = 1) -> bytes:
        """The dead letter of a record, or of one observation in it (``rejected``, of ``count``)."""
        msg = event.message
        counters.dead_letters += 1
        one = rejected if rejected is not None and count > 1 else None  # a record of one: the record
        key = one.key if one is not None and one.key is not None else msg.key
        if one is not None:
            reason = f"observation {one.index + 1} of {count}: {reason}"
        if dead_log.allow():
            log.warning("dead letter from %s %s[%d]@%d: %s", stage, msg.topic, msg.partition, msg.offset,
                        reason[:300])
        return dead_letter(reason=reason, stage=stage, topic=msg.topic, partition=msg.partition,
                           offset=msg.offset, original=msg.value if one is None else one.original, key=key,
                           source=source_of(key), index=None if one is None else one.index)

    async def to_dlq(event: EventT[bytes], stage: str, reason: str) -> None:
        await dlq.send(key=dlq_key(event.message.key), value=letter(event, stage, reason))

    async def letters(event: EventT[bytes], stage: str, rejected: Sequence[Rejected], count: int,
                      out: Outputs) -> None:
        """Hand the dead letters of a record's bad observations to the producer, into ``out``."""
        for rej in rejected:
            value = letter(event, stage, rej.reason, rej, count)
            key = rej.key if count > 1 and rej.key is not None else event.message.key  # as in the letter
            refused = await out.send(dlq_topic, dlq_key(key), value, None, -1)
            if refused is not None:
                raise refused  # a dead letter is far under any record limit: Kafka is not well

    async def delivered_letters(event: EventT[bytes], stage: str, rejected: Sequence[Rejected],
                                count: int) -> None:
        """Send dead letters and wait for the broker (a refusal found after the record was sent)."""
        out = Outputs(send)
        await letters(event, stage, rejected, count, out)
        for result in await asyncio.gather(*out.futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    def over_limit(key: bytes, values: Sequence[bytes]) -> int | None:
        """The size of the first value the producer would refuse with ``key``, if one would."""
        limit = app.conf.producer_max_request_size - RECORD_OVERHEAD - len(key)
        return next((len(v) for v in values if len(v) > limit), None)

    async def normalise_agent(stream: StreamT[bytes]) -> AsyncIterator[None]:
        """One raw record of one or many envelopes -> its snapshot records, in the same order,
        to the partition of their keys (the raw record's, for the poller's records); a bad
        observation is a dead letter of its own. Acknowledged by hand, once all are delivered."""
        manual = cast(Stream[bytes], stream).noack()
        normalising.bind(manual.ack)
        async for event in manual.events():
            verdict = await redelivery.admit("normalise", event.message)
            if verdict is Verdict.DONE:  # finished before a seek read it again
                await manual.ack(event)
            if verdict is Verdict.PROCESS:
                await normalising.add(event, *await normalise_one(event))
            yield None

    async def normalise_one(event: EventT[bytes]) -> tuple[list[Awaitable[Any]], Then]:
        out = Outputs(send)
        if not isinstance(event.value, bytes):
            why = f"expected bytes from the raw serializer, got {type(event.value).__name__}"
            await letters(event, "normalise", [Rejected(why, 0, b"")], 1, out)
            return out.futures, partial(settle_snapshots, event, out, [], 1)
        items, rejected = normalise_raw(event.value, event.message.key, codec, MAX_RECORD)
        count = len(items) + len(rejected)
        await letters(event, "normalise", rejected, count, out)
        runs: list[tuple[int, Run]] = []
        for partition, group in by_partition(items, k.partitions).items():
            for run in snapshot_runs(group):
                runs.append((partition, run))
                key, value = pack_snapshots(run)
                refused = await out.send(snapshots_topic, key, value, partition, len(runs) - 1)
                if refused is not None:  # refused at once: each alone, then what stays refused
                    await delivered_letters(event, "normalise", await alone(partition, run, refused), count)
        counters.normalised += len(items)
        return out.futures, partial(settle_snapshots, event, out, runs, count)

    async def settle_snapshots(event: EventT[bytes], out: Outputs, runs: list[tuple[int, Run]], count: int,
                               results: list[Any]) -> None:
        """Once a raw record's outputs are settled: the snapshot records the broker refused are sent
        again snapshot by snapshot, and a snapshot refused alone is a dead letter."""
        refused = await out.refused(results, "snapshot")
        if not refused:
            return
        for owner, reason in refused.items():
            if owner < 0:
                log.error("a dead letter was refused by Kafka: %s", reason)
                continue
            partition, run = runs[owner]
            rejected = await alone(partition, run, reason)
            await delivered_letters(event, "normalise", rejected, count)

    async def alone(partition: int, run: Run, refusal: BaseException | str) -> list[Rejected]:
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
                await (await send(snapshots_topic, key, value, partition, None, None))
            except Exception as exc:  # noqa: BLE001 - a size refusal is a dead letter; anything else raised
                reason = refused_reason(exc, "snapshot", len(key) + len(value))
                rejected.append(Rejected(reason, index, value, key))
        return rejected

    rules = settings.track.rules()

    async def track_agent(stream: StreamT[bytes]) -> AsyncIterator[None]:
        """Fold the snapshots of each record into the table. A record's change events reach the
        broker before the states that made them are written (:mod:`agents.inflight`): a crash
        between the two replays the snapshots from the older states and emits the same events
        (same ids, same content) again, instead of losing them. Until written, a state is read
        from ``pending``. Acknowledged by hand: a record held behind a dropped one
        (:meth:`Redelivery.admit`) is not acknowledged."""
        manual = cast(Stream[bytes], stream).noack()
        tracking.bind(manual.ack)
        async for event in manual.events():
            verdict = await redelivery.admit("track", event.message)
            if verdict is Verdict.DONE:
                await manual.ack(event)
            elif verdict is Verdict.PROCESS:
                out, writes, entries = await fold_record(event)
                await tracking.add(event, out.futures, partial(settle_changes, event, out, writes, entries))
            yield None

    async def fold_record(event: EventT[bytes]) -> tuple[Outputs, dict[int, tuple[bytes, bytes]], Entries]:
        """Send the change events and dead letters of one snapshot record; the states to write, by
        the index of the snapshot that made them, and the record's entries (read once)."""
        msg = event.message
        value = event.value if isinstance(event.value, bytes) else b""
        entries = read_snapshots(value, msg.key, codec.loads)
        out = Outputs(send)
        writes: dict[int, tuple[bytes, bytes]] = {}
        bad: list[Rejected] = []
        for index, entry in enumerate(entries):
            if isinstance(entry, Rejected):
                bad.append(entry)
                continue
            try:
                key, state_value, values = fold(entry, msg.partition)
            except Exception as exc:  # noqa: BLE001 - the agent never dies on data
                bad.append(Rejected(reason_of(exc), index, codec.dumps(entry), snapshot_key(entry)))
                continue
            refused = await send_changes(out, key, values, index, msg.partition)
            if refused is not None:
                bad.append(Rejected(refused, index, codec.dumps(entry), key))
                continue
            counters.changes += len(values)
            if state_value is not None:
                pending[key] = state_value
                writes[index] = (key, state_value)
        await letters(event, "track", bad, len(entries), out)
        return out, writes, entries

    async def send_changes(out: Outputs, key: bytes, values: list[bytes], index: int,
                           partition: int) -> str | None:
        """Hand one snapshot's change events to the producer; the reason if it refused one at once."""
        for change in values:  # Kafka unreachable raises: the worker stops, nothing is lost
            # The key's own partition (fold checked it), given: the producer's murmur2 is pure Python.
            refused = await out.send(changes_topic, key, change, partition, index)
            if refused is not None:
                return refused_reason(refused, "change event", len(key) + len(change))
        return None

    def fold(entry: dict[str, Any], partition: int) -> tuple[bytes, bytes | None, list[bytes]]:
        """(key, new state or None when unchanged, change events) of one snapshot."""
        snap = Snapshot.from_dict(entry)
        key = snap.key.encode()
        if partition_of(key, k.partitions) != partition:  # its state lives in another partition
            raise InvalidRecord(f"snapshot of {snap.key!r} in partition {partition}, but its key belongs "
                                f"to partition {partition_of(key, k.partitions)}")
        changed, values = fold_bytes(pending.get(key) or state.get(key), snap, rules, codec)
        check_sizes(key, values)
        return key, changed, values

    def check_sizes(key: bytes, values: Sequence[bytes]) -> None:
        """:class:`InvalidRecord` when the producer would refuse one of ``values`` for its size."""
        size = over_limit(key, values)
        if size is not None:
            raise InvalidRecord(f"change event of {len(key) + size} bytes is over Kafka's "
                                f"{app.conf.producer_max_request_size}-byte record limit")

    async def settle_changes(event: EventT[bytes], out: Outputs, writes: dict[int, tuple[bytes, bytes]],
                             entries: Entries, results: list[Any]) -> None:
        """Once a snapshot record's outputs are settled: a snapshot whose change event the broker
        refused is a dead letter and its state is not written; then the table writes, the store
        and the changelog (the same partition: the table is co-partitioned with the snapshots)."""
        refused = await out.refused(results, "change event")
        if refused:  # an owner >= 0 is a snapshot that was folded: an object, not a Rejected
            bad = [Rejected(reason, owner, codec.dumps(entries[owner]), snapshot_key(entries[owner]))
                   for owner, reason in refused.items() if owner >= 0]
            await delivered_letters(event, "track", bad, len(entries))
        partition = event.message.partition
        with handling(event):  # the store of the record's partition
            for index, (key, value) in writes.items():
                if index in refused:
                    continue
                state.data[key] = value  # what ``state[key] = value`` does, less Faust's per-write send
                sent = cast(asyncio.Future[Any], await send(changelog, key, value, partition, None, None))
                sent.add_done_callback(persisted)
                if pending.get(key) is value:
                    del pending[key]

    def persisted(fut: asyncio.Future[Any]) -> None:
        """A changelog record delivered: the store notes its offset (RocksDB reads the changelog
        from there at start-up), as Faust's own table write does. Faust flushes the producer
        before every commit, so no offset is committed past a state not yet in the changelog."""
        if not fut.cancelled() and fut.exception() is None:
            meta = fut.result()
            store = cast(StoreT[Any, Any], state.data)
            store.set_persisted_offset(TP(meta.topic, meta.partition), meta.offset)

    async def sink_agent(stream: StreamT[bytes]) -> AsyncIterator[None]:
        """take_events acknowledges a batch only when the loop asks for the next one, i.e. after
        every block of it was acknowledged by ClickHouse or sent to the DLQ."""
        cfg = settings.pipeline
        batches = cast(Stream[bytes], stream).take_events(cfg.sink_batch_size, within=cfg.sink_flush_seconds)
        async for batch in batches:
            try:
                await sink_batch(batch)
            except asyncio.CancelledError:
                withhold_acks(batch)  # stopped while ClickHouse was down: replay them next time
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
            event = events[one.pos]
            value = letter(event, "sink", one.reason, one.rejected, one.count)
            await dlq.send(key=dlq_key(one.rejected.key or event.message.key), value=value)
        counters.sunk += sum(b.rows for b in blocks) - sum(b.rows for b, _ in rejected)

    chosen = {"normalise": (raw, normalise_agent), "track": (snapshots, track_agent),
              "sink": (sink_topics, sink_agent)}
    for name, (source, fn) in chosen.items():
        if name in agents:
            app.agent(source, name=name)(fn)
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


def _position(event: EventT[bytes]) -> Position:
    msg = event.message
    return Position(msg.topic, msg.partition, msg.offset)


def track(previous: bytes | None, value: bytes, rules: Rules,
          codec: Codec = ORJSON) -> tuple[BatchState | None, BatchState, list[ChangeEvent]]:
    """(state before, state after, change events) for one snapshot record and its table value
    (the agent folds with :func:`pipeline.core.track.fold_bytes`; tests read the states)."""
    snap = Snapshot.from_json(value, codec.loads)
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    new_state, events = apply(prior, snap, rules)
    return prior, new_state, events


def snapshot_key(entry: dict[str, Any] | Rejected) -> bytes | None:
    """``source/batch_id`` of a snapshot object, when it has both (a :class:`Rejected` has its own)."""
    if isinstance(entry, Rejected):
        return entry.key
    source, batch_id = entry.get("source"), entry.get("batch_id")
    if isinstance(source, str) and isinstance(batch_id, str):
        return f"{source}/{batch_id}".encode("utf-8", "replace")
    return None


def reason_of(exc: Exception) -> str:
    """The DLQ reason: an :class:`InvalidRecord` says why; anything else is named as unexpected."""
    return str(exc) if isinstance(exc, InvalidRecord) else f"unexpected {type(exc).__name__}: {exc}"


def _crash(app: faust.App, exc: BaseException) -> None:
    """Stop the worker like a failed Faust send does: its unacknowledged records are read again."""
    app.add_future(app.crash(exc))


def store_url(settings: Settings) -> str:
    return f"{settings.track.store}://"
