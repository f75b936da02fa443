"""Vertex AI batch prediction jobs (``.../projects/P/locations/L/batchPredictionJobs``).

Listed with ``pageSize``/``pageToken`` under ``batchPredictionJobs``; auth is an OAuth access
token sent as a bearer (the source's key env/file holds it, e.g. from
``gcloud auth print-access-token``). The
batch id is the job number, the last segment of ``name`` (the full name is kept in ``provider_extra``).
``state`` is ``JOB_STATE_*``; ``startTime`` is ``in_progress_at``; ``endTime`` the end time of
the terminal status reached. ``completionStats`` (int64 as strings; unverified: docs/providers.md):
successful -> completed, failed -> failed, incomplete kept; total is their sum. Labels are the
metadata; ``error`` and ``partialFailures`` become errors.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot
from pipeline.providers import fields as f
from pipeline.providers import google
from pipeline.providers.base import Adapter, bearer
from pipeline.providers.paging import TokenPaging

STATUS = {
    "QUEUED": "validating", "PENDING": "validating", "RUNNING": "in_progress",
    "UPDATING": "in_progress", "PAUSED": "in_progress", "SUCCEEDED": "completed",
    "PARTIALLY_SUCCEEDED": "completed", "FAILED": "failed", "CANCELLING": "cancelling",
    "CANCELLED": "cancelled", "EXPIRED": "expired",
}
KNOWN = frozenset({"state", "model", "createTime", "startTime", "endTime", "completionStats",
                   "inputConfig", "outputInfo", "error", "partialFailures", "labels"})


def _input(obj: dict[str, Any]) -> str | None:
    """The input's GCS URIs (comma-separated), or its BigQuery URI."""
    config = f.mapping(obj.get("inputConfig"), "inputConfig")
    uris = f.mapping(config.get("gcsSource"), "inputConfig.gcsSource").get("uris")
    if uris is not None:
        if not isinstance(uris, list) or not all(type(u) is str for u in uris):
            raise InvalidRecord("inputConfig.gcsSource.uris: expected a list of strings")
        return ",".join(uris) or None
    bigquery = f.mapping(config.get("bigquerySource"), "inputConfig.bigquerySource")
    return f.text(bigquery.get("inputUri"), "inputConfig.bigquerySource.inputUri")


def _counts(obj: dict[str, Any]) -> tuple[int | None, int | None, int | None, dict[str, int]]:
    stats = f.mapping(obj.get("completionStats"), "completionStats")
    if not stats:
        return None, None, None, {}
    ok = f.count(stats.get("successfulCount"), "completionStats.successfulCount")
    bad = f.count(stats.get("failedCount"), "completionStats.failedCount")
    left = f.count(stats.get("incompleteCount"), "completionStats.incompleteCount")
    total = (ok or 0) + (bad or 0) + (left or 0)
    return total, ok, bad, {"incomplete": left} if left is not None else {}


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    name = f.required_text(obj.get("name"), "name")
    r = f.Reader(obj)
    status, raw = google.state(obj.get("state"), STATUS)
    total, ok, bad, more = _counts(obj)
    output = f.mapping(obj.get("outputInfo"), "outputInfo")
    return Snapshot(
        source=source, provider="vertex", batch_id=f.batch_id(google.short_id(name), "name"), status=status,
        provider_status=raw, observed_at=f.required_time(observed_at),
        model=r.text("model"),
        created_at=r.time("createTime"),
        in_progress_at=r.time("startTime"),
        **f.terminal_times(status, r.time("endTime")),
        requests_total=total, requests_completed=ok, requests_failed=bad, requests_extra=more,
        input_file_id=_input(obj),
        output_file_id=f.text(output.get("gcsOutputDirectory") or output.get("bigqueryOutputTable"),
                              "outputInfo"),
        errors=google.statuses(obj.get("error"), obj.get("partialFailures")),
        metadata=google.labels(obj), provider_extra=f.extras(obj, KNOWN),
    )


ADAPTER = Adapter(
    name="vertex",
    list_path="/batchPredictionJobs",
    get_path="/batchPredictionJobs/{id}",
    paging=TokenPaging(),
    items_key="batchPredictionJobs",
    auth=bearer,  # an OAuth access token, not an API key
    normalise=normalise,
    default_base_url=None,
    base_url_hint="https://<location>-aiplatform.googleapis.com/v1/projects/<project>/locations/<location>",
    raw_id=lambda obj: google.short_id(n) if type(n := obj.get("name")) is str else None,
)
