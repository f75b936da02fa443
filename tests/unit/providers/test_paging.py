"""pipeline.providers.paging.PageGuard: a listing stops at a cursor it already requested and at a
page that adds no new batch id (issue 12, point 9), whatever the paging strategy."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.providers.paging import CursorPaging, PageGuard, PagePaging, Params, TokenPaging


def test_a_fresh_listing_goes_on() -> None:
    guard = PageGuard()
    assert guard.check({"limit": "2"}, ["a", "b"], {"limit": "2", "after": "b"}) is None
    assert guard.check({"limit": "2", "after": "b"}, ["c", None], {"limit": "2", "after": "c"}) is None


def test_a_cursor_cycle_a_b_a_stops() -> None:
    guard = PageGuard()
    first, a, b = {"limit": "1"}, {"limit": "1", "after": "A"}, {"limit": "1", "after": "B"}
    assert guard.check(first, ["x1"], a) is None
    assert guard.check(a, ["x2"], b) is None
    loop = guard.check(b, ["x3"], a)
    assert loop is not None
    assert loop.kind == "paging_cursor_repeated"


def test_parameter_order_does_not_hide_a_repeat() -> None:
    guard = PageGuard()
    assert guard.check({"a": "1", "b": "2"}, ["x"], {"b": "3"}) is None
    loop = guard.check({"b": "3"}, ["y"], {"b": "2", "a": "1"})
    assert loop is not None
    assert loop.kind == "paging_cursor_repeated"


def test_a_page_without_a_new_id_stops_even_with_a_new_cursor() -> None:
    guard = PageGuard()
    assert guard.check({"page": "0"}, ["m1", "m2"], {"page": "1"}) is None
    loop = guard.check({"page": "1"}, ["m2", "m1"], {"page": "2"})
    assert loop is not None
    assert loop.kind == "paging_no_new_id"


def test_a_page_of_objects_without_ids_or_an_empty_page_adds_no_new_id() -> None:
    for ids in ([None, None], []):
        loop = PageGuard().check({"pageSize": "2"}, ids, {"pageSize": "2", "pageToken": "t"})
        assert loop is not None
        assert loop.kind == "paging_no_new_id"


Page = tuple[object, Sequence[str]]  # a decoded body and the ids of its items


def walk(strategy: CursorPaging | PagePaging | TokenPaging, pages: Sequence[Page]) -> int:
    """Pages requested by a guarded walk over canned responses (the last one repeats forever)."""
    params: Params | None = strategy.first(2)
    guard, requested = PageGuard(), 0
    while params is not None and requested < 10_000:
        body, ids = pages[min(requested, len(pages) - 1)]
        requested += 1
        items = [{"id": i} for i in ids]
        following = strategy.next(params, body, items)
        params = None if following is None or guard.check(params, ids, following) else following
    return requested


def test_every_strategy_stops_at_once_on_a_provider_that_loops() -> None:
    new_cursors = [({"has_more": True, "last_id": f"c{n}"}, ["a", "b"]) for n in range(5)]
    assert walk(CursorPaging(), new_cursors) == 2
    assert walk(PagePaging(), [({"data": []}, ["a", "b"])]) == 2  # Mistral without total
    cycling = [({"nextPageToken": "T1"}, ["a", "b"]), ({"nextPageToken": "T2"}, ["c", "d"]),
               ({"nextPageToken": "T1"}, ["e", "f"])]
    assert walk(TokenPaging(), cycling) == 3
