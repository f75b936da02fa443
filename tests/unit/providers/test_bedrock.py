"""AWS Bedrock batch inference: ListModelInvocationJobs summaries, statuses, nextToken paging."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.models import Snapshot
from pipeline.core.secret import Secret
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234"
SUMMARY: dict[str, Any] = {
    "jobArn": ARN, "jobName": "nightly", "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
    "roleArn": "arn:aws:iam::123456789012:role/batch", "status": "Completed",
    "submitTime": "2024-08-01T12:00:00Z", "lastModifiedTime": "2024-08-01T14:00:00.5Z",
    "endTime": "2024-08-01T14:00:00Z",
    "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in/", "s3InputFormat": "JSONL"}},
    "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out/"}}, "timeoutDurationInHours": 24,
    "jobExpirationTime": "2024-08-02T12:00:00+00:00", "totalRecordCount": 100,
    "processedRecordCount": 100, "successRecordCount": 97, "errorRecordCount": 3,
}


def test_documented_summary() -> None:
    assert run("bedrock", SUMMARY) == Snapshot(
        source="acct", provider="bedrock", batch_id=ARN, status="completed", provider_status="Completed",
        observed_at=OBSERVED, model="anthropic.claude-3-haiku-20240307-v1:0", completion_window="24h",
        created_at="2024-08-01T12:00:00.000Z", completed_at="2024-08-01T14:00:00.000Z",
        expires_at="2024-08-02T12:00:00.000Z", requests_total=100, requests_completed=97,
        requests_failed=3, requests_extra={"processed": 100}, input_file_id="s3://in/",
        output_file_id="s3://out/",
        provider_extra={"jobName": "nightly", "roleArn": "arn:aws:iam::123456789012:role/batch",
                        "lastModifiedTime": "2024-08-01T14:00:00.5Z"},
    )


@pytest.mark.parametrize(("raw", "status"), [
    ("Submitted", "validating"), ("Validating", "validating"), ("Scheduled", "validating"),
    ("InProgress", "in_progress"), ("PartiallyCompleted", "expired"), ("Expired", "expired"),
    ("Failed", "failed"), ("Stopping", "cancelling"), ("Stopped", "cancelled"), ("Paused", "unknown"),
])
def test_statuses(raw: str, status: str) -> None:
    assert run("bedrock", {**SUMMARY, "status": raw}).status == status


def test_failed_message_is_an_error_and_old_summaries_have_no_counts() -> None:
    old = {k: v for k, v in SUMMARY.items() if "RecordCount" not in k}
    snap = run("bedrock", {**old, "status": "Failed", "message": "S3 access denied"})
    assert snap.errors == [{"code": None, "message": "S3 access denied", "param": None, "line": None}]
    assert snap.failed_at == "2024-08-01T14:00:00.000Z"
    assert counts(snap) == (None, None, None)
    ok = run("bedrock", {**SUMMARY, "message": "done"})
    assert (ok.errors, ok.provider_extra["message"]) == ([], "done")


def test_paging_signing_and_path() -> None:
    a = adapter("bedrock")
    body = {"invocationJobSummaries": [SUMMARY], "nextToken": "t2"}
    assert a.batch_objects(body) == [SUMMARY]
    assert a.next_params(a.list_params(5000), body) == {"maxResults": "1000", "nextToken": "t2"}
    assert a.next_params({"nextToken": "t2"}, {"invocationJobSummaries": []}) is None
    assert (a.signing, a.auth(Secret("x"))) == ("sigv4", {})
    assert a.batch_path(ARN) == (
        "/model-invocation-job/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabcd1234")
