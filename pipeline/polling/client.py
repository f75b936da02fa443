"""One source's provider HTTP client: every request the poller sends, and how it fails.

A request waits for the circuit breaker, for any ``Retry-After`` the provider gave (even in an
earlier cycle) and for the rate limiter; it is signed (SigV4, :mod:`pipeline.polling.sigv4`) when
the provider's adapter says so, else the session carries the adapter's auth headers; it goes
through :mod:`pipeline.polling.fetch` (no redirect followed, bodies capped in bytes and in JSON
values); a failure is retried by the :class:`~pipeline.polling.retry.RetryPolicy`. It counts
requests by outcome, errors by class, retries and the breaker's state in the source's metrics.
No secret reaches a message: the key (each SigV4 part too) and any userinfo of ``base_url`` are
masked wherever a provider's text is repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from pipeline.config import SourceConfig
from pipeline.core.errors import SourceError
from pipeline.core.timeutil import utcnow
from pipeline.polling import fetch, sigv4
from pipeline.polling.breaker import CircuitBreaker, RateLimiter
from pipeline.polling.metrics import SourceMetrics
from pipeline.polling.retry import RetryPolicy, header_delay
from pipeline.providers.base import Adapter

# The poller's log lines keep the poller's logger name, whichever of its modules writes them.
log = logging.getLogger("pipeline.polling.poller")

MAX_MESSAGE = 500  # characters of an error message logged
Answer = tuple[int, dict[str, str], bytes | bytearray]  # status, headers, body (empty when streamed)


class Feeds(Protocol):
    def feed(self, chunk: bytes) -> None: ...


Feed = TypeVar("Feed", bound=Feeds)


class ProviderClient:
    """GETs to one source with its limiter, breaker, retry policy and credentials."""

    def __init__(self, source: SourceConfig, adapter: Adapter, policy: RetryPolicy,
                 metrics: SourceMetrics) -> None:
        self.source = source
        self.adapter = adapter
        self.policy = policy
        self.metrics = metrics
        self.limiter = RateLimiter(source.max_rps, burst=max(1, int(source.max_rps)))
        self.breaker = CircuitBreaker(source.breaker_threshold, source.breaker_reset, name=source.name)
        self._aws = self._aws_credentials()
        self._region = sigv4.region_of(source.base_url)
        self._not_before = 0.0  # time.monotonic() before which the provider asked us not to call
        self._max_body = source.max_body_mib * fetch.MIB
        self._secrets = self._secret_texts()
        timeout = source.request_timeout
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))

    def _aws_credentials(self) -> sigv4.Credentials | None:
        if self.adapter.signing != "sigv4" or self.source.api_key is None:
            return None
        return sigv4.credentials(self.source.api_key, f"source {self.source.name}: api key")

    def _secret_texts(self) -> tuple[str, ...]:
        """What a provider's text must never repeat in a log line or an error: the key (and,
        for SigV4, each of its parts) and any userinfo in ``base_url``."""
        key = self.source.api_key.reveal() if self.source.api_key is not None else ""
        parts = key.split(":", 2) if self.adapter.signing == "sigv4" else []
        return tuple(s for s in (key, *parts, *fetch.url_secrets(self.source.base_url)) if s)

    def masked(self, text: str) -> str:
        """``text`` cut to ``MAX_MESSAGE`` characters, every secret of the source masked."""
        return fetch.mask(text[:MAX_MESSAGE], self._secrets)

    def headers(self) -> dict[str, str]:
        """The session's headers: the adapter's auth headers from the source's secret."""
        headers = {"Accept": "application/json", "User-Agent": "batchscope/0.1"}
        if self.source.api_key is not None and self.adapter.signing is None:
            headers.update(self.adapter.auth(self.source.api_key))
        return headers

    def session(self) -> aiohttp.ClientSession:
        """The source's own session: its headers and timeout."""
        return aiohttp.ClientSession(headers=self.headers(), timeout=self.timeout)

    def update_gauges(self) -> None:
        self.metrics.breaker_state = self.breaker.state.value
        self.metrics.breaker_opened = self.breaker.opened

    async def get_one(self, session: aiohttp.ClientSession, batch_id: str) -> dict[str, Any]:
        """One batch object by its id (a 404 raises, as :class:`SourceError` with that status)."""
        path, params = self.adapter.batch_path(batch_id), dict(self.adapter.fixed_params)
        obj = await self.request(session, path, params)
        if not isinstance(obj, dict) or self.adapter.batch_id(obj) is None:
            self.metrics.errors["malformed_body"] += 1
            raise SourceError(f"source {self.source.name}: batch {batch_id}: response is not a batch object")
        return obj

    def url(self, path: str, params: Mapping[str, str]) -> str:
        """The URL exactly as sent (so that a SigV4 signature covers what the server sees)."""
        query = urlencode(list(params.items()), quote_via=quote, safe="-_.~")
        return f"{self.source.base_url}{path}{'?' + query if query else ''}"

    async def request(self, session: aiohttp.ClientSession, path: str, params: Mapping[str, str]) -> Any:
        """GET with the retry policy, the rate limiter and the circuit breaker; the parsed JSON."""
        url = self.url(path, params)
        body = await self._retrying(url, lambda: self._get(session, url))
        return self._ok(url, body)

    async def stream(self, session: aiohttp.ClientSession, url: str, start: Callable[[], Feed]) -> Feed:
        """GET ``url`` (on the source's host) as :meth:`request` does (retries, rate limiter,
        breaker, no redirect), its 200 body fed as it arrives to a fresh ``start()`` per attempt,
        never held whole; the feed of the attempt that succeeded. A feed that raises
        ``ValueError`` (its cap passed) ends the read: :class:`~pipeline.polling.fetch.Refused` of
        kind ``results_too_large``, not retried."""
        fed: list[Feed] = []

        async def once() -> tuple[int, dict[str, str], bytes | bytearray]:
            fed[:] = [start()]
            return await self._stream(session, url, fed[0])

        await self._retrying(url, once)
        self.metrics.requests["ok"] += 1
        self.breaker.success()
        return fed[0]

    async def _retrying(self, url: str, attempt_once: Callable[[], Awaitable[Answer]]) -> bytes | bytearray:
        """The body of the first attempt answered 200, waiting before each for the breaker, any
        ``Retry-After`` and the rate limiter; a failure retried by the policy."""
        for attempt in range(self.policy.max_attempts):
            await self._wait_for_breaker()
            await self._wait_retry_after()
            await self.limiter.acquire()
            try:
                status, headers, body = await attempt_once()
            except SourceError as exc:
                delay = self._failed(attempt, exc, {})
            else:
                if status == 200:
                    return body
                delay = self._failed(attempt, self._http_error(url, status, body), headers)
            await asyncio.sleep(delay)
        attempts = self.policy.max_attempts
        message = f"source {self.source.name}: {url}: gave up after {attempts} attempts"
        raise SourceError(message, retriable=True)

    def _http_error(self, url: str, status: int, body: bytes | bytearray) -> SourceError:
        """A non-200 answer, as the adapter reads its body (the provider's text masked)."""
        said = self.adapter.read_error(status, bytes(body))
        where = url.split("?", 1)[0]
        return SourceError(f"source {self.source.name}: HTTP {status}: {self.masked(said.message)} "
                           f"(GET {where})", status=status, retriable=said.retriable)

    def _ok(self, url: str, body: bytes | bytearray) -> Any:
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
        self.metrics.errors[error_class(exc)] += 1
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

    async def _get(self, session: aiohttp.ClientSession, url: str) -> Answer:
        """One GET (:mod:`pipeline.polling.fetch`: no redirect followed, the body capped in bytes and
        in JSON values)."""
        signed = {} if self._aws is None else sigv4.sign(self._aws, "GET", url, region=self._region,
                                                          now=utcnow())
        where = f"source {self.source.name}"
        try:
            got = await fetch.get(session, url, signed, max_body=self._max_body, where=where)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"{where}: {type(exc).__name__} calling {url}", retriable=True) from exc
        if got.status == 200:
            fetch.check_values(got.body, where)
        return got.status, got.headers, got.body


    async def _stream(self, session: aiohttp.ClientSession, url: str, feed: Feed) -> Answer:
        """One streamed GET (:func:`pipeline.polling.fetch.stream`)."""
        signed = {} if self._aws is None else sigv4.sign(self._aws, "GET", url, region=self._region,
                                                          now=utcnow())
        where = f"source {self.source.name}"
        try:
            got = await fetch.stream(session, url, signed, feed.feed, where=where)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"{where}: {type(exc).__name__} calling {url}", retriable=True) from exc
        except ValueError as exc:
            raise fetch.Refused(f"{where}: {url.split('?', 1)[0]}: {exc}", status=200,
                                kind="results_too_large") from None
        return got.status, got.headers, got.body


def error_class(exc: SourceError) -> str:
    """The class a failed request is counted under in ``poller_errors_total``."""
    if isinstance(exc, fetch.Refused):
        return exc.kind
    if exc.status is None:
        return "connection" if "Timeout" not in str(exc) else "timeout"
    if exc.status in (429, 529):
        return f"http_{exc.status}"
    return "http_5xx" if exc.status >= 500 else f"http_{exc.status}"
