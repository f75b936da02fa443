"""Mistral batch jobs (``/v1/batch/jobs``), listed by page: ``{object: list, data, total}``.

Statuses are upper-case words (QUEUED, RUNNING, SUCCESS, ...); ``started_at`` is
``in_progress_at`` and ``completed_at`` is the end time of whichever terminal status was
reached. Counts: ``total_requests``, ``succeeded_requests`` -> completed, ``failed_requests``
-> failed; ``completed_requests`` (processed so far) is kept as ``requests_extra.processed``.
Errors are ``[{message, count}]``; their counts are kept in ``provider_extra.error_counts``.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot
from pipeline.providers import fields as f
from pipeline.providers.base import Adapter, bearer
from pipeline.providers.paging import PagePaging

STATUS = {
    "QUEUED": "validating", "RUNNING": "in_progress", "SUCCESS": "completed", "FAILED": "failed",
    "TIMEOUT_EXCEEDED": "expired", "CANCELLATION_REQUESTED": "cancelling", "CANCELLED": "cancelled",
}
KNOWN = frozenset({"id", "status", "input_files", "metadata", "endpoint", "model", "output_file",
                   "error_file", "errors", "created_at", "started_at", "completed_at",
                   "total_requests", "completed_requests", "succeeded_requests", "failed_requests"})


def _input_files(value: object) -> str | None:
    """Mistral takes several input files: their ids, comma-separated."""
    if value is None or type(value) is str:
        return value
    if not isinstance(value, list) or not all(type(v) is str for v in value):
        raise InvalidRecord("input_files: expected a list of file ids")
    return ",".join(value) or None


def _errors(value: object) -> tuple[f.Errors, list[int | None]]:
    items = f.error_list(value)
    raw = value if isinstance(value, list) else []
    return items, [f.count(e.get("count"), "errors.count") for e in raw]


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    batch_id = f.batch_id(obj.get("id"), "id")
    r = f.Reader(obj)
    status, raw = f.status_of(obj.get("status"), STATUS)
    errors, error_counts = _errors(obj.get("errors"))
    processed = r.count("completed_requests")
    extra = f.extras(obj, KNOWN)
    if any(c is not None for c in error_counts):
        extra["error_counts"] = error_counts
    return Snapshot(
        source=source, provider="mistral", batch_id=batch_id, status=status, provider_status=raw,
        observed_at=f.required_time(observed_at),
        endpoint=r.text("endpoint"), model=r.text("model"),
        created_at=r.time("created_at"),
        in_progress_at=r.time("started_at"),
        **f.terminal_times(status, r.time("completed_at")),
        requests_total=r.count("total_requests"),
        requests_completed=r.count("succeeded_requests"),
        requests_failed=r.count("failed_requests"),
        requests_extra={"processed": processed} if processed is not None else {},
        input_file_id=_input_files(obj.get("input_files")),
        output_file_id=r.text("output_file"),
        error_file_id=r.text("error_file"),
        errors=errors, metadata=f.metadata(obj.get("metadata")), provider_extra=extra,
    )


ADAPTER = Adapter(
    name="mistral",
    list_path="/batch/jobs",
    get_path="/batch/jobs/{id}",
    paging=PagePaging(),
    items_key="data",
    auth=bearer,
    normalise=normalise,
    default_base_url="https://api.mistral.ai/v1",
)
