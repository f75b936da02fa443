"""What was delivered, kept in Kafka: a compacted topic ``<prefix>.alerts-sent`` keyed
``rule/event_id``, written (``acks=all``) after the destination acknowledged an alert and before
the change event's offset is committed.

So an alert goes out at most once per (rule, event) across restarts and rebalances: a change
event read again (its offset was not committed when the service stopped) is found here and not
sent again. The one window left is a crash between the destination's acknowledgement and this
write: then it is sent again with the same ``event_id`` (the Standard Webhooks ``webhook-id``),
which a receiver deduplicates on. Read whole at start; its retention is the changes topic's (an
event older than that cannot be read again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from pipeline.config import KafkaConfig
from pipeline.core.timeutil import iso_ms, utcnow
from pipeline.kafka import ALERTS_SENT

log = logging.getLogger(__name__)

def ledger_key(rule: str, event_id: str) -> str:
    return f"{rule}/{event_id}"


class Ledger:
    """The delivered (rule, event) pairs: loaded from the topic, then written through."""

    def __init__(self, config: KafkaConfig, producer: AIOKafkaProducer) -> None:
        self._topic = config.topic(ALERTS_SENT)
        self._config = config
        self._producer = producer
        self._sent: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._sent

    def __len__(self) -> int:
        return len(self._sent)

    async def load(self) -> int:
        """Read the topic from its start to its end as of now; returns the pairs known."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._config.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            # Created with the pipeline's partition count (ensure_topics checks it).
            parts = [TopicPartition(self._topic, p) for p in range(self._config.partitions)]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            await consumer.seek_to_beginning(*parts)
            left = {tp for tp in parts if ends[tp] > 0}
            while left:
                fetched = await consumer.getmany(*left, timeout_ms=1000)
                for records in fetched.values():
                    self._sent.update(r.key.decode() for r in records if r.key and r.value is not None)
                for tp in list(left):
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
        log.info("alerts: %d deliveries on record in %s", len(self._sent), self._topic)
        return len(self._sent)

    async def record(self, keys: Iterable[str], what: str) -> None:
        """Note ``keys`` as delivered (``what``: an event id or a digest id), each acknowledged by
        the broker before this returns."""
        value = orjson.dumps({"delivered_at": iso_ms(utcnow()), "as": what})
        futures = [await self._producer.send(self._topic, value=value, key=k.encode()) for k in keys]
        for future in futures:
            await future
        self._sent.update(keys)
