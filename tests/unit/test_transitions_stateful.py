"""A hypothesis state machine: a true batch lifecycle, polled with skips, delivered with
duplicates and reordering, folded by :func:`pipeline.core.transitions.apply`.

Checked after every step: the status never moves backwards and terminal states are sticky.
Checked at the end: the final state is the true final status; every ``status_changed`` edge is
a true forward move emitted once; with in-order delivery, each transition the observations
reveal (consecutive distinct observed statuses) is emitted exactly once; a replay of the same
deliveries yields the same events; every event validates against the JSON Schema.
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby, pairwise
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pipeline.core.models import STATUS_TIME_FIELD, TERMINAL, ChangeEvent, Snapshot
from pipeline.core.timeutil import to_iso
from pipeline.core.transitions import RANK, BatchState, Rules, apply, purge
from tests.change_schema import checked
from tests.unit.test_transitions import PATHS, T0

RULES = Rules(stall_seconds=600.0, progress_min_interval=30.0, progress_min_step=5)


def iso(seconds: float) -> str:
    value = to_iso(seconds, "t")
    assert value is not None
    return value


def status_edges(events: list[ChangeEvent]) -> list[tuple[str, str]]:
    return [(e.from_status or "", e.to_status or "") for e in events if e.kind == "status_changed"]


class Lifecycle(RuleBasedStateMachine):
    """The truth (a path and a position on it) against what the track state machine makes of it."""

    def __init__(self) -> None:
        super().__init__()
        self.path: tuple[str, ...] = ()
        self.pos = 0
        self.now = float(T0)
        self.times: dict[str, str] = {}
        self.done = 0
        self.total = 0
        self.observed: list[Snapshot] = []  # in poll order
        self.pending: list[Snapshot] = []  # polled, not delivered yet
        self.delivered: list[Snapshot] = []
        self.in_order = True
        self.state: BatchState | None = None
        self.events: list[ChangeEvent] = []

    @initialize(path=st.sampled_from(PATHS), total=st.integers(1, 500))
    def start(self, path: tuple[str, ...], total: int) -> None:
        self.path, self.total = path, total
        self.times = {STATUS_TIME_FIELD[path[0]]: iso(self.now)}

    @property
    def status(self) -> str:
        return self.path[self.pos]

    def snapshot(self) -> Snapshot:
        fields: dict[str, Any] = {**self.times, "requests_total": self.total, "requests_failed": 0,
                                  "requests_completed": self.done, "expires_at": iso(T0 + 86_400)}
        return Snapshot(source="prop", provider="openai", batch_id="b", status=self.status,
                        provider_status=self.status, observed_at=iso(self.now), **fields)

    @rule(gap=st.integers(1, 7_200))
    def advance(self, gap: int) -> None:
        if self.pos + 1 < len(self.path):
            self.pos += 1
            self.now += gap
            self.times[STATUS_TIME_FIELD[self.status]] = iso(self.now)

    @rule(gap=st.integers(1, 900), work=st.integers(0, 100))
    def work(self, gap: int, work: int) -> None:
        self.now += gap
        if self.status == "in_progress":
            self.done = min(self.total, self.done + work)

    @rule()
    def poll(self) -> None:
        snap = self.snapshot()
        self.observed.append(snap)
        self.pending.append(snap)

    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        """Deliver one pending snapshot (not always the oldest); ``keep`` delivers it again later."""
        if not self.pending:
            return
        index = data.draw(st.integers(0, len(self.pending) - 1))
        self.in_order &= index == 0
        snap = self.pending[index] if keep else self.pending.pop(index)
        self.fold(snap)

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        if self.delivered:
            self.fold(data.draw(st.sampled_from(self.delivered)))

    def fold(self, snap: Snapshot) -> None:
        before = self.state
        self.state, events = apply(self.state, snap, RULES)
        self.events += checked(events)
        self.delivered.append(snap)
        if before is not None:
            assert RANK[self.state.status] >= RANK[before.status]
            if before.status in TERMINAL:
                assert self.state.status == before.status
            assert all(v >= 0 for e in events if e.deltas for v in e.deltas.values())

    @invariant()
    def state_is_the_highest_status_delivered(self) -> None:
        if self.state is not None:
            highest = max(self.delivered, key=lambda s: self.path.index(s.status))
            assert self.state.status == highest.status
            assert self.state.counts[0] == max(s.requests_completed or 0 for s in self.delivered)

    def teardown(self) -> None:
        if not self.path:
            return
        while self.pos + 1 < len(self.path):
            self.advance(60)
        self.poll()  # the poller keeps polling until the batch is terminal
        while self.pending:
            self.fold(self.pending.pop(0))
        self.check()

    def check(self) -> None:
        assert self.state is not None
        assert self.state.status == self.path[-1]
        edges = status_edges(self.events)
        assert all(self.path.index(a) < self.path.index(b) for a, b in edges)
        assert max(Counter(edges).values(), default=1) == 1
        ids = [e.event_id for e in self.events]
        assert len(ids) == len(set(ids))
        assert [e.kind for e in self.events].count("discovered") == 1
        highs = record_highs(self.path, [s.status for s in self.delivered])
        assert edges == list(pairwise(highs))
        if self.in_order:  # every consecutive pair of distinct observed statuses, once
            distinct = [status for status, _ in groupby(s.status for s in self.observed)]
            assert edges == list(pairwise(distinct))
        assert replay(self.delivered) == self.events
        self.check_purge()

    def check_purge(self) -> None:
        state, (event,) = purge(self.state, self.delivered[-1], iso(self.now + 1))
        checked([event])
        assert purge(state, self.delivered[-1], iso(self.now + 2))[1] == []


def record_highs(path: tuple[str, ...], statuses: list[str]) -> list[str]:
    """The statuses that moved the running maximum along the path, in delivery order."""
    highs: list[str] = []
    for status in statuses:
        if not highs or path.index(status) > path.index(highs[-1]):
            highs.append(status)
    return highs


def replay(snaps: list[Snapshot]) -> list[ChangeEvent]:
    state: BatchState | None = None
    events: list[ChangeEvent] = []
    for snap in snaps:
        state, new = apply(state, snap, RULES)
        events += new
    return events


Lifecycle.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestLifecycle = Lifecycle.TestCase
