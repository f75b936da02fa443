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
from pipeline.core.models import ChangeEvent, Snapshot, loads_object
from pipeline.core.transitions import BatchState, Rules, apply

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


def track(previous: bytes | None, value: bytes, rules: Rules,
          codec: Codec = ORJSON) -> tuple[BatchState | None, BatchState, list[ChangeEvent]]:
    """(state before, state after, change events) for one snapshot record and its table value:
    the objects :func:`fold_bytes` serialises, for tests and tools that read the states."""
    snap = Snapshot.from_json(value, codec.loads)
    prior = BatchState.from_dict(loads_object(previous, "track state", codec.loads)) if previous else None
    new_state, events = apply(prior, snap, rules)
    return prior, new_state, events
