"""Delivery of one alert message to its destination: at least once, retried with backoff on
429 and 5xx (a ``Retry-After`` the destination gives is honoured), given up after
``max_attempts`` with a reason that never quotes the destination's URL (a Slack webhook URL is
a credential) nor its answer's body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from pipeline.alerts.messages import body, signed_headers
from pipeline.alerts.rules import Rule
from pipeline.core.secret import Secret
from pipeline.polling.retry import RetryPolicy

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=15.0)
RETRIED = frozenset({408, 425, 429})  # and every 5xx


@dataclass(frozen=True, slots=True)
class Target:
    """A rule's destination with its secrets read: the URL, and the signing key of a webhook."""

    rule: Rule
    url: Secret
    key: bytes | None = None


class Courier:
    """Posts messages; the session, the retry policy, the clock and the sleep are given (tests
    make them instant)."""

    def __init__(self, session: aiohttp.ClientSession, policy: RetryPolicy | None = None, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._session = session
        self._policy = policy or RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=30.0,
                                             max_header_delay=300.0)
        self._clock = clock
        self._sleep = sleep
        self.retries = 0

    async def deliver(self, target: Target, msg_id: str, message: Mapping[str, Any]) -> str | None:
        """Post ``message``; None once the destination answered 2xx, else why it was given up."""
        payload = body(message)
        reason = "not tried"
        for attempt in range(self._policy.max_attempts):
            if attempt:
                self.retries += 1
            status, headers, reason = await self._post(target, msg_id, payload)
            if status is not None and 200 <= status < 300:
                return None
            if status is not None and status not in RETRIED and status < 500:
                return reason  # the destination refused it for good (a bad URL, a revoked hook)
            if attempt + 1 < self._policy.max_attempts:
                now = datetime.fromtimestamp(self._clock(), UTC)
                await self._sleep(self._policy.delay(attempt, headers, now))
        return f"gave up after {self._policy.max_attempts} attempts; the last: {reason}"

    async def _post(self, target: Target, msg_id: str,
                    payload: bytes) -> tuple[int | None, Mapping[str, str], str]:
        """One POST: (status or None, the answer's headers, a reason safe to log)."""
        headers = ({"content-type": "application/json"} if target.key is None
                   else signed_headers(target.key, msg_id, int(self._clock()), payload))
        try:
            async with self._session.post(target.url.reveal(), data=payload, headers=headers,
                                          allow_redirects=False, timeout=TIMEOUT) as resp:
                await resp.content.readany()  # a few bytes at most: the body is not needed
                return resp.status, dict(resp.headers), f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:  # str(exc) may quote the URL: the class only
            return None, {}, f"{type(exc).__name__} (the destination did not answer)"
