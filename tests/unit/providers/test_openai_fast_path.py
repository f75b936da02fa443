"""The OpenAI fast path (:func:`normalise_shaped`) against the general path
(:func:`normalise_general`): for every input, the same snapshot or the same error."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot
from pipeline.providers.openai import TEXT_FIELDS, TIME_FIELDS, normalise_general, normalise_shaped
from tests.unit.providers.test_openai import DOC_EXAMPLE
from tests.unit.providers.test_properties import JSON, OBSERVED, mutated

# Values of every type the fields may hold, valid and invalid, near the edges of the checks.
TIME = (st.none() | st.integers(-62_135_596_801, 253_402_300_800) | st.integers() | st.booleans()
        | st.floats(allow_nan=False) | st.sampled_from(["2024-05-01T10:40:00.000Z", "2024-05-01T10:40:00Z",
                                                         "2024-13-01T10:40:00.000Z", "1711471533", ""])
        | st.text(max_size=8))
COUNT = st.none() | st.integers(-2, 2**63 + 1) | st.booleans() | st.sampled_from(["5", "-1", "x", 1.0])
TEXT = st.none() | st.text(max_size=8) | st.integers() | st.booleans() | st.lists(st.none(), max_size=1)


@st.composite
def shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Half the time a valid object of the common shape (the fast path's every condition met),
    perhaps with one field made odd; otherwise any field may hold anything."""
    if draw(st.booleans()):
        obj: dict[str, Any] = {"id": "batch_1", "status": draw(st.sampled_from(["completed", "odd"]))}
        for name in TIME_FIELDS:
            obj[name] = draw(st.none() | st.integers(0, 2**33))
        for name in TEXT_FIELDS:
            obj[name] = draw(st.none() | st.text(max_size=6))
        obj["request_counts"] = draw(st.fixed_dictionaries(
            {k: st.integers(0, 2**63 - 1) for k in ("total", "completed", "failed")}))
        obj["metadata"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3))
        for name in ("errors", "usage", "object", "extra_field"):
            if draw(st.booleans()):
                obj[name] = draw(st.sampled_from([None, "batch", {"data": [{"code": "x", "message": "m"}]},
                                                  {"input_tokens": 1}]))
        if draw(st.booleans()):
            name = draw(st.sampled_from(sorted(obj)))
            obj[name] = draw(TIME if name in TIME_FIELDS else TEXT if name in TEXT_FIELDS else JSON)
        return obj
    obj = {"id": draw(st.sampled_from(["batch_1", ""]) | st.just(None) | st.integers()),
           "status": draw(st.sampled_from(["completed", "in_progress", "odd"]) | JSON)}
    for name in TIME_FIELDS:
        if draw(st.integers(0, 9)):
            obj[name] = draw(TIME)
    for name in TEXT_FIELDS:
        if draw(st.integers(0, 9)):
            obj[name] = draw(TEXT)
    keys = draw(st.sampled_from([("total", "completed", "failed"), ("total", "completed"),
                                 ("total", "completed", "processing"),
                                 ("total", "failed", "x", "completed")]))
    obj["request_counts"] = draw(st.fixed_dictionaries({k: COUNT for k in keys}) | JSON)
    values = st.text(max_size=4) | JSON
    obj["metadata"] = draw(st.dictionaries(st.text(max_size=4), values, max_size=3) | JSON)
    for name in ("errors", "usage", "object", "extra_field"):
        if draw(st.booleans()):
            obj[name] = draw(st.sampled_from([None, "batch", {"data": [{"code": "x", "message": "m"}]}])
                             | JSON)
    return obj


def outcome(fn: Any, obj: dict[str, Any], observed_at: Any) -> Snapshot | str:
    try:
        return fn(copy.deepcopy(obj), "src", observed_at, "openai")  # type: ignore[no-any-return]
    except InvalidRecord as exc:
        return f"InvalidRecord: {exc}"


def same(obj: dict[str, Any], observed_at: Any) -> None:
    fast, general = outcome(normalise_shaped, obj, observed_at), outcome(normalise_general, obj, observed_at)
    assert fast == general
    if isinstance(fast, Snapshot):
        assert fast.to_json() == general.to_json()  # type: ignore[union-attr]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=shaped(), observed_at=OBSERVED)
def test_fast_path_equals_general_path(obj: dict[str, Any], observed_at: str) -> None:
    same(obj, observed_at)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_equals_general_path_on_mutated_documents(data: st.DataObject) -> None:
    same(data.draw(mutated("openai")), "2026-11-29T12:00:00.000Z")


@settings(max_examples=200, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=12), JSON, max_size=8), observed_at=OBSERVED | st.none())
def test_fast_path_equals_general_path_on_arbitrary_objects(obj: dict[str, Any], observed_at: Any) -> None:
    same(obj, observed_at)


def test_the_documented_example_takes_the_fast_path_and_matches() -> None:
    same(DOC_EXAMPLE, "2026-11-29T12:00:00.000Z")
    same({**DOC_EXAMPLE, "object": "batch"}, "2026-11-29T12:00:00.000Z")
