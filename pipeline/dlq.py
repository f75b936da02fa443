"""Dead letters are data: a record an agent cannot process becomes a DLQ record with its reason."""

from __future__ import annotations

import base64
from typing import Any

from pipeline.codec import orjson_dumps
from pipeline.timeutil import iso_ms, utcnow

MAX_REASON = 1000


def dead_letter(*, reason: str, stage: str, topic: str, partition: int, offset: int,
                original: bytes | None, key: bytes | None, source: str | None = None) -> bytes:
    """The JSON body of a ``<prefix>.dlq`` record; ``original`` is kept byte-exact (base64)."""
    record: dict[str, Any] = {
        "reason": reason[:MAX_REASON],
        "stage": stage,
        "source": source,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "original_b64": base64.b64encode(original).decode() if original is not None else None,
        "dead_at": iso_ms(utcnow()),
    }
    return orjson_dumps(record)


def source_of(key: bytes | None) -> str | None:
    """The source name from a ``source/batch_id`` key, when there is one."""
    if not key:
        return None
    text = key.decode("utf-8", "replace")
    return text.split("/", 1)[0] if "/" in text else None
