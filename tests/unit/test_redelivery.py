"""The hole test of the redelivery repair (agents.redelivery.hole): pure, on consumer views."""

from __future__ import annotations

from agents.redelivery import PartitionView, hole


def view(committed: int | None, read: int | None = None, fetched: int | None = None,
         acked: tuple[int, ...] = (), in_flight: tuple[int, ...] = ()) -> PartitionView:
    return PartitionView(committed, read, fetched, acked, in_flight)


def test_a_record_dropped_before_later_ones_were_processed_is_a_hole() -> None:
    assert hole(view(196, read=396, fetched=397, acked=(200, 201, 202))) == 196


def test_the_last_record_dropped_is_a_hole_by_the_fetch_position() -> None:
    """Faust sets the read offset to the dropped record itself: only the position tells."""
    assert hole(view(50, read=50, fetched=51)) == 50


def test_a_record_being_processed_or_done_is_not_a_hole() -> None:
    assert hole(view(196, read=396, fetched=397, acked=(197,), in_flight=(196,))) is None
    assert hole(view(196, read=396, fetched=397, acked=(196, 197))) is None


def test_a_partition_not_yet_fetched_or_never_committed_is_not_a_hole() -> None:
    assert hole(view(196, read=196, fetched=196)) is None  # just sought: nothing fetched yet
    assert hole(view(196)) is None
    assert hole(view(None, read=10, fetched=11, acked=(5,))) is None
