"""The hole test of the redelivery repair (agents.redelivery.hole): pure, on consumer views."""

from __future__ import annotations

from agents.redelivery import PartitionView, hole


def view(committed: int | None, acked: tuple[int, ...] = (),
         in_flight: tuple[int, ...] = ()) -> PartitionView:
    return PartitionView(committed, acked, in_flight)


def test_a_record_dropped_before_later_ones_were_processed_is_a_hole() -> None:
    assert hole(view(196, acked=(200, 201, 202))) == 196


def test_a_record_being_processed_or_done_is_not_a_hole() -> None:
    assert hole(view(196, acked=(197,), in_flight=(196,))) is None
    assert hole(view(196, acked=(196, 197))) is None


def test_records_queued_for_a_blocked_agent_are_not_a_hole() -> None:
    """During a broker outage the agent waits on a send and the fetched records queue up; none
    later than the committed one is processed, so nothing is read again (it would be doubled)."""
    assert hole(view(196)) is None
    assert hole(view(196, acked=(150,))) is None


def test_a_partition_never_committed_is_not_a_hole() -> None:
    assert hole(view(None, acked=(5,))) is None
