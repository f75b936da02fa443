"""The results reader's observation on its way through the pure core: the raw record that carries
it, and the normaliser that turns it into ``usage_source = results`` (or leaves ``none``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise, normalise_raw
from pipeline.core.records import pack_raw, read_raw
from pipeline.core.usage import NO_USAGE, Usage, results_dict, results_usage

ENDED = {"id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
         "request_counts": {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0},
         "created_at": "2026-12-01T10:00:00.000000Z", "ended_at": "2026-12-01T11:00:00.000000Z",
         "expires_at": "2026-12-02T10:00:00.000000Z", "results_url": "https://x/results"}
READ = results_dict(Usage(100, 40, 7, 0, "results"), "claude-haiku-4-5")


def envelope(results: dict[str, Any] | None, obj: dict[str, Any] = ENDED) -> Envelope:
    return Envelope("claude", "anthropic", "2026-12-01T12:00:00.000Z", obj, "msgbatch_1", results=results)


def test_the_results_usage_becomes_the_snapshots_with_its_model() -> None:
    snap = normalise(envelope(READ))
    assert (snap.input_tokens, snap.cached_input_tokens, snap.output_tokens, snap.reasoning_tokens,
            snap.usage_source, snap.model) == (100, 40, 7, 0, "results", "claude-haiku-4-5")
    assert normalise(envelope(None)).usage_source == "none"


@pytest.mark.parametrize("bad", [
    {"input_tokens": 10, "cached_input_tokens": 11, "output_tokens": 1},  # cached over input
    {"input_tokens": -1, "cached_input_tokens": 0, "output_tokens": 1},
    {"input_tokens": 1.5, "cached_input_tokens": 0, "output_tokens": 1},
    {"input_tokens": True, "cached_input_tokens": 0, "output_tokens": 1},
    {"cached_input_tokens": 0, "output_tokens": 1},
    {"input_tokens": 1, "cached_input_tokens": 0, "output_tokens": 2**64},
])
def test_results_that_are_not_counts_give_no_figure(bad: dict[str, Any]) -> None:
    assert results_usage(bad)[0] == NO_USAGE
    snap = normalise(envelope(bad))
    assert (snap.usage_source, snap.input_tokens, snap.output_tokens) == ("none", None, None)


def test_usage_on_the_object_wins_over_results() -> None:
    obj = {"id": "batch_1", "object": "batch", "status": "completed", "model": "gpt-4.1", "created_at": 1,
           "usage": {"input_tokens": 5, "output_tokens": 2}}
    snap = normalise(Envelope("oa", "openai", "2026-12-01T12:00:00.000Z", obj, "batch_1", results=READ))
    assert (snap.usage_source, snap.input_tokens, snap.model) == ("object", 5, "gpt-4.1")


def test_a_results_observation_is_its_own_version_1_record_and_reads_back() -> None:
    plain = [envelope(None, {**ENDED, "id": f"msgbatch_{i}"}) for i in range(3)]
    for i, e in enumerate(plain):
        e.batch_id = f"msgbatch_{i}"
    withresults = envelope(READ)
    packed = pack_raw([*plain, withresults], partitions=1)
    alone = [p for p in packed if 3 in p.members]
    assert len(alone) == 1
    assert alone[0].members == (3,)
    record = orjson.loads(alone[0].value)
    assert "v" not in record
    assert record["results"] == READ
    (back,) = read_raw(alone[0].value)
    assert isinstance(back, Envelope)
    assert back.results == READ
    items, rejected = normalise_raw(alone[0].value)
    assert rejected == []
    assert orjson.loads(items[0][1])["usage_source"] == "results"
    others = [p for p in packed if 3 not in p.members]
    assert sum(p.count for p in others) == 3
    assert b'"results"' not in b"".join(p.value for p in others)


def test_results_that_are_not_an_object_reject_the_record() -> None:
    value = envelope(None).to_json()[:-1] + b',"results":[1]}'
    (rejected,) = read_raw(value)
    assert not isinstance(rejected, Envelope)
    assert "results" in rejected.reason
