"""Gemini API and Vertex AI: state prefixes, int64 counts as strings, RFC 3339 with nanoseconds."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.models import Snapshot
from pipeline.core.secret import Secret
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run

BATCH: dict[str, Any] = {
    "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
    "name": "batches/123456", "model": "models/gemini-2.5-flash", "displayName": "nightly",
    "inputConfig": {"fileName": "files/in-1"}, "output": {"responsesFile": "files/batch-out"},
    "createTime": "2025-07-01T10:00:00.123456789Z", "endTime": "2025-07-01T11:00:00Z",
    "updateTime": "2025-07-01T11:00:00Z", "state": "BATCH_STATE_SUCCEEDED",
    "batchStats": {"requestCount": "10", "successfulRequestCount": "9", "failedRequestCount": "1",
                   "pendingRequestCount": "0"},
}
OPERATION = {"name": "batches/123456", "metadata": BATCH, "done": True}
JOB: dict[str, Any] = {
    "name": "projects/42/locations/us-central1/batchPredictionJobs/789",
    "displayName": "eval", "model": "publishers/google/models/gemini-2.0-flash-001",
    "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://b/in.jsonl"]}},
    "outputInfo": {"gcsOutputDirectory": "gs://b/out/prediction-1"}, "state": "JOB_STATE_SUCCEEDED",
    "completionStats": {"successfulCount": "98", "failedCount": "2"},
    "createTime": "2025-01-01T00:00:00.123456Z", "startTime": "2025-01-01T00:01:00Z",
    "endTime": "2025-01-01T02:00:00Z", "labels": {"team": "search"},
}


def test_gemini_operation() -> None:
    assert run("gemini", OPERATION) == Snapshot(
        source="acct", provider="gemini", batch_id="batches/123456", status="completed",
        provider_status="BATCH_STATE_SUCCEEDED", observed_at=OBSERVED, model="models/gemini-2.5-flash",
        created_at="2025-07-01T10:00:00.123Z", completed_at="2025-07-01T11:00:00.000Z",
        requests_total=10, requests_completed=9, requests_failed=1, requests_extra={"pending": 0},
        input_file_id="files/in-1", output_file_id="files/batch-out",
        provider_extra={"@type": BATCH["@type"], "displayName": "nightly",
                        "updateTime": "2025-07-01T11:00:00Z", "done": True},
    )
    assert run("gemini", BATCH).batch_id == "batches/123456"


@pytest.mark.parametrize(("raw", "status"), [
    ("BATCH_STATE_PENDING", "validating"), ("BATCH_STATE_RUNNING", "in_progress"),
    ("JOB_STATE_FAILED", "failed"), ("BATCH_STATE_CANCELLED", "cancelled"),
    ("BATCH_STATE_EXPIRED", "expired"), ("BATCH_STATE_UNSPECIFIED", "unknown"),
])
def test_gemini_states(raw: str, status: str) -> None:
    assert run("gemini", {**BATCH, "state": raw}).status == status


def test_gemini_failed_operation_error_and_paging() -> None:
    op = {**OPERATION, "metadata": {**BATCH, "state": "BATCH_STATE_FAILED"},
          "error": {"code": 3, "message": "bad input"}}
    snap = run("gemini", op)
    assert snap.errors == [{"code": "3", "message": "bad input", "param": None, "line": None}]
    assert snap.failed_at == "2025-07-01T11:00:00.000Z"
    a = adapter("gemini")
    body = {"operations": [OPERATION], "nextPageToken": "tok"}
    assert a.batch_objects(body) == [OPERATION]
    assert a.next_params(a.list_params(50), body) == {"pageSize": "50", "pageToken": "tok"}
    assert a.next_params({"pageToken": "tok"}, {"operations": []}) is None
    assert a.batch_path("batches/123456") == "/batches/123456"
    assert a.auth(Secret("g")) == {"x-goog-api-key": "g"}


def test_vertex_job() -> None:
    assert run("vertex", JOB) == Snapshot(
        source="acct", provider="vertex", batch_id="789", status="completed",
        provider_status="JOB_STATE_SUCCEEDED", observed_at=OBSERVED,
        model="publishers/google/models/gemini-2.0-flash-001", created_at="2025-01-01T00:00:00.123Z",
        in_progress_at="2025-01-01T00:01:00.000Z", completed_at="2025-01-01T02:00:00.000Z",
        requests_total=100, requests_completed=98, requests_failed=2,
        input_file_id="gs://b/in.jsonl", output_file_id="gs://b/out/prediction-1",
        metadata={"team": "search"},
        provider_extra={"name": JOB["name"], "displayName": "eval"},
    )


@pytest.mark.parametrize(("raw", "status"), [
    ("JOB_STATE_QUEUED", "validating"), ("JOB_STATE_PENDING", "validating"),
    ("JOB_STATE_RUNNING", "in_progress"), ("JOB_STATE_UPDATING", "in_progress"),
    ("JOB_STATE_PAUSED", "in_progress"), ("JOB_STATE_PARTIALLY_SUCCEEDED", "completed"),
    ("JOB_STATE_FAILED", "failed"), ("JOB_STATE_CANCELLING", "cancelling"),
    ("JOB_STATE_CANCELLED", "cancelled"), ("JOB_STATE_EXPIRED", "expired"), ("JOB_STATE_NEW", "unknown"),
])
def test_vertex_states(raw: str, status: str) -> None:
    assert run("vertex", {**JOB, "state": raw}).status == status


def test_vertex_errors_counts_and_bigquery_input() -> None:
    job = {**JOB, "state": "JOB_STATE_FAILED", "completionStats": {"incompleteCount": "5"},
           "error": {"code": 13, "message": "internal"}, "partialFailures": [{"code": 3, "message": "row"}],
           "inputConfig": {"bigquerySource": {"inputUri": "bq://p.d.t"}}}
    snap = run("vertex", job)
    assert counts(snap) == (5, None, None)
    assert snap.requests_extra == {"incomplete": 5}
    assert [e["code"] for e in snap.errors] == ["13", "3"]
    assert snap.input_file_id == "bq://p.d.t"
    no_stats = {k: v for k, v in JOB.items() if k != "completionStats"}
    assert counts(run("vertex", no_stats)) == (None, None, None)
    body = {"batchPredictionJobs": [JOB], "nextPageToken": "n"}
    assert adapter("vertex").batch_objects(body) == [JOB]
    assert adapter("vertex").auth(Secret("ya29")) == {"Authorization": "Bearer ya29"}
