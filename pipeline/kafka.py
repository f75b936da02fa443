"""Kafka at the edge: topic creation and the idempotent producer the poller publishes with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.config import KafkaConfig
from pipeline.errors import BatchscopeError
from pipeline.models import Envelope

log = logging.getLogger(__name__)

PIPELINE_TOPICS = ("raw", "snapshots", "changes", "dlq")


class KafkaUnavailable(BatchscopeError):
    retriable = True


async def ensure_topics(config: KafkaConfig, names: Iterable[str] = PIPELINE_TOPICS) -> None:
    """Create the pipeline's topics with ``config.partitions`` partitions if they do not exist.

    Faust tables are co-partitioned with their source topic, so an existing topic with another
    partition count is an error, not something to paper over.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka at {config.bootstrap} is unreachable: {exc!r}") from exc
    try:
        topics = [config.topic(n) for n in names]
        listed = set(await admin.list_topics())
        existing = await admin.describe_topics([t for t in topics if t in listed]) if listed else []
        present = {t["topic"]: len(t["partitions"]) for t in existing}
        for topic, count in present.items():
            if count != config.partitions:
                raise BatchscopeError(
                    f"topic {topic} has {count} partitions but kafka.partitions is {config.partitions}: "
                    "use the same value or a new kafka.topic_prefix")
        missing = [NewTopic(t, config.partitions, 1) for t in topics if t not in present]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


class Publisher:
    """An idempotent (``acks=all``) producer of raw envelopes keyed ``source/batch_id``."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._topic = config.topic("raw")
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap, enable_idempotence=True, acks="all",
            linger_ms=20, compression_type=None,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise KafkaUnavailable(f"Kafka at {self._config.bootstrap} is unreachable: {exc!r}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes what is in flight
            self._producer = None

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Send every envelope and wait until the broker acknowledged all of them."""
        if self._producer is None:
            raise BatchscopeError("publisher is not started")
        futures = [
            await self._producer.send(self._topic, value=e.to_json(), key=e.key.encode())
            for e in envelopes
        ]
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing to {self._topic} failed: {exc!r}") from exc
