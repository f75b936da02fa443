"""Capped exponential backoff with full jitter: the one backoff of the poller's retries and the
sink's ClickHouse retries."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** max(attempt, 0)))
    return (rng or random).uniform(0.0, ceiling)
