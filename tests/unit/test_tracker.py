"""pipeline.polling.tracker: the poller's decisions alone, over plain dicts and a hand-moved clock
(no HTTP, no event loop)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipeline.core.errors import SourceError
from pipeline.core.models import Envelope
from pipeline.polling.metrics import SourceMetrics
from pipeline.polling.schedule import Cadence
from pipeline.polling.tracker import INVALID, MAX_CONFIRM, MAX_OBJECT, MAX_PAGES, Known, Listing, Tracker
from pipeline.providers import adapter
from tests.support.clocks import FakeClock

NOW = 10_000.0
AT = "2026-01-01T00:00:00.000Z"


def tracker(provider: str = "openai", now: float = NOW) -> Tracker:
    metrics = SourceMetrics("src", provider, poll_interval=10.0)
    return Tracker("src", adapter(provider), Cadence(10.0, 300.0), metrics, FakeClock(now))


def batch(bid: str, status: object = "in_progress", created: int = 1_000, **more: Any) -> dict[str, Any]:
    return {"id": bid, "status": status, "created_at": created, **more}


def known(status: str = "in_progress", created: float | None = None, due: float = 0.0) -> Known:
    return Known(status, None, None, created, due)


def publish(t: Tracker, items: list[dict[str, Any]], seen: set[str] | None = None) -> list[str | None]:
    """What a cycle publishes of ``items``: the tracker's pick, recorded as published."""
    seen = set() if seen is None else seen
    fresh = t.fresh(items, seen, AT)
    t.publishing(fresh)
    t.published(fresh, seen, t.handed_over())
    return [f.batch_id for f in fresh]


# The order of the list.

def test_a_newest_first_list_stays_ordered() -> None:
    t = tracker()
    t.known = {f"b{i}": known(created=float(i)) for i in range(6)}
    listing = Listing({})
    t.note_order(listing, ["b5", "b4", None, "b3"])
    t.note_order(listing, ["b2", "new", "b1"])
    assert t.ordered
    assert listing.oldest == 1.0
    assert listing.listed == {"b5", "b4", "b3", "b2", "new", "b1"}


def test_an_older_batch_before_a_newer_one_ends_the_order_for_good(caplog: pytest.LogCaptureFixture) -> None:
    t = tracker()
    t.known = {"b1": known(created=1.0), "b2": known(created=2.0)}
    with caplog.at_level(logging.INFO, logger="pipeline.polling.poller"):
        t.note_order(Listing({}), ["b1", "b2"])
        t.note_order(Listing({}), ["b2", "b1"])
    assert not t.ordered
    assert [r.getMessage() for r in caplog.records] == [
        "source src: the list is not newest first: refreshes use GETs"]


def test_a_page_numbered_list_that_repeats_items_is_still_newest_first() -> None:
    """Two batches created at the top while page 0 was walked push page 0 onto page 1."""
    t = tracker()
    t.known = {f"b{i}": known(created=float(i)) for i in range(1, 5)}
    listing = Listing({})
    t.note_order(listing, ["b4", "b3"])
    t.note_order(listing, ["b4", "b3"])  # page 1, once the list grew by two at its top
    t.note_order(listing, ["b2", "b1"])
    assert t.ordered
    assert listing.oldest == 1.0


# What to list and fetch.

def test_pages_of_ranks_known_batches_newest_first() -> None:
    t = tracker()
    t.known = {"a": known(created=5.0), "b": known(created=4.0), "c": known(created=3.0),
               "d": known(created=2.0), "e": known(created=1.0), "nodate": known()}
    assert t.pages_of(["a", "c", "e", "nodate", "unknown"], 2) == [0, 1, 2]
    assert t.pages_of(["e"], 0) == [4]  # a page size of 0 counts as 1


def test_to_fetch_takes_due_active_batches_not_seen() -> None:
    t = tracker()
    t.known = {"due": known(due=NOW), "later": known(due=NOW + 1), "seen": known(due=0.0),
               "done": known("completed", due=0.0), "bad": Known(INVALID, None, 1)}
    assert t.to_fetch(Listing({}), {"seen"}, NOW) == ["due"]


def test_to_fetch_takes_what_the_listing_passed() -> None:
    t = tracker()
    t.known = {"passed": known(created=5.0, due=NOW + 99), "ahead": known(created=1.0, due=NOW + 99)}
    listing = Listing({}, oldest=3.0)
    assert t.to_fetch(listing, set(), NOW) == ["passed"]
    t.ordered = False  # an unordered list proves nothing missing unless it was listed to its end
    assert t.to_fetch(listing, set(), NOW) == []
    listing.complete = True
    assert t.to_fetch(listing, set(), NOW) == ["passed", "ahead"]


def test_refresh_pages_lists_further_only_when_it_pays() -> None:
    t = tracker()
    t.known = {f"b{i}": known(created=float(100 - i), due=NOW + 99) for i in range(10)}
    for bid in ("b2", "b3", "b4", "b5"):  # on pages 1 and 2 of pages of 2
        t.known[bid].due = 0.0
    listing = Listing({"after": "b1"}, pages=1, size=2)
    assert t.refresh_pages(listing, set(), NOW) == 3  # two more pages rather than four GETs
    assert t.refresh_pages(listing, {"b2", "b3", "b4"}, NOW) == 1  # one GET rather than two pages
    assert t.refresh_pages(listing, {"b2", "b3", "b4", "b5"}, NOW) is None  # nothing due is left
    t.ordered = False
    assert t.refresh_pages(listing, set(), NOW) is None
    t.ordered, listing.params = True, None
    assert t.refresh_pages(listing, set(), NOW) is None


def test_discovery_stops_at_a_page_of_known_batches_once_listed_to_the_end() -> None:
    t = tracker()
    first = t.listing(2)
    assert t.page_params(first, None) == {"limit": "2"}
    body: dict[str, Any] = {"data": [batch("b2"), batch("b1")], "has_more": True}
    assert not t.listed(first, body, body["data"], ["b2", "b1"], unknown=True, until=None)
    body = {"data": [batch("b0")], "has_more": False}
    assert t.listed(first, body, body["data"], ["b0"], unknown=True, until=None)  # the end
    assert (first.complete, first.pages, first.size) == (True, 2, 2)
    assert t.page_params(first, None) is None
    later = t.listing(2)
    body = {"data": [batch("b2"), batch("b1")], "has_more": True}
    assert not t.listed(later, body, body["data"], ["b3", "b2"], unknown=True, until=None)
    assert t.listed(later, body, body["data"], ["b2", "b1"], unknown=False, until=None)
    assert not t.listed(Listing({}), body, body["data"], ["b2", "b1"], unknown=False, until=5)


def test_a_walk_stops_at_until_and_fails_past_max_pages() -> None:
    t = tracker()
    assert t.page_params(Listing({"limit": "2"}, pages=3), 3) is None
    assert t.page_params(Listing({"limit": "2"}, pages=2), 3) == {"limit": "2"}
    with pytest.raises(SourceError, match=f"source src: more than {MAX_PAGES} pages"):
        t.page_params(Listing({"limit": "2"}, pages=MAX_PAGES), None)


def test_unknown() -> None:
    t = tracker()
    t.known = {"b1": known()}
    assert not t.unknown(["b1", None])
    assert t.unknown(["b1", "b2"])


# What is published.

def test_a_terminal_batch_is_never_published_again() -> None:
    t = tracker()
    assert publish(t, [batch("b1"), batch("b2", "completed")]) == ["b1", "b2"]
    assert (t.known["b1"].settled, t.known["b2"].settled) == (False, True)
    assert publish(t, [batch("b1"), batch("b2", "completed")]) == ["b1"]
    assert publish(t, [batch("b2", "completed", extra=1)]) == []  # not even changed
    assert t.metrics.observations == 3


def test_a_batch_is_published_once_per_cycle() -> None:
    t = tracker()
    seen: set[str] = set()
    assert publish(t, [batch("b1")], seen) == ["b1"]
    assert publish(t, [batch("b1")], seen) == []
    assert seen == {"b1"}


def test_a_rejected_object_is_not_published_again_unchanged() -> None:
    t = tracker()
    bad = batch("b1", status=7)  # not a status the normaliser reads
    assert publish(t, [bad]) == ["b1"]
    assert t.known["b1"].status == INVALID
    assert t.metrics.errors["invalid_object"] == 1
    assert publish(t, [bad]) == []
    assert publish(t, [batch("b1", status=8)]) == ["b1"]  # changed: published (and rejected) again
    assert publish(t, [batch("b1")]) == ["b1"]  # mended
    assert t.known["b1"].status == "in_progress"


def test_a_rejected_object_without_an_id_is_remembered_by_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = tracker()
    with caplog.at_level(logging.WARNING, logger="pipeline.polling.poller"):
        assert publish(t, [{"status": "in_progress"}]) == [None]
        assert publish(t, [{"status": "in_progress"}]) == []
    assert "a batch object without an id was published" in caplog.text
    assert t.known == {}


def test_an_oversized_object_is_counted_once_and_never_published() -> None:
    t = tracker()
    huge = batch("b1", pad="x" * MAX_OBJECT)
    assert publish(t, [huge]) == []
    assert publish(t, [huge]) == []
    assert t.metrics.errors["oversized_object"] == 1
    assert t.known["b1"].settled


def test_an_envelope_kafka_refused_settles_its_batch() -> None:
    t = tracker()
    obj = batch("b1")
    seen: set[str] = set()
    fresh = t.fresh([obj], seen, AT)
    t.publishing(fresh)
    t.refused(Envelope("src", "openai", AT, obj, "b1"), "record_too_large")  # while in flight
    t.published(fresh, seen, t.handed_over())
    assert t.known["b1"].status == INVALID
    assert t.metrics.errors["record_too_large"] == 1
    assert publish(t, [obj]) == []  # unchanged: not again
    assert publish(t, [batch("b1", extra=1)]) == ["b1"]
    t.refused(Envelope("src", "openai", AT, batch("b1", extra=1), "b1"), "record_too_large")  # after
    assert t.known["b1"].status == INVALID
    t.refused(Envelope("src", "openai", AT, obj, None), "record_too_large")
    assert t.metrics.errors["record_too_large"] == 3


def test_read_schedules_an_active_batch_by_the_clock() -> None:
    t = tracker(now=NOW)
    got = t.read(batch("b1", created=int(NOW) - 60), AT)
    assert (got.status, got.created, got.due) == ("in_progress", NOW - 60, NOW + 300.0)


# Timing and gauges.

def test_next_delay_halves_while_an_active_batch_nears_its_expiry() -> None:
    t = tracker()
    t.known = {"b1": Known("in_progress", NOW + 100)}
    assert t.next_delay(10.0, NOW) == 10.0
    assert t.next_delay(50.0, NOW) == 25.0
    assert t.next_delay(1.5, NOW + 99) == 1.0
    t.known["b1"].status = "expired"
    assert t.next_delay(50.0, NOW) == 50.0


def test_vanished_and_gauges() -> None:
    t = tracker()
    t.known = {"b1": known(), "b2": known("completed")}
    t.vanished("b1")
    t.update_gauges()
    assert (t.metrics.vanished, t.metrics.tracked, t.metrics.active) == (1, 1, 0)


# Batches the provider stopped returning.

def walked(t: Tracker, pages: list[list[str]], *, complete: bool = False) -> Listing:
    """A walk over ``pages`` of batch ids (begun with what ``t`` knows), as the poller makes it."""
    listing = t.listing(100)
    for ids in pages:
        t.note_order(listing, list(ids))
    listing.complete = complete
    return listing


def history(t: Tracker, statuses: dict[str, str]) -> None:
    """``t`` knows these batches, created newest first in the order given."""
    t.known = {bid: known(status, created=float(100 - i), due=NOW + 99)
               for i, (bid, status) in enumerate(statuses.items())}


def test_a_stable_newest_first_walk_past_a_batch_proves_it_gone() -> None:
    t = tracker()
    history(t, {"b1": "completed", "b2": "in_progress", "b3": "completed", "b4": "failed", "b5": "completed"})
    listing = walked(t, [["b1", "b3"]])  # b2 is missing, and b3, older, was listed
    assert t.gone(listing) == ["b2"]
    assert (t.metrics.vanished, t.metrics.purged) == (1, 0)
    assert "b2" not in t.known
    listing = walked(t, [["b1"], ["b4"]])  # b3 missing; b5 older than anything listed: not proven
    assert t.gone(listing) == ["b3"]
    assert (t.metrics.vanished, t.metrics.purged) == (1, 1)
    assert t.suspects(listing) == []  # b5: the walk neither passed it nor reached the end
    listing = walked(t, [["b1", "b4"]], complete=True)
    assert t.gone(listing) == []
    assert t.suspects(listing) == ["b5"]  # the list ended before it: only a GET can tell


def test_absence_proves_nothing_on_page_numbered_or_unordered_lists() -> None:
    t = tracker("mistral")  # page numbers: a removal lifts a batch onto a page already read
    history(t, {"b1": "completed", "b2": "completed", "b3": "completed"})
    listing = walked(t, [["b1", "b3"]])
    assert t.gone(listing) == []
    assert t.suspects(listing) == ["b2"]  # fetched once; a 404 shows it gone
    t = tracker()
    history(t, {"b1": "completed", "b2": "completed", "b3": "completed"})
    t.ordered = False
    listing = walked(t, [["b1", "b3"]])
    assert (t.gone(listing), t.suspects(listing)) == ([], [])
    listing.complete = True
    assert (t.gone(listing), t.suspects(listing)) == ([], ["b2"])


def test_only_batches_known_when_the_walk_began_and_tracked_are_judged() -> None:
    t = tracker()
    history(t, {"b1": "completed", "b3": "completed"})
    listing = walked(t, [["b1"]])
    t.known["b2"] = known("in_progress", created=98.5)  # learnt meanwhile (a GET): not on the pages read
    t.known["bad"] = Known(INVALID, None, 1, 99.0)
    listing.before |= {"bad"}
    t.note_order(listing, ["b3"])
    assert t.gone(listing) == []
    assert set(t.known) == {"b1", "b2", "b3", "bad"}


def test_a_terminal_batch_a_get_returned_is_not_suspected_again_until_listed() -> None:
    t = tracker()
    history(t, {"b1": "completed", "b2": "completed"})
    listing = walked(t, [["b1"]], complete=True)
    assert t.suspects(listing) == ["b2"]
    t.answered("b2")  # the GET returned it: the list hides it, the provider still has it
    assert t.suspects(walked(t, [["b1"]], complete=True)) == []
    walked(t, [["b1", "b2"]])  # listed again
    assert t.suspects(walked(t, [["b1"]], complete=True)) == ["b2"]


def test_suspects_are_confirmed_at_most_max_confirm_a_cycle() -> None:
    t = tracker()
    history(t, {f"b{i:04d}": "completed" for i in range(MAX_CONFIRM + 5)})
    listing = walked(t, [["b0000"]], complete=True)
    assert len(t.suspects(listing)) == MAX_CONFIRM
    assert t.to_fetch(listing, set(), NOW) == t.suspects(listing)


def test_a_sweep_lists_to_the_end_every_sweep_interval() -> None:
    clock = FakeClock(NOW)
    t = Tracker("src", adapter("openai"), Cadence(10.0, 300.0, 600.0), SourceMetrics("src", "openai"), clock)
    body: dict[str, Any] = {"data": [batch("b2"), batch("b1")], "has_more": True}
    first = t.listing(2)
    assert first.sweep
    t.listed(first, body, body["data"], ["b2", "b1"], unknown=True, until=None)
    t.listed(first, {"data": [], "has_more": False}, [], [], unknown=False, until=None)  # the end
    clock.now += 599
    quiet = t.listing(2)
    assert not quiet.sweep
    assert t.listed(quiet, body, body["data"], ["b2", "b1"], unknown=False, until=None)  # stops here
    clock.now += 1
    sweep = t.listing(2)
    assert sweep.sweep
    assert not t.listed(sweep, body, body["data"], ["b2", "b1"], unknown=False, until=None)  # goes on
    never = Tracker("src", adapter("openai"), Cadence(10.0, 300.0), SourceMetrics("src", "openai"), clock)
    assert not never.listing(2).sweep  # sweep 0: only the first listing goes to the end


def test_vanished_counts_active_and_terminal_apart() -> None:
    t = tracker()
    t.known = {"a": known(), "t": known("expired"), "bad": Known(INVALID, None, 1)}
    assert t.vanished("a")
    assert t.vanished("t")
    assert not t.vanished("bad")
    assert not t.vanished("never-known")
    assert (t.metrics.vanished, t.metrics.purged, t.known) == (1, 1, {})
