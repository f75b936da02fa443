"""The pure parts of the redelivery guards: the hole test (on consumer views) and the commit limit."""

from __future__ import annotations

from agents.redelivery import PartitionView, commit_limit, hole


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


def test_the_commit_stops_at_the_first_record_no_agent_finished() -> None:
    assert commit_limit(10, {10, 11, 12, 14}) == 13
    assert commit_limit(10, set(range(10, 20))) == 20


def test_nothing_commits_while_the_committed_record_is_unfinished() -> None:
    """Faust commits past a one-record hole at the head (it tests ``> 1``) and past any offset
    its read position jumped over; the limit counts only what the agents acknowledged."""
    assert commit_limit(10, {11, 12}) is None
    assert commit_limit(10, set()) is None


def test_nothing_commits_before_the_start_is_known() -> None:
    assert commit_limit(None, {0, 1, 2}) is None
