"""The records one input record makes, handed to the producer, and which observation each belongs to.

An agent hands a record's outputs to the producer without waiting (:mod:`agents.inflight`), so a
refusal can come at once (the producer's own size check) or later (the broker's
``max.message.bytes``). Kafka refusing a record for its size is the data's fault: the
observation it belongs to becomes a dead letter and the others go on. Anything else (Kafka
unreachable) is not: it is raised, the worker stops and its records are read again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError

SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
Send = Callable[[str, bytes | None, bytes, int | None, None, None], Awaitable[Awaitable[Any]]]


def refusal(exc: BaseException, what: str, size: int) -> str:
    """The dead-letter reason of a record Kafka refused for its size; anything else is re-raised
    (Kafka unreachable: the worker stops and its records are read again, never dead-lettered)."""
    cause = exc if isinstance(exc, SIZE_ERRORS) else exc.__cause__
    if not isinstance(cause, SIZE_ERRORS):
        raise exc
    return f"Kafka refused a {what} of about {size} bytes: {type(cause).__name__}"


class Outputs:
    """The delivery futures of one input record's outputs, each with the observation it belongs to
    (its index in the record; -1 for a dead letter) and its size."""

    __slots__ = ("_send", "futures", "owners", "records", "sizes")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.futures: list[Awaitable[Any]] = []
        self.owners: list[int] = []
        self.sizes: list[int] = []
        self.records: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   owner: int) -> ProducerSendError | None:
        """Hand one record to the producer; the producer's refusal, if it refused it at once."""
        try:
            future = await self._send(topic, key, value, partition, None, None)
        except ProducerSendError as exc:
            return exc
        self.futures.append(future)
        self.records.append((topic, key, value, partition))
        self.owners.append(owner)
        self.sizes.append(len(value) + (len(key) if key else 0))
        return None

    async def refused(self, results: list[Any], what: str) -> dict[int, str]:
        """The observations whose outputs the broker refused for their size, with the reason;
        raises the first other failure. A refused output is sent once more alone first: the
        broker refuses a whole batch for one record too large, so the records that shared its
        batch were refused with it (the Publisher does the same)."""
        out: dict[int, str] = {}
        for owner, size, record, result in zip(self.owners, self.sizes, self.records, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            refusal(result, what, size)  # raises anything but a size refusal
            try:
                await (await self._send(*record, None, None))
            except Exception as exc:  # noqa: BLE001 - refused alone too: a dead letter; else raised
                out.setdefault(owner, refusal(exc, what, size))
        return out
