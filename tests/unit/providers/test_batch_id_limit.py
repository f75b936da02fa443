"""Batch ids over 1 KiB are invalid records, in the normaliser and when the poller reads a raw id
(issue 12, point 4): the Kafka key carries the id, and a key of hundreds of KiB plus the value
passed Kafka's 1 MB record limit, which stopped every source."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.core.dlq import MAX_KEY, dlq_key
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import MAX_BATCH_ID, oversized_id
from pipeline.providers import PROVIDERS, adapter, envelope
from tests.unit.providers.helpers import OBSERVED
from tests.unit.providers.test_properties import VALID


def with_id(value: Any, old: str, new: str) -> Any:
    """``value`` with the batch id ``old`` replaced by ``new`` wherever it appears (Vertex and
    Gemini carry it inside resource names)."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [with_id(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: with_id(v, old, new) for k, v in value.items()}
    return value


def sample(provider: str, batch_id: str) -> dict[str, Any]:
    obj = copy.deepcopy(VALID[provider][0])
    old = adapter(provider).batch_id(obj)
    assert old is not None
    found = with_id(obj, old, batch_id)
    assert isinstance(found, dict)
    return found


def long_id(size: int) -> str:
    """An id of exactly ``size`` UTF-8 bytes, mostly 3-byte characters (bytes count, not characters)."""
    return "batch_" + "€" * ((size - 6) // 3) + "x" * ((size - 6) % 3)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_id_of_1_kib_is_kept(provider: str) -> None:
    batch_id = long_id(MAX_BATCH_ID)
    assert len(batch_id.encode()) == MAX_BATCH_ID
    obj = sample(provider, batch_id)
    assert adapter(provider).batch_id(obj) == batch_id
    assert adapter(provider).normalise(obj, "acct", OBSERVED).batch_id == batch_id


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_longer_id_is_an_invalid_record_and_no_key(provider: str) -> None:
    batch_id = long_id(MAX_BATCH_ID + 1)
    assert len(batch_id) < MAX_BATCH_ID  # bytes are counted, not characters
    obj = sample(provider, batch_id)
    with pytest.raises(InvalidRecord, match="over the 1024-byte batch id limit"):
        adapter(provider).normalise(obj, "acct", OBSERVED)
    assert adapter(provider).batch_id(obj) is None
    assert envelope("acct", provider, OBSERVED, obj).key == "acct/"


def test_a_600_kib_id_reported_without_the_id() -> None:
    obj = sample("openai", "b" * 600 * 1024)
    with pytest.raises(InvalidRecord) as info:
        adapter("openai").normalise(obj, "acct", OBSERVED)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(("batch_id", "over"), [
    ("a" * 1024, False), ("a" * 1025, True), ("é" * 512, False), ("é" * 513, True), ("", False),
    ("\ud800" * 342, True),  # a lone surrogate (JSON allows one) counts as 3 bytes, and does not raise
])
def test_oversized_id(batch_id: str, over: bool) -> None:
    assert oversized_id(batch_id) is over


def test_dead_letter_keys_are_cut() -> None:
    assert dlq_key(None) is None
    assert dlq_key(b"src/batch_1") == b"src/batch_1"
    assert dlq_key(b"k" * 600 * 1024) == b"k" * MAX_KEY
