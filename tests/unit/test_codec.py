"""The pipeline's JSON codec, and the normalise agent's per-record call that uses it."""

from __future__ import annotations

import json
import sys
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.codec import ORJSON, STDLIB, orjson_dumps
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise, normalise_record
from tests.unit.test_normalise import envelope, full_batch

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(JSON)
def test_orjson_dumps_writes_what_orjson_writes(value: Any) -> None:
    data = orjson_dumps(value)
    assert type(data) is bytes
    assert data == orjson.dumps(value)


def test_the_pipeline_codec_and_the_models_use_the_exact_size_encoder() -> None:
    snap = normalise(envelope(full_batch()))
    assert ORJSON.dumps is orjson_dumps
    assert snap.to_json() == orjson.dumps(snap)


def test_retained_records_hold_no_spare_buffer() -> None:
    """A producer keeps records until they are sent: each must cost about its own size.

    (orjson >= 3.12 returns a 4-8 KB buffer for a ~800-byte snapshot; this fails if that
    buffer is kept.)"""
    snaps = [normalise(envelope(full_batch(id=f"batch_{i:05d}"))) for i in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = [s.to_json() for s in snaps]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    exact = sum(sys.getsizeof(b) for b in out) + sys.getsizeof(out)
    assert held < 1.25 * exact


def test_normalise_record_is_the_key_and_json_of_the_snapshot() -> None:
    env = envelope(full_batch())
    data = env.to_json()
    key, value = normalise_record(data)
    snap = normalise(Envelope.from_json(data))
    assert (key, value) == (b"prod/batch_abc123", snap.to_json())
    stdlib_key, stdlib_value = normalise_record(data, STDLIB)
    assert stdlib_key == key
    assert json.loads(stdlib_value) == orjson.loads(value)


@pytest.mark.parametrize(("data", "match"), [
    (b"{", "raw envelope: not valid JSON"),
    (b'{"source": "s", "provider": "nope", "observed_at": "2024-05-01T12:00:00.123Z", '
     b'"payload": {"id": "b"}}', "nope"),
    (b'{"source": "s", "provider": "openai", "observed_at": "2024-05-01T12:00:00.123Z", '
     b'"payload": {"status": "completed"}}', "'id' missing"),
])
def test_normalise_record_raises_invalid_record(data: bytes, match: str) -> None:
    with pytest.raises(InvalidRecord, match=match):
        normalise_record(data)
