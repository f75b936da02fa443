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

    __slots__ = ("_send", "futures", "owners", "sizes")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.futures: list[Awaitable[Any]] = []
        self.owners: list[int] = []
        self.sizes: list[int] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   owner: int) -> ProducerSendError | None:
        """Hand one record to the producer; the producer's refusal, if it refused it at once."""
        try:
            future = await self._send(topic, key, value, partition, None, None)
        except ProducerSendError as exc:
            return exc
        self.futures.append(future)
        self.owners.append(owner)
        self.sizes.append(len(value) + (len(key) if key else 0))
        return None

    def refused(self, results: list[Any], what: str) -> dict[int, str]:
        """The observations whose outputs the broker refused for their size, with the reason;
        raises the first other failure."""
        out: dict[int, str] = {}
        for owner, size, result in zip(self.owners, self.sizes, results, strict=True):
            if isinstance(result, BaseException):
                out.setdefault(owner, refusal(result, what, size))
        return out
