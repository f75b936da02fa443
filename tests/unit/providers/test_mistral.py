"""Mistral batch jobs: upper-case statuses, the page envelope, count names, errors with counts."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.models import Snapshot
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run

JOB: dict[str, Any] = {
    "id": "b3b1a4e0-job", "object": "batch", "input_files": ["file-1", "file-2"],
    "metadata": {"team": "ml"}, "endpoint": "/v1/chat/completions", "model": "mistral-small-latest",
    "agent_id": None, "output_file": "file-out", "error_file": None,
    "errors": [{"message": "bad line", "count": 2}], "status": "SUCCESS", "created_at": 1730000000,
    "total_requests": 10, "completed_requests": 10, "succeeded_requests": 8, "failed_requests": 2,
    "started_at": 1730000010, "completed_at": 1730000100,
}


def test_documented_job() -> None:
    assert run("mistral", JOB) == Snapshot(
        source="acct", provider="mistral", batch_id="b3b1a4e0-job", status="completed",
        provider_status="SUCCESS", observed_at=OBSERVED, endpoint="/v1/chat/completions",
        model="mistral-small-latest", created_at="2024-10-27T03:33:20.000Z",
        in_progress_at="2024-10-27T03:33:30.000Z", completed_at="2024-10-27T03:35:00.000Z",
        requests_total=10, requests_completed=8, requests_failed=2, requests_extra={"processed": 10},
        input_file_id="file-1,file-2", output_file_id="file-out",
        errors=[{"code": None, "message": "bad line", "param": None, "line": None}],
        metadata={"team": "ml"},
        provider_extra={"object": "batch", "agent_id": None, "error_counts": [2]},
    )


@pytest.mark.parametrize(("raw", "status", "time_field"), [
    ("QUEUED", "validating", None), ("RUNNING", "in_progress", None),
    ("FAILED", "failed", "failed_at"), ("TIMEOUT_EXCEEDED", "expired", "expired_at"),
    ("CANCELLATION_REQUESTED", "cancelling", None), ("CANCELLED", "cancelled", "cancelled_at"),
    ("PAUSED", "unknown", None),
])
def test_status_mapping_and_end_time(raw: str, status: str, time_field: str | None) -> None:
    snap = run("mistral", {**JOB, "status": raw})
    assert (snap.status, snap.provider_status) == (status, raw)
    assert snap.completed_at is None
    if time_field:
        assert getattr(snap, time_field) == "2024-10-27T03:35:00.000Z"


def test_null_counts() -> None:
    job = {**JOB, "total_requests": None, "succeeded_requests": None, "failed_requests": None,
           "completed_requests": None}
    snap = run("mistral", job)
    assert counts(snap) == (None, None, None)
    assert snap.requests_extra == {}


def test_page_envelope_and_page_paging() -> None:
    a = adapter("mistral")
    page = {"object": "list", "data": [JOB, {**JOB, "id": "j2"}], "total": 5}
    assert [o["id"] for o in a.batch_objects(page)] == ["b3b1a4e0-job", "j2"]
    first = a.list_params(2)
    assert first == {"page": "0", "page_size": "2"}
    second = a.next_params(first, page)
    assert second == {"page": "1", "page_size": "2"}
    assert a.next_params(second, page) == {"page": "2", "page_size": "2"}
    assert a.next_params({"page": "2", "page_size": "2"}, {**page, "data": [JOB]}) is None
    assert a.next_params(first, {"object": "list", "data": [], "total": 0}) is None
