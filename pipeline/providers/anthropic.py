"""Anthropic Message Batches (``/v1/messages/batches``).

``processing_status`` is ``in_progress``, ``canceling`` or ``ended``; an ended batch's canonical
status follows the rules in docs/providers.md, checked in this order: a cancel was initiated ->
``cancelled``; nothing succeeded and some expired -> ``expired``; every request errored ->
``failed`` (policy); otherwise ``completed``. ``ended_at`` becomes that status's ``*_at`` time,
``cancel_initiated_at`` becomes ``cancelling_at``. Counts: total is the sum of the five;
``succeeded`` -> completed, ``errored`` -> failed, the other three are kept in ``requests_extra``.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.models import Snapshot
from pipeline.providers import fields as f
from pipeline.providers.base import Adapter, header
from pipeline.providers.paging import CursorPaging

VERSION = "2023-06-01"
ACTIVE = {"in_progress": "in_progress", "canceling": "cancelling"}
COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
KNOWN = frozenset({"id", "processing_status", "request_counts", "created_at", "expires_at",
                   "ended_at", "cancel_initiated_at"})


def canonical_status(raw: str, counts: dict[str, int], cancel_initiated: bool) -> str:
    if raw != "ended":
        return ACTIVE.get(raw, "unknown")
    total = sum(counts.values())
    if cancel_initiated:
        return "cancelled"
    if counts["succeeded"] == 0 and counts["expired"] > 0:
        return "expired"
    if total > 0 and counts["errored"] == total:
        return "failed"
    return "completed"


def _counts(value: object) -> dict[str, int] | None:
    if value is None:
        return None
    raw = f.mapping(value, "request_counts")
    return {k: f.count(raw.get(k), f"request_counts.{k}") or 0 for k in COUNTS}


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    batch_id = f.batch_id(obj.get("id"), "id")
    r = f.Reader(obj)
    _, raw = f.status_of(obj.get("processing_status"), {}, "processing_status")
    counts = _counts(obj.get("request_counts"))
    cancel_at = r.time("cancel_initiated_at")
    status = canonical_status(raw, counts or dict.fromkeys(COUNTS, 0), cancel_at is not None)
    return Snapshot(
        source=source, provider="anthropic", batch_id=batch_id, status=status,
        provider_status=raw, observed_at=f.required_time(observed_at),
        created_at=r.time("created_at"),
        expires_at=r.time("expires_at"),
        cancelling_at=cancel_at,
        **f.terminal_times(status, r.time("ended_at")),
        requests_total=sum(counts.values()) if counts else None,
        requests_completed=counts["succeeded"] if counts else None,
        requests_failed=counts["errored"] if counts else None,
        requests_extra={k: counts[k] for k in ("processing", "canceled", "expired")} if counts else {},
        provider_extra=f.extras(obj, KNOWN),
    )


ADAPTER = Adapter(
    name="anthropic",
    list_path="/messages/batches",
    get_path="/messages/batches/{id}",
    paging=CursorPaging(cursor_param="after_id", max_limit=1000),
    items_key="data",
    auth=header("x-api-key", anthropic_version=VERSION),
    normalise=normalise,
    default_base_url="https://api.anthropic.com/v1",
)
