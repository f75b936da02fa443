"""The Faust app factory: the topics, the track table and the three agents (normalise, track,
sink), each a small unit with its dependencies given (:mod:`agents.normalise`,
:mod:`agents.track`, :mod:`agents.sink`), wired here.

``raw --normalise--> snapshots --track--> changes`` (one event a record, for subscribers) and
``changesets`` (the same events packed per snapshot record); the sink reads snapshots and change
sets and writes them to ClickHouse. A record an agent cannot process becomes a dead letter in
``<prefix>.dlq`` (:mod:`agents.deadletters`) and the stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from functools import partial
from typing import Any

import faust
from faust.types import EventT, TableT
from faust.types.agents import AgentFun

from agents.batches import Batches
from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.faustcore import (
    ConsumerView,
    LeanMonitor,
    PartitionPause,
    aiokafka_producer,
    check,
    idempotent_producer,
    size_producer_buffer,
)
from agents.inflight import InFlight, settle
from agents.normalise import NormaliseAgent
from agents.parsed import MadeRecords, ParsedRecords
from agents.redelivery import REPAIR_INTERVAL, Redelivery
from agents.sink import SinkAgent
from agents.track import TrackAgent
from pipeline.clickhouse.sink import ClickHouseSink
from pipeline.clickhouse.store import AsyncStore
from pipeline.config import Settings
from pipeline.core.codec import ORJSON, Codec

log = logging.getLogger(__name__)

STATE_TABLE = "batch_state"
AGENTS = ("normalise", "track", "sink")
# A snapshot bigger than this is a dead letter: Kafka's default record limit is about 1 MB
# (broker ``message.max.bytes``, producer ``max_request_size``), and a change event embeds it.
MAX_RECORD = 512 * 1024
PRODUCER_BATCH = 512 * 1024  # bytes per partition batch (aiokafka's default: 16 KB)
PRODUCER_BUFFER = 10_000  # table changelog records queued before the fetch loop waits (Faust: 100)
COMMIT_INTERVAL = 0.25  # seconds between commits: the last records of a burst commit this soon (Faust: 2.8)


def create_app(settings: Settings, store: AsyncStore, agents: Collection[str] = AGENTS,
               codec: Codec = ORJSON) -> tuple[faust.App, Counters]:
    """Build the Faust app with its topics, table and agents. Nothing is started here.

    ``agents`` selects which agents run (a track-only worker for tests and benchmarks);
    ``codec`` is the JSON codec of the normalise and track agents (stdlib: a benchmark baseline).
    """
    k = settings.kafka
    app = new_app(settings, group_of(settings, agents))
    consumer = ConsumerView(app)
    check(app)  # every private Faust attribute the guards use, before any record is handled
    consumer.set_fetch_wait(k.fetch_wait_ms)
    consumer.deliver_eagerly()
    consumer.wake_fetch_on_resume()
    size_producer_buffer(app, PRODUCER_BUFFER)
    idempotent_producer(app)
    counters = Counters()
    max_request = app.conf.producer_max_request_size
    batches = Batches(aiokafka_producer(app), max_request, {k.topic("dlq"): k.linger_ms / 1000.0})
    send = batches.send
    dead = DeadLetters(send, k.topic("dlq"), counters)
    redelivery = Redelivery(consumer, {k.topic("raw"), k.topic("snapshots"), k.topic("changesets")}, counters)

    async def _repair_holes() -> None:
        await redelivery.repair()

    app.timer(REPAIR_INTERVAL)(_repair_holes)
    # The snapshot records the normalise agent makes are kept for the track agent and sink of
    # this worker, and (when it does not make them) the track agent's reading for the sink.
    made = MadeRecords(counters) if "normalise" in agents and {"track", "sink"} & set(agents) else None
    parsed = ParsedRecords() if {"track", "sink"} <= set(agents) else None
    normalise = NormaliseAgent(send, k.topic("snapshots"), k.partitions, codec, MAX_RECORD, dead,
                               InFlight[EventT[bytes]](lambda exc: _crash(app, exc)), redelivery, counters,
                               made)
    track = None
    if "track" in agents:  # the table only where its agent runs: its changelog is recovered at start
        state = track_table(app, k.partitions)
        changelog = state.changelog_topic.get_topic_name()
        track = TrackAgent(send, k.topic("changes"), k.topic("changesets"), state, changelog, k.partitions,
                           settings.track.rules(), codec, max_request, batches.handed, dead,
                           InFlight[EventT[bytes]](lambda exc: _crash(app, exc)), redelivery, counters,
                           parsed, made)
    p = settings.pipeline
    sink = ClickHouseSink(store, PartitionPause(consumer, {k.topic("snapshots"), k.topic("changesets")}))
    sinking = SinkAgent(sink, p.sink_batch_size, p.sink_flush_seconds, k.topic("changesets"), dead, counters,
                        lambda exc: _crash(app, exc), parsed, made)

    @app.on_partitions_revoked.connect
    async def _forget(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        sink.forget()  # another worker may write these partitions now
        dropped = normalise.in_flight.drop()  # their new owner reads them again
        batches = sinking.forget()
        if track is not None:
            dropped += track.in_flight.drop()
            track.forget()
        normalise.forget()
        if dropped or batches:
            log.info("partitions revoked: %d records and %d sink batches in flight left to their new owner",
                     dropped, batches)

    queues = [normalise.in_flight] + ([track.in_flight] if track is not None else [])
    consumer.before_last_commit(partial(settle, queues))  # a clean stop commits what was processed

    @app.on_partitions_assigned.connect
    async def _guard_acks(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        redelivery.assigned()  # before the first record is handed to an agent

    def topic(*names: str) -> faust.TopicT:
        return app.topic(*(k.topic(n) for n in names), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", partitions=k.partitions)

    chosen: dict[str, tuple[faust.TopicT, AgentFun[Any]]] = {
        "normalise": (topic("raw"), normalise.run), "sink": (topic("snapshots", "changesets"), sinking.run)}
    if track is not None:
        chosen["track"] = (topic("snapshots"), track.run)
    for name, (source, fn) in chosen.items():
        if name in agents:
            app.agent(source, name=name)(fn)
    return app, counters


def track_table(app: faust.App, partitions: int) -> TableT[bytes, bytes]:
    """The track agent's table: raw bytes both ways. key_type/value_type too, not only the schema:
    the store and changelog recovery take their serializers from the types (json otherwise, and
    recovery then fails on every record)."""
    return app.Table(STATE_TABLE, default=None, partitions=partitions, key_type=bytes, value_type=bytes,
                     schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                                         value_serializer="raw"))


def group_of(settings: Settings, agents: Collection[str]) -> str:
    """The consumer group (Faust's app id) of a worker running ``agents``: ``kafka.app_id``, except
    for a sink that runs without the track agent, which reads in ``<app_id>-sink``.

    Both agents read ``<prefix>.snapshots``, and a group gives each partition to one member: in
    one group, a sink-only worker beside a ``normalise,track`` worker would take half the snapshot
    partitions from the track agent (and the other half from the sink). Apart, each group reads
    every partition once. The track table's changelog keeps its name (``<app_id>-batch_state-
    changelog``): no sink-only worker has the table.
    """
    app_id = settings.kafka.app_id
    return f"{app_id}-sink" if "sink" in agents and "track" not in agents else app_id


def new_app(settings: Settings, group: str | None = None) -> faust.App:
    """The Faust app of these settings, tuned (docs/faust.md, "Tuning"); no topic or agent yet.
    ``group``: its consumer group (:func:`group_of`), ``kafka.app_id`` by default."""
    k = settings.kafka
    return faust.App(
        group or k.app_id,
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
        producer_linger=0.0,  # every agent record goes in a batch closed when handed (agents/batches.py)
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.pipeline.data_path / "faust"),
        table_cleanup_interval=60.0,
        stream_wait_empty=False,
        broker_commit_interval=COMMIT_INTERVAL,
        # No on_leader timers here: the always-empty leader topic only made fetches wait.
        topic_disable_leader=True,
        Monitor=LeanMonitor,  # Faust's statistics, without two weak-key lookups per event
    )


def _crash(app: faust.App, exc: BaseException) -> None:
    """Stop the worker like a failed Faust send does: its unacknowledged records are read again."""
    app.add_future(app.crash(exc))


def store_url(settings: Settings) -> str:
    return f"{settings.track.store}://"
