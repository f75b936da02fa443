"""Kafka at the edge: topic creation and the idempotent producer the poller publishes with.

The producer tells two failures apart. Kafka unreachable (a timeout, a connection error, any
retriable error) fails the whole publish: the buffer holds the envelopes and redelivers them in
order. An envelope Kafka refuses for itself (too large for the producer's ``max_request_size`` or
the topic's ``max.message.bytes``, a record the broker calls invalid) is tried once more on its own
(a record sharing a batch with a refused one is refused with it), then dead-lettered to
``<prefix>.dlq`` (stage ``poll``, the original and key cut as every dead letter's are) or, if the
DLQ refuses that too, dropped; both counted and logged. A refused envelope never blocks the ones
behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)

from pipeline.config import KafkaConfig
from pipeline.core.dlq import MAX_KEY, dead_letter
from pipeline.core.errors import BatchscopeError
from pipeline.core.models import Envelope
from pipeline.core.records import Packed, pack_raw

log = logging.getLogger(__name__)

# hints: the webhook receiver's verified provider events, read by the poller (pipeline/webhooks/).
# changesets: the change events packed per snapshot record, the sink's feed (docs/records.md).
PIPELINE_TOPICS = ("raw", "snapshots", "changes", "changesets", "dlq", "hints")
# The track agent's Faust table (agents.app.STATE_TABLE); Faust names its changelog after it.
STATE_TABLE = "batch_state"
HOUR_MS = 3_600_000
# Topic settings `batchscope topics` shows, in this order.
SHOWN_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas")
# Errors about a record itself: retrying it cannot help, the records behind it must not wait.
REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException, InvalidTimestampError)
LOGGED_KEY = 120  # characters of a refused envelope's key in a log line


class KafkaUnavailable(BatchscopeError):
    """Kafka could not be reached. ``delivered``: the indexes of the envelopes of the failed
    :meth:`Publisher.publish` call the broker acknowledged all the same (sending them again would
    store them twice)."""

    retriable = True

    def __init__(self, message: str, delivered: Collection[int] = ()) -> None:
        super().__init__(message)
        self.delivered = frozenset(delivered)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the pipeline wants it created."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the broker describes it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


# The alerts service's record of what it delivered (pipeline/alerts/ledger.py): compacted, and
# aged like the changes topic (an event older than that is never read again).
ALERTS_SENT = "alerts-sent"


def changelog_topic(config: KafkaConfig) -> str:
    """The track table's changelog, as Faust names it: ``<app_id>-<table>-changelog``."""
    return f"{config.app_id}-{STATE_TABLE}-changelog"


def _retention_ms(hours: int) -> str:
    return "-1" if hours == -1 else str(hours * HOUR_MS)


def topic_specs(config: KafkaConfig, names: Iterable[str] = PIPELINE_TOPICS, *,
                changelog: bool = False) -> list[TopicSpec]:
    """Partitions, replication and retention of each topic; the changelog is compacted, not aged."""
    retention = {"raw": config.retention_hours, "snapshots": config.retention_hours,
                 "changes": config.changes_retention_hours, "changesets": config.retention_hours,
                 "dlq": config.dlq_retention_hours, "hints": config.retention_hours,
                 ALERTS_SENT: config.changes_retention_hours}
    isr = {"min.insync.replicas": str(config.min_insync_replicas)}
    specs = [TopicSpec(config.topic(n), config.partitions, config.replication_factor,
                       {"cleanup.policy": "compact,delete" if n == ALERTS_SENT else "delete",
                        "retention.ms": _retention_ms(retention[n]), **isr})
             for n in names]
    if changelog:
        specs.append(TopicSpec(changelog_topic(config), config.partitions, config.replication_factor,
                               {"cleanup.policy": "compact", **isr}))
    return specs


async def _admin(config: KafkaConfig) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka at {config.bootstrap} is unreachable: {exc!r}") from exc
    return admin


async def ensure_topics(config: KafkaConfig, names: Iterable[str] = PIPELINE_TOPICS, *,
                        changelog: bool = False) -> list[str]:
    """Create the pipeline's topics (see :func:`topic_specs`) that do not exist; returns their names.

    Faust tables are co-partitioned with their source topic, so an existing topic with another
    partition count is an error, not something to paper over. Existing topics are not altered.
    """
    specs = topic_specs(config, names, changelog=changelog)
    admin = await _admin(config)
    try:
        listed = set(await admin.list_topics())
        present = await _check_partitions(config, admin, [s.name for s in specs if s.name in listed])
        missing = [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs)
                   for s in specs if s.name not in present]
        if not missing:
            return []
        raced = await _create(admin, missing)  # created meanwhile by another process
        await _check_partitions(config, admin, raced)
        created = [t.name for t in missing if t.name not in raced]
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _check_partitions(config: KafkaConfig, admin: AIOKafkaAdminClient, names: list[str]) -> set[str]:
    """The topics in ``names`` that exist; an error if one has another partition count."""
    described = await admin.describe_topics(names) if names else []
    for topic in described:
        count = len(topic["partitions"])
        if count != config.partitions:
            raise BatchscopeError(
                f"topic {topic['topic']} has {count} partitions but kafka.partitions is {config.partitions}: "
                "use the same value or a new kafka.topic_prefix")
    return {t["topic"] for t in described}


async def _create(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> list[str]:
    """Create ``topics``; returns the names that already existed."""
    response = await admin.create_topics(topics)
    existed = []
    for name, code, *rest in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            existed.append(name)
        elif code != 0:
            message = rest[0] if rest and rest[0] else f"error code {code}"
            raise BatchscopeError(f"cannot create topic {name}: {message}")
    return existed


async def describe_topics(config: KafkaConfig, names: Iterable[str]) -> list[TopicInfo]:
    """Partitions, replication factor and :data:`SHOWN_CONFIGS` of each topic that exists."""
    admin = await _admin(config)
    try:
        listed = set(await admin.list_topics())
        wanted = [n for n in names if n in listed]
        if not wanted:
            return []
        described = {t["topic"]: t["partitions"] for t in await admin.describe_topics(wanted)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted]
        configs = _config_values(await admin.describe_configs(resources))
        return [TopicInfo(n, len(described[n]), max((len(p["replicas"]) for p in described[n]), default=0),
                          {k: v for k, v in configs.get(n, {}).items() if k in SHOWN_CONFIGS})
                for n in wanted]
    finally:
        await admin.close()


def _config_values(responses: list[object]) -> dict[str, dict[str, str]]:
    """DescribeConfigs responses -> ``{topic: {config name: value}}``."""
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _message, _kind, name, entries in getattr(response, "resources", []):
            out[name] = {entry[0]: str(entry[1]) for entry in entries}
    return out


# The poller awaits each page's delivery before it lists the next page, so a linger is pure
# latency on every page of a cycle; a page is already packed into one record per partition, and
# the sources publishing at once share a request while the one before it is in flight.
PUBLISH_LINGER_MS = 0


async def start_producer(config: KafkaConfig, *, linger_ms: int = 0) -> AIOKafkaProducer:
    """A started idempotent producer (``acks=all``): a record is acknowledged once every in-sync
    replica has it. :class:`KafkaUnavailable` when the brokers cannot be reached."""
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=linger_ms, compression_type=None)
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise KafkaUnavailable(f"Kafka at {config.bootstrap} is unreachable: {exc!r}") from exc
    return producer


class Publisher:
    """An idempotent (``acks=all``) producer of raw envelopes keyed ``source/batch_id``.

    ``on_refused(envelope, error_class)`` is called for each envelope Kafka refused
    (``kafka_refused``: dead-lettered, ``kafka_refused_dropped``: the DLQ refused it too).
    """

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._topic = config.topic("raw")
        self._dlq = config.topic("dlq")
        self._producer: AIOKafkaProducer | None = None
        self.on_refused: Callable[[Envelope, str], None] | None = None
        self.dead_lettered = 0
        self.dropped = 0

    async def start(self) -> None:
        if self._producer is None:
            self._producer = await start_producer(self._config, linger_ms=PUBLISH_LINGER_MS)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes what is in flight
            self._producer = None

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BatchscopeError("publisher is not started")
        return self._producer

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Send the envelopes, packed by partition (:func:`pipeline.core.records.pack_raw`: the
        envelopes of one call are one list page), and wait until the broker acknowledged each
        record, or refused it: then its envelopes are sent again one by one, and one still refused
        is dead-lettered or dropped. :class:`KafkaUnavailable` when Kafka cannot be reached."""
        packed = pack_raw(envelopes, self._config.partitions)
        refused: list[tuple[Envelope, bytes, bytes, Exception]] = []
        sent: list[tuple[Packed, asyncio.Future[object]]] = []
        for record in packed:
            try:
                future = await self._send(self._topic, record.key, record.value, record.partition)
            except REFUSED as exc:  # refused before it was batched: alone already, if it is one
                refused.extend(await self._unpacked(envelopes, record, exc, alone=record.count == 1))
                continue
            sent.append((record, future))
        outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, REFUSED)]
        if failed:  # the records the broker did acknowledge are not to be sent again
            delivered = [i for (record, _), outcome in zip(sent, outcomes, strict=True)
                         if not isinstance(outcome, BaseException) for i in record.members]
            raise _unavailable(self._topic, failed[0], delivered)
        for (record, _), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, REFUSED):
                refused.extend(await self._unpacked(envelopes, record, outcome, alone=False))
        for envelope, key, value, why in refused:
            await self._dead_letter(envelope, key, value, why)

    async def _unpacked(self, envelopes: list[Envelope], record: Packed, refusal: Exception, *,
                        alone: bool) -> list[tuple[Envelope, bytes, bytes, Exception]]:
        """A refused record's envelopes, each sent alone (one bad object must not take its page
        with it, nor a record the batch it shared); the refusals that stand."""
        if alone:
            return [(envelopes[record.members[0]], record.key, record.value, refusal)]
        out = []
        for i in record.members:
            envelope, key, value = _record(envelopes[i])
            out.extend(await self._alone(envelope, key, value))
        return out

    async def _send(self, topic: str, key: bytes, value: bytes,
                    partition: int | None = None) -> asyncio.Future[object]:
        """Queue one record; a record-level refusal is raised as is, anything else is Kafka
        being unavailable."""
        try:
            future: asyncio.Future[object] = await self._started().send(topic, value=value, key=key,
                                                                        partition=partition)
        except REFUSED:
            raise
        except KafkaError as exc:
            raise _unavailable(topic, exc) from exc
        return future

    async def _alone(self, envelope: Envelope, key: bytes,
                     value: bytes) -> list[tuple[Envelope, bytes, bytes, Exception]]:
        """Send one record refused in a batch again, alone; the refusal, if it stands."""
        refusal = await self._try_deliver(self._topic, key, value)
        return [] if refusal is None else [(envelope, key, value, refusal)]

    async def _try_deliver(self, topic: str, key: bytes, value: bytes) -> Exception | None:
        """Deliver one record; None once acknowledged, the refusal when Kafka refused it."""
        try:
            await self._delivered(topic, key, value)
        except REFUSED as exc:
            refusal: Exception = exc
            return refusal
        return None

    async def _delivered(self, topic: str, key: bytes, value: bytes) -> None:
        future = await self._send(topic, key, value)
        try:
            await future
        except REFUSED:
            raise
        except KafkaError as exc:
            raise _unavailable(topic, exc) from exc

    async def _dead_letter(self, envelope: Envelope, key: bytes, value: bytes, exc: Exception) -> None:
        reason = f"Kafka refused an envelope of {len(key) + len(value)} bytes: {type(exc).__name__}"
        letter = dead_letter(reason=reason, stage="poll", topic=self._topic, partition=-1, offset=-1,
                             original=value, key=key, source=envelope.source)
        shown = key[:LOGGED_KEY].decode("utf-8", "replace")
        again = await self._try_deliver(self._dlq, key[:MAX_KEY], letter)
        if again is not None:
            self.dropped += 1
            self._count(envelope, "kafka_refused_dropped")
            log.error("source %s: %s (key %r), and its dead letter (%s): dropped",
                      envelope.source, reason, shown, type(again).__name__)
            return
        self.dead_lettered += 1
        self._count(envelope, "kafka_refused")
        log.warning("source %s: %s (key %r): dead-lettered to %s",
                    envelope.source, reason, shown, self._dlq)

    def _count(self, envelope: Envelope, error_class: str) -> None:
        if self.on_refused is not None:
            self.on_refused(envelope, error_class)


def _record(envelope: Envelope) -> tuple[Envelope, bytes, bytes]:
    return envelope, envelope.key.encode(), envelope.to_json()


def _unavailable(topic: str, exc: BaseException, delivered: Collection[int] = ()) -> KafkaUnavailable:
    return KafkaUnavailable(f"publishing to {topic} failed: {exc!r}", delivered)
