"""pipeline.polling.retry: the one retry policy for every provider."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline.polling.retry import RetryPolicy, header_delay
from pipeline.providers.base import is_retriable

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("status", "expected"), [
    (408, True), (409, True), (429, True), (500, True), (502, True), (503, True), (529, True),
    (599, True), (400, False), (401, False), (403, False), (404, False), (422, False), (200, False),
])
def test_retriable_statuses(status: int, expected: bool) -> None:
    assert is_retriable(status) is expected


@pytest.mark.parametrize("said", [
    "insufficient_quota You exceeded your current quota",
    "rate_limit_error Your credit balance is too low",
    "Spend limit reached for this project",
])
def test_429_for_a_spend_limit_is_not_retried(said: str) -> None:
    assert is_retriable(429, said) is False
    assert is_retriable(429, "rate_limit_exceeded Too many requests") is True


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert header_delay({"retry-after-ms": "1500", "Retry-After": "9"}, NOW) == 1.5


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), ("0.25", 0.25), (" 7 ", 7.0), ("-2", 0.0)])
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert header_delay({"Retry-After": value}, NOW) == seconds


def test_retry_after_http_date() -> None:
    when = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    assert header_delay({"retry-after": when}, NOW) == 42.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    when = format_datetime(NOW - timedelta(seconds=42), usegmt=True)
    assert header_delay({"retry-after": when}, NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf"])
def test_unreadable_retry_after_is_ignored(value: str) -> None:
    assert header_delay({"retry-after": value}, NOW) is None


def test_anthropic_exhausted_bucket_reset() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": (NOW + timedelta(seconds=12)).isoformat(),
        "anthropic-ratelimit-tokens-remaining": "5000",
        "anthropic-ratelimit-tokens-reset": (NOW + timedelta(seconds=50)).isoformat(),
    }
    assert header_delay(headers, NOW) == 12.0


def test_no_headers_no_delay() -> None:
    assert header_delay({}, NOW) is None


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(4.0, 0.5 * 2**attempt)
        samples = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # full jitter spans the range


def test_server_delay_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_header_delay=60.0)
    assert policy.delay(0, {"retry-after": "5"}, NOW) == 5.0
    assert policy.delay(0, {"retry-after": "3600"}, NOW) == 60.0
    assert 0.0 <= policy.delay(3, {}, NOW, random.Random(2)) <= policy.max_delay
