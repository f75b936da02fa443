"""Gemini API batches (``/v1beta/batches``), listed with ``pageSize``/``pageToken``.

The list returns long-running operations whose ``metadata`` is the batch
(``GenerateContentBatch``); a bare batch object is read as well. ``name`` (``batches/...``) is
the batch id. ``state`` carries a ``BATCH_STATE_`` (or ``JOB_STATE_``) prefix. ``batchStats``
counts are int64 (JSON strings); ``pendingRequestCount`` is kept as ``requests_extra.pending``.
``endTime`` is the end time of the terminal status reached. An operation's ``response`` (it
may hold inlined results) is not kept; ``done`` is, in ``provider_extra``.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.models import Snapshot
from pipeline.providers import fields as f
from pipeline.providers import google
from pipeline.providers.base import Adapter, header
from pipeline.providers.paging import TokenPaging

STATUS = {"PENDING": "validating", "RUNNING": "in_progress", "SUCCEEDED": "completed",
          "FAILED": "failed", "CANCELLED": "cancelled", "EXPIRED": "expired"}
KNOWN = frozenset({"name", "state", "model", "createTime", "endTime", "batchStats", "inputConfig",
                   "output", "error"})


def unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """An operation ``{name, metadata: {batch}, done, error}`` -> the batch (with its error)."""
    inner = obj.get("metadata")
    if isinstance(inner, dict) and "state" not in obj and ("state" in inner or "@type" in inner):
        return {**inner, "name": inner.get("name", obj.get("name")), "error": obj.get("error"),
                "done": obj.get("done")}
    return obj


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    batch = unwrap(obj)
    r = f.Reader(batch)
    batch_id = f.batch_id(batch.get("name"), "name")
    status, raw = google.state(batch.get("state"), STATUS)
    stats = f.mapping(batch.get("batchStats"), "batchStats")
    pending = f.count(stats.get("pendingRequestCount"), "batchStats.pendingRequestCount")
    return Snapshot(
        source=source, provider="gemini", batch_id=batch_id, status=status, provider_status=raw,
        observed_at=f.required_time(observed_at), model=r.text("model"),
        created_at=r.time("createTime"),
        **f.terminal_times(status, r.time("endTime")),
        requests_total=f.count(stats.get("requestCount"), "batchStats.requestCount"),
        requests_completed=f.count(stats.get("successfulRequestCount"), "batchStats.successfulRequestCount"),
        requests_failed=f.count(stats.get("failedRequestCount"), "batchStats.failedRequestCount"),
        requests_extra={"pending": pending} if pending is not None else {},
        input_file_id=f.text(f.mapping(batch.get("inputConfig"), "inputConfig").get("fileName"), "fileName"),
        output_file_id=f.text(f.mapping(batch.get("output"), "output").get("responsesFile"), "responsesFile"),
        errors=google.statuses(batch.get("error")),
        provider_extra=f.extras(batch, KNOWN),
    )


ADAPTER = Adapter(
    name="gemini",
    list_path="/batches",
    get_path="/{id}",
    paging=TokenPaging(),
    items_key="operations",
    auth=header("x-goog-api-key"),
    normalise=normalise,
    default_base_url="https://generativelanguage.googleapis.com/v1beta",
    id_safe="/",
    raw_id=lambda obj: unwrap(obj).get("name"),
)
