"""What one source's poller knows and decides, with no I/O: the tracker.

It holds the known batches (:class:`Known`: canonical status, expiry, place in a newest-first
list, when an active one is next due), whether the source lists newest first, and one cycle's walk
through the list endpoint (:class:`Listing`). From these it decides what the poller does next:
which list page to ask for and when discovery may stop, how many pages a refresh should list, which
batches to fetch one by one, which objects of a response are published (new, not yet terminal, not
oversized, not rejected before unchanged), which batches the provider no longer returns
(:meth:`Tracker.gone`, :meth:`Tracker.suspects`, :meth:`Tracker.vanished`), and how soon the next
cycle runs. It also keeps the
books of Kafka's refusals (an envelope refused is settled as rejected).

Time comes in as ``now`` or from the injected ``clock`` (unix seconds, the provider's time base);
the HTTP side is :mod:`pipeline.polling.client`, the orchestration :mod:`pipeline.polling.poller`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from pipeline.core.errors import InvalidRecord, SourceError
from pipeline.core.eta import expected_end
from pipeline.core.models import TERMINAL, Envelope, Snapshot
from pipeline.core.timeutil import iso_to_ms
from pipeline.polling import schedule
from pipeline.polling.metrics import SourceMetrics
from pipeline.providers.base import Adapter
from pipeline.providers.paging import PageGuard, Params, stable

# The poller's log lines keep the poller's logger name, whichever of its modules writes them.
log = logging.getLogger("pipeline.polling.poller")

MAX_PAGES = 10_000
INVALID = "invalid"  # the status of a batch whose last object the normaliser rejected
MAX_REJECTED = 10_000  # fingerprints kept of rejected objects without an id
# A batch object whose JSON is bigger than this is not published: Kafka's default record limit is
# about 1 MB (the envelope around it adds a few hundred bytes). It is counted and logged instead.
MAX_OBJECT = 900 * 1024
# Terminal batches a listing passed without returning, confirmed gone by one GET each: at most this
# many a cycle (a listing that ended early by mistake must not cost a GET per known batch at once).
MAX_CONFIRM = 100


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
    before: frozenset[str] = frozenset()  # the batches known when the walk began
    sweep: bool = False  # discovery goes on to the list's end (a sweep is due)


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


class Fresh(NamedTuple):
    """An object to publish, with what the tracker will know of its batch once it is published."""

    batch_id: str | None
    obj: dict[str, Any]
    known: Known


class Tracker:
    """One source's known batches and the decisions drawn from them."""

    def __init__(self, name: str, adapter: Adapter, cadence: schedule.Cadence, metrics: SourceMetrics,
                 clock: Callable[[], float]) -> None:
        self.name = name
        self.adapter = adapter
        self.cadence = cadence
        self.metrics = metrics
        self._clock = clock
        self.known: dict[str, Known] = {}
        self.ordered = True  # every listing so far came newest first (by created_at)
        self._listed_all = False  # a listing reached the end once: discovery may stop early
        self._rejected: set[int] = set()  # fingerprints of rejected objects that have no id
        self._in_flight: dict[str, Known | None] = {}  # batches being published: Kafka's refusals
        self._swept: float | None = None  # the clock when a listing last reached the list's end
        self._kept: set[str] = set()  # terminal batches a GET returned, though a listing passed them

    # The listing walk.

    def listing(self, page_limit: int) -> Listing:
        """A new cycle's walk, from the list's first page; a sweep when ``cadence.sweep`` seconds
        passed since a listing last reached the list's end."""
        sweep = self.cadence.sweep > 0 and (self._swept is None or
                                            self._clock() - self._swept >= self.cadence.sweep)
        return Listing(self.adapter.list_params(page_limit), before=frozenset(self.known), sweep=sweep)

    def page_params(self, listing: Listing, until: int | None) -> Params | None:
        """The parameters of the next page to list, or None when the walk is over: the list's end,
        or page ``until`` reached. A walk past ``MAX_PAGES`` fails."""
        if listing.params is None or (until is not None and listing.pages >= until):
            return None
        if listing.pages >= MAX_PAGES:
            raise SourceError(f"source {self.name}: more than {MAX_PAGES} pages")
        return listing.params

    def unknown(self, ids: list[str | None]) -> bool:
        """True when a page holds a batch not known before it was listed."""
        return any(bid is not None and bid not in self.known for bid in ids)

    def listed(self, listing: Listing, body: Any, items: list[dict[str, Any]], ids: list[str | None],
               *, unknown: bool, until: int | None) -> bool:
        """Account for one page listed (its objects already published); True when the walk stops:
        the list's end, or (discovery, ``until`` None, not a sweep) a page of known batches once
        the source was listed to its end."""
        self.note_order(listing, ids)
        listing.size = max(listing.size, len(items))
        listing.pages += 1
        listing.params = self._next_params(listing, body, items, ids)
        if listing.params is None:
            return True
        return until is None and not unknown and self._listed_all and not listing.sweep

    def _next_params(self, listing: Listing, body: Any, items: list[dict[str, Any]],
                     ids: list[str | None]) -> Params | None:
        """The next page's parameters; None at the end of the list (then the listing is complete)
        or when the listing goes round (counted and logged; the listing is not complete)."""
        assert listing.params is not None
        following = self.adapter.paging.next(listing.params, body, items)
        if following is None:
            listing.complete = self._listed_all = True
            self._swept = self._clock()
            return None
        loop = listing.guard.check(listing.params, ids, following)
        if loop is None:
            return following
        self.metrics.errors[loop.kind] += 1
        log.warning("source %s: listing stopped after %d pages: %s", self.name, listing.pages,
                    loop.reason)
        return None

    def note_order(self, listing: Listing, ids: list[str | None]) -> None:
        """Track the oldest created_at listed; a list found not newest first is never again
        taken as ordered (then only a complete listing proves a batch missing from it). A batch
        listed again in the same listing is not evidence: a page-numbered list that grows at the
        top while it is walked pushes the end of one page onto the next."""
        for bid in ids:
            if bid is None or bid in listing.listed:
                continue
            listing.listed.add(bid)
            self._kept.discard(bid)
            known = self.known.get(bid)
            created = known.created if known is not None else None
            if created is None:
                continue
            if listing.oldest is not None and created > listing.oldest and self.ordered:
                self.ordered = False
                log.info("source %s: the list is not newest first: refreshes use GETs", self.name)
            listing.oldest = created if listing.oldest is None else min(listing.oldest, created)

    def items(self, body: Any) -> list[dict[str, Any]]:
        """The batch objects of a list response (entries that are not objects are counted, as
        ``non_object_entry``, and skipped)."""
        try:
            objects, skipped = self.adapter.list_entries(body)
        except InvalidRecord as exc:
            self.metrics.errors["malformed_body"] += 1
            raise SourceError(f"source {self.name}: {exc}") from None
        if skipped:
            self.metrics.errors["non_object_entry"] += skipped
            log.warning("source %s: %d list entries that are not JSON objects skipped", self.name, skipped)
        return objects

    # The refreshes.

    def refresh_pages(self, listing: Listing, seen: set[str], now: float) -> int | None:
        """After discovery: the page to list up to so that the due active batches are listed again,
        or None when listing further does not pay (nothing due, the list's end, or a list not
        newest first)."""
        due = [bid for bid, k in self.known.items() if not k.settled and bid not in seen and k.due <= now]
        if due and listing.params is not None and self.ordered:
            return schedule.pages_to_list(listing.pages, self.pages_of(due, listing.size))
        return None

    def pages_of(self, batch_ids: list[str], page_size: int) -> list[int]:
        """The 0-based list page each batch is expected on: its rank, newest first, among the
        known batches (which include every newer one once discovery is done)."""
        limit = max(1, page_size)
        order = sorted(((k.created, bid) for bid, k in self.known.items() if k.created is not None),
                       reverse=True)
        rank = {bid: i for i, (_, bid) in enumerate(order)}
        return [rank[bid] // limit for bid in batch_ids if bid in rank]

    def to_fetch(self, listing: Listing, seen: set[str], now: float) -> list[str]:
        """Active batches not seen this cycle that are due, or whose place the listing passed (it
        reached the list's end, or listed an older batch); then the terminal batches to confirm
        gone (:meth:`suspects`)."""
        def passed(k: Known) -> bool:
            return listing.complete or self._passed(listing, k)
        active = [bid for bid, k in self.known.items()
                  if not k.settled and bid not in seen and (k.due <= now or passed(k))]
        return active + self.suspects(listing)

    def _passed(self, listing: Listing, k: Known) -> bool:
        """Whether a newest-first listing went past the batch's place: it listed an older batch."""
        return (self.ordered and listing.oldest is not None and k.created is not None
                and k.created > listing.oldest)

    def _absent(self, listing: Listing, keep: Callable[[Known], bool]) -> list[str]:
        """The batches known before the walk began, in a canonical status, that it did not list,
        and that ``keep``; sorted."""
        return sorted(bid for bid in listing.before - listing.listed
                      if (k := self.known.get(bid)) is not None and k.status != INVALID and keep(k))

    def gone(self, listing: Listing) -> list[str]:
        """The batches the walk proves the provider no longer returns, each forgotten and counted
        (:meth:`vanished`): known before the walk began and not on any of its pages, though it
        went past their place (it listed an older batch), on a list that has always come newest
        first and pages stably (:func:`~pipeline.providers.paging.stable`: by id cursor, or one
        page). Absence from any other listing is only a suspicion, confirmed by a GET."""
        if not (self.ordered and listing.oldest is not None and stable(self.adapter.paging)):
            return []
        out = self._absent(listing, lambda k: self._passed(listing, k))
        for bid in out:
            self.vanished(bid, "absent from a listing that passed its place")
        return out

    def suspects(self, listing: Listing) -> list[str]:
        """Terminal batches to fetch once, whose 404 shows them gone: known before the walk began,
        not on its pages, though it reached the list's end or listed an older batch, and not
        already proven gone by the listing (:meth:`gone`), nor returned by a GET since a listing
        last showed them (:meth:`answered`). At most :data:`MAX_CONFIRM` a cycle (the others at a
        later listing)."""
        if not listing.complete and listing.oldest is None:
            return []
        out = [bid for bid in self._absent(listing, lambda k: k.status in TERMINAL and (
            listing.complete or self._passed(listing, k))) if bid not in self._kept]
        if len(out) > MAX_CONFIRM:
            log.info("source %s: %d terminal batches missing from the list, %d confirmed this cycle",
                     self.name, len(out), MAX_CONFIRM)
        return out[:MAX_CONFIRM]

    def answered(self, batch_id: str) -> None:
        """A GET returned the batch: a terminal one is not suspected again until a listing shows it."""
        if self._known_terminal(batch_id):
            self._kept.add(batch_id)

    def vanished(self, batch_id: str, why: str = "404") -> bool:
        """A known batch is gone (answered 404, or :meth:`gone`): forgotten, counted (``vanished``
        when active, ``purged`` when terminal) and logged (a purge, routine as old batches leave the
        list, at DEBUG). False for a batch not known."""
        known = self.known.pop(batch_id, None)
        self._kept.discard(batch_id)
        if known is None or known.status == INVALID:
            return False
        if known.status in TERMINAL:
            self.metrics.purged += 1
            log.debug("source %s: terminal batch %s purged (%s)", self.name, batch_id, why)
        else:
            self.metrics.vanished += 1
            log.warning("source %s: active batch %s vanished (%s)", self.name, batch_id, why)
        return True

    def next_delay(self, interval: float, now: float) -> float:
        """``interval``, halved (not under 1 s) while an active batch nears its expiry."""
        horizon = now + 2 * interval
        near = any(not k.settled and k.expires_at is not None and k.expires_at <= horizon
                   for k in self.known.values())
        return max(min(1.0, interval), interval / 2) if near else interval

    def update_gauges(self) -> None:
        self.metrics.tracked = len(self.known)
        self.metrics.active = sum(1 for k in self.known.values() if not k.settled)

    # What is published.

    def fresh(self, items: list[dict[str, Any]], seen: set[str], observed_at: str) -> list[Fresh]:
        """The objects to publish: what is new or not yet terminal; a known terminal batch is not
        published again, nor an object the normaliser or Kafka rejected before, unchanged."""
        fresh: list[Fresh] = []
        for obj in items:
            batch_id = self.adapter.batch_id(obj)
            if batch_id is not None and (batch_id in seen or self._known_terminal(batch_id)):
                continue
            if self._oversized(batch_id, obj):
                continue
            known = self.read(obj, observed_at)
            if known.status == INVALID and self._rejected_before(batch_id, known):
                continue
            fresh.append(Fresh(batch_id, obj, known))
        return fresh

    def publishing(self, fresh: list[Fresh]) -> None:
        """``fresh`` is being handed to Kafka: a refusal meanwhile is kept for :meth:`published`."""
        self._in_flight = {f.batch_id: None for f in fresh if f.batch_id is not None}

    def handed_over(self) -> dict[str, Known]:
        """The publish is over (done or failed): the refusals Kafka reported meanwhile."""
        refused, self._in_flight = self._in_flight, {}
        return {bid: k for bid, k in refused.items() if k is not None}

    def published(self, fresh: list[Fresh], seen: set[str], refused: dict[str, Known]) -> None:
        """``fresh`` was published: its batches are seen this cycle and known (as rejected, if
        Kafka refused them)."""
        for f in fresh:
            if f.batch_id is not None:
                seen.add(f.batch_id)
                self.known[f.batch_id] = refused.get(f.batch_id) or f.known
        self.metrics.observations += len(fresh)
        rejected = sum(1 for f in fresh if f.known.status == INVALID)
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
        if batch_id in self._in_flight:  # a publish is awaiting the sink: it records it after
            self._in_flight[batch_id] = rejected
        elif batch_id in self.known:
            self.known[batch_id] = rejected

    def read(self, obj: dict[str, Any], observed_at: str) -> Known:
        """The canonical status and expiry of a raw object, by the adapter's normaliser."""
        try:
            snap = self.adapter.normalise(obj, self.name, observed_at)
        except InvalidRecord:
            return Known(INVALID, None, hash(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)))
        expires, now = _unix(snap.expires_at), self._clock()
        counted = snap.requests_completed
        done = None if counted is None else counted + (snap.requests_failed or 0)
        end = expected_end(now, expires, _unix(snap.in_progress_at), done, snap.requests_total)
        due = schedule.next_refresh(snap.status, now, end, self.cadence, _unix(_since(snap)))
        return Known(snap.status, expires, None, _unix(snap.created_at), due)

    def _known_terminal(self, batch_id: str) -> bool:
        known = self.known.get(batch_id)
        return known is not None and known.status in TERMINAL

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
        log.warning("source %s: a batch object of %d bytes (over %d) was not published", self.name,
                    len(data), MAX_OBJECT)
        return True

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
                        self.name)
        return False


def _since(snap: Snapshot) -> str | None:
    """When the batch entered its (active) status, if the snapshot says."""
    return {"validating": snap.created_at, "finalizing": snap.finalizing_at,
            "cancelling": snap.cancelling_at}.get(snap.status)


def _unix(iso: str | None) -> float | None:
    return iso_to_ms(iso) / 1000.0 if iso else None
