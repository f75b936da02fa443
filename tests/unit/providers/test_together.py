"""Together batches: a bare JSON array, upper-case statuses, ISO times, no counts."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.models import Snapshot
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run

JOB: dict[str, Any] = {
    "id": "01234567-8901-2345-6789-012345678901", "user_id": "user_789xyz012",
    "input_file_id": "file-input123abc456def", "file_size_bytes": 1048576, "status": "IN_PROGRESS",
    "job_deadline": "2024-01-15T15:30:00Z", "created_at": "2024-01-15T14:30:00Z",
    "endpoint": "/v1/chat/completions", "progress": 75.5, "model_id": "meta-llama/Llama-3-70b-chat-hf",
    "output_file_id": "file-output789xyz012ghi", "error_file_id": "file-errors456def789jkl",
    "error": "", "completed_at": None,
}


def test_documented_job() -> None:
    assert run("together", JOB) == Snapshot(
        source="acct", provider="together", batch_id="01234567-8901-2345-6789-012345678901",
        status="in_progress", provider_status="IN_PROGRESS", observed_at=OBSERVED,
        endpoint="/v1/chat/completions", model="meta-llama/Llama-3-70b-chat-hf",
        created_at="2024-01-15T14:30:00.000Z", expires_at="2024-01-15T15:30:00.000Z",
        input_file_id="file-input123abc456def", output_file_id="file-output789xyz012ghi",
        error_file_id="file-errors456def789jkl",
        provider_extra={"user_id": "user_789xyz012", "file_size_bytes": 1048576, "progress": 75.5},
    )
    assert counts(run("together", JOB)) == (None, None, None)


@pytest.mark.parametrize(("raw", "status"), [
    ("VALIDATING", "validating"), ("COMPLETED", "completed"), ("FAILED", "failed"),
    ("EXPIRED", "expired"), ("CANCELLED", "cancelled"), ("CANCELING", "cancelling"),
    ("cancelling", "cancelling"), ("QUEUED", "unknown"),
])
def test_upper_case_statuses(raw: str, status: str) -> None:
    snap = run("together", {**JOB, "status": raw})
    assert (snap.status, snap.provider_status) == (status, raw)


def test_failed_with_an_error_message() -> None:
    snap = run("together", {**JOB, "status": "FAILED", "error": "invalid input file",
                            "completed_at": "2024-01-15T15:45:30.5+00:00"})
    assert snap.errors == [{"code": None, "message": "invalid input file", "param": None, "line": None}]
    assert (snap.failed_at, snap.completed_at) == ("2024-01-15T15:45:30.500Z", None)


def test_bare_array_is_the_list_and_a_job_wrapper_is_unwrapped() -> None:
    a = adapter("together")
    assert a.batch_objects([JOB, JOB]) == [JOB, JOB]
    assert a.batch_objects(JOB) == [JOB]
    assert a.next_params(a.list_params(100), [JOB]) is None
    assert run("together", {"job": JOB}).batch_id == JOB["id"]
