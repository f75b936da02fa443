"""The checker finds a planted loss, a planted duplicate and a planted reordering, and calls clean
data clean. Pure: no Kafka, no ClickHouse (runs with the unit tests)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.reliability.checker import (
    Change,
    Observation,
    check_changes,
    check_observations,
    check_offsets,
    check_positions,
    replaced_changes,
    same_events,
)

pytestmark = pytest.mark.reliability  # no Kafka: runs with every pytest invocation, fast

TRUTH: dict[str, Any] = {"batches": [
    {"source": "s", "batch_id": "a", "final_status": "completed", "status": "completed",
     "served": ["validating", "in_progress", "finalizing", "completed"]},
    {"source": "s", "batch_id": "b", "final_status": "failed", "status": "failed",
     "served": ["validating", "failed"]},
    {"source": "s", "batch_id": "c", "final_status": "expired", "status": None, "served": []},
]}


def observations() -> list[Observation]:
    """Both served batches' observations on partition 0, one per served status, in order."""
    rows: list[Observation] = []
    for i, status in enumerate(["validating", "in_progress", "finalizing", "completed"]):
        rows.append(Observation("s", "a", status, f"2026-11-29T10:00:0{i}.000Z", 0, len(rows)))
    for i, status in enumerate(["validating", "failed"]):
        rows.append(Observation("s", "b", status, f"2026-11-29T10:00:0{i}.000Z", 0, len(rows)))
    return rows


LATEST = {("s", "a"): "completed", ("s", "b"): "failed"}


def changes() -> list[Change]:
    pairs = [("a", "validating", "in_progress"), ("a", "in_progress", "finalizing"),
             ("a", "finalizing", "completed"), ("b", "validating", "failed")]
    return [Change(f"e{i}", "status_changed", "s", b, f, t, 1, i, content=f"body{i}")
            for i, (b, f, t) in enumerate(pairs)]


def test_clean_data_is_clean() -> None:
    report = check_observations(TRUTH, observations(), LATEST)
    report = report.merge(check_changes(TRUTH, changes(), [c.event_id for c in changes()]))
    report = report.merge(check_offsets({0: list(range(6))}, {0: 6}, "snapshots"))
    assert report.clean, report.summary()
    assert report.raw_duplicates == []


def test_planted_loss_is_found() -> None:
    rows = [r for r in observations() if not (r.batch_id == "a" and r.status == "finalizing")]
    report = check_observations(TRUTH, rows, LATEST)
    assert report.lost == ["observation s/a finalizing"]
    assert not report.duplicated
    assert not report.out_of_order

    report = check_observations(TRUTH, observations(), {("s", "a"): "finalizing", ("s", "b"): "failed"})
    assert report.lost == ["final status s/a: finalizing instead of completed"]

    report = check_changes(TRUTH, changes()[1:])
    assert report.lost == ["transition s/a validating->in_progress"]

    report = check_offsets({0: [0, 1, 3]}, {0: 4}, "snapshots")
    assert len(report.lost) == 1
    assert "[2]" in report.lost[0]


def test_planted_duplicate_is_found() -> None:
    rows = observations()
    copy = replace(rows[1], offset=len(rows))  # the same observation delivered again later
    report = check_observations(TRUTH, [*rows, copy], LATEST)
    assert report.clean, report.summary()  # allowed at this level, but reported
    assert len(report.raw_duplicates) == 1

    report = check_observations(TRUTH, [*rows, rows[2]], LATEST)  # one Kafka position stored twice
    assert report.duplicated == ["row stored twice at partition 0 offset 2"]

    evs = changes()
    report = check_changes(TRUTH, [*evs, replace(evs[0], offset=9, content="other")])
    assert len(report.duplicated) == 1
    assert "two contents" in report.duplicated[0]

    report = check_changes(TRUTH, [*evs, replace(evs[0], offset=9)], [*(c.event_id for c in evs), "e0"])
    assert report.duplicated == ["event e0 2 times after FINAL"]
    assert len(report.raw_duplicates) == 1

    report = check_changes(TRUTH, [*evs, replace(evs[0], event_id="x", offset=9)])
    assert report.duplicated == ["transition s/a validating->in_progress emitted twice"]

    report = check_offsets({0: [0, 1, 1, 2]}, {0: 3}, "snapshots")
    assert len(report.duplicated) == 1


def test_an_event_replaced_by_its_later_copy_is_not_lost() -> None:
    """batch_changes keeps the later of two copies of one event (ReplacingMergeTree on event_id):
    the earlier position is accounted for by the copy, and only by a later copy of the same event."""
    evs = changes()
    copy = replace(evs[0], offset=len(evs), index=2)  # emitted again after a replay, in a later change set
    topic = [*evs, copy]
    table = [e for e in topic if e is not evs[0]]  # merged away: only the copy is stored
    replaced = replaced_changes(topic, table)
    assert replaced == {1: {(evs[0].offset, 0)}}
    want = {1: [e.position[1:] for e in topic]}
    assert not check_positions({1: [e.position[1:] for e in table]}, want, "batch_changes", replaced).lost

    lost = [e for e in table if e.offset != evs[1].offset]  # evs[1] has no later copy: a real loss
    report = check_positions({1: [e.position[1:] for e in lost]}, want, "batch_changes",
                             replaced_changes(topic, lost))
    assert report.lost == [f"batch_changes partition 1: 1 offsets missing (first [{evs[1].offset}])"]

    later = replace(evs[0], offset=99)  # stored only at an earlier offset: the later record is missing
    assert replaced_changes([evs[0], later], [evs[0]]) == {}
    same = replace(evs[0], index=1)  # a later index of the same record counts as later
    assert replaced_changes([evs[0], same], [same]) == {1: {(evs[0].offset, 0)}}


def test_the_change_sets_carry_the_events_of_the_changes_topic() -> None:
    def body(c: Change) -> Change:
        return replace(c, content=orjson.dumps({"id": c.event_id, "to": c.to_status}))

    evs = [body(c) for c in changes()]
    assert same_events(evs, [replace(c, offset=0, index=i) for i, c in enumerate(evs)]).clean
    other = replace(evs[1], content=b'{"other": 1}')
    report = same_events(evs, [*evs[1:], other, body(replace(evs[0], event_id="x"))])
    assert report.lost == [f"event {evs[0].event_id} on the changes topic, in no change set"]
    assert report.duplicated == ["event x in a change set, not on the changes topic",
                                 f"event {evs[1].event_id}: another body in its change set"]


@pytest.mark.parametrize("swap", [(1, 2), (0, 3)])
def test_planted_reordering_is_found(swap: tuple[int, int]) -> None:
    rows = observations()
    i, j = swap
    rows[i], rows[j] = replace(rows[j], offset=rows[i].offset), replace(rows[i], offset=rows[j].offset)
    report = check_observations(TRUTH, rows, LATEST)
    assert report.out_of_order, report.summary()
    assert not report.lost
    assert not report.duplicated

    evs = changes()
    evs[0], evs[1] = replace(evs[1], offset=0), replace(evs[0], offset=1)
    assert len(check_changes(TRUTH, evs).out_of_order) == 1

    report = check_offsets({0: [0, 2, 1, 3]}, {0: 4}, "snapshots")
    assert len(report.out_of_order) == 1
    assert not report.lost
    assert not report.duplicated


def test_batches_not_yet_served_are_not_expected() -> None:
    rows = [r for r in observations() if r.batch_id != "c"]
    assert check_observations(TRUTH, rows, LATEST).clean


def test_snapshots_of_one_record_are_told_apart_by_their_index() -> None:
    """A snapshot record of many: one offset, one row per snapshot at (offset, index)."""
    rows = [replace(r, offset=0, index=i) for i, r in enumerate(observations())]
    report = check_observations(TRUTH, rows, LATEST)
    assert report.clean, report.summary()

    report = check_observations(TRUTH, [*rows, rows[3]], LATEST)
    assert report.duplicated == ["row stored twice at partition 0 offset 0 index 3"]

    topic = {0: [(0, i) for i in range(6)] + [(1, 0)]}
    assert check_positions({0: sorted(topic[0])}, topic, "batch_snapshots").clean
    report = check_positions({0: [(0, 0), (0, 1), (0, 3), (0, 4), (0, 5), (1, 0)]}, topic, "batch_snapshots")
    assert report.lost == ["batch_snapshots partition 0: 1 offsets missing (first [0.2])"]
    report = check_positions({0: [*topic[0], (0, 6)]}, topic, "batch_snapshots")
    assert report.duplicated == ["batch_snapshots partition 0: offsets past the end [0.6]"]
    report = check_positions({0: [*topic[0], (0, 5)]}, topic, "batch_snapshots")
    assert len(report.duplicated) == 1
