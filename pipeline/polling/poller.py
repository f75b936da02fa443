"""The poller: discovers and refreshes every configured source's batches, publishes raw envelopes.

Each source is driven by its provider's adapter (:mod:`pipeline.providers`): list path and paging
(cursor, page number, page token or one page), where the batches are in a list response, the
path of one batch, the auth headers (Bedrock: SigV4 signing, :mod:`pipeline.polling.sigv4`), how to read
an error body, the id of a raw batch object and its canonical status (the adapter's normaliser).

Per cycle and source (the schedule: :mod:`pipeline.polling.schedule`): list pages newest first until a
page holds no batch it does not know (new batches appear at the front; the first listing goes to
the end); then refresh the active batches that are due, by listing further pages or by one GET
each, whichever takes fewer calls. Terminal batches are never fetched again. An active batch is
due at least every ``active_interval`` and sooner as it nears its expected end; it is also
fetched at once when a listing passed its place without it (the list reached its end, or, while
the source lists newest first, returned an older batch). A known active batch that answers 404
has vanished: it is counted and logged. An object the normaliser rejects is published once (the
normalise agent dead-letters it) and not again until its content changes. Every request goes through the
source's rate limiter and circuit breaker and the retry policy in :mod:`pipeline.polling.retry`; a
request is never sent before a ``Retry-After`` the provider gave has passed.

Hostile edges (docs/security.md): requests go through :mod:`pipeline.polling.fetch` (no redirect followed,
bodies capped, echoed secrets masked); a listing that goes round stops
(:class:`pipeline.providers.paging.PageGuard`); no error ends a source's task (an unexpected one is
logged with the source's name and counted as ``unexpected``); stop cancels a cycle wherever it
waits; an envelope Kafka refused is not published again until its object changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from pipeline.config import SourceConfig
from pipeline.core.errors import BatchscopeError, InvalidRecord, SourceError
from pipeline.core.eta import expected_end
from pipeline.core.models import TERMINAL, Envelope, Snapshot
from pipeline.core.timeutil import iso_ms, iso_to_ms, utcnow
from pipeline.polling import fetch, schedule, sigv4
from pipeline.polling.breaker import CircuitBreaker, RateLimiter
from pipeline.polling.metrics import SourceMetrics
from pipeline.polling.retry import RetryPolicy, header_delay
from pipeline.providers import adapter
from pipeline.providers.paging import PageGuard, Params

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
INVALID = "invalid"  # the status of a batch whose last object the normaliser rejected
MAX_REJECTED = 10_000  # fingerprints kept of rejected objects without an id
# A batch object whose JSON is bigger than this is not published: Kafka's default record limit is
# about 1 MB (the envelope around it adds a few hundred bytes). It is counted and logged instead.
MAX_OBJECT = 900 * 1024
MAX_MESSAGE = 500  # characters of an error message logged


class Sink(Protocol):
    async def publish(self, envelopes: list[Envelope]) -> None: ...


@dataclass(slots=True)
class Listing:
    """One cycle's walk through the list endpoint."""

    params: Params | None
    pages: int = 0
    size: int = 0  # the most batches one page held
    complete: bool = False  # the last page was reached
    oldest: float | None = None  # created_at of the oldest batch listed (newest-first lists)
    listed: set[str] = field(default_factory=set)  # ids on the pages listed so far
    guard: PageGuard = field(default_factory=PageGuard)  # stops a listing that goes round


@dataclass(slots=True)
class Known:
    status: str  # canonical, or INVALID
    expires_at: float | None = None  # unix seconds, when the provider said
    fingerprint: int | None = None  # of the rejected object, for an INVALID batch
    created: float | None = None  # unix seconds: the batch's place in a newest-first list
    due: float = 0.0  # the poller's clock: when an active batch is next refreshed

    @property
    def settled(self) -> bool:
        """Terminal, or rejected as it stands: neither re-listed nor fetched one by one."""
        return self.status in TERMINAL or self.status == INVALID


class SourcePoller:
    """Polls one source with its own aiohttp session, limiter, breaker and retry policy."""

    def __init__(self, source: SourceConfig, sink: Sink, policy: RetryPolicy | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: unix seconds, the time base of the provider's timestamps (a test or bench
        polling a simulator in accelerated time passes the simulator's)."""
        self.source = source
        self._sink = sink
        self.policy = policy or RetryPolicy()
        self.limiter = RateLimiter(source.max_rps, burst=max(1, int(source.max_rps)))
        self.breaker = CircuitBreaker(source.breaker_threshold, source.breaker_reset, name=source.name)
        self.metrics = SourceMetrics(source.name, source.provider, poll_interval=source.poll_interval)
        self.adapter = adapter(source.provider)
        self._aws = self._aws_credentials()
        self._region = sigv4.region_of(source.base_url)
        self.known: dict[str, Known] = {}
        self.cadence = schedule.Cadence(source.poll_interval, source.refresh_interval)
        self._clock = clock
        self._listed_all = False  # a listing reached the end once: discovery may stop early
        self.ordered = True  # every listing so far came newest first (by created_at)
        self.last_cycle = (0, 0)  # list pages and GETs of the last cycle
        self._rejected: set[int] = set()  # fingerprints of rejected objects that have no id
        self._not_before = 0.0  # time.monotonic() before which the provider asked us not to call
        self._max_body = source.max_body_mib * fetch.MIB
        self._secrets = self._secret_texts()
        self._in_flight: dict[str, Known | None] = {}  # batches being published: Kafka's refusals
        timeout = source.request_timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))

    @property
    def observed(self) -> int:
        return self.metrics.observations

    @property
    def cycles(self) -> int:
        return self.metrics.cycles

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

    def _masked(self, text: str) -> str:
        return fetch.mask(text[:MAX_MESSAGE], self._secrets)

    def _headers(self) -> dict[str, str]:
        """The session's headers: the adapter's auth headers from the source's secret."""
        headers = {"Accept": "application/json", "User-Agent": "batchscope/0.1"}
        if self.source.api_key is not None and self.adapter.signing is None:
            headers.update(self.adapter.auth(self.source.api_key))
        return headers

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop`` is set. A cycle in progress is cancelled then, wherever it waits
        (a request, a retry backoff, a ``Retry-After``, the breaker, the rate limiter)."""
        self.metrics.started = time.monotonic()
        async with aiohttp.ClientSession(headers=self._headers(), timeout=self._timeout) as session:
            while not stop.is_set():
                await _until_stopped(self._cycle(session), stop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.next_delay())

    def next_delay(self) -> float:
        """The poll interval, halved (not under 1 s) while an active batch nears its expiry."""
        interval = self.source.poll_interval
        horizon = time.time() + 2 * interval
        near = any(not k.settled and k.expires_at is not None and k.expires_at <= horizon
                   for k in self.known.values())
        return max(min(1.0, interval), interval / 2) if near else interval

    async def _cycle(self, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        retries_before, requests_before = self.metrics.retries, sum(self.metrics.requests.values())
        try:
            published = await self.poll_once(session)
        except BatchscopeError as exc:
            log.warning("source %s: cycle failed: %s", self.source.name, self._masked(str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - any bug or foreign error: logged, counted, next cycle
            self._unexpected(exc)
            return
        m = self.metrics
        m.cycles += 1
        m.last_success = time.monotonic()
        log.debug("source %s: cycle %d: %d requests (%d list pages, %d gets, %d retried), "
                 "%d observations, %d tracked, %d active, breaker %s, %.2fs", self.source.name, m.cycles,
                 sum(m.requests.values()) - requests_before, *self.last_cycle,
                 m.retries - retries_before, published,
                 m.tracked, m.active, m.breaker_state, time.monotonic() - started)

    def _unexpected(self, exc: Exception) -> None:
        """An error no code path expected: counted (``unexpected``) and logged with where it was
        raised, its message masked (it may quote a URL or a response)."""
        self.metrics.errors["unexpected"] += 1
        frames = traceback.extract_tb(exc.__traceback__)
        last = frames[-1] if frames else None
        at = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}" if last else "?"
        log.error("source %s: cycle failed unexpectedly: %s: %s (at %s); the next cycle runs as usual",
                  self.source.name, type(exc).__name__, self._masked(str(exc)), at)

    async def poll_once(self, session: aiohttp.ClientSession) -> int:
        """One cycle: discovery, then the due refreshes; returns the observations published."""
        now, seen = self._clock(), set[str]()
        listing = Listing(self.adapter.list_params(self.source.page_limit))
        gets = 0
        try:
            await self._list(session, listing, seen, None)
            due = [bid for bid, k in self.known.items() if not k.settled and bid not in seen and k.due <= now]
            if due and listing.params is not None and self.ordered:
                until = schedule.pages_to_list(listing.pages, self._pages_of(due, listing.size))
                await self._list(session, listing, seen, until)
            for batch_id in self._to_fetch(listing, seen, now):
                gets += 1
                obj = await self._get_one(session, batch_id)
                if obj is not None:
                    await self._publish([obj], seen)
        finally:
            self.last_cycle = (listing.pages, gets)
            self.metrics.list_pages += listing.pages
            self.metrics.gets += gets
        self._update_gauges()
        return len(seen)

    async def _list(self, session: aiohttp.ClientSession, listing: Listing, seen: set[str],
                    until: int | None) -> None:
        """List pages: up to page ``until``, or (discovery, ``until`` None) until a page holds no
        unknown batch, once the source was listed to its end."""
        while listing.params is not None and (until is None or listing.pages < until):
            if listing.pages >= MAX_PAGES:
                raise SourceError(f"source {self.source.name}: more than {MAX_PAGES} pages")
            body = await self._request(session, self.adapter.list_path, listing.params)
            items = self._items(body)
            ids = [self.adapter.batch_id(o) for o in items]
            unknown = any(bid is not None and bid not in self.known for bid in ids)
            await self._publish(items, seen)
            self._note_order(listing, ids)
            listing.size = max(listing.size, len(items))
            listing.pages += 1
            listing.params = self._next_params(listing, body, items, ids)
            if listing.params is None:
                return
            if until is None and not unknown and self._listed_all:
                return

    def _next_params(self, listing: Listing, body: Any, items: list[dict[str, Any]],
                     ids: list[str | None]) -> Params | None:
        """The next page's parameters; None at the end of the list (then the listing is complete)
        or when the listing goes round (counted and logged; the listing is not complete)."""
        assert listing.params is not None
        following = self.adapter.paging.next(listing.params, body, items)
        if following is None:
            listing.complete = self._listed_all = True
            return None
        loop = listing.guard.check(listing.params, ids, following)
        if loop is None:
            return following
        self.metrics.errors[loop.kind] += 1
        log.warning("source %s: listing stopped after %d pages: %s", self.source.name, listing.pages,
                    loop.reason)
        return None

    def _note_order(self, listing: Listing, ids: list[str | None]) -> None:
        """Track the oldest created_at listed; a list found not newest first is never again
        taken as ordered (then only a complete listing proves a batch missing from it). A batch
        listed again in the same listing is not evidence: a page-numbered list that grows at the
        top while it is walked pushes the end of one page onto the next."""
        for bid in ids:
            if bid is None or bid in listing.listed:
                continue
            listing.listed.add(bid)
            known = self.known.get(bid)
            created = known.created if known is not None else None
            if created is None:
                continue
            if listing.oldest is not None and created > listing.oldest and self.ordered:
                self.ordered = False
                log.info("source %s: the list is not newest first: refreshes use GETs", self.source.name)
            listing.oldest = created if listing.oldest is None else min(listing.oldest, created)

    def _pages_of(self, batch_ids: list[str], page_size: int) -> list[int]:
        """The 0-based list page each batch is expected on: its rank, newest first, among the
        known batches (which include every newer one once discovery is done)."""
        limit = max(1, page_size)
        order = sorted(((k.created, bid) for bid, k in self.known.items() if k.created is not None),
                       reverse=True)
        rank = {bid: i for i, (_, bid) in enumerate(order)}
        return [rank[bid] // limit for bid in batch_ids if bid in rank]

    def _to_fetch(self, listing: Listing, seen: set[str], now: float) -> list[str]:
        """Active batches not seen this cycle that are due, or whose place the listing passed."""
        def passed(k: Known) -> bool:
            if listing.complete:
                return True
            return (self.ordered and listing.oldest is not None and k.created is not None
                    and k.created > listing.oldest)
        return [bid for bid, k in self.known.items()
                if not k.settled and bid not in seen and (k.due <= now or passed(k))]

    def _items(self, body: Any) -> list[dict[str, Any]]:
        """The batch objects of a list response (entries that are not objects are counted, as
        ``non_object_entry``, and skipped)."""
        try:
            objects, skipped = self.adapter.list_entries(body)
        except InvalidRecord as exc:
            self.metrics.errors["malformed_body"] += 1
            raise SourceError(f"source {self.source.name}: {exc}") from None
        if skipped:
            self.metrics.errors["non_object_entry"] += skipped
            log.warning("source %s: %d list entries that are not JSON objects skipped", self.source.name,
                        skipped)
        return objects

    def _settled(self, batch_id: str | None) -> bool:
        known = self.known.get(batch_id) if batch_id is not None else None
        return known is not None and known.settled

    def _known_terminal(self, batch_id: str) -> bool:
        known = self.known.get(batch_id)
        return known is not None and known.status in TERMINAL

    async def _publish(self, items: list[dict[str, Any]], seen: set[str]) -> None:
        """Publish what is new or not yet terminal; a known terminal batch is not published again,
        nor an object the normaliser or Kafka rejected before, unchanged."""
        observed_at = iso_ms(utcnow())
        fresh: list[tuple[str | None, dict[str, Any], Known]] = []
        for obj in items:
            batch_id = self.adapter.batch_id(obj)
            if batch_id is not None and (batch_id in seen or self._known_terminal(batch_id)):
                continue
            if self._oversized(batch_id, obj):
                continue
            known = self._read(obj, observed_at)
            if known.status == INVALID and self._rejected_before(batch_id, known):
                continue
            fresh.append((batch_id, obj, known))
        if not fresh:
            return
        self._in_flight = {batch_id: None for batch_id, _, _ in fresh if batch_id is not None}
        try:
            source, provider = self.source.name, self.source.provider
            await self._sink.publish([Envelope(source, provider, observed_at, obj, batch_id)
                                      for batch_id, obj, _ in fresh])
        finally:
            refused, self._in_flight = self._in_flight, {}
        for batch_id, _, known in fresh:
            if batch_id is not None:
                seen.add(batch_id)
                self.known[batch_id] = refused.get(batch_id) or known
        self.metrics.observations += len(fresh)
        rejected = sum(1 for _, _, k in fresh if k.status == INVALID)
        if rejected:
            self.metrics.errors["invalid_object"] += rejected

    def refused(self, envelope: Envelope, error_class: str) -> None:
        """Kafka refused one of this source's envelopes (the publisher dead-lettered or dropped
        it): counted, and its batch settled as rejected, so that it is not published again unchanged."""
        self.metrics.errors[error_class] += 1
        batch_id = envelope.batch_id
        if batch_id is None:
            return
        rejected = Known(INVALID, None, hash(orjson.dumps(envelope.payload)))
        if batch_id in self._in_flight:  # _publish is awaiting the sink: it records it after
            self._in_flight[batch_id] = rejected
        elif batch_id in self.known:
            self.known[batch_id] = rejected

    def _oversized(self, batch_id: str | None, obj: dict[str, Any]) -> bool:
        """True for an object too big to publish: counted and logged once, then settled (an id-less
        one by its fingerprint) so that it is not fetched or counted again unchanged; and for one
        Kafka refused before, unchanged."""
        data = orjson.dumps(obj)
        if len(data) <= MAX_OBJECT:
            known = self.known.get(batch_id) if batch_id is not None else None
            return known is not None and known.status == INVALID and known.fingerprint == hash(data)
        known = Known(INVALID, None, hash(data))
        if self._rejected_before(batch_id, known, quiet=True):
            return True
        if batch_id is not None:
            self.known[batch_id] = known
        self.metrics.errors["oversized_object"] += 1
        log.warning("source %s: a batch object of %d bytes (over %d) was not published", self.source.name,
                    len(data), MAX_OBJECT)
        return True

    def _read(self, obj: dict[str, Any], observed_at: str) -> Known:
        """The canonical status and expiry of a raw object, by the adapter's normaliser."""
        try:
            snap = self.adapter.normalise(obj, self.source.name, observed_at)
        except InvalidRecord:
            return Known(INVALID, None, hash(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)))
        expires, now = _unix(snap.expires_at), self._clock()
        counted = snap.requests_completed
        done = None if counted is None else counted + (snap.requests_failed or 0)
        end = expected_end(now, expires, _unix(snap.in_progress_at), done, snap.requests_total)
        due = schedule.next_refresh(snap.status, now, end, self.cadence, _unix(_since(snap)))
        return Known(snap.status, expires, None, _unix(snap.created_at), due)

    def _rejected_before(self, batch_id: str | None, known: Known, *, quiet: bool = False) -> bool:
        if batch_id is not None:
            before = self.known.get(batch_id)
            return before is not None and before.fingerprint == known.fingerprint
        assert known.fingerprint is not None
        if known.fingerprint in self._rejected:
            return True
        if len(self._rejected) < MAX_REJECTED:
            self._rejected.add(known.fingerprint)
        if not quiet:
            log.warning("source %s: a batch object without an id was published (the DLQ will hold it)",
                        self.source.name)
        return False

    async def _get_one(self, session: aiohttp.ClientSession, batch_id: str) -> dict[str, Any] | None:
        try:
            path, params = self.adapter.batch_path(batch_id), dict(self.adapter.fixed_params)
            obj = await self._request(session, path, params)
        except SourceError as exc:
            if exc.status == 404:
                self.known.pop(batch_id, None)
                self.metrics.vanished += 1
                log.warning("source %s: active batch %s vanished (404)", self.source.name, batch_id)
                return None
            raise
        if not isinstance(obj, dict) or self.adapter.batch_id(obj) is None:
            self.metrics.errors["malformed_body"] += 1
            raise SourceError(f"source {self.source.name}: batch {batch_id}: response is not a batch object")
        return obj

    def _update_gauges(self) -> None:
        m = self.metrics
        m.tracked = len(self.known)
        m.active = sum(1 for k in self.known.values() if not k.settled)
        m.breaker_state = self.breaker.state.value
        m.breaker_opened = self.breaker.opened

    def _url(self, path: str, params: Mapping[str, str]) -> str:
        """The URL exactly as sent (so that a SigV4 signature covers what the server sees)."""
        query = urlencode(list(params.items()), quote_via=quote, safe="-_.~")
        return f"{self.source.base_url}{path}{'?' + query if query else ''}"

    async def _request(self, session: aiohttp.ClientSession, path: str, params: Mapping[str, str]) -> Any:
        """GET with the retry policy, the rate limiter and the circuit breaker."""
        url = self._url(path, params)
        for attempt in range(self.policy.max_attempts):
            await self._wait_for_breaker()
            await self._wait_retry_after()
            await self.limiter.acquire()
            try:
                status, headers, body = await self._get(session, url)
            except SourceError as exc:
                delay = self._failed(attempt, exc, {})
            else:
                if status == 200:
                    return self._ok(url, body)
                said = self.adapter.read_error(status, bytes(body))
                where = url.split("?", 1)[0]
                error = SourceError(f"source {self.source.name}: HTTP {status}: {self._masked(said.message)} "
                                    f"(GET {where})", status=status, retriable=said.retriable)
                delay = self._failed(attempt, error, headers)
            await asyncio.sleep(delay)
        attempts = self.policy.max_attempts
        message = f"source {self.source.name}: {url}: gave up after {attempts} attempts"
        raise SourceError(message, retriable=True)

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

    async def _get(self, session: aiohttp.ClientSession,
                   url: str) -> tuple[int, dict[str, str], bytes | bytearray]:
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


def _since(snap: Snapshot) -> str | None:
    """When the batch entered its (active) status, if the snapshot says."""
    return {"validating": snap.created_at, "finalizing": snap.finalizing_at,
            "cancelling": snap.cancelling_at}.get(snap.status)


def _unix(iso: str | None) -> float | None:
    return iso_to_ms(iso) / 1000.0 if iso else None


def _error_class(exc: SourceError) -> str:
    if isinstance(exc, fetch.Refused):
        return exc.kind
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

    @property
    def observed(self) -> int:
        return sum(p.observed for p in self.pollers)

    def summary(self) -> str:
        """One line for the periodic progress log (each cycle's own line is at DEBUG)."""
        every = self.metrics()
        failed = sum(m.requests["failed"] for m in every)
        return (f"poller: {len(every)} sources, {sum(m.cycles for m in every)} cycles, "
                f"observed {self.observed}, tracked {sum(m.tracked for m in every)}, "
                f"active {sum(m.active for m in every)}, failed requests {failed}")

    def refused(self, envelope: Envelope, error_class: str) -> None:
        """An envelope Kafka refused (the publisher's callback), for the source that polled it."""
        for p in self.pollers:
            if p.source.name == envelope.source:
                p.refused(envelope, error_class)


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``work`` until it returns or ``stop`` is set; then it is cancelled and awaited."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            pending.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)
