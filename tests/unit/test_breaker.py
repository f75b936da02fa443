"""pipeline.polling.breaker: the per-source rate limiter and circuit breaker."""

from __future__ import annotations

import logging

import pytest

from pipeline.polling.breaker import BreakerState, CircuitBreaker, RateLimiter
from tests.support.clocks import FakeClock


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read through a call, so mypy does not narrow the state across the breaker's calls."""
    return breaker.state


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = FakeClock(100.0)
    breaker = CircuitBreaker(threshold=3, reset_after=10.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.wait_time() == 0.0
    breaker.failure()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.opened == 1
    assert breaker.wait_time() == 10.0
    clock.now += 4.0
    assert breaker.wait_time() == 6.0
    clock.now += 6.0
    assert breaker.wait_time() == 0.0
    assert state(breaker) is BreakerState.HALF_OPEN


def test_half_open_failure_reopens_and_success_closes() -> None:
    clock = FakeClock(100.0)
    breaker = CircuitBreaker(threshold=2, reset_after=5.0, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 5.0
    breaker.wait_time()
    breaker.failure()  # the trial request failed
    assert state(breaker) is BreakerState.OPEN
    assert breaker.opened == 2
    clock.now += 5.0
    breaker.wait_time()
    breaker.success()
    assert state(breaker) is BreakerState.CLOSED
    breaker.failure()
    assert state(breaker) is BreakerState.CLOSED  # the failure count restarted


def test_state_changes_are_logged_with_the_source(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(100.0)
    breaker = CircuitBreaker(threshold=2, reset_after=5.0, clock=clock, name="acct-1")
    with caplog.at_level(logging.INFO, logger="pipeline.polling.breaker"):
        breaker.success()  # closed stays closed: nothing to say
        breaker.failure()
        breaker.failure()
        breaker.failure()  # already open: said once
        clock.now += 6.0
        breaker.wait_time()
        breaker.success()
    assert [r.getMessage() for r in caplog.records] == [
        "source acct-1: circuit breaker open after 2 consecutive failures; next trial request in 5.00s",
        "source acct-1: circuit breaker closed: trial request succeeded 6.00s after it opened",
    ]


def test_success_resets_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=3, clock=FakeClock(100.0))
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert state(breaker) is BreakerState.CLOSED


async def test_rate_limiter_spends_burst_then_waits_for_tokens() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(rate=1000.0, burst=3, clock=clock)
    for _ in range(3):
        await limiter.acquire()
    assert limiter._tokens < 1.0
    clock.now += 0.0025  # two and a half tokens
    await limiter.acquire()
    await limiter.acquire()
    assert limiter._tokens < 1.0
