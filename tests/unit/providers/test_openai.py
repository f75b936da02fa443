"""OpenAI golden tests: the documented batch object, the list envelope and the traps."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run

DOC_EXAMPLE: dict[str, Any] = {
    "id": "batch_abc123", "object": "batch", "endpoint": "/v1/completions", "errors": None,
    "input_file_id": "file-abc123", "completion_window": "24h", "status": "completed",
    "output_file_id": "file-cvaTdG", "error_file_id": "file-HOWS94", "created_at": 1711471533,
    "in_progress_at": 1711471538, "expires_at": 1711557933, "finalizing_at": 1711493133,
    "completed_at": 1711493163, "failed_at": None, "expired_at": None, "cancelling_at": None,
    "cancelled_at": None, "request_counts": {"total": 100, "completed": 95, "failed": 5},
    "metadata": {"customer_id": "user_123456789", "batch_description": "Nightly eval job"},
}


def test_documented_example() -> None:
    assert run("openai", DOC_EXAMPLE) == Snapshot(
        source="acct", provider="openai", batch_id="batch_abc123", status="completed",
        provider_status="completed", observed_at=OBSERVED, endpoint="/v1/completions",
        completion_window="24h", created_at="2024-03-26T16:45:33.000Z",
        in_progress_at="2024-03-26T16:45:38.000Z", finalizing_at="2024-03-26T22:45:33.000Z",
        completed_at="2024-03-26T22:46:03.000Z", expires_at="2024-03-27T16:45:33.000Z",
        requests_total=100, requests_completed=95, requests_failed=5, input_file_id="file-abc123",
        output_file_id="file-cvaTdG", error_file_id="file-HOWS94",
        metadata={"customer_id": "user_123456789", "batch_description": "Nightly eval job"},
        provider_extra={"object": "batch"},
    )


def test_completed_with_every_request_failed_keeps_the_counts() -> None:
    snap = run("openai", {**DOC_EXAMPLE, "output_file_id": None,
                          "request_counts": {"total": 9, "completed": 0, "failed": 9}})
    assert snap.status == "completed"
    assert counts(snap) == (9, 0, 9)
    assert snap.output_file_id is None


def test_validation_failure_with_error_codes() -> None:
    errors = {"object": "list", "data": [
        {"code": "invalid_json_line", "message": "Line 1 is not JSON", "param": None, "line": 1},
        {"code": "duplicate_custom_id", "message": "dup", "param": "custom_id", "line": 7},
    ]}
    snap = run("openai", {"id": "b", "status": "failed", "errors": errors, "failed_at": 1711471540,
                          "request_counts": {"total": 0, "completed": 0, "failed": 0}})
    assert snap.status == "failed"
    assert [e["code"] for e in snap.errors] == ["invalid_json_line", "duplicate_custom_id"]
    assert snap.errors[1] == {"code": "duplicate_custom_id", "message": "dup", "param": "custom_id",
                              "line": 7}
    assert snap.failed_at == "2024-03-26T16:45:40.000Z"


def test_unknown_status_is_kept() -> None:
    snap = run("openai", {"id": "b", "status": "paused"})
    assert (snap.status, snap.provider_status) == ("unknown", "paused")


def test_null_and_string_counts() -> None:
    assert counts(run("openai", {"id": "b", "status": "validating", "request_counts": None})) == (
        None, None, None)
    snap = run("openai", {"id": "b", "status": "in_progress",
                          "request_counts": {"total": "10", "completed": "4", "failed": None}})
    assert counts(snap) == (10, 4, None)


def test_usage_and_extra_counts_survive() -> None:
    usage = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1}, "output_tokens": 7,
             "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 12}
    snap = run("openai", {"id": "b", "status": "completed", "usage": usage,
                          "request_counts": {"total": 3, "completed": 3, "failed": 0, "cancelled": 1}})
    assert snap.usage == usage
    assert snap.requests_extra == {"cancelled": 1}


@pytest.mark.parametrize("value", ["2024-03-26T16:45:33.123456Z", "2024-03-26T17:45:33.123+01:00",
                                   "1711471533.123", "2024-03-26T16:45:33.123456789Z"])
def test_time_formats(value: str) -> None:
    assert run("openai", {"id": "b", "status": "validating", "created_at": value}).created_at == (
        "2024-03-26T16:45:33.123Z")


def test_out_of_range_unix_time_is_invalid() -> None:
    with pytest.raises(InvalidRecord, match="out of range"):
        run("openai", {"id": "b", "status": "validating", "created_at": 10**12})


def test_list_envelope_and_paging() -> None:
    a = adapter("openai")
    body = {"object": "list", "data": [DOC_EXAMPLE, {**DOC_EXAMPLE, "id": "batch_2"}],
            "first_id": "batch_abc123", "last_id": "batch_2", "has_more": True}
    assert [o["id"] for o in a.batch_objects(body)] == ["batch_abc123", "batch_2"]
    first = a.list_params(500)
    assert first == {"limit": "100"}
    assert a.next_params(first, body) == {"limit": "100", "after": "batch_2"}
    assert a.next_params(first, {**body, "has_more": False}) is None
    assert a.batch_path("batch_abc123") == "/batches/batch_abc123"
    assert a.default_base_url == "https://api.openai.com/v1"
