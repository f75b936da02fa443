"""The agents' records appended to one open batch per topic-partition: one delivery future per
batch, not per record.

aiokafka's ``send`` spends about 15 µs of Python on each record (size and partition checks, a
future, and later a ``RecordMetadata`` and a callback to resolve it), and the worker sends about
two records per observation: a change event, and the changelog record of the state it made. Here
a record is appended to its partition's open batch (aiokafka's public ``create_batch``: the
record is written into the batch by aiokafka's C record builder) and gets the batch's future.

A new batch is handed to the producer's queue (``send_batch``) by the partition's task, and
closed then: aiokafka takes a partition's next batch only once the sender has taken the previous
one, so the records appended meanwhile travel together, and the sender numbers a batch's records
(the idempotent producer's sequence) when it takes it, so none may join it later. One task a
partition hands its batches in order, one at a time: the records of a partition reach the broker
in the order they were appended. The producer's idempotence, retries and
``flush`` (Faust flushes before every commit) cover these batches as they do ``send``'s.

A record without a partition (a dead letter) gets the one its key chooses, as Faust's ``send``
would choose it (Kafka's default partitioner over the topic's partitions: the faster, cached
:func:`~pipeline.core.records.partition_of`; a record without a key: any), and joins that
partition's batch. A topic given a linger (the dead letters') has its batches handed with the
next batch of another topic (in the same loop step, so the sender takes them in the same produce
request), or once the linger has passed: sparse bad records among good ones ride on the good
records' requests, and a stream of bad records becomes a batch every linger, not a request each
(a small bad record cost 1.7 valid ones when each was a request of its own).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata
from faust.exceptions import ProducerSendError

from pipeline.core.records import partition_of

TP = tuple[str, int]


@dataclass(slots=True)
class Open:
    """One batch: its builder, the future its records get, and whether the producer has it."""

    builder: BatchBuilder
    future: asyncio.Future[RecordMetadata]
    handed: asyncio.Future[None]


@dataclass(slots=True)
class Partition:
    """A partition's batch open for records, and the batches not yet handed, oldest first."""

    current: Open | None = None
    waiting: deque[Open] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Batches:
    """Records to batches; ``send`` has the signature of Faust's ``Producer.send`` (the agents'
    :data:`~agents.outputs.Send`), so the agents do not know which one they hold."""

    def __init__(self, producer: Callable[[], AIOKafkaProducer], max_request: int,
                 linger: Mapping[str, float] | None = None) -> None:
        self._producer = producer  # the aiokafka producer Faust starts (looked up on first use)
        self._max_request = max_request
        self._linger = dict(linger or {})  # seconds a topic's batch stays open for more records
        self._partitions: dict[TP, Partition] = {}
        self._lingering: list[asyncio.Future[None]] = []  # hand tasks waiting for the next hand-over

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: None, headers: None) -> Awaitable[Any]:
        """Append one record to its partition's open batch; the batch's delivery future (its
        result: the metadata of the batch's last record). A record the producer would refuse for
        its size raises :class:`ProducerSendError`, as Faust's ``send`` does."""
        if partition is None:
            partition = await self._partition_of(topic, key)
        part = self._partitions.get((topic, partition))
        if part is None:
            part = self._partitions[(topic, partition)] = Partition()
        current = part.current
        if current is not None and current.builder.append(timestamp=None, key=key, value=value) is not None:
            return current.future
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        if size > self._max_request:
            raise ProducerSendError(f"a record of {size} bytes to {topic}") from MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized, over the {self._max_request}-byte "
                "max_request_size")
        current = self._open(topic, partition, part)
        if current.builder.append(timestamp=None, key=key, value=value) is None:  # an empty batch takes any
            raise ProducerSendError(f"a record of {size} bytes to {topic}: no batch took it")
        return current.future

    async def _partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition Faust's ``send`` would give a record without one: its key's (murmur2, as
        Kafka's clients hash), or any, for no key; over the partitions the producer's metadata
        knows now (it fetches them once for a topic it has not seen)."""
        producer = self._producer()
        known = producer.client.cluster.partitions_for_topic(topic)
        partitions = sorted(known or await producer.partitions_for(topic))
        if key is None:
            return int(random.choice(partitions))  # any: a record without a key has no partition of its own
        return int(partitions[partition_of(key, len(partitions))])

    def _open(self, topic: str, partition: int, part: Partition) -> Open:
        loop = asyncio.get_running_loop()
        current = Open(self._producer().create_batch(), loop.create_future(), loop.create_future())
        part.current = current
        part.waiting.append(current)
        if part.task is None or part.task.done():
            part.task = asyncio.ensure_future(self._hand(topic, partition, part))
        return current

    async def _hand(self, topic: str, partition: int, part: Partition) -> None:
        """Hand the partition's waiting batches to the producer, in order, one at a time (the
        first after the topic's linger)."""
        linger = self._linger.get(topic)
        if linger:
            await self._ride(linger)
        waiting = part.waiting
        while waiting:
            batch = waiting[0]
            if not linger:
                self._release()
            try:
                delivered = await self._producer().send_batch(batch.builder, topic, partition=partition)
            except Exception as exc:  # noqa: BLE001 - the batch's records fail: their agents stop
                _fail(batch.future, exc)
            else:
                delivered.add_done_callback(partial(_settled, batch))
            # Closed in the step that queued it: the sender counts a batch's records (its
            # idempotence sequence) when it takes it, before building it.
            batch.builder.close()
            waiting.popleft()
            if not batch.handed.done():
                batch.handed.set_result(None)

    async def _ride(self, linger: float) -> None:
        """Until another topic's batch is handed, or ``linger`` seconds at most."""
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lingering.append(wake)
        timer = asyncio.get_running_loop().call_later(linger, _wake, wake)
        try:
            await wake
        finally:
            timer.cancel()
            if wake in self._lingering:  # woken by its timer
                self._lingering.remove(wake)

    def _release(self) -> None:
        """Wake the lingering hand tasks: their batches join the batch being handed now."""
        if self._lingering:
            for wake in self._lingering:
                _wake(wake)
            self._lingering.clear()

    async def handed(self, topic: str, partition: int) -> None:
        """Once every record appended to the partition so far is in the producer's queue, where
        Faust's flush before a commit waits for it."""
        part = self._partitions.get((topic, partition))
        if part is not None and part.current is not None and not part.current.handed.done():
            await asyncio.shield(part.current.handed)


def _settled(batch: Open, done: asyncio.Future[RecordMetadata]) -> None:
    """The producer's future of a batch settled: resolve the batch's own, with the metadata of
    its last record (``done`` carries the first's offset)."""
    if batch.future.done():
        return
    if done.cancelled():
        batch.future.cancel()
    elif (exc := done.exception()) is not None:
        _fail(batch.future, exc)
    else:
        first = done.result()
        batch.future.set_result(first._replace(offset=first.offset + batch.builder.record_count() - 1))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
