"""The results files of the simulated Anthropic and Gemini batches, and their ground truth.

An ended Anthropic batch serves ``GET .../messages/batches/{id}/results``: JSONL, one line per
request, as Anthropic writes it: ``succeeded`` with the message's ``usage`` (the per-request
counts of :func:`simulator.usage.per_request`, split into uncached, cache-write and cache-read
input tokens), then ``errored``, ``canceled`` and ``expired`` lines (not billed, no usage), as many
as the batch object's final ``request_counts`` say. Each batch's requests name one Claude model
(:data:`CLAUDE`, chosen from its simulated model; one is unpriced on purpose). ``/_sim/truth``
gives the sums a reader must find (:func:`truth`): exact tokens, so a test prices them itself.

An ended Gemini batch with an ``output.responsesFile`` serves it at
``GET .../download/v1beta/{responsesFile}:download?alt=media``: one ``{"key", "response"}`` line
per successful request, with ``usageMetadata`` (prompt tokens, cached ones among them, candidate
and thought tokens), then one ``{"key", "error"}`` line per failed request (:func:`gemini_lines`,
:func:`gemini_truth`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from simulator.fleet import SimBatch
from simulator.usage import per_request

# The model each simulated model's batches name in their Anthropic results.
CLAUDE = {"gpt-4o-mini": "claude-haiku-4-5-20251001", "gpt-4.1": "claude-sonnet-4-5-20250929",
          "o4-mini": "claude-opus-4-5-20251101", "text-embedding-3-small": "claude-3-haiku-20240307"}
LINES_PER_CHUNK = 2000
NOT_BILLED = ("errored", "canceled", "expired")
ERRORED = {"type": "error", "error": {"type": "invalid_request_error", "message": "simulated error"}}


def split(batch: SimBatch) -> tuple[int, int, int, int]:
    """One succeeded request's (uncached input, cache write, cache read, output) tokens."""
    inputs, cached, outputs, _ = per_request(batch)
    written = (inputs - cached) // 5 if batch.index % 2 else 0
    return inputs - cached - written, written, cached, outputs


def lines(batch: SimBatch, counts: dict[str, int]) -> Iterator[bytes]:
    """The results file in chunks of :data:`LINES_PER_CHUNK` lines; ``counts``: the ended batch
    object's ``request_counts``."""
    fresh, written, read, out = split(batch)
    message = {"id": "msg_sim", "type": "message", "role": "assistant", "model": CLAUDE[batch.model],
               "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": fresh, "cache_creation_input_tokens": written,
                         "cache_read_input_tokens": read, "output_tokens": out}}
    bodies = [(counts["succeeded"], orjson.dumps({"type": "succeeded", "message": message}))]
    for kind in NOT_BILLED:
        result = {"type": kind, "error": ERRORED} if kind == "errored" else {"type": kind}
        bodies.append((counts[kind], orjson.dumps(result)))
    chunk: list[bytes] = []
    n = 0
    for count, body in bodies:
        for _ in range(count):
            chunk.append(b'{"custom_id":"req-%d","result":%s}\n' % (n, body))
            n += 1
            if len(chunk) == LINES_PER_CHUNK:
                yield b"".join(chunk)
                chunk = []
    if chunk:
        yield b"".join(chunk)


def truth(batch: SimBatch, counts: dict[str, int]) -> dict[str, Any]:
    """The model and usage a reader of the whole file finds (the truth's ``model`` and ``usage``)."""
    fresh, written, read, out = split(batch)
    n = counts["succeeded"]
    return {"model": CLAUDE[batch.model] if n else None,  # no succeeded line: the file names no model
            "usage": {"input_tokens": (fresh + written + read) * n, "cached_input_tokens": read * n,
                      "output_tokens": out * n, "reasoning_tokens": 0}}


def thoughts(batch: SimBatch) -> int:
    """One successful Gemini request's thought tokens (part of its output tokens)."""
    return per_request(batch)[2] // 4 if batch.index % 2 else 0


def gemini_lines(batch: SimBatch, succeeded: int, failed: int) -> Iterator[bytes]:
    """A Gemini responses file in chunks of :data:`LINES_PER_CHUNK` lines."""
    inputs, cached, outputs, _ = per_request(batch)
    thought = thoughts(batch)
    response = orjson.dumps({
        "candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": inputs, "cachedContentTokenCount": cached,
                          "candidatesTokenCount": outputs - thought, "thoughtsTokenCount": thought,
                          "totalTokenCount": inputs + outputs},
        "modelVersion": "gemini-2.5-flash"})
    error = orjson.dumps({"code": 3, "message": "simulated error", "status": "INVALID_ARGUMENT"})
    chunk: list[bytes] = []
    for n in range(succeeded + failed):
        body = b'"response":%s' % response if n < succeeded else b'"error":%s' % error
        chunk.append(b'{"key":"req-%d",%s}\n' % (n, body))
        if len(chunk) == LINES_PER_CHUNK:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


def gemini_truth(batch: SimBatch, succeeded: int) -> dict[str, Any]:
    """The usage a reader of the whole responses file finds."""
    inputs, cached, outputs, _ = per_request(batch)
    n = succeeded
    return {"usage": {"input_tokens": inputs * n, "cached_input_tokens": cached * n,
                      "output_tokens": outputs * n, "reasoning_tokens": thoughts(batch) * n}}
