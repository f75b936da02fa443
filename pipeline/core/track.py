"""The track agent's work on one snapshot, from bytes to bytes.

:func:`track_bytes` parses the snapshot and the batch's table value, folds the snapshot into the
state (:func:`pipeline.core.transitions.apply`) and serialises the change events and the new state;
:func:`fold_bytes` does the same for a snapshot already built. The bytes are those of the track
path before issue 13 (``tests/unit/test_transitions_equivalence.py``); ``bench.track_logic_bench``
measures it.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.codec import ORJSON, Codec
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import ChangeEvent, Snapshot, loads_object
from pipeline.core.timeutil import iso_ms, parse_iso
from pipeline.core.transitions import BatchState, Rules, apply, vanish

Tracked = tuple[bytes | None, list[bytes]]  # (new table value or None when unchanged, change events)


def track_bytes(previous: bytes | None, value: bytes | dict[str, Any], rules: Rules,
                codec: Codec = ORJSON) -> Tracked:
    """(the new table value, or None when the state did not change; the change events' bytes).

    ``previous`` is the batch's table value (None for a new batch); ``value`` a snapshot record,
    or one snapshot object already parsed from a many-snapshot record. Raises
    :class:`~pipeline.core.errors.InvalidRecord` for a bad snapshot or table value.
    """
    snap = Snapshot.from_dict(value) if isinstance(value, dict) else Snapshot.from_json(value, codec.loads)
    return fold_bytes(previous, snap, rules, codec)


def fold_bytes(previous: bytes | None, snap: Snapshot, rules: Rules, codec: Codec = ORJSON) -> Tracked:
    """:func:`track_bytes` for a snapshot already built (:meth:`Snapshot.from_dict`)."""
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    new_state, events = apply(prior, snap, rules)
    values = [change.to_json(codec.dumps) for change in events]
    changed = new_state is not prior and new_state != prior  # apply returns an unchanged state as is
    return (codec.dumps(new_state.to_dict()) if changed else None), values


def vanish_bytes(previous: bytes | None, last: Snapshot, codec: Codec = ORJSON) -> Tracked:
    """:func:`fold_bytes` for a vanish marker (:func:`pipeline.core.records.vanish_entry`, read by
    :func:`vanished_snapshot` into ``last``): one ``purged`` (terminal state) or ``vanished``
    (active) event, once. The event's snapshot is not an observation: the batch's identity, its
    last status from the state and ``observed_at`` the time the vanish was seen; every other field
    empty."""
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    if prior is not None:
        last.status = prior.status
    new_state, events = vanish(prior, last, last.observed_at)
    values = [change.to_json(codec.dumps) for change in events]
    if new_state is None or new_state is prior:  # vanish returns an unchanged state as is
        return None, values
    return codec.dumps(new_state.to_dict()), values


def vanished_snapshot(marker: dict[str, Any]) -> Snapshot:
    """The snapshot of a vanish marker's event (its status still to be set from the state)."""
    fields = [marker.get(n) for n in ("source", "provider", "batch_id", "observed_at")]
    if not all(isinstance(f, str) and f for f in fields):
        raise InvalidRecord("vanish: 'source', 'provider', 'batch_id' and 'observed_at' must be strings")
    source, provider, batch_id, observed_at = (str(f) for f in fields)
    return Snapshot(source, provider, batch_id, "unknown", "", iso_ms(parse_iso(observed_at)))


def track(previous: bytes | None, value: bytes, rules: Rules,
          codec: Codec = ORJSON) -> tuple[BatchState | None, BatchState, list[ChangeEvent]]:
    """(state before, state after, change events) for one snapshot record and its table value:
    the objects :func:`fold_bytes` serialises, for tests and tools that read the states."""
    snap = Snapshot.from_json(value, codec.loads)
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    new_state, events = apply(prior, snap, rules)
    return prior, new_state, events
