"""Summing token usage from a batch's results file, streamed: the core of the results reader.

Pure (no I/O): the caller feeds the file's bytes in chunks as they arrive (:meth:`ResultsTally.feed`)
and asks for the batch's usage at the end (:meth:`ResultsTally.usage`); the file is never held
whole, only the current line. Capped in bytes and lines (:class:`ResultsTooLarge`). Anthropic
message batch results: one JSON object a line, ``result.type`` ``succeeded`` with
``result.message.usage``, or ``errored`` / ``canceled`` / ``expired`` (not billed, no usage);
Gemini batch responses files: :class:`GeminiTally`.

A file that cannot be read whole (a line that is not a result, a count that is not a count, the
caps) gives no figure: :data:`~pipeline.core.usage.NO_USAGE`, never a partial sum. The reader
that fetches the file once a batch ended and feeds it here is :mod:`pipeline.polling.results`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from pipeline.core.usage import MAX_TOKENS, NO_USAGE, Usage

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of results
DEFAULT_MAX_LINES = 10_000_000
MAX_LINE = 32 << 20  # one result line over 32 MiB is refused (Anthropic's own requests cap at 32 MB)
NOT_BILLED = frozenset({"errored", "canceled", "expired"})


class ResultsTooLarge(ValueError):
    """The results file passed a cap; nothing it held counts."""


@dataclass(slots=True)
class ResultsTally:
    """The running sums of one Anthropic results file (``input_tokens`` as the snapshot means it:
    uncached + cache writes + cache reads; ``cached_input_tokens``: the cache reads)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_lines: int = DEFAULT_MAX_LINES
    bytes_read: int = 0
    lines: int = 0
    succeeded: int = 0
    not_billed: int = 0
    unreadable: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    models: Counter[str] = field(default_factory=Counter)
    _rest: bytes = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the file; raises :class:`ResultsTooLarge` past a cap."""
        self.bytes_read += len(chunk)
        if self.bytes_read > self.max_bytes:
            raise ResultsTooLarge(f"results over {self.max_bytes} bytes")
        lines = (self._rest + chunk if self._rest else chunk).split(b"\n")
        self._rest = lines.pop()  # the line still open (b"" after a newline)
        for line in lines:
            self._line(line)
        if len(self._rest) > MAX_LINE:
            raise ResultsTooLarge(f"a results line over {MAX_LINE} bytes")

    def usage(self) -> Usage:
        """The batch's usage from the whole file (fed to its end), or ``NO_USAGE`` if any of it
        could not be read."""
        if self._rest.strip():
            self._line(self._rest)
            self._rest = b""
        if self.unreadable or self.input_tokens > MAX_TOKENS or self.output_tokens > MAX_TOKENS:
            return NO_USAGE
        return Usage(self.input_tokens, self.cached_input_tokens, self.output_tokens, self.reasoning_tokens,
                     "results")

    @property
    def model(self) -> str | None:
        """The model of every succeeded request, or ``None`` when they name several (or none)."""
        return next(iter(self.models)) if len(self.models) == 1 else None

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        self.lines += 1
        if self.lines > self.max_lines:
            raise ResultsTooLarge(f"results over {self.max_lines} lines")
        self._result(line)

    def _add(self, inputs: int, cached: int, outputs: int, reasoning: int, model: object) -> None:
        """One billed request's counts (already checked)."""
        self.succeeded += 1
        self.input_tokens += inputs
        self.cached_input_tokens += cached
        self.output_tokens += outputs
        self.reasoning_tokens += reasoning
        self.models[model if isinstance(model, str) else ""] += 1

    def _result(self, line: bytes) -> None:
        """One Anthropic result line."""
        try:
            result = orjson.loads(line)["result"]
            kind = result["type"]
            if kind in NOT_BILLED:
                self.not_billed += 1
                return
            message = result["message"]
            used = message["usage"]
            fresh, written = used["input_tokens"], used.get("cache_creation_input_tokens") or 0
            read, out = used.get("cache_read_input_tokens") or 0, used["output_tokens"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            return
        counts = (fresh, written, read, out)
        if kind != "succeeded" or not all(type(n) is int and n >= 0 for n in counts):
            self.unreadable += 1
            return
        self._add(fresh + written + read, read, out, 0, message.get("model"))


@dataclass(slots=True)
class GeminiTally(ResultsTally):
    """The running sums of one Gemini batch responses file: one ``{"key", "response"}`` (with
    ``response.usageMetadata``) or ``{"key", "error"}`` (a failed request: no usage, not billed)
    a line. ``input_tokens``: ``promptTokenCount`` (cached included), ``cached_input_tokens``:
    ``cachedContentTokenCount``, ``output_tokens``: ``candidatesTokenCount`` + ``thoughtsTokenCount``
    (thinking is billed as output), ``reasoning_tokens``: ``thoughtsTokenCount``."""

    def _result(self, line: bytes) -> None:
        try:
            entry = orjson.loads(line)
            if "response" not in entry and "error" in entry:
                self.not_billed += 1
                return
            response = entry["response"]
            used = response["usageMetadata"]
            prompt, cached = used["promptTokenCount"], used.get("cachedContentTokenCount") or 0
            shown, thoughts = used.get("candidatesTokenCount") or 0, used.get("thoughtsTokenCount") or 0
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            return
        counts = (prompt, cached, shown, thoughts)
        if not all(type(n) is int and n >= 0 for n in counts) or cached > prompt:
            self.unreadable += 1
            return
        self._add(prompt, cached, shown + thoughts, thoughts, response.get("modelVersion"))
