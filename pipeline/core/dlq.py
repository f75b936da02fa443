"""Dead letters are data: a record an agent cannot process becomes a DLQ record with its reason."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pipeline.core.codec import orjson_dumps
from pipeline.core.errors import InvalidRecord
from pipeline.core.timeutil import iso_ms, utcnow

MAX_REASON = 1000
# Bytes of the original a dead letter keeps: with base64 a dead letter stays far below Kafka's
# default 1 MB record limit, so a 10 MB hostile record cannot make its own dead letter unsendable.
# A longer original is cut; ``original_size`` and ``original_sha256`` still identify it.
MAX_ORIGINAL = 256 * 1024
MAX_KEY = 1000


def dead_letter(*, reason: str, stage: str, topic: str, partition: int, offset: int,
                original: bytes | None, key: bytes | None, source: str | None = None,
                index: int | None = None) -> bytes:
    """The JSON body of a ``<prefix>.dlq`` record; ``original`` is kept byte-exact (base64).

    ``index`` is the observation's position in a record of many (``docs/records.md``); then
    ``original`` is that observation alone."""
    record: dict[str, Any] = {
        "reason": reason[:MAX_REASON],
        "stage": stage,
        "source": source[:MAX_KEY] if source is not None else None,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        **({"index": index} if index is not None else {}),
        "key": key[:MAX_KEY].decode("utf-8", "replace") if key is not None else None,
        "original_b64": base64.b64encode(original[:MAX_ORIGINAL]).decode() if original is not None else None,
        "dead_at": iso_ms(utcnow()),
    }
    if original is not None and len(original) > MAX_ORIGINAL:
        record.update(original_size=len(original), original_truncated=True,
                      original_sha256=hashlib.sha256(original).hexdigest())
    return orjson_dumps(record)


def reason_of(exc: Exception) -> str:
    """The DLQ reason: an :class:`InvalidRecord` says why; anything else is named as unexpected."""
    return str(exc) if isinstance(exc, InvalidRecord) else f"unexpected {type(exc).__name__}: {exc}"


def dlq_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a dead letter: the original's, cut to :data:`MAX_KEY` bytes (a hostile key
    of hundreds of KiB must not make its own dead letter unsendable)."""
    return key[:MAX_KEY] if key is not None else None


def source_of(key: bytes | None) -> str | None:
    """The source name from a ``source/batch_id`` key, when there is one."""
    if not key:
        return None
    text = key.decode("utf-8", "replace")
    return text.split("/", 1)[0] if "/" in text else None
