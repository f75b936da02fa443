"""pipeline.polling.schedule: when an active batch is refreshed, and how many list pages refresh the due
ones."""

from __future__ import annotations

import pytest

from pipeline.core.eta import expected_end
from pipeline.polling.schedule import Cadence, next_refresh, pages_to_list

CADENCE = Cadence(poll=30.0, active=300.0)


def test_expected_end_is_the_earlier_of_expiry_and_progress() -> None:
    assert expected_end(1000.0, None, None, None, None) is None
    assert expected_end(1000.0, 5000.0, None, None, None) == 5000.0
    # started at 0, a quarter done at 1000: the rate says 4000
    assert expected_end(1000.0, None, 0.0, 25, 100) == 4000.0
    assert expected_end(1000.0, 3000.0, 0.0, 25, 100) == 3000.0
    assert expected_end(1000.0, None, 0.0, 0, 100) is None  # no progress yet: no rate
    assert expected_end(1000.0, None, 2000.0, 25, 100) is None  # clocks disagree: no rate


def test_far_from_its_end_a_batch_waits_the_active_interval() -> None:
    assert next_refresh("in_progress", 0.0, None, CADENCE) == 300.0
    assert next_refresh("in_progress", 0.0, 86_400.0, CADENCE) == 300.0


def test_nearing_its_end_a_batch_is_refreshed_sooner_down_to_the_poll_interval() -> None:
    assert next_refresh("in_progress", 0.0, 400.0, CADENCE) == 200.0  # half the time left
    assert next_refresh("in_progress", 0.0, 40.0, CADENCE) == 30.0
    assert next_refresh("in_progress", 100.0, 50.0, CADENCE) == 130.0  # overdue: every poll


@pytest.mark.parametrize("status", ["validating", "finalizing", "cancelling"])
def test_statuses_that_move_in_minutes_are_refreshed_every_poll(status: str) -> None:
    assert next_refresh(status, 0.0, None, CADENCE) == 30.0
    assert next_refresh(status, 0.0, 86_400.0, CADENCE) == 30.0


def test_cadence_is_checked() -> None:
    with pytest.raises(ValueError, match="poll interval"):
        Cadence(poll=60.0, active=30.0)
    with pytest.raises(ValueError, match="poll interval"):
        Cadence(poll=0.0, active=30.0)


def test_pages_to_list_takes_the_cheaper_of_pages_and_gets() -> None:
    assert pages_to_list(1, []) == 1
    assert pages_to_list(1, [0, 0]) == 1  # on the page already listed
    assert pages_to_list(1, [5, 9]) == 1  # two GETs beat nine more pages
    assert pages_to_list(1, [1] * 5) == 2  # one more page beats five GETs
    dense = [p for p in range(1, 10) for _ in range(3)]  # three due on each of pages 1..9
    assert pages_to_list(1, dense) == 10
    assert pages_to_list(1, [*dense, 50]) == 10  # the far one is a GET


def test_the_longer_a_short_status_lasts_the_less_often_it_is_refreshed() -> None:
    assert next_refresh("finalizing", 100.0, None, CADENCE, since=100.0) == 130.0
    assert next_refresh("finalizing", 400.0, None, CADENCE, since=0.0) == 600.0  # half the time spent
    assert next_refresh("cancelling", 10_000.0, None, CADENCE, since=0.0) == 10_300.0  # capped
