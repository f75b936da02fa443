"""Pure state machine: (previous state, new snapshot) -> (new state, change events).

A status never moves backwards along the lifecycle and terminal states are sticky, so
out-of-order and duplicate snapshots change nothing. A skipped state (validating -> completed)
yields one ``status_changed``. ``event_id`` is derived from the batch and the edge, so a replay
of the same snapshots yields the same ids.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.models import TERMINAL, UNKNOWN, ChangeEvent, Snapshot
from pipeline.timeutil import iso_to_ms

EVENT_NAMESPACE = uuid.UUID("6f1c7a52-3b0e-4d4e-9f61-5a2b8c9d0e11")
# Position along the OpenAI lifecycle; terminal statuses share the last rank.
RANK = {
    UNKNOWN: 0, "validating": 1, "in_progress": 2, "finalizing": 3, "cancelling": 4,
    "completed": 5, "failed": 5, "expired": 5, "cancelled": 5,
}


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the track agent remembers per batch."""

    status: str
    since: str  # when the batch entered ``status`` (provider time when known)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "since": self.since}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> BatchState:
        return cls(status=str(obj["status"]), since=str(obj["since"]))


def advances(current: str, new: str) -> bool:
    """True when ``new`` is a forward move from ``current`` (never out of a terminal status)."""
    if current == new or current in TERMINAL:
        return False
    return RANK.get(new, 0) > RANK.get(current, 0)


def apply(state: BatchState | None, snap: Snapshot) -> tuple[BatchState, list[ChangeEvent]]:
    """Fold one snapshot into a batch's state; return the new state and its change events."""
    entered = snap.status_time(snap.status) or snap.observed_at
    if state is None:
        return BatchState(snap.status, entered), []
    if not advances(state.status, snap.status):
        return state, []
    event = status_changed(state, snap, entered)
    return BatchState(snap.status, entered), [event]


def status_changed(state: BatchState, snap: Snapshot, at: str) -> ChangeEvent:
    seconds = max(0.0, (iso_to_ms(at) - iso_to_ms(state.since)) / 1000.0)
    return ChangeEvent(
        event_id=event_id(snap.source, snap.batch_id, "status_changed", state.status, snap.status),
        kind="status_changed",
        source=snap.source,
        provider=snap.provider,
        batch_id=snap.batch_id,
        observed_at=snap.observed_at,
        at=at,
        snapshot=snap,
        from_status=state.status,
        to_status=snap.status,
        seconds_in_previous=seconds,
    )


def event_id(source: str, batch_id: str, kind: str, *parts: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, "/".join((source, batch_id, kind, *parts))))
