"""The poller: discovers and refreshes every configured source's batches, publishes raw envelopes.

Per cycle and source: list pages newest first and stop at the first page whose batches are all
already known and terminal (terminal history is never re-listed); then fetch one by one the active
batches the listing did not reach. A known active batch that answers 404 has vanished: it is
counted and logged. Every request goes through the source's rate limiter and circuit breaker and
the retry policy in :mod:`pipeline.retry`; a request is never sent before a ``Retry-After`` the
provider gave has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from pipeline.breaker import CircuitBreaker, RateLimiter
from pipeline.config import SourceConfig
from pipeline.errors import BatchscopeError, InvalidRecord, SourceError
from pipeline.metrics import SourceMetrics
from pipeline.models import TERMINAL, Envelope
from pipeline.providers.base import read_error
from pipeline.retry import RetryPolicy, header_delay
from pipeline.timeutil import iso_ms, iso_to_ms, to_iso, utcnow

log = logging.getLogger(__name__)

MAX_PAGES = 10_000


class Sink(Protocol):
    async def publish(self, envelopes: list[Envelope]) -> None: ...


@dataclass(slots=True)
class Known:
    status: str
    expires_at: float | None = None  # unix seconds, when the provider said


class SourcePoller:
    """Polls one source with its own aiohttp session, limiter, breaker and retry policy."""

    def __init__(self, source: SourceConfig, sink: Sink, policy: RetryPolicy | None = None) -> None:
        self.source = source
        self._sink = sink
        self.policy = policy or RetryPolicy()
        self.limiter = RateLimiter(source.max_rps, burst=max(1, int(source.max_rps)))
        self.breaker = CircuitBreaker(source.breaker_threshold, source.breaker_reset)
        self.metrics = SourceMetrics(source.name, source.provider)
        self.known: dict[str, Known] = {}
        self._not_before = 0.0  # time.monotonic() before which the provider asked us not to call
        timeout = source.request_timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))

    @property
    def observed(self) -> int:
        return self.metrics.observations

    @property
    def cycles(self) -> int:
        return self.metrics.cycles

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "batchscope/0.1"}
        if self.source.api_key is not None:
            headers["Authorization"] = f"Bearer {self.source.api_key.reveal()}"
        return headers

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(headers=self._headers(), timeout=self._timeout) as session:
            while not stop.is_set():
                await self._cycle(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.next_delay())

    def next_delay(self) -> float:
        """The poll interval, halved (not under 1 s) while an active batch nears its expiry."""
        interval = self.source.poll_interval
        horizon = time.time() + 2 * interval
        near = any(k.status not in TERMINAL and k.expires_at is not None and k.expires_at <= horizon
                   for k in self.known.values())
        return max(min(1.0, interval), interval / 2) if near else interval

    async def _cycle(self, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        retries_before, requests_before = self.metrics.retries, sum(self.metrics.requests.values())
        try:
            published = await self.poll_once(session)
        except BatchscopeError as exc:
            log.warning("source %s: cycle failed: %s", self.source.name, exc)
            return
        m = self.metrics
        m.cycles += 1
        m.last_success = time.monotonic()
        log.info("source %s: cycle %d: %d requests (%d retried), %d observations, %d tracked, "
                 "%d active, breaker %s, %.2fs", self.source.name, m.cycles,
                 sum(m.requests.values()) - requests_before, m.retries - retries_before, published,
                 m.tracked, m.active, m.breaker_state, time.monotonic() - started)

    async def poll_once(self, session: aiohttp.ClientSession) -> int:
        """One cycle: discovery through the list, then stragglers; returns the observations published."""
        seen: set[str] = set()
        await self._discover(session, seen)
        stragglers = [bid for bid, k in self.known.items() if k.status not in TERMINAL and bid not in seen]
        for batch_id in stragglers:
            obj = await self._get_one(session, batch_id)
            if obj is not None:
                await self._publish([obj], seen)
        self._update_gauges()
        return len(seen)

    async def _discover(self, session: aiohttp.ClientSession, seen: set[str]) -> int:
        after: str | None = None
        for page_no in range(1, MAX_PAGES + 1):
            page = await self._request(session, f"{self.source.base_url}/batches", self._params(after))
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise SourceError(f"source {self.source.name}: list response has no 'data' array")
            items = [o for o in data if isinstance(o, dict) and isinstance(o.get("id"), str)]
            history = all(self._known_terminal(o["id"]) for o in items)
            await self._publish(items, seen)
            last = page.get("last_id") or (items[-1]["id"] if items else None)
            if history or not page.get("has_more") or not isinstance(last, str):
                return page_no
            after = last
        raise SourceError(f"source {self.source.name}: more than {MAX_PAGES} pages")

    def _params(self, after: str | None) -> dict[str, str]:
        params = {"limit": str(self.source.page_limit)}
        if after:
            params["after"] = after
        return params

    def _known_terminal(self, batch_id: str) -> bool:
        known = self.known.get(batch_id)
        return known is not None and known.status in TERMINAL

    async def _publish(self, items: list[dict[str, Any]], seen: set[str]) -> None:
        """Publish what is new or not yet terminal; a known terminal batch is not published again."""
        fresh = [o for o in items if o["id"] not in seen and not self._known_terminal(o["id"])]
        if not fresh:
            return
        observed_at = iso_ms(utcnow())
        await self._sink.publish([Envelope(self.source.name, self.source.provider, observed_at, o)
                                  for o in fresh])
        for obj in fresh:
            seen.add(obj["id"])
            status = obj.get("status")
            expires = _unix(obj.get("expires_at"))
            self.known[obj["id"]] = Known(status if isinstance(status, str) else "", expires)
        self.metrics.observations += len(fresh)

    async def _get_one(self, session: aiohttp.ClientSession, batch_id: str) -> dict[str, Any] | None:
        try:
            obj = await self._request(session, f"{self.source.base_url}/batches/{batch_id}", {})
        except SourceError as exc:
            if exc.status == 404:
                self.known.pop(batch_id, None)
                self.metrics.vanished += 1
                log.warning("source %s: active batch %s vanished (404)", self.source.name, batch_id)
                return None
            raise
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise SourceError(f"source {self.source.name}: batch {batch_id}: response is not a batch object")
        return obj

    def _update_gauges(self) -> None:
        m = self.metrics
        m.tracked = len(self.known)
        m.active = sum(1 for k in self.known.values() if k.status not in TERMINAL)
        m.breaker_state = self.breaker.state.value
        m.breaker_opened = self.breaker.opened

    async def _request(self, session: aiohttp.ClientSession, url: str, params: Mapping[str, str]) -> Any:
        """GET with the retry policy, the rate limiter and the circuit breaker."""
        for attempt in range(self.policy.max_attempts):
            await self._wait_for_breaker()
            await self._wait_retry_after()
            await self.limiter.acquire()
            try:
                status, headers, body = await self._get(session, url, params)
            except SourceError as exc:
                delay = self._failed(attempt, exc, {})
            else:
                if status == 200:
                    return self._ok(url, body)
                said = read_error(status, body)
                error = SourceError(f"source {self.source.name}: HTTP {status}: {said.message} (GET {url})",
                                    status=status, retriable=said.retriable)
                delay = self._failed(attempt, error, headers)
            await asyncio.sleep(delay)
        attempts = self.policy.max_attempts
        message = f"source {self.source.name}: {url}: gave up after {attempts} attempts"
        raise SourceError(message, retriable=True)

    def _ok(self, url: str, body: bytes) -> Any:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.metrics.errors["malformed_body"] += 1
            self.breaker.failure()
            message = f"source {self.source.name}: {url}: response is not JSON"
            raise SourceError(message, retriable=True) from None
        self.metrics.requests["ok"] += 1
        self.breaker.success()
        return parsed

    def _failed(self, attempt: int, exc: SourceError, headers: Mapping[str, str]) -> float:
        """Count a failed attempt; raise if it must not be retried, else return the delay."""
        self.metrics.errors[_error_class(exc)] += 1
        self._remember_retry_after(headers)
        if exc.status is None or exc.status >= 500 or exc.status in (408, 429, 529):
            self.breaker.failure()
        if not exc.retriable or attempt + 1 >= self.policy.max_attempts:
            self.metrics.requests["failed"] += 1
            raise exc
        self.metrics.requests["retried"] += 1
        self.metrics.retries += 1
        return self.policy.delay(attempt, headers, utcnow())

    def _remember_retry_after(self, headers: Mapping[str, str]) -> None:
        """A server-given delay holds for the source's next request, even in a later cycle."""
        told = header_delay(headers, utcnow())
        if told is not None:
            until = time.monotonic() + min(told, self.policy.max_header_delay)
            self._not_before = max(self._not_before, until)

    async def _wait_retry_after(self) -> None:
        wait = self._not_before - time.monotonic()
        if wait > 0:  # requests of one source are sequential: nothing moves it while we sleep
            await asyncio.sleep(wait)

    async def _wait_for_breaker(self) -> None:
        while (wait := self.breaker.wait_time()) > 0:
            self.metrics.breaker_state = self.breaker.state.value
            await asyncio.sleep(wait)

    async def _get(self, session: aiohttp.ClientSession, url: str,
                   params: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        try:
            async with session.get(url, params=params) as resp:
                return resp.status, dict(resp.headers), await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"source {self.source.name}: {type(exc).__name__} calling {url}",
                              retriable=True) from exc


def _unix(value: object) -> float | None:
    """Unix seconds from a provider timestamp (seconds or ISO text); None when unreadable."""
    try:
        iso = to_iso(value, "expires_at")
    except InvalidRecord:
        return None
    return iso_to_ms(iso) / 1000.0 if iso else None


def _error_class(exc: SourceError) -> str:
    if exc.status is None:
        return "connection" if "Timeout" not in str(exc) else "timeout"
    if exc.status in (429, 529):
        return f"http_{exc.status}"
    return "http_5xx" if exc.status >= 500 else f"http_{exc.status}"


class Poller:
    """All sources, each on its own task, until :meth:`stop`."""

    def __init__(self, sources: tuple[SourceConfig, ...], sink: Sink) -> None:
        self.pollers = [SourcePoller(s, sink) for s in sources]
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self._stop.clear()
        log.info("polling %d sources: %s", len(self.pollers), ", ".join(p.source.name for p in self.pollers))
        await asyncio.gather(*(p.run(self._stop) for p in self.pollers))

    def stop(self) -> None:
        self._stop.set()

    def metrics(self) -> list[SourceMetrics]:
        return [p.metrics for p in self.pollers]
