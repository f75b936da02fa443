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
the source lists newest first, returned an older batch). A known batch the provider no longer
returns (a 404; or absent from a listing that proves it, :meth:`Tracker.gone`; a terminal batch
a listing passed without it is fetched once to confirm) is forgotten, counted (``vanished`` when
active, ``purged`` when terminal) and published as a vanish (raw record version 3), which the
track agent turns into one ``vanished`` or ``purged`` event. Every ``sweep_interval`` one
discovery lists to the list's end, so that terminal history is checked too. An object the
normaliser rejects is published once (the normalise agent dead-letters it) and not again until its
content changes. Every request goes through the source's rate limiter and circuit breaker and
the retry policy in :mod:`pipeline.polling.retry`; a request is never sent before a
``Retry-After`` the provider gave has passed.

Hostile edges (docs/security.md): requests go through :mod:`pipeline.polling.fetch` (no redirect followed,
bodies capped, echoed secrets masked); a listing that goes round stops
(:class:`pipeline.providers.paging.PageGuard`); no error ends a source's task (an unexpected one is
logged with the source's name and counted as ``unexpected``); stop cancels a cycle wherever it
waits; an envelope Kafka refused is not published again until its object changes.

The work is split in two: :mod:`pipeline.polling.tracker` (no I/O) knows the batches and decides
what to list, fetch and publish; :mod:`pipeline.polling.client` sends the requests (auth and
signing, retries, breaker, rate limiter, masking). :class:`SourcePoller` runs the cycle between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aiohttp

from pipeline.config import SourceConfig
from pipeline.core.errors import BatchscopeError, SourceError
from pipeline.core.models import TERMINAL, Envelope
from pipeline.core.timeutil import iso_ms, utcnow
from pipeline.polling import schedule
from pipeline.polling.client import ProviderClient
from pipeline.polling.hints import HintQueue
from pipeline.polling.metrics import SourceMetrics
from pipeline.polling.results import ResultsReader
from pipeline.polling.retry import RetryPolicy
from pipeline.polling.tracker import Known, Listing, Tracker
from pipeline.providers import adapter

log = logging.getLogger(__name__)

# Seconds a source serves webhook hints between two cycles, at least: with cycles back to back
# (each longer than the poll interval) hints would otherwise wait for a quiet moment.
HINTS_AT_LEAST = 0.05


class Sink(Protocol):
    async def publish(self, envelopes: list[Envelope]) -> None: ...


class SourcePoller:
    """Polls one source: its :class:`~pipeline.polling.tracker.Tracker` decides what to list,
    fetch and publish, its :class:`~pipeline.polling.client.ProviderClient` sends the requests."""

    def __init__(self, source: SourceConfig, sink: Sink, policy: RetryPolicy | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: unix seconds, the time base of the provider's timestamps (a test or bench
        polling a simulator in accelerated time passes the simulator's)."""
        self.source = source
        self._sink = sink
        self.metrics = SourceMetrics(source.name, source.provider, poll_interval=source.poll_interval)
        self.adapter = adapter(source.provider)
        self.client = ProviderClient(source, self.adapter, policy or RetryPolicy(), self.metrics)
        cadence = schedule.Cadence(source.poll_interval, source.refresh_interval, source.sweep_interval)
        self.tracker = Tracker(source.name, self.adapter, cadence, self.metrics, clock)
        self.results = ResultsReader(source, self.client)  # opt-in: read_results
        self._clock = clock
        self.last_cycle = (0, 0)  # list pages and GETs of the last cycle
        self.hints = HintQueue()  # from the webhooks (pipeline/polling/hints.py)

    @property
    def known(self) -> dict[str, Known]:
        return self.tracker.known

    @property
    def ordered(self) -> bool:
        return self.tracker.ordered

    @property
    def observed(self) -> int:
        return self.metrics.observations

    @property
    def cycles(self) -> int:
        return self.metrics.cycles

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop`` is set: a cycle starts every poll interval (at a fixed rate, so a
        status change waits at most one interval for the cycle that sees it, not an interval
        plus the last cycle's duration), or right after the last one when that took longer. A
        cycle in progress is cancelled at stop, wherever it waits (a request, a retry backoff, a
        ``Retry-After``, the breaker, the rate limiter)."""
        self.metrics.started = time.monotonic()
        async with self.client.session() as session:
            while not stop.is_set():
                started = time.monotonic()
                await _until_stopped(self._cycle(session), stop)
                rest = self.next_delay() - (time.monotonic() - started)
                await self.hints.serve(stop, max(rest, HINTS_AT_LEAST),
                                       lambda batch_id: _until_stopped(self.on_hint(session, batch_id), stop))

    async def hinted(self, batch_id: str) -> None:
        """A webhook said ``batch_id`` ended: returns once it was fetched (or needed no call)."""
        await self.hints.put(batch_id)

    async def on_hint(self, session: aiohttp.ClientSession, batch_id: str) -> None:
        """One GET for a hinted batch, published as a cycle would; none for a batch known
        terminal. A known batch that answers 404 is gone, as in a cycle (:meth:`_get_one`). A
        failure is counted and logged: polling finds the batch later."""
        known = self.tracker.known.get(batch_id)
        self.metrics.hints += 1
        if known is not None and known.status in TERMINAL:
            self.metrics.hints_known += 1
            return
        self.metrics.hint_gets += 1
        try:
            obj = await self._get_one(session, batch_id)
        except SourceError as exc:
            log.warning("source %s: the hinted batch %s was not fetched: %s", self.source.name, batch_id,
                        self.client.masked(str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - as in a cycle: counted, logged, polling goes on
            self._unexpected(exc)
            return
        if obj is None:
            self.metrics.errors["hint_not_found"] += 1
            return
        await self._publish([obj], set())
        self.tracker.update_gauges()

    def next_delay(self) -> float:
        """The poll interval, halved (not under 1 s) while an active batch nears its expiry."""
        return self.tracker.next_delay(self.source.poll_interval, time.time())

    async def _cycle(self, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        retries_before, requests_before = self.metrics.retries, sum(self.metrics.requests.values())
        try:
            published = await self.poll_once(session)
        except BatchscopeError as exc:
            log.warning("source %s: cycle failed: %s", self.source.name, self.client.masked(str(exc)))
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
                  self.source.name, type(exc).__name__, self.client.masked(str(exc)), at)

    async def poll_once(self, session: aiohttp.ClientSession) -> int:
        """One cycle: discovery, then the due refreshes; returns the observations published."""
        now, seen = self._clock(), set[str]()
        listing = self.tracker.listing(self.source.page_limit)
        gets = 0
        try:
            await self._list(session, listing, seen, None)
            until = self.tracker.refresh_pages(listing, seen, now)
            if until is not None:
                await self._list(session, listing, seen, until)
            await self._vanish(self.tracker.gone(listing))
            for batch_id in self.tracker.to_fetch(listing, seen, now):
                gets += 1
                obj = await self._get_one(session, batch_id)
                if obj is not None:
                    self.tracker.answered(batch_id)
                    await self._publish([obj], seen)
            await self.results.read(session, self._sink)
        finally:
            self.last_cycle = (listing.pages, gets)
            self.metrics.list_pages += listing.pages
            self.metrics.gets += gets
        self.tracker.update_gauges()
        self.client.update_gauges()
        return len(seen)

    async def _list(self, session: aiohttp.ClientSession, listing: Listing, seen: set[str],
                    until: int | None) -> None:
        """List pages: up to page ``until``, or (discovery, ``until`` None) until a page holds no
        unknown batch, once the source was listed to its end."""
        while (params := self.tracker.page_params(listing, until)) is not None:
            body = await self.client.request(session, self.adapter.list_path, params)
            items = self.tracker.items(body)
            ids = [self.adapter.batch_id(o) for o in items]
            unknown = self.tracker.unknown(ids)
            await self._publish(items, seen)
            if self.tracker.listed(listing, body, items, ids, unknown=unknown, until=until):
                return

    async def _get_one(self, session: aiohttp.ClientSession, batch_id: str) -> dict[str, Any] | None:
        """One batch object; None when it is gone (404: a known one is published as a vanish)."""
        try:
            return await self.client.get_one(session, batch_id)
        except SourceError as exc:
            if exc.status != 404:
                raise
        if self.tracker.vanished(batch_id):
            await self._vanish([batch_id])
        return None

    async def _vanish(self, batch_ids: list[str]) -> None:
        """Publish that the provider no longer returns these batches (the tracker forgot them)."""
        if batch_ids:
            observed_at = iso_ms(utcnow())
            await self._sink.publish([Envelope.vanish(self.source.name, self.source.provider, observed_at, b)
                                      for b in batch_ids])

    async def _publish(self, items: list[dict[str, Any]], seen: set[str]) -> None:
        """Publish what the tracker finds fresh among ``items``, then record it as published."""
        observed_at = iso_ms(utcnow())
        fresh = self.tracker.fresh(items, seen, observed_at)
        if not fresh:
            return
        self.tracker.publishing(fresh)
        try:
            source, provider = self.source.name, self.source.provider
            await self._sink.publish([Envelope(source, provider, observed_at, f.obj, f.batch_id)
                                      for f in fresh])
        finally:
            refused = self.tracker.handed_over()
        self.tracker.published(fresh, seen, refused)
        self.results.offer((f.batch_id, f.obj, f.known.status) for f in fresh)

    def refused(self, envelope: Envelope, error_class: str) -> None:
        """Kafka refused one of this source's envelopes (the publisher dead-lettered or dropped
        it): counted, and its batch settled as rejected, so that it is not published again unchanged
        (a results reader's observation only counted: its batch's object was published apart)."""
        if envelope.results is not None:
            self.metrics.errors[error_class] += 1
            return
        self.tracker.refused(envelope, error_class)


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
