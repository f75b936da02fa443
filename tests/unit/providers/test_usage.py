"""Typed usage per provider: the OpenAI family maps its batch object's ``usage``; the others carry
none on the object (``usage_source = none``)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.usage import NO_USAGE, Usage, openai_usage
from pipeline.providers import PROVIDERS
from simulator.fleet import build_fleet
from simulator.wire import OPENAI_SHAPED, render
from tests.unit.providers.helpers import run

USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200}, "output_tokens": 300,
         "output_tokens_details": {"reasoning_tokens": 120}, "total_tokens": 1500}
BATCH: dict[str, Any] = {"id": "batch_1", "object": "batch", "status": "completed", "model": "gpt-4.1",
                         "request_counts": {"total": 3, "completed": 3, "failed": 0}, "metadata": {},
                         "created_at": 1764000000, "usage": USAGE}


def typed(snap: Any) -> Usage:
    return Usage(snap.input_tokens, snap.cached_input_tokens, snap.output_tokens, snap.reasoning_tokens,
                 snap.usage_source)


@pytest.mark.parametrize("provider", ["openai", "azure_openai", "orq", "groq"])
def test_openai_family_maps_the_object_usage(provider: str) -> None:
    snap = run(provider, BATCH)
    assert typed(snap) == Usage(1200, 200, 300, 120, "object")
    assert snap.usage == USAGE  # the raw object stays, as before


def test_orq_sdk_camel_case_usage() -> None:
    camel = {"inputTokens": 10, "inputTokensDetails": {"cachedTokens": 4}, "outputTokens": 5,
             "outputTokensDetails": {"reasoningTokens": 1}, "totalTokens": 15}
    snap = run("orq", {"id": "b", "status": "completed", "requestCounts": {"total": 1, "completed": 1,
                                                                            "failed": 0}, "usage": camel})
    assert typed(snap) == Usage(10, 4, 5, 1, "object")


def test_usage_without_details_counts_zero_cached_and_reasoning() -> None:
    assert openai_usage({"input_tokens": 7, "output_tokens": 3}) == Usage(7, 0, 3, 0, "object")
    assert openai_usage({"input_tokens": 7, "output_tokens": 3, "input_tokens_details": None}) == \
        Usage(7, 0, 3, 0, "object")


@pytest.mark.parametrize("usage", [
    None, "lots", [], {}, {"input_tokens": 5}, {"output_tokens": 5},
    {"input_tokens": -1, "output_tokens": 2}, {"input_tokens": 1.5, "output_tokens": 2},
    {"input_tokens": True, "output_tokens": 2}, {"input_tokens": "5", "output_tokens": 2},
    {"input_tokens": 2**64, "output_tokens": 2},
    {"input_tokens": 5, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 6}},
    {"input_tokens": 5, "output_tokens": 2, "input_tokens_details": [1]},
    {"input_tokens": 5, "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": "x"}},
])
def test_unreadable_usage_gives_no_figure(usage: object) -> None:
    assert openai_usage(usage) == NO_USAGE
    assert NO_USAGE.usage_source == "none"


def test_an_unreadable_usage_keeps_the_snapshot() -> None:
    snap = run("openai", {**BATCH, "usage": {"input_tokens": "many", "output_tokens": 1}})
    assert (snap.status, snap.usage_source, snap.input_tokens) == ("completed", "none", None)


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p not in OPENAI_SHAPED])
def test_providers_without_usage_on_the_object(provider: str) -> None:
    """Anthropic, Gemini, Vertex, Mistral, Bedrock and Together keep tokens out of the batch
    object (results file or manifest): their snapshots carry no typed usage."""
    batch = next(b for b in build_fleet(5, 30, "s") if b.final_status == "completed")
    obj = render(provider, batch, 10 * 86_400.0, 1_764_000_000.0, batch.id)
    snap = run(provider, obj)
    assert typed(snap) == NO_USAGE


def test_the_fast_and_general_paths_agree_on_usage() -> None:
    from pipeline.providers.openai import normalise_general, normalise_shaped

    for usage in (USAGE, None, {"input_tokens": 1, "output_tokens": "x"}):
        obj = {**BATCH, "usage": usage}
        assert normalise_shaped(obj, "a", "2026-11-29T12:00:00.000Z", "openai") == \
            normalise_general(obj, "a", "2026-11-29T12:00:00.000Z", "openai")
