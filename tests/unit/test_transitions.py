"""pipeline.transitions: the per-batch state machine, including a property test over delivery orders."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.models import STATUS_TIME_FIELD, TERMINAL, ChangeEvent, Snapshot
from pipeline.timeutil import to_iso
from pipeline.transitions import RANK, BatchState, advances, apply, event_id

T0 = 1_714_560_000  # 2024-05-01T10:40:00Z


def iso(seconds: float) -> str:
    value = to_iso(seconds, "t")
    assert value is not None
    return value


def snapshot_with(status: str, times: Mapping[str, float], *, batch_id: str = "b1", source: str = "prod",
                  observed: float = T0 + 10_000) -> Snapshot:
    fields: dict[str, Any] = {name: iso(at) for name, at in times.items()}
    return Snapshot(source=source, provider="openai", batch_id=batch_id, status=status,
                    provider_status=status, observed_at=iso(observed), **fields)


def snap(status: str, batch_id: str = "b1", source: str = "prod", observed: float = T0 + 10_000,
         **times: float) -> Snapshot:
    return snapshot_with(status, times, batch_id=batch_id, source=source, observed=observed)


def fold(snaps: list[Snapshot]) -> tuple[BatchState | None, list[ChangeEvent]]:
    state: BatchState | None = None
    events: list[ChangeEvent] = []
    for s in snaps:
        state, new = apply(state, s)
        events += new
    return state, events


VALIDATING = snap("validating", created_at=T0)
IN_PROGRESS = snap("in_progress", created_at=T0, in_progress_at=T0 + 90)
FINALIZING = snap("finalizing", created_at=T0, in_progress_at=T0 + 90, finalizing_at=T0 + 3_690)
COMPLETED = snap("completed", created_at=T0, in_progress_at=T0 + 90, finalizing_at=T0 + 3_690,
                 completed_at=T0 + 3_750)


def test_first_snapshot_sets_state_without_events() -> None:
    state, events = apply(None, VALIDATING)
    assert state == BatchState("validating", iso(T0))
    assert events == []


def test_first_snapshot_without_provider_time_uses_observed_at() -> None:
    state, _ = apply(None, snap("in_progress", created_at=T0, observed=T0 + 5))
    assert state == BatchState("in_progress", iso(T0 + 5))


def test_forward_move_emits_one_status_changed() -> None:
    state, _ = apply(None, VALIDATING)
    new_state, events = apply(state, IN_PROGRESS)
    assert new_state == BatchState("in_progress", iso(T0 + 90))
    (event,) = events
    assert event.kind == "status_changed"
    assert (event.from_status, event.to_status) == ("validating", "in_progress")
    assert event.seconds_in_previous == 90.0
    assert event.at == iso(T0 + 90)
    assert event.observed_at == IN_PROGRESS.observed_at
    assert event.snapshot == IN_PROGRESS
    assert (event.source, event.provider, event.batch_id) == ("prod", "openai", "b1")
    assert event.key == "prod/b1"
    assert event.schema_version == 1


def test_full_lifecycle_durations() -> None:
    state, events = fold([VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED])
    assert state == BatchState("completed", iso(T0 + 3_750))
    assert [(e.from_status, e.to_status, e.seconds_in_previous) for e in events] == [
        ("validating", "in_progress", 90.0),
        ("in_progress", "finalizing", 3_600.0),
        ("finalizing", "completed", 60.0),
    ]


def test_missing_provider_time_falls_back_to_observed_at() -> None:
    state, _ = apply(None, VALIDATING)
    late = snap("in_progress", created_at=T0, observed=T0 + 300)  # no in_progress_at
    _, (event,) = apply(state, late)
    assert event.at == iso(T0 + 300)
    assert event.seconds_in_previous == 300.0


def test_negative_duration_is_clamped_to_zero() -> None:
    state = BatchState("validating", iso(T0 + 1_000))
    _, (event,) = apply(state, snap("in_progress", in_progress_at=T0))
    assert event.seconds_in_previous == 0.0


def test_skipped_states_yield_exactly_one_event() -> None:
    state, _ = apply(None, VALIDATING)
    new_state, events = apply(state, COMPLETED)
    assert new_state.status == "completed"
    (event,) = events
    assert (event.from_status, event.to_status) == ("validating", "completed")
    assert event.seconds_in_previous == 3_750.0


def test_backwards_move_is_ignored() -> None:
    state, _ = fold([VALIDATING, COMPLETED])
    assert state is not None
    new_state, events = apply(state, IN_PROGRESS)
    assert new_state == state
    assert events == []
    state2, _ = fold([VALIDATING, FINALIZING])
    assert state2 is not None
    assert apply(state2, IN_PROGRESS) == (state2, [])


def test_terminal_is_sticky() -> None:
    state, _ = fold([VALIDATING, COMPLETED])
    assert state is not None
    for status in ("failed", "expired", "cancelled", "cancelling", "validating", "unknown"):
        assert apply(state, snap(status, failed_at=T0 + 9_000)) == (state, [])


def test_duplicates_change_nothing() -> None:
    state, _ = fold([VALIDATING, IN_PROGRESS])
    assert state is not None
    assert apply(state, IN_PROGRESS) == (state, [])
    later_observation = snap("in_progress", created_at=T0, in_progress_at=T0 + 90, observed=T0 + 99_999)
    assert apply(state, later_observation) == (state, [])


def test_unknown_status() -> None:
    state, events = apply(None, snap("unknown", observed=T0))
    assert state == BatchState("unknown", iso(T0))
    assert events == []
    new_state, (event,) = apply(state, VALIDATING)
    assert (event.from_status, event.to_status) == ("unknown", "validating")
    assert new_state.status == "validating"
    assert apply(new_state, snap("unknown")) == (new_state, [])


def test_advances() -> None:
    assert advances("validating", "in_progress")
    assert advances("in_progress", "cancelling")
    assert advances("cancelling", "cancelled")
    assert not advances("in_progress", "in_progress")
    assert not advances("finalizing", "in_progress")
    assert not advances("completed", "failed")
    assert not advances("validating", "unknown")
    assert not advances("validating", "paused")
    assert all(not advances(t, s) for t in TERMINAL for s in RANK)


def test_event_ids_are_deterministic() -> None:
    _, first = fold([VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED])
    _, second = fold([VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED])
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == 3
    for e in first:
        assert uuid.UUID(e.event_id).version == 5


def test_event_id_is_the_same_for_a_later_observation_of_the_same_edge() -> None:
    state = BatchState("validating", iso(T0))
    _, (a,) = apply(state, IN_PROGRESS)
    _, (b,) = apply(state, snap("in_progress", created_at=T0, in_progress_at=T0 + 90, observed=T0 + 50_000))
    assert a.event_id == b.event_id


def test_event_ids_differ_across_batches_sources_and_edges() -> None:
    ids = {
        event_id("prod", "b1", "status_changed", "validating", "in_progress"),
        event_id("prod", "b2", "status_changed", "validating", "in_progress"),
        event_id("dev", "b1", "status_changed", "validating", "in_progress"),
        event_id("prod", "b1", "status_changed", "in_progress", "finalizing"),
        event_id("prod", "b1", "status_changed", "validating", "completed"),
    }
    assert len(ids) == 5
    state = BatchState("validating", iso(T0))
    _, (b1,) = apply(state, IN_PROGRESS)
    _, (b2,) = apply(state, snap("in_progress", batch_id="b2", in_progress_at=T0 + 90))
    assert b1.event_id != b2.event_id


def test_batch_state_dict_round_trip() -> None:
    state = BatchState("finalizing", iso(T0))
    assert state.to_dict() == {"status": "finalizing", "since": iso(T0)}
    assert BatchState.from_dict(state.to_dict()) == state


def test_every_status_has_a_rank_and_a_time_field() -> None:
    assert set(STATUS_TIME_FIELD) | {"unknown"} == set(RANK)
    assert {RANK[s] for s in TERMINAL} == {max(RANK.values())}


# --- property: any delivery order of a valid lifecycle ----------------------------------------

PATHS: tuple[tuple[str, ...], ...] = (
    ("validating", "failed"),
    ("validating", "cancelling", "cancelled"),
    ("validating", "in_progress", "expired"),
    ("validating", "in_progress", "failed"),
    ("validating", "in_progress", "cancelling", "cancelled"),
    ("validating", "in_progress", "finalizing", "completed"),
    ("validating", "in_progress", "finalizing", "expired"),
    ("validating", "in_progress", "finalizing", "cancelling", "cancelled"),
)


@st.composite
def lifecycles(draw: st.DrawFn) -> tuple[list[Snapshot], list[int]]:
    """The snapshots of one batch along a valid path, and a delivery order with repeats."""
    path = draw(st.sampled_from(PATHS))
    gaps = draw(st.lists(st.integers(0, 7_200), min_size=len(path), max_size=len(path)))
    times: dict[str, float] = {}
    at = float(T0)
    snaps = []
    for status, gap in zip(path, gaps, strict=True):
        at += gap
        times[STATUS_TIME_FIELD[status]] = at
        lag = draw(st.integers(0, 600))
        snaps.append(snapshot_with(status, times, batch_id="prop", observed=at + lag))
    order = draw(st.lists(st.integers(0, len(path) - 1), min_size=1, max_size=4 * len(path)))
    return snaps, order


@given(lifecycles())
def test_folding_any_delivery_order_never_moves_backwards(case: tuple[list[Snapshot], list[int]]) -> None:
    snaps, order = case
    state: BatchState | None = None
    ids: list[str] = []
    for index in order:
        before = state
        state, events = apply(state, snaps[index])
        if before is not None:
            assert RANK[state.status] >= RANK[before.status]
            assert len(events) == (1 if state.status != before.status else 0)
            if before.status in TERMINAL:
                assert state == before
        else:
            assert events == []
        for event in events:
            assert before is not None
            assert (event.from_status, event.to_status) == (before.status, state.status)
            assert RANK[event.to_status or ""] > RANK[event.from_status or ""]
            assert event.seconds_in_previous is not None
            assert event.seconds_in_previous >= 0.0
            ids.append(event.event_id)
    assert state is not None
    highest = max(order)  # ranks strictly increase along every path
    assert state.status == snaps[highest].status
    assert state.since == snaps[highest].status_time(state.status)
    assert len(ids) == len(set(ids))
    assert len(ids) <= len(set(order)) - 1


@given(lifecycles())
def test_folding_is_deterministic(case: tuple[list[Snapshot], list[int]]) -> None:
    snaps, order = case
    first = fold([snaps[i] for i in order])
    second = fold([snaps[i] for i in order])
    assert first == second
