"""Hostile payloads: what a broken or malicious provider (or a bad producer) can put in front of
the pipeline. Each is one provider batch object's bytes as an API could answer them; ``raw_record``
splices it byte for byte into a raw envelope, so invalid bytes stay invalid.

Used by reliability scenario 4, straight into ``<prefix>.raw`` (``raw_record``) and served by the
simulator (``simulator.hostile``): a kind in :data:`OBJECT_KINDS` parses as one JSON object and is
served as an element of a list page (the poller publishes it, the normalise agent dead-letters
it; one over the poller's record limit is refused and counted); any other is served as a whole
response body (the poller counts an error for the source and retries later).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import orjson

MB = 1024 * 1024
VALID = {"id": "batch_hostile", "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
         "input_file_id": "file-in", "completion_window": "24h", "status": "in_progress",
         "created_at": 1790000000, "expires_at": 1790086400,
         "request_counts": {"total": 10, "completed": 1, "failed": 0}, "metadata": {}, "model": "gpt-4o-mini"}


def _valid(**changes: object) -> bytes:
    return orjson.dumps({**VALID, **changes})


def _kinds(i: int) -> list[tuple[str, bytes]]:
    """The small hostile kinds; ``i`` varies them so no two records are identical."""
    body = _valid(id=f"batch_h{i}")
    return [
        ("truncated", body[: 5 + i % (len(body) - 10)]),
        ("bad_utf8", body.replace(b"gpt-4o-mini", b"gpt-\xff\xfe\xc3(-mini")),
        ("nan", body.replace(b'"total":10', b'"total":NaN')),
        ("infinity", body.replace(b'"completed":1', b'"completed":-Infinity')),
        ("wrong_type_id", _valid(id=i)),
        ("wrong_type_status", _valid(id=f"batch_h{i}", status=["in_progress"])),
        ("wrong_type_counts", _valid(id=f"batch_h{i}", request_counts="lots")),
        ("wrong_type_created", _valid(id=f"batch_h{i}", created_at="yesterday")),
        ("wrong_type_metadata", _valid(id=f"batch_h{i}", metadata=[1, 2, 3])),
        ("not_an_object", b'["batch_h%d"]' % i),
        ("empty", b""),
        ("null", b"null"),
    ]


def bodies(count: int, big: int = 2, deep: int = 100) -> Iterator[tuple[str, bytes]]:
    """``count`` hostile bodies: ``big`` of each 10 MB kind and of a 2 MB huge-metadata object,
    ``deep`` of each 10,000-deep nesting (20 and 60 KB each), the rest cycling through the small
    kinds (a few hundred bytes each)."""
    large = [("10mb_garbage", b"\x00\x01not json" * (10 * MB // 10)),
             ("10mb_string", _valid(model="x" * (10 * MB))),
             ("huge_metadata", _valid(metadata={f"k{j}": "v" * 100 for j in range(20_000)}))]
    nested = [("deep_array", b"[" * 10_000 + b"]" * 10_000),
              ("deep_object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000)]
    fixed = [kind for kind in large for _ in range(big)] + [kind for kind in nested for _ in range(deep)]
    yield from fixed
    small = (k for i in itertools.count() for k in _kinds(i))
    yield from itertools.islice(small, count - len(fixed))


# Kinds that parse as one JSON object: served inside list pages, the others as whole bodies.
OBJECT_KINDS = frozenset({"wrong_type_id", "wrong_type_status", "wrong_type_counts", "wrong_type_created",
                          "wrong_type_metadata", "10mb_string", "huge_metadata"})


def served(count: int) -> list[tuple[str, bytes]]:
    """``count`` hostile bodies for the simulator: one of each large kind from 20 on, a 20th of
    each deep nesting, the rest small."""
    return list(bodies(count, big=1 if count >= 20 else 0, deep=count // 20))


def raw_record(kind: str, body: bytes, i: int) -> tuple[bytes, bytes]:
    """(key, value) of a raw envelope whose payload is ``body``, spliced in as bytes."""
    head = b'{"source":"hostile","provider":"openai","observed_at":"2026-11-29T12:00:00.000Z","payload":'
    return f"hostile/{kind}-{i}".encode(), head + body + b"}"
