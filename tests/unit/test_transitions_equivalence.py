"""The track path gives the same bytes as before issue 13 made it cheaper.

``tests/transitions_reference.py`` is a frozen copy of the track path as it was (transitions,
the parsing and serialisation it used). Both fold the same snapshot records into their own table
of state bytes; every step must give byte-identical table values and change events, or the same
error (type and message, which is the dead letter's reason). The records are arbitrary: any
status (unknown, off the lifecycle graph), counts that move back or vanish, missing and invalid
timestamps, fields in any order, records with unknown or missing fields, table values of older
versions, duplicates and any delivery order, under varied rules and both codecs.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import asdict
from itertools import zip_longest
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.codec import ORJSON, STDLIB, Codec
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import STATUS_TIME_FIELD, STATUSES, Snapshot
from pipeline.core.timeutil import to_iso
from pipeline.core.track import track_bytes
from pipeline.core.transitions import BatchState, Rules, event_id, purge
from tests import transitions_reference as reference
from tests.support.workload import deliveries
from tests.unit.test_transitions import PATHS

T0 = 1_790_000_000
Step = tuple[bytes | None, list[bytes]] | tuple[str, str]  # (state, events) or (error type, message)
Track = Callable[[bytes | None, bytes, Rules, Codec], tuple[bytes | None, list[bytes]]]


def iso(seconds: int) -> str:
    value = to_iso(seconds, "t")
    assert value is not None
    return value


def reference_track(previous: bytes | None, value: bytes, rules: Rules,
                    codec: Codec) -> tuple[bytes | None, list[bytes]]:
    return reference.track_bytes(previous, value, reference.Rules(**asdict(rules)), codec)


def outcome(track: Track, previous: bytes | None, value: bytes, rules: Rules, codec: Codec) -> Step:
    try:
        return track(previous, value, rules, codec)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return type(exc).__name__, str(exc)


class Table:
    """One side's track table: state bytes per key, fed the records one at a time."""

    def __init__(self, track: Track, rules: Rules, codec: Codec) -> None:
        self.track, self.rules, self.codec = track, rules, codec
        self.values: dict[bytes, bytes] = {}

    def fold(self, key: bytes, value: bytes) -> Step:
        result = outcome(self.track, self.values.get(key), value, self.rules, self.codec)
        state = result[0]
        if isinstance(state, bytes):
            self.values[key] = state
        return result


# --- arbitrary snapshot records ------------------------------------------------------------------

TIMES = st.integers(T0, T0 + 3 * 86_400).map(iso)
BAD_TIMES = st.sampled_from(["yesterday", "", "2026-13-01T00:00:00Z", "2026-09-21T10:00:00+02:00"])
STATUS = st.sampled_from([*STATUSES, "unknown", "paused"])
COUNT = st.none() | st.integers(0, 400)


@st.composite
def snapshot_object(draw: st.DrawFn, batch_id: str) -> dict[str, Any]:
    status = draw(STATUS)
    times = draw(st.fixed_dictionaries({}, optional={name: st.none() | TIMES | BAD_TIMES
                                                     for name in STATUS_TIME_FIELD.values()}))
    fields: dict[str, Any] = {name: draw(COUNT)
                              for name in ("requests_total", "requests_completed", "requests_failed")}
    fields.update(times, expires_at=draw(st.none() | TIMES))
    return Snapshot(source="eq", provider="openai", batch_id=batch_id, status=status, provider_status=status,
                    observed_at=draw(TIMES), **fields).to_dict()


@st.composite
def record(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(key, value): a snapshot as the normaliser writes it, or reordered, trimmed or broken."""
    batch_id = draw(st.sampled_from(["a", "ü/ß"]))
    obj = draw(snapshot_object(batch_id))
    shape = draw(st.sampled_from(["as written"] * 6 + ["shuffled", "defaults left out", "unknown field",
                                                       "required field missing"]))
    if shape == "shuffled":
        obj = dict(draw(st.permutations(list(obj.items()))))
    elif shape == "defaults left out":
        obj = {k: v for k, v in obj.items() if v is not None}
    elif shape == "unknown field":
        obj["surprise"] = 1
    elif shape == "required field missing":
        del obj[draw(st.sampled_from(["status", "observed_at"]))]
    return f"eq/{batch_id}".encode(), orjson.dumps(obj)


RULES = st.builds(Rules, stall_seconds=st.sampled_from([0.0, 60.0, 3600.0]),
                  progress_min_interval=st.sampled_from([0.0, 30.0, 60.0]),
                  progress_min_step=st.sampled_from([0, 5]), expiry_risk=st.booleans())
# A step is a record, sometimes one delivered before, or a rewrite of a key's table value into
# the shape an older version (fewer keys) or another writer (another key order) left.
STEPS = st.lists(st.one_of(record(), record(), st.tuples(st.just("redeliver"), st.integers(0, 100)),
                           st.tuples(st.just("older value"), st.integers(0, 100))), min_size=4, max_size=60)


def older(value: bytes, rng: random.Random) -> bytes:
    obj = orjson.loads(value)
    for name in ("stalled", "expiry_risk", "purged", "progress_at", "reported_at"):
        if rng.random() < 0.5:
            obj.pop(name, None)
    items = list(obj.items())
    rng.shuffle(items)
    return orjson.dumps(dict(items))


@settings(max_examples=400, deadline=None)  # a loaded CI machine must not fail on timing
@given(steps=STEPS, rules=RULES, codec=st.sampled_from([ORJSON, STDLIB]))
def test_any_record_sequence_gives_the_same_bytes(steps: list[Any], rules: Rules, codec: Codec) -> None:
    new, ref = Table(track_bytes, rules, codec), Table(reference_track, rules, codec)
    seen: list[tuple[bytes, bytes]] = []
    for step in steps:
        if step[0] == "older value":
            if new.values:
                key = sorted(new.values)[step[1] % len(new.values)]
                new.values[key] = ref.values[key] = older(ref.values[key], random.Random(step[1]))
            continue
        if step[0] == "redeliver":
            if not seen:
                continue
            step = seen[step[1] % len(seen)]
        key, value = step
        seen.append((key, value))
        assert new.fold(key, value) == ref.fold(key, value)
        assert new.values == ref.values


# --- the simulated fleet, as the benchmark feeds it ------------------------------------------------


FLEET_RULES = [Rules(), Rules(progress_min_interval=0.0),
               Rules(stall_seconds=600.0, progress_min_interval=30.0, progress_min_step=5)]


@pytest.mark.parametrize("rules", FLEET_RULES)
def test_a_simulated_fleet_gives_the_same_bytes(rules: Rules) -> None:
    records = deliveries(300, seed=5)
    new, ref = Table(track_bytes, rules, ORJSON), Table(reference_track, rules, ORJSON)
    events = 0
    for key, value in records:
        result = new.fold(key, value)
        assert result == ref.fold(key, value)
        events += len(result[1])
    assert new.values == ref.values
    assert events > len(records) // 3  # the fleet really moved: discoveries, statuses, progress


# --- random lifecycles, long sequences ------------------------------------------------------------


def lifecycle(rng: random.Random, batch_id: str) -> list[dict[str, Any]]:
    """One batch along a valid path, observed a few times per status while its counts move; an
    entry time is sometimes missing and the deadline sometimes too near (``expiry_risk``)."""
    now, total, done, failed = T0, rng.randint(1, 500), 0, 0
    times: dict[str, Any] = {}
    expires_at = iso(T0 + rng.choice([4 * 3600, 86_400]))
    observed = []
    for status in rng.choice(PATHS):
        now += rng.randint(0, 7_200)
        times[STATUS_TIME_FIELD[status]] = iso(now) if rng.random() < 0.9 else None
        for _ in range(rng.randint(1, 5)):
            now += rng.randint(0, 3_000)
            if status == "in_progress":
                done = min(total - failed, done + rng.choice([0, 0, 1, 3, 20, 60]))
                failed = min(total - done, failed + rng.choice([0, 0, 0, 1]))
            observed.append(Snapshot(source="walk", provider="openai", batch_id=batch_id, status=status,
                                     provider_status=status, observed_at=iso(now), expires_at=expires_at,
                                     requests_total=total, requests_completed=done, requests_failed=failed,
                                     **times).to_dict())
    return observed


def disordered(rng: random.Random, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [o for o in objects for _ in range(2 if rng.random() < 0.2 else 1)]
    for i in range(len(out) - 1):
        if rng.random() < 0.15:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_long_random_lifecycles_give_the_same_bytes(seed: int) -> None:
    rng = random.Random(seed)
    rules = Rules(stall_seconds=rng.choice([600.0, 3600.0]),
                  progress_min_interval=rng.choice([0.0, 60.0, 3600.0]), progress_min_step=rng.choice([0, 5]))
    per_batch = [disordered(rng, lifecycle(rng, f"b{i}")) for i in range(60)]
    new, ref = Table(track_bytes, rules, ORJSON), Table(reference_track, rules, ORJSON)
    kinds: set[str] = set()
    for objects in zip_longest(*per_batch):
        for obj in filter(None, objects):
            key, value = f"walk/{obj['batch_id']}".encode(), orjson.dumps(obj)
            result = new.fold(key, value)
            assert result == ref.fold(key, value)
            kinds |= {orjson.loads(e)["kind"] for e in result[1]}
    assert new.values == ref.values
    assert kinds == {"discovered", "status_changed", "progress", "stalled", "expiry_risk"}


def test_a_parsed_snapshot_object_gives_the_same_bytes_as_its_record() -> None:
    table: dict[bytes, bytes] = {}
    for key, value in deliveries(40, seed=3):
        from_bytes = track_bytes(table.get(key), value, Rules())
        assert track_bytes(table.get(key), orjson.loads(value), Rules()) == from_bytes
        if from_bytes[0] is not None:
            table[key] = from_bytes[0]
    with pytest.raises(InvalidRecord, match=r"^snapshot: .*unexpected keyword argument 'surprise'"):
        track_bytes(None, {**orjson.loads(value), "surprise": 1}, Rules())


# --- the pieces with their own fast paths -----------------------------------------------------------


@given(st.text(), st.text(), st.text(), st.lists(st.text(), max_size=6))
def test_event_id_is_uuid5(source: str, batch_id: str, kind: str, parts: list[str]) -> None:
    name = "/".join((source, batch_id, kind, *parts))
    try:
        expected: str | type[Exception] = str(uuid.uuid5(reference.EVENT_NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        expected = UnicodeEncodeError
    if isinstance(expected, str):
        assert event_id(source, batch_id, kind, *parts) == expected
    else:
        with pytest.raises(expected):
            event_id(source, batch_id, kind, *parts)


@given(snapshot_object("p"), TIMES)
def test_purge_gives_the_same_bytes(obj: dict[str, Any], at: str) -> None:
    snap = Snapshot.from_dict(obj)
    for state in (None, BatchState(obj["status"], at), BatchState(obj["status"], at, purged=True)):
        ref_state = None if state is None else reference.BatchState.from_dict(state.to_dict())
        new_after, new_events = purge(state, snap, at)
        ref_after, ref_events = reference.purge(ref_state, snap, at)
        assert [e.to_json() for e in new_events] == [e.to_json() for e in ref_events]
        assert (new_after and new_after.to_dict()) == (ref_after and ref_after.to_dict())
