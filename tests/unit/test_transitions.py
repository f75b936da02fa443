"""pipeline.core.transitions: the per-batch state machine, every change kind and rule.

Every event these tests produce is checked against ``schemas/change_event.v2.json``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.models import CHANGE_KINDS, STATUS_TIME_FIELD, TERMINAL, ChangeEvent, Snapshot
from pipeline.core.timeutil import to_iso
from pipeline.core.transitions import (
    GRAPH,
    RANK,
    BatchState,
    Rules,
    advances,
    event_id,
    on_graph,
    purge,
    vanish,
)
from pipeline.core.transitions import apply as apply_unchecked
from tests.change_schema import checked

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


# The status tests below observe everything at one fixed time: stalled would fire, so it is off.
STATUS_ONLY = Rules(stall_seconds=0.0)


def apply(state: BatchState | None, s: Snapshot,
          rules: Rules = STATUS_ONLY) -> tuple[BatchState, list[ChangeEvent]]:
    new_state, events = apply_unchecked(state, s, rules)
    return new_state, checked(events)


def fold(snaps: list[Snapshot], rules: Rules = STATUS_ONLY) -> tuple[BatchState | None, list[ChangeEvent]]:
    """Fold the snapshots; the ``discovered`` event of the first one is left out."""
    state: BatchState | None = None
    events: list[ChangeEvent] = []
    for s in snaps:
        state, new = apply(state, s, rules)
        events += new
    return state, [e for e in events if e.kind != "discovered"]


def kinds(events: list[ChangeEvent]) -> list[str]:
    return [e.kind for e in events]


VALIDATING = snap("validating", created_at=T0)
IN_PROGRESS = snap("in_progress", created_at=T0, in_progress_at=T0 + 90)
FINALIZING = snap("finalizing", created_at=T0, in_progress_at=T0 + 90, finalizing_at=T0 + 3_690)
COMPLETED = snap("completed", created_at=T0, in_progress_at=T0 + 90, finalizing_at=T0 + 3_690,
                 completed_at=T0 + 3_750)


def test_first_snapshot_is_discovered() -> None:
    state, (event,) = apply(None, VALIDATING)
    assert (state.status, state.since) == ("validating", iso(T0))
    assert event.kind == "discovered"
    assert event.event_id == event_id("prod", "b1", "discovered")
    assert (event.at, event.observed_at, event.snapshot) == (iso(T0), VALIDATING.observed_at, VALIDATING)
    assert (event.from_status, event.to_status, event.seconds_in_previous) == (None, None, None)


def test_first_snapshot_without_provider_time_uses_observed_at() -> None:
    state, (event,) = apply(None, snap("in_progress", created_at=T0, observed=T0 + 5))
    assert (state.status, state.since) == ("in_progress", iso(T0 + 5))
    assert event.at == iso(T0 + 5)


def test_first_snapshot_in_a_late_status_yields_no_status_changed() -> None:
    _, events = apply(None, COMPLETED)
    assert kinds(events) == ["discovered"]


def test_forward_move_emits_one_status_changed() -> None:
    state, _ = apply(None, VALIDATING)
    new_state, events = apply(state, IN_PROGRESS)
    assert (new_state.status, new_state.since) == ("in_progress", iso(T0 + 90))
    (event,) = events
    assert event.kind == "status_changed"
    assert (event.from_status, event.to_status) == ("validating", "in_progress")
    assert event.seconds_in_previous == 90.0
    assert event.at == iso(T0 + 90)
    assert event.observed_at == IN_PROGRESS.observed_at
    assert event.snapshot == IN_PROGRESS
    assert (event.source, event.provider, event.batch_id) == ("prod", "openai", "b1")
    assert event.key == "prod/b1"
    assert event.schema_version == 2
    assert event.off_graph is False


def test_full_lifecycle_durations() -> None:
    state, events = fold([VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED])
    assert state is not None
    assert (state.status, state.since) == ("completed", iso(T0 + 3_750))
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
    assert (state.status, state.since) == ("unknown", iso(T0))
    assert kinds(events) == ["discovered"]
    new_state, (event,) = apply(state, VALIDATING)
    assert (event.from_status, event.to_status) == ("unknown", "validating")
    assert event.off_graph is True  # unknown is not in the lifecycle graph
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
    state = BatchState("finalizing", iso(T0), (5, 1, 10), (2, 0, 10), iso(T0), iso(T0 + 1), stalled=True)
    assert BatchState.from_dict(state.to_dict()) == state
    assert BatchState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state


def test_batch_state_from_an_older_table_value() -> None:
    old = {"status": "finalizing", "since": iso(T0), "a_key_from_the_future": 1}
    assert BatchState.from_dict(old) == BatchState("finalizing", iso(T0))


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


@settings(deadline=None)  # a loaded CI machine must not fail on timing
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
            assert kinds(events) == ["discovered"]
            continue
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


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(lifecycles())
def test_folding_is_deterministic(case: tuple[list[Snapshot], list[int]]) -> None:
    snaps, order = case
    first = fold([snaps[i] for i in order])
    second = fold([snaps[i] for i in order])
    assert first == second


# --- the lifecycle graph: off-graph edges are flagged, never dropped -----------------------------


def test_on_graph_allows_skipped_states() -> None:
    assert on_graph("validating", "completed")  # via in_progress, finalizing
    assert on_graph("validating", "cancelled")
    assert on_graph("in_progress", "cancelled")
    assert not on_graph("cancelling", "completed")
    assert not on_graph("cancelling", "expired")
    assert not on_graph("unknown", "validating")
    assert not on_graph("completed", "failed")


def test_an_edge_outside_the_graph_is_emitted_with_the_flag() -> None:
    state = BatchState("cancelling", iso(T0))
    new_state, (event,) = apply(state, snap("completed", completed_at=T0 + 60))
    assert (event.kind, event.from_status, event.to_status) == ("status_changed", "cancelling", "completed")
    assert event.off_graph is True
    assert new_state.status == "completed"


def test_every_graph_edge_is_a_forward_move() -> None:
    for current, targets in GRAPH.items():
        for target in targets:
            assert advances(current, target), (current, target)


# --- progress ------------------------------------------------------------------------------------

EVERY = Rules(stall_seconds=0.0, progress_min_interval=0.0)


def counted(done: int, failed: int = 0, total: int = 100, observed: float = T0 + 200,
            status: str = "in_progress", **times: float) -> Snapshot:
    s = snapshot_with(status, {"created_at": T0, "in_progress_at": T0 + 90, **times}, observed=observed)
    return Snapshot(**{**s.to_dict(), "requests_completed": done, "requests_failed": failed,
                       "requests_total": total})


def test_progress_reports_count_deltas() -> None:
    state, _ = apply(None, counted(0, observed=T0 + 100), EVERY)
    state, events = apply(state, counted(10, 1, observed=T0 + 200), EVERY)
    (event,) = events
    assert event.kind == "progress"
    assert event.deltas == {"requests_completed": 10, "requests_failed": 1, "requests_total": 0}
    assert event.at == event.observed_at == iso(T0 + 200)
    state, (second,) = apply(state, counted(25, 1, observed=T0 + 300), EVERY)
    assert second.deltas == {"requests_completed": 15, "requests_failed": 0, "requests_total": 0}
    assert second.event_id != event.event_id
    assert state.counts == state.reported == (25, 1, 100)


def test_progress_is_throttled_by_interval() -> None:
    rules = Rules(stall_seconds=0.0, progress_min_interval=60.0)
    state, _ = apply(None, counted(0, observed=T0 + 100), rules)
    state, events = apply(state, counted(5, observed=T0 + 130), rules)
    assert events == []
    assert state.counts == (5, 0, 100)
    state, events = apply(state, counted(8, observed=T0 + 159), rules)
    assert events == []
    state, (event,) = apply(state, counted(9, observed=T0 + 160), rules)
    assert event.deltas == {"requests_completed": 9, "requests_failed": 0, "requests_total": 0}


def test_progress_is_throttled_by_step_or_interval() -> None:
    rules = Rules(stall_seconds=0.0, progress_min_interval=3_600.0, progress_min_step=10)
    state, _ = apply(None, counted(0, observed=T0 + 100), rules)
    state, events = apply(state, counted(9, observed=T0 + 110), rules)
    assert events == []
    state, (event,) = apply(state, counted(9, 1, observed=T0 + 120), rules)
    assert event.deltas == {"requests_completed": 9, "requests_failed": 1, "requests_total": 0}
    _, (late,) = apply(state, counted(10, 1, observed=T0 + 120 + 3_600), rules)
    assert late.deltas == {"requests_completed": 1, "requests_failed": 0, "requests_total": 0}


def test_older_or_equal_counts_yield_no_progress() -> None:
    state, _ = apply(None, counted(0, observed=T0 + 100), EVERY)
    state, _ = apply(state, counted(50, 2, observed=T0 + 300), EVERY)
    assert apply(state, counted(50, 2, observed=T0 + 400), EVERY) == (state, [])  # duplicate
    assert apply(state, counted(40, 2, observed=T0 + 200), EVERY) == (state, [])  # delivered late
    assert apply(state, counted(60, 1, observed=T0 + 250), EVERY) == (state, [])  # mixed: older


def test_progress_event_ids_are_deterministic_and_name_both_ends() -> None:
    first = fold([counted(0, observed=T0 + 100), counted(10, observed=T0 + 200)], EVERY)
    again = fold([counted(0, observed=T0 + 100), counted(10, observed=T0 + 999)], EVERY)
    assert [e.event_id for e in first[1]] == [e.event_id for e in again[1]]
    other_base = fold([counted(5, observed=T0 + 100), counted(10, observed=T0 + 200)], EVERY)
    assert first[1][0].event_id != other_base[1][0].event_id


def test_a_status_change_and_progress_in_one_snapshot() -> None:
    state, _ = apply(None, counted(50, observed=T0 + 100), EVERY)
    fin = counted(100, observed=T0 + 200, status="finalizing", finalizing_at=T0 + 150)
    _, events = apply(state, fin, EVERY)
    assert kinds(events) == ["status_changed", "progress"]


# --- stalled ---------------------------------------------------------------------------------------

STALL = Rules(stall_seconds=600.0, progress_min_interval=0.0, expiry_risk=False)


def test_stalled_once_per_episode_while_active() -> None:
    state, _ = apply(None, counted(10, observed=T0 + 100), STALL)
    state, events = apply(state, counted(10, observed=T0 + 699), STALL)
    assert events == []
    state, (event,) = apply(state, counted(10, observed=T0 + 700), STALL)
    assert event.kind == "stalled"
    assert event.stalled_seconds == 600.0
    assert event.at == iso(T0 + 700)
    assert state.stalled
    state, events = apply(state, counted(10, observed=T0 + 5_000), STALL)
    assert events == []  # still the same episode
    state, events = apply(state, counted(11, observed=T0 + 5_100), STALL)
    assert kinds(events) == ["progress"]
    assert not state.stalled
    _, (again,) = apply(state, counted(11, observed=T0 + 5_700), STALL)
    assert again.kind == "stalled"
    assert again.event_id != event.event_id


def test_a_status_change_is_progress() -> None:
    state, _ = apply(None, counted(10, observed=T0 + 100), STALL)
    fin = counted(10, observed=T0 + 650, status="finalizing", finalizing_at=T0 + 600)
    state, events = apply(state, fin, STALL)
    assert kinds(events) == ["status_changed"]
    assert state.progress_at == iso(T0 + 600)
    _, (event,) = apply(state, counted(10, observed=T0 + 1_200, status="finalizing"), STALL)
    assert event.kind == "stalled"


def test_no_stall_when_terminal_or_disabled() -> None:
    state, _ = apply(None, counted(10, observed=T0 + 100, status="completed", completed_at=T0), STALL)
    later = counted(10, observed=T0 + 99_999, status="completed", completed_at=T0)
    assert apply(state, later, STALL)[1] == []
    off = Rules(stall_seconds=0.0)
    state, _ = apply(None, counted(10, observed=T0 + 100), off)
    assert apply(state, counted(10, observed=T0 + 99_999), off)[1] == []


def test_a_late_older_snapshot_does_not_stall() -> None:
    state, _ = apply(None, counted(10, observed=T0 + 5_000), STALL)
    assert apply(state, counted(10, observed=T0 + 100), STALL) == (state, [])


# --- expiry_risk -----------------------------------------------------------------------------------

RISK = Rules(stall_seconds=0.0, progress_min_interval=3_600.0)


def risky(done: int, observed: float, expires: float = T0 + 3_600) -> Snapshot:
    return counted(done, observed=observed, expires_at=expires)


def test_expiry_risk_when_the_projected_finish_is_after_expires_at() -> None:
    state, _ = apply(None, risky(0, T0 + 100), RISK)
    # in progress since T0+90: 10 done in 1000 s -> 90 left take 9000 s more, past T0+3600
    state, (event,) = apply(state, risky(10, T0 + 1_090), RISK)
    assert event.kind == "expiry_risk"
    assert event.requests_per_second == 0.01
    assert event.projected_finish_at == iso(T0 + 1_090 + 9_000)
    assert event.at == iso(T0 + 1_090)
    assert state.expiry_risk
    assert apply(state, risky(11, T0 + 1_190), RISK)[1] == []  # once per batch


def test_no_expiry_risk_when_on_time_or_unknowable() -> None:
    state, _ = apply(None, risky(0, T0 + 100), RISK)
    assert apply(state, risky(50, T0 + 1_090), RISK)[1] == []  # finishes at T0+2090
    assert apply(state, counted(10, observed=T0 + 1_090), RISK)[1] == []  # no expires_at
    assert apply(state, risky(0, T0 + 3_000), RISK)[1] == []  # no rate yet (stalled covers it)
    off = Rules(stall_seconds=0.0, progress_min_interval=3_600.0, expiry_risk=False)
    assert apply(state, risky(10, T0 + 1_090), off)[1] == []


def test_expiry_risk_only_while_in_progress() -> None:
    state, _ = apply(None, counted(10, observed=T0 + 100, status="finalizing", expires_at=T0 + 200), RISK)
    later = counted(11, observed=T0 + 150, status="finalizing", expires_at=T0 + 200)
    assert apply(state, later, RISK)[1] == []


# --- purged ----------------------------------------------------------------------------------------


def test_purged_once_for_a_terminal_batch() -> None:
    state, _ = fold([VALIDATING, COMPLETED])
    purged_state, (event,) = purge(state, COMPLETED, iso(T0 + 99_000))
    assert event.kind == "purged"
    assert event.at == iso(T0 + 99_000)
    assert event.snapshot == COMPLETED
    assert event.event_id == event_id("prod", "b1", "purged")
    assert purged_state is not None
    assert purged_state.purged
    assert purge(purged_state, COMPLETED, iso(T0 + 99_500)) == (purged_state, [])
    checked([event])


def test_an_active_or_unknown_batch_is_never_purged() -> None:
    state, _ = fold([VALIDATING, IN_PROGRESS])
    assert purge(state, IN_PROGRESS, iso(T0)) == (state, [])
    assert purge(None, IN_PROGRESS, iso(T0)) == (None, [])


def test_vanish_is_purged_once_for_a_terminal_batch() -> None:
    state, _ = fold([VALIDATING, COMPLETED])
    gone, (event,) = vanish(state, COMPLETED, iso(T0 + 99_000))
    assert (event.kind, event.at, event.event_id) == ("purged", iso(T0 + 99_000),
                                                      event_id("prod", "b1", "purged"))
    assert gone is not None
    assert (gone.purged, gone.status) == (True, "completed")
    assert vanish(gone, COMPLETED, iso(T0 + 99_500)) == (gone, [])  # delivered again: nothing
    assert purge(gone, COMPLETED, iso(T0 + 99_500)) == (gone, [])
    checked([event])


def test_vanish_of_an_active_batch_is_vanished_once() -> None:
    state, _ = fold([VALIDATING, IN_PROGRESS])
    gone, (event,) = vanish(state, IN_PROGRESS, iso(T0 + 500))
    assert (event.kind, event.at, event.event_id) == ("vanished", iso(T0 + 500),
                                                      event_id("prod", "b1", "vanished"))
    assert event.snapshot == IN_PROGRESS
    assert gone is not None
    assert (gone.purged, gone.status) == (True, "in_progress")
    assert vanish(gone, IN_PROGRESS, iso(T0 + 600)) == (gone, [])
    # the same vanish folded into the same state again (a replay) gives the same event
    assert vanish(state, IN_PROGRESS, iso(T0 + 500))[1] == [event]
    # a batch once reported gone is not reported again, not even as purged once it ends
    ended, _ = apply(gone, COMPLETED)
    assert vanish(ended, COMPLETED, iso(T0 + 900)) == (ended, [])
    checked([event])


def test_vanish_of_an_untracked_batch_is_nothing() -> None:
    assert vanish(None, IN_PROGRESS, iso(T0)) == (None, [])


def test_a_purged_batch_stays_terminal() -> None:
    state, _ = fold([VALIDATING, COMPLETED])
    purged_state, _ = purge(state, COMPLETED, iso(T0 + 99_000))
    assert purged_state is not None
    assert apply(purged_state, FINALIZING) == (purged_state, [])


# --- the contract ----------------------------------------------------------------------------------


def test_every_kind_is_produced_and_valid() -> None:
    rules = Rules(stall_seconds=600.0, progress_min_interval=0.0)
    state, events = apply(None, risky(0, T0 + 100), rules)
    for step in (risky(10, T0 + 1_090), risky(10, T0 + 1_700)):
        state, more = apply(state, step, rules)
        events += more
    done = counted(100, observed=T0 + 2_000, status="completed", completed_at=T0 + 1_900)
    state, more = apply(state, done, rules)
    events += more
    _, more = purge(state, done, iso(T0 + 50_000))
    events += checked(more)
    other = replace(IN_PROGRESS, batch_id="b2")
    _, more = vanish(apply(None, other, rules)[0], other, iso(T0 + 50_000))
    events += checked(more)
    assert set(kinds(events)) == set(CHANGE_KINDS)
    assert len({e.event_id for e in events}) == len(events)
