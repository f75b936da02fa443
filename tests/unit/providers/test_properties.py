"""Property tests: whatever JSON arrives, a normaliser returns a writable snapshot or raises
:class:`InvalidRecord`; no other exception ever escapes. Plus the integer-time fast path."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot
from pipeline.core.timeutil import to_iso
from pipeline.providers import PROVIDERS, adapter
from pipeline.providers.base import read_error
from pipeline.providers.times import timestamp
from tests.unit.providers import test_anthropic, test_bedrock, test_google, test_mistral, test_together
from tests.unit.providers.test_openai import DOC_EXAMPLE
from tests.unit.providers.test_openai_clones import SEED

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                       max_size=4),
    max_leaves=20,
)
VALID: dict[str, list[dict[str, Any]]] = {
    "openai": [DOC_EXAMPLE], "azure_openai": [DOC_EXAMPLE], "groq": [DOC_EXAMPLE],
    "orq": [SEED, DOC_EXAMPLE], "anthropic": [test_anthropic.DOC_EXAMPLE, test_anthropic.ended(errored=1)],
    "mistral": [test_mistral.JOB], "together": [test_together.JOB],
    "gemini": [test_google.OPERATION, test_google.BATCH], "vertex": [test_google.JOB],
    "bedrock": [test_bedrock.SUMMARY],
}
OBSERVED = st.sampled_from(["2026-11-29T12:00:00.000Z", "2026-11-29T12:00:00+01:00"]) | st.text(max_size=30)


def check(provider: str, obj: dict[str, Any], observed_at: str) -> None:
    try:
        snap = adapter(provider).normalise(obj, "src", observed_at)
    except InvalidRecord:
        return
    assert Snapshot.from_json(snap.to_json()) == snap  # writable, and nothing lost on the wire


@st.composite
def mutated(draw: st.DrawFn, provider: str) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(VALID[provider])))
    for _ in range(draw(st.integers(1, 3))):
        target: dict[str, Any] = obj
        nested = sorted(k for k, v in obj.items() if isinstance(v, dict) and v)
        go_deeper: bool = draw(st.booleans())
        if nested and go_deeper:
            target = obj[draw(st.sampled_from(nested))]
        key: str = draw(st.sampled_from(sorted(target)) | st.text(max_size=12))
        delete: bool = draw(st.booleans())
        if delete:
            target.pop(key, None)
        else:
            target[key] = draw(JSON)
    return obj


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(provider=st.sampled_from(PROVIDERS), obj=st.dictionaries(st.text(max_size=12), JSON, max_size=8),
       observed_at=OBSERVED)
def test_arbitrary_json_objects(provider: str, obj: dict[str, Any], observed_at: str) -> None:
    check(provider, obj, observed_at)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), provider=st.sampled_from(PROVIDERS))
def test_mutations_of_valid_objects(data: st.DataObject, provider: str) -> None:
    check(provider, data.draw(mutated(provider)), "2026-11-29T12:00:00.000Z")


@settings(max_examples=100, deadline=None)
@given(provider=st.sampled_from(PROVIDERS), body=JSON)
def test_arbitrary_list_bodies(provider: str, body: Any) -> None:
    a = adapter(provider)
    try:
        objects = a.batch_objects(body)
        a.next_params(a.list_params(10), body)
    except InvalidRecord:
        return
    for obj in objects:
        check(provider, obj, "2026-11-29T12:00:00.000Z")


@given(st.integers(min_value=-62_135_596_800, max_value=253_402_300_799))
def test_integer_fast_path_matches_the_datetime_path(seconds: int) -> None:
    assert timestamp(seconds, "t") == to_iso(float(seconds), "t")


@given(st.integers())
def test_integer_times_never_raise_anything_else(seconds: int) -> None:
    with contextlib.suppress(InvalidRecord):
        timestamp(seconds, "t")


@given(st.integers(100, 599), st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_error_bodies_never_raise(status: int, body: bytes) -> None:
    error = read_error(status, body)
    assert error.status == status
    assert isinstance(error.message, str)
    assert error.message


@pytest.mark.parametrize("observed_at", [None, 5, ["x"], ""])
def test_observed_at_must_be_a_time(observed_at: Any) -> None:
    with pytest.raises(InvalidRecord):
        adapter("openai").normalise({"id": "b", "status": "completed"}, "s", observed_at)
