"""Pure state machine: (previous state, new snapshot) -> (new state, change events).

Kinds (``docs/change-events.md``): ``discovered`` (first snapshot of a batch), ``status_changed``,
``progress`` (throttled count deltas), ``stalled`` (no progress for ``stall_seconds`` while
active), ``expiry_risk`` (the projected finish is later than ``expires_at``), and, when the
provider no longer returns a batch (:func:`vanish`), ``purged`` (terminal, :func:`purge`) or
``vanished`` (active). A status never moves backwards along the lifecycle and terminal states are
sticky, so out-of-order and duplicate snapshots change nothing. A skipped state (validating ->
completed) yields one ``status_changed``; an edge the lifecycle graph does not have is emitted
with ``off_graph``. ``event_id`` is derived from the batch and what changed, never from arrival
order or wall time, so a replay of the same snapshots yields the same ids.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from hashlib import sha1
from operator import itemgetter
from typing import Any

from pipeline.core.models import TERMINAL, UNKNOWN, ChangeEvent, Snapshot
from pipeline.core.timeutil import from_unix, iso_ms, iso_to_ms

EVENT_NAMESPACE = uuid.UUID("6f1c7a52-3b0e-4d4e-9f61-5a2b8c9d0e11")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes
# Position along the OpenAI lifecycle; terminal statuses share the last rank.
RANK = {
    UNKNOWN: 0, "validating": 1, "in_progress": 2, "finalizing": 3, "cancelling": 4,
    "completed": 5, "failed": 5, "expired": 5, "cancelled": 5,
}
# The OpenAI lifecycle graph (docs/change-events.md): direct edges only.
GRAPH: dict[str, frozenset[str]] = {
    "validating": frozenset({"in_progress", "failed", "cancelling"}),
    "in_progress": frozenset({"finalizing", "expired", "cancelling", "failed"}),
    "finalizing": frozenset({"completed", "expired", "cancelling"}),
    "cancelling": frozenset({"cancelled"}),
}
ACTIVE = frozenset(GRAPH)
Counts = tuple[int, int, int]  # (requests_completed, requests_failed, requests_total)


@dataclass(frozen=True, slots=True)
class Rules:
    """Thresholds of the derived kinds; ``0`` disables ``stalled`` / the step criterion."""

    stall_seconds: float = 3600.0
    progress_min_interval: float = 60.0
    progress_min_step: int = 0
    expiry_risk: bool = True


DEFAULT_RULES = Rules()


@dataclass
class BatchState:
    """What the track agent remembers per batch (one Faust table value).

    Treat it as immutable (use ``dataclasses.replace``). Like :class:`Snapshot` it is a plain
    dataclass for speed: the track agent builds one or two per snapshot, and a frozen one costs
    an ``object.__setattr__`` call per field (a tenth of the track path's time).
    """

    status: str
    since: str  # when the batch entered ``status`` (provider time when known)
    counts: Counts = (0, 0, 0)  # the highest counts seen
    reported: Counts = (0, 0, 0)  # the counts of the last progress event (or discovery)
    reported_at: str = ""  # observed_at of the last progress event (or discovery)
    progress_at: str = ""  # last time counts or status moved forward
    stalled: bool = False  # a stalled event was emitted and progress has not resumed
    expiry_risk: bool = False  # an expiry_risk event was emitted for this batch
    purged: bool = False  # the provider no longer returns it: ``purged`` or ``vanished`` was emitted

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in STATE_FIELDS}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> BatchState:
        """Read a table value; keys missing in older values take their defaults."""
        if len(obj) == len(STATE_FIELDS):  # a current value: by position, see Snapshot.from_dict
            try:
                status, since, counts, reported, *rest = _state_values(obj)
                return cls(status, since, tuple(counts), tuple(reported), *rest)
            except KeyError:
                pass
        values: dict[str, Any] = {k: tuple(v) if k in ("counts", "reported") else v
                                  for k, v in obj.items() if k in STATE_FIELDS}
        return cls(**values)


STATE_FIELDS = tuple(f.name for f in fields(BatchState))
_state_values = itemgetter(*STATE_FIELDS)


def advances(current: str, new: str) -> bool:
    """True when ``new`` is a forward move from ``current`` (never out of a terminal status)."""
    if current == new or current in TERMINAL:
        return False
    return RANK.get(new, 0) > RANK.get(current, 0)


def on_graph(current: str, new: str) -> bool:
    """True when ``new`` is reachable from ``current`` in the lifecycle graph (skips allowed)."""
    frontier, seen = [current], set()
    while frontier:
        for nxt in GRAPH.get(frontier.pop(), frozenset()):
            if nxt == new:
                return True
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return False


def counts_of(snap: Snapshot) -> Counts:
    return (snap.requests_completed or 0, snap.requests_failed or 0, snap.requests_total or 0)


def apply(state: BatchState | None, snap: Snapshot,
          rules: Rules = DEFAULT_RULES) -> tuple[BatchState, list[ChangeEvent]]:
    """Fold one snapshot into a batch's state; return the new state and its change events."""
    if state is None:
        return discover(snap)
    events: list[ChangeEvent] = []
    if advances(state.status, snap.status):
        entered = snap.status_time(snap.status) or snap.observed_at
        events.append(status_changed(state, snap, entered))
        state = replace(state, status=snap.status, since=entered, progress_at=entered, stalled=False)
    state, more = _counts(state, snap, rules)
    events += more
    if state.status in ACTIVE:
        state, more = _risks(state, snap, rules)
        events += more
    return state, events


def discover(snap: Snapshot) -> tuple[BatchState, list[ChangeEvent]]:
    entered = snap.status_time(snap.status) or snap.observed_at
    counts = counts_of(snap)
    state = BatchState(snap.status, entered, counts, counts, snap.observed_at, snap.observed_at)
    return state, [_event("discovered", snap, entered, ())]


def _counts(state: BatchState, snap: Snapshot, rules: Rules) -> tuple[BatchState, list[ChangeEvent]]:
    new = counts_of(snap)
    if new == state.counts or any(n < o for n, o in zip(new, state.counts, strict=True)):
        return state, []  # unchanged, or an older observation delivered late
    at = snap.observed_at
    step = sum(new[:2]) - sum(state.reported[:2])
    due = seconds_between(state.reported_at, at) >= rules.progress_min_interval
    if not (due or (rules.progress_min_step > 0 and step >= rules.progress_min_step)):
        return replace(state, counts=new, progress_at=at, stalled=False), []
    event = progress(state, snap, new)
    return replace(state, counts=new, progress_at=at, stalled=False, reported=new, reported_at=at), [event]


def progress(state: BatchState, snap: Snapshot, new: Counts) -> ChangeEvent:
    names = ("requests_completed", "requests_failed", "requests_total")
    deltas = {n: a - b for n, a, b in zip(names, new, state.reported, strict=True)}
    parts = (*map(str, state.reported), *map(str, new))
    return _event("progress", snap, snap.observed_at, parts, deltas=deltas)


def _risks(state: BatchState, snap: Snapshot, rules: Rules) -> tuple[BatchState, list[ChangeEvent]]:
    events: list[ChangeEvent] = []
    idle = seconds_between(state.progress_at, snap.observed_at)
    if rules.stall_seconds > 0 and not state.stalled and idle >= rules.stall_seconds:
        events.append(_event("stalled", snap, snap.observed_at, (state.progress_at,), stalled_seconds=idle))
        state = replace(state, stalled=True)
    finish = projected_finish(state, snap) if rules.expiry_risk and not state.expiry_risk else None
    if finish is not None:
        at, rate = finish
        events.append(_event("expiry_risk", snap, snap.observed_at, (),
                             projected_finish_at=at, requests_per_second=rate))
        state = replace(state, expiry_risk=True)
    return state, events


def projected_finish(state: BatchState, snap: Snapshot) -> tuple[str, float] | None:
    """(projected finish, requests/s) when the observed rate finishes after ``expires_at``."""
    done, total = sum(state.counts[:2]), state.counts[2]
    if state.status != "in_progress" or snap.expires_at is None or done <= 0 or done >= total:
        return None
    elapsed = seconds_between(state.since, snap.observed_at)
    if elapsed <= 0:
        return None
    rate = done / elapsed
    finish_ms = iso_to_ms(snap.observed_at) + int((total - done) / rate * 1000)
    if finish_ms <= iso_to_ms(snap.expires_at):
        return None
    return iso_ms(from_unix(finish_ms / 1000)), rate


def purge(state: BatchState | None, last: Snapshot, at: str) -> tuple[BatchState | None, list[ChangeEvent]]:
    """A terminal batch the provider no longer returns: one ``purged`` event, at time ``at``.

    ``last`` is the last snapshot observed. Nothing happens unless the state is terminal and not
    purged yet (a vanished active batch is :func:`vanish`'s ``vanished``, not a purge).
    """
    if state is None or state.status not in TERMINAL or state.purged:
        return state, []
    return replace(state, purged=True), [_event("purged", last, at, ())]


def vanish(state: BatchState | None, last: Snapshot, at: str) -> tuple[BatchState | None, list[ChangeEvent]]:
    """The provider no longer returns the batch (observed at ``at``): ``purged`` when its state is
    terminal (:func:`purge`), ``vanished`` when it is not. Once per batch: the state's ``purged``
    flag records either, so a vanish delivered again, or replayed, changes nothing. Nothing for a
    batch without a state (never tracked: nothing to report)."""
    if state is None or state.purged:
        return state, []
    if state.status in TERMINAL:
        return purge(state, last, at)
    return replace(state, purged=True), [_event("vanished", last, at, ())]


def status_changed(state: BatchState, snap: Snapshot, at: str) -> ChangeEvent:
    return _event("status_changed", snap, at, (state.status, snap.status),
                  from_status=state.status, to_status=snap.status,
                  seconds_in_previous=max(0.0, seconds_between(state.since, at)),
                  off_graph=not on_graph(state.status, snap.status))


def _event(kind: str, snap: Snapshot, at: str, parts: tuple[str, ...], **details: Any) -> ChangeEvent:
    """A change event of ``kind``; ``details`` are its kind's own fields."""
    return ChangeEvent(event_id(snap.source, snap.batch_id, kind, *parts), kind, snap.source,
                       snap.provider, snap.batch_id, snap.observed_at, at, snap, **details)


def seconds_between(start: str, end: str) -> float:
    """``end - start`` in seconds; an empty ``start`` counts as ``end`` (zero)."""
    return (iso_to_ms(end) - iso_to_ms(start)) / 1000.0 if start else 0.0


def event_id(source: str, batch_id: str, kind: str, *parts: str) -> str:
    """``str(uuid.uuid5(EVENT_NAMESPACE, "source/batch_id/kind/part/..."))``, formatted from the
    SHA-1 digest directly: the ``UUID`` object took three quarters of the time."""
    name = "/".join((source, batch_id, kind, *parts)).encode("utf-8")
    digest = sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).hexdigest()
    variant = "89ab"[int(digest[16], 16) & 3]  # RFC 4122: the top two bits of byte 8 are 10
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:32]}"
