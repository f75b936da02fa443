"""Per-source flow control: a token-bucket rate limiter and a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum

log = logging.getLogger(__name__)


class RateLimiter:
    """Token bucket: at most ``rate`` requests per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._clock = clock
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_after`` seconds lets one
    trial request through (half-open); a success closes it, a failure opens it again."""

    def __init__(self, threshold: int = 5, reset_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        self.name = name  # the source, for the log lines of state changes
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self.state = BreakerState.CLOSED
        self.opened = 0  # times it opened, for metrics and tests

    def wait_time(self) -> float:
        """0 when a request may go now; otherwise seconds until the breaker half-opens."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        remaining = self._opened_at + self.reset_after - self._clock()
        if remaining <= 0:
            self.state = BreakerState.HALF_OPEN
            return 0.0
        return remaining

    def success(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.info("source %s: circuit breaker closed: trial request succeeded %.2fs after it opened",
                     self.name, self._clock() - self._opened_at)
        self._failures = 0
        self.state = BreakerState.CLOSED

    def failure(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            if self.state is not BreakerState.OPEN:
                self.opened += 1
                log.warning("source %s: circuit breaker open after %d consecutive failures; "
                            "next trial request in %.2fs", self.name, self._failures, self.reset_after)
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
