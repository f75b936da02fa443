"""A frozen copy of the track path as it was on main before issue 13 (commit 2e98819).

The reference for ``test_transitions_equivalence`` and the same-run baseline of
``bench.track_logic_bench``: ``pipeline/core/transitions.py`` verbatim, with the pieces of
``pipeline/core/models.py`` (``ChangeEvent``, ``Snapshot.from_json``), ``pipeline/core/timeutil.py``
(ISO parsing) and ``agents/app.py`` (``track`` and the serialisation in ``fold``) it used, so that
later changes to those modules do not change the reference. Do not optimise or edit this file.
"""


from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.core.codec import Codec, orjson_dumps
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import TERMINAL, UNKNOWN, Dumps, Snapshot, loads_object

EVENT_NAMESPACE = uuid.UUID("6f1c7a52-3b0e-4d4e-9f61-5a2b8c9d0e11")
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


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the track agent remembers per batch (one Faust table value)."""

    status: str
    since: str  # when the batch entered ``status`` (provider time when known)
    counts: Counts = (0, 0, 0)  # the highest counts seen
    reported: Counts = (0, 0, 0)  # the counts of the last progress event (or discovery)
    reported_at: str = ""  # observed_at of the last progress event (or discovery)
    progress_at: str = ""  # last time counts or status moved forward
    stalled: bool = False  # a stalled event was emitted and progress has not resumed
    expiry_risk: bool = False  # an expiry_risk event was emitted for this batch
    purged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> BatchState:
        """Read a table value; keys missing in older values take their defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if k in ("counts", "reported") else v
                                  for k, v in obj.items() if k in known}
        return cls(**values)


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
    state = replace(state, counts=new, progress_at=snap.observed_at, stalled=False)
    step = sum(new[:2]) - sum(state.reported[:2])
    due = seconds_between(state.reported_at, snap.observed_at) >= rules.progress_min_interval
    if not (due or (rules.progress_min_step > 0 and step >= rules.progress_min_step)):
        return state, []
    event = progress(state, snap, new)
    return replace(state, reported=new, reported_at=snap.observed_at), [event]


def progress(state: BatchState, snap: Snapshot, new: Counts) -> ChangeEvent:
    names = ("requests_completed", "requests_failed", "requests_total")
    deltas = {n: a - b for n, a, b in zip(names, new, state.reported, strict=True)}
    parts = (*map(str, state.reported), *map(str, new))
    return replace(_event("progress", snap, snap.observed_at, parts), deltas=deltas)


def _risks(state: BatchState, snap: Snapshot, rules: Rules) -> tuple[BatchState, list[ChangeEvent]]:
    events: list[ChangeEvent] = []
    idle = seconds_between(state.progress_at, snap.observed_at)
    if rules.stall_seconds > 0 and not state.stalled and idle >= rules.stall_seconds:
        event = _event("stalled", snap, snap.observed_at, (state.progress_at,))
        events.append(replace(event, stalled_seconds=idle))
        state = replace(state, stalled=True)
    finish = projected_finish(state, snap) if rules.expiry_risk and not state.expiry_risk else None
    if finish is not None:
        at, rate = finish
        event = _event("expiry_risk", snap, snap.observed_at, ())
        events.append(replace(event, projected_finish_at=at, requests_per_second=rate))
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
    purged yet (a vanished active batch is an error for the poller, not a purge).
    """
    if state is None or state.status not in TERMINAL or state.purged:
        return state, []
    return replace(state, purged=True), [_event("purged", last, at, ())]


def status_changed(state: BatchState, snap: Snapshot, at: str) -> ChangeEvent:
    event = _event("status_changed", snap, at, (state.status, snap.status))
    return replace(event, from_status=state.status, to_status=snap.status,
                   seconds_in_previous=max(0.0, seconds_between(state.since, at)),
                   off_graph=not on_graph(state.status, snap.status))


def _event(kind: str, snap: Snapshot, at: str, parts: tuple[str, ...]) -> ChangeEvent:
    return ChangeEvent(event_id=event_id(snap.source, snap.batch_id, kind, *parts), kind=kind,
                       source=snap.source, provider=snap.provider, batch_id=snap.batch_id,
                       observed_at=snap.observed_at, at=at, snapshot=snap)


def seconds_between(start: str, end: str) -> float:
    """``end - start`` in seconds; an empty ``start`` counts as ``end`` (zero)."""
    return (iso_to_ms(end) - iso_to_ms(start)) / 1000.0 if start else 0.0


def event_id(source: str, batch_id: str, kind: str, *parts: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, "/".join((source, batch_id, kind, *parts))))


# --- from pipeline/core/models.py at 2e98819 ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    event_id: str
    kind: str
    source: str
    provider: str
    batch_id: str
    observed_at: str
    at: str
    snapshot: Snapshot
    from_status: str | None = None
    to_status: str | None = None
    seconds_in_previous: float | None = None
    off_graph: bool | None = None
    deltas: dict[str, int] | None = None
    stalled_seconds: float | None = None
    projected_finish_at: str | None = None
    requests_per_second: float | None = None
    schema_version: int = 2  # the contract's version, not the track path's: 2 since issue 15 (`vanished`)

    def to_json(self, dumps: Dumps = orjson_dumps) -> bytes:
        return dumps(self)


def snapshot_from_json(data: bytes, loads: Any = orjson.loads) -> Snapshot:
    obj = loads_object(data, "snapshot", loads)
    try:
        return Snapshot(**obj)
    except TypeError as exc:
        raise InvalidRecord(f"snapshot: {exc}") from exc


# --- from pipeline/core/timeutil.py at 2e98819 ----------------------------------------------------


def iso_ms(value: datetime) -> str:
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidRecord(f"timestamp out of range: {value!r}") from exc
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_unix(seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidRecord(f"unix timestamp out of range: {seconds!r}") from exc


def parse_iso(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidRecord(f"not an ISO 8601 timestamp in range: {text[:64]!r}") from exc


def iso_to_ms(text: str) -> int:
    return int(parse_iso(text).timestamp() * 1000)


# --- from agents/app.py at 2e98819 (track, and fold's serialisation) -------------------------


def track(previous: bytes | None, value: bytes, rules: Rules,
          codec: Codec) -> tuple[BatchState | None, BatchState, list[ChangeEvent]]:
    snap = snapshot_from_json(value, codec.loads)
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    new_state, events = apply(prior, snap, rules)
    return prior, new_state, events


def track_bytes(previous: bytes | None, value: bytes, rules: Rules,
                codec: Codec) -> tuple[bytes | None, list[bytes]]:
    """(the new table value, or None when the state did not change; the change events' bytes)."""
    prior, new_state, events = track(previous, value, rules, codec)
    values = [change.to_json(codec.dumps) for change in events]
    return (codec.dumps(new_state.to_dict()) if new_state != prior else None), values
