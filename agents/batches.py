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

A record without a partition (a dead letter: its key chooses it) goes through Faust's ``send``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata
from faust.exceptions import ProducerSendError

from agents.outputs import Send

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

    def __init__(self, producer: Callable[[], AIOKafkaProducer], fallback: Send, max_request: int) -> None:
        self._producer = producer  # the aiokafka producer Faust starts (looked up on first use)
        self._fallback = fallback
        self._max_request = max_request
        self._partitions: dict[TP, Partition] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: None, headers: None) -> Awaitable[Any]:
        """Append one record to its partition's open batch; the batch's delivery future (its
        result: the metadata of the batch's last record). A record the producer would refuse for
        its size raises :class:`ProducerSendError`, as Faust's ``send`` does."""
        if partition is None:
            return await self._fallback(topic, key, value, partition, timestamp, headers)
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

    def _open(self, topic: str, partition: int, part: Partition) -> Open:
        loop = asyncio.get_running_loop()
        current = Open(self._producer().create_batch(), loop.create_future(), loop.create_future())
        part.current = current
        part.waiting.append(current)
        if part.task is None or part.task.done():
            part.task = asyncio.ensure_future(self._hand(topic, partition, part))
        return current

    async def _hand(self, topic: str, partition: int, part: Partition) -> None:
        """Hand the partition's waiting batches to the producer, in order, one at a time."""
        waiting = part.waiting
        while waiting:
            batch = waiting[0]
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


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
