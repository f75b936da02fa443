"""One retry policy for every provider (docs/providers.md, "Retries").

The delay comes from ``retry-after-ms``, else ``retry-after`` (seconds, possibly fractional, or an
HTTP date), else the reset time of an exhausted Anthropic ``anthropic-ratelimit-*`` bucket;
otherwise capped exponential backoff with full jitter. 408, 409, 429, 5xx and 529 are retried;
401/403 and a 429 that says a spend limit was reached are not.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from pipeline.core.backoff import full_jitter
from pipeline.core.errors import InvalidRecord
from pipeline.core.timeutil import parse_iso


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_header_delay: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return full_jitter(attempt, self.base_delay, self.max_delay, rng)

    def delay(self, attempt: int, headers: Mapping[str, str], now: datetime,
              rng: random.Random | None = None) -> float:
        """How long to wait before the next attempt; a server-given delay wins over backoff."""
        told = header_delay(headers, now)
        if told is not None:
            return min(told, self.max_header_delay)
        return self.backoff(attempt, rng)


def header_delay(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said nonsense)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = _number(lower.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    after = lower.get("retry-after")
    if after is not None:
        seconds = _number(after)
        if seconds is not None:
            return max(seconds, 0.0)
        return _until_http_date(after, now)
    return _anthropic_reset(lower, now)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _until_http_date(text: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def _anthropic_reset(headers: Mapping[str, str], now: datetime) -> float | None:
    """The latest reset among exhausted ``anthropic-ratelimit-<bucket>-remaining: 0`` buckets."""
    waits = []
    for name, value in headers.items():
        if name.startswith("anthropic-ratelimit-") and name.endswith("-remaining") and value.strip() == "0":
            reset = headers.get(name[: -len("remaining")] + "reset")
            if reset:
                try:
                    waits.append(max((parse_iso(reset) - now).total_seconds(), 0.0))
                except InvalidRecord:
                    continue
    return max(waits) if waits else None
