"""AWS Bedrock batch inference (``ListModelInvocationJobs``: ``GET /model-invocation-jobs``).

Listed with ``maxResults`` (<= 1000) / ``nextToken`` under ``invocationJobSummaries``; requests
are signed with SigV4 (``signing="sigv4"``: the poller signs with :mod:`pipeline.polling.sigv4`; no
static header authenticates). The batch id is ``jobArn`` (:meth:`Adapter.batch_id` reads it).
Statuses map per docs/providers.md (``PartiallyCompleted`` -> expired: the window ran out with
partial results). ``submitTime`` is ``created_at``, ``endTime`` the end time of the terminal
status reached, ``jobExpirationTime`` is ``expires_at``. Newer summaries carry record counts.
``message`` is an error when the job did not complete, otherwise kept in ``provider_extra``.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.models import Snapshot
from pipeline.providers import fields as f
from pipeline.providers.base import Adapter, no_headers
from pipeline.providers.paging import TokenPaging

STATUS = {
    "Submitted": "validating", "Validating": "validating", "Scheduled": "validating",
    "InProgress": "in_progress", "Completed": "completed", "PartiallyCompleted": "expired",
    "Expired": "expired", "Failed": "failed", "Stopping": "cancelling", "Stopped": "cancelled",
}
KNOWN = frozenset({"jobArn", "status", "modelId", "submitTime", "endTime", "jobExpirationTime",
                   "inputDataConfig", "outputDataConfig", "timeoutDurationInHours", "message",
                   "totalRecordCount", "processedRecordCount", "successRecordCount", "errorRecordCount"})


def _s3_uri(obj: dict[str, Any], key: str, inner: str) -> str | None:
    config = f.mapping(f.mapping(obj.get(key), key).get(inner), f"{key}.{inner}")
    return f.text(config.get("s3Uri"), f"{key}.{inner}.s3Uri")


def _window(value: object) -> str | None:
    hours = f.count(value, "timeoutDurationInHours")
    return None if hours is None else f"{hours}h"


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    batch_id = f.batch_id(obj.get("jobArn"), "jobArn")
    r = f.Reader(obj)
    status, raw = f.status_of(obj.get("status"), STATUS)
    message = r.text("message")
    extra = f.extras(obj, KNOWN)
    failed = status in ("failed", "expired", "cancelled")
    if message and not failed:
        extra["message"] = message
    processed = r.count("processedRecordCount")
    return Snapshot(
        source=source, provider="bedrock", batch_id=batch_id, status=status, provider_status=raw,
        observed_at=f.required_time(observed_at), model=r.text("modelId"),
        completion_window=_window(obj.get("timeoutDurationInHours")),
        created_at=r.time("submitTime"),
        expires_at=r.time("jobExpirationTime"),
        **f.terminal_times(status, r.time("endTime")),
        requests_total=r.count("totalRecordCount"),
        requests_completed=r.count("successRecordCount"),
        requests_failed=r.count("errorRecordCount"),
        requests_extra={"processed": processed} if processed is not None else {},
        input_file_id=_s3_uri(obj, "inputDataConfig", "s3InputDataConfig"),
        output_file_id=_s3_uri(obj, "outputDataConfig", "s3OutputDataConfig"),
        errors=[f.error(None, message)] if message and failed else [], provider_extra=extra,
    )


ADAPTER = Adapter(
    name="bedrock",
    list_path="/model-invocation-jobs",
    get_path="/model-invocation-job/{id}",
    paging=TokenPaging(size_param="maxResults", cursor_param="nextToken", next_field="nextToken",
                       max_limit=1000),
    items_key="invocationJobSummaries",
    auth=no_headers,
    normalise=normalise,
    default_base_url=None,
    base_url_hint="https://bedrock.<region>.amazonaws.com",
    signing="sigv4",
    raw_id=lambda obj: obj.get("jobArn"),
)
