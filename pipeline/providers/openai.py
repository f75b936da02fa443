"""OpenAI Batch API (``/v1/batches``), and the OpenAI-shaped normaliser its clones reuse.

Statuses are the canonical eight (identity); times are unix seconds; ``request_counts`` is
``{total, completed, failed}``. This is the hot path of the normalise agent: one pass over the
object's keys, fast paths for integer times, no intermediate dicts for the common case.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import InvalidRecord
from pipeline.models import STATUSES, Snapshot
from pipeline.providers import fields as f
from pipeline.providers.base import Adapter, Normaliser, bearer
from pipeline.providers.paging import CursorPaging

TIME_FIELDS = (
    "created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
    "expired_at", "cancelling_at", "cancelled_at", "expires_at",
)
TEXT_FIELDS = ("endpoint", "model", "completion_window",
               "input_file_id", "output_file_id", "error_file_id")
KNOWN = frozenset({"id", "status", "request_counts", "errors", "metadata", "usage",
                   *TIME_FIELDS, *TEXT_FIELDS})
IDENTITY = {s: s for s in STATUSES}
COUNT_KEYS = frozenset({"total", "completed", "failed"})


def normalise_shaped(obj: dict[str, Any], source: str, observed_at: str, provider: str) -> Snapshot:
    """An OpenAI-shaped batch object (OpenAI, Azure, Groq, orq.ai) as a canonical snapshot."""
    batch_id = obj.get("id")
    if type(batch_id) is not str or not batch_id:
        raise InvalidRecord("payload: 'id' missing or not a non-empty string")
    raw = obj.get("status")
    if type(raw) is not str:
        raise InvalidRecord(f"payload {batch_id}: 'status' missing or not a string")
    total, completed, failed, more = _counts(obj.get("request_counts"), batch_id)
    ts = f.timestamp
    txt = f.text
    get = obj.get
    return Snapshot(
        source, provider, batch_id, IDENTITY.get(raw, "unknown"), raw,
        f.required_time(observed_at),
        txt(get("endpoint"), "endpoint"), txt(get("model"), "model"),
        txt(get("completion_window"), "completion_window"),
        ts(get("created_at"), "created_at"), ts(get("in_progress_at"), "in_progress_at"),
        ts(get("finalizing_at"), "finalizing_at"), ts(get("completed_at"), "completed_at"),
        ts(get("failed_at"), "failed_at"), ts(get("expired_at"), "expired_at"),
        ts(get("cancelling_at"), "cancelling_at"), ts(get("cancelled_at"), "cancelled_at"),
        ts(get("expires_at"), "expires_at"),
        total, completed, failed,
        txt(get("input_file_id"), "input_file_id"), txt(get("output_file_id"), "output_file_id"),
        txt(get("error_file_id"), "error_file_id"),
        f.error_list(get("errors")), f.metadata(get("metadata")), f.usage(get("usage")),
        more, f.extras(obj, KNOWN),
    )


def _counts(value: object, batch_id: str) -> tuple[int | None, int | None, int | None, dict[str, int]]:
    if value is None:
        return None, None, None, {}
    if not isinstance(value, dict):
        raise InvalidRecord(f"payload {batch_id}: 'request_counts' is not an object")
    get, c = value.get, f.count
    counted = (c(get("total"), "request_counts.total"), c(get("completed"), "request_counts.completed"),
               c(get("failed"), "request_counts.failed"))
    if value.keys() <= COUNT_KEYS:
        return (*counted, {})
    more = {k: c(v, f"request_counts.{k}") for k, v in value.items() if k not in COUNT_KEYS}
    return (*counted, {k: v for k, v in more.items() if v is not None})


def shaped_adapter(name: str, base_url: str | None, *, normalise: Normaliser | None = None,
                   **overrides: Any) -> Adapter:
    """The adapter of an OpenAI-compatible batch API (``/batches``, ``data``, bearer auth)."""

    def same_shape(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
        return normalise_shaped(obj, source, observed_at, name)

    settings: dict[str, Any] = {"paging": CursorPaging(), "items_key": "data", "auth": bearer, **overrides}
    return Adapter(name=name, list_path="/batches", get_path="/batches/{id}",
                   normalise=normalise or same_shape, default_base_url=base_url, **settings)


ADAPTER = shaped_adapter("openai", "https://api.openai.com/v1")
normalise = ADAPTER.normalise
