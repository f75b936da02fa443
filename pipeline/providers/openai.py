"""OpenAI Batch API (``/v1/batches``), and the OpenAI-shaped normaliser its clones reuse.

Statuses are the canonical eight (identity); times are unix seconds; ``request_counts`` is
``{total, completed, failed}``. This is the hot path of the normalise agent: one pass over the
object's keys, fast paths for integer times, no intermediate dicts for the common case.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import MAX_BATCH_ID, STATUSES, Snapshot
from pipeline.core.usage import openai_usage
from pipeline.providers import fields as f
from pipeline.providers.base import Adapter, Normaliser, bearer
from pipeline.providers.fields import MAX_COUNT
from pipeline.providers.paging import CursorPaging

TIME_FIELDS = (
    "created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
    "expired_at", "cancelling_at", "cancelled_at", "expires_at",
)
TEXT_FIELDS = ("endpoint", "model", "completion_window",
               "input_file_id", "output_file_id", "error_file_id")
KNOWN = frozenset({"id", "status", "request_counts", "errors", "metadata", "usage",
                   *TIME_FIELDS, *TEXT_FIELDS})
KNOWN_AND_OBJECT = KNOWN | {"object"}  # OpenAI's ``"object": "batch"``, the usual one extra key
IDENTITY = {s: s for s in STATUSES}
COUNT_KEYS = frozenset({"total", "completed", "failed"})


def normalise_shaped(obj: dict[str, Any], source: str, observed_at: str, provider: str) -> Snapshot:
    """An OpenAI-shaped batch object (OpenAI, Azure, Groq, orq.ai) as a canonical snapshot.

    The fast path for the common shape: the same checks as :func:`normalise_general`, inlined
    (no call for a null field, counts and metadata checked in place, one extra key at most).
    Anything less common (counts that are not three plain integers, metadata that is not a
    string map, more than one unknown key, an invalid id or status) goes to the general path,
    so errors and unusual values are handled in one place. Timestamps and text fields call
    the same readers as the general path whenever they are not null.
    """
    get = obj.get
    batch_id = get("id")
    raw = get("status")
    rc = get("request_counts")
    if (type(batch_id) is not str or not batch_id or type(raw) is not str or type(rc) is not dict
            or len(rc) != 3 or len(batch_id) > MAX_BATCH_ID // 4):
        return normalise_general(obj, source, observed_at, provider)
    total = rc.get("total")
    completed = rc.get("completed")
    failed = rc.get("failed")
    if (type(total) is not int or type(completed) is not int or type(failed) is not int
            or not (0 <= total <= MAX_COUNT and 0 <= completed <= MAX_COUNT and 0 <= failed <= MAX_COUNT)):
        return normalise_general(obj, source, observed_at, provider)
    meta = get("metadata")
    if type(meta) is not dict:
        return normalise_general(obj, source, observed_at, provider)
    for value in meta.values():
        if type(value) is not str:
            return normalise_general(obj, source, observed_at, provider)
    if KNOWN_AND_OBJECT.issuperset(obj):  # the common case, without building a set
        unknown: Collection[str] = ("object",) if "object" in obj else ()
    else:
        unknown = obj.keys() - KNOWN
    if unknown:
        if len(unknown) != 1:
            return normalise_general(obj, source, observed_at, provider)
        (name,) = unknown
        value = obj[name]
        if type(value) is not str:
            return normalise_general(obj, source, observed_at, provider)
        extra: dict[str, Any] = {name: value}
    else:
        extra = {}
    # From here on, every reader is the general path's own, called in the general path's order,
    # so a bad value raises the same error.
    ts = f.timestamp
    txt = f.text
    observed = f.required_time(observed_at)
    endpoint = get("endpoint")
    model = get("model")
    window = get("completion_window")
    if type(endpoint) is not str and endpoint is not None:
        txt(endpoint, "endpoint")
    if type(model) is not str and model is not None:
        txt(model, "model")
    if type(window) is not str and window is not None:
        txt(window, "completion_window")
    created = get("created_at")
    in_progress = get("in_progress_at")
    finalizing = get("finalizing_at")
    completed_at = get("completed_at")
    failed_at = get("failed_at")
    expired = get("expired_at")
    cancelling = get("cancelling_at")
    cancelled = get("cancelled_at")
    expires = get("expires_at")
    created = None if created is None else ts(created, "created_at")
    in_progress = None if in_progress is None else ts(in_progress, "in_progress_at")
    finalizing = None if finalizing is None else ts(finalizing, "finalizing_at")
    completed_at = None if completed_at is None else ts(completed_at, "completed_at")
    failed_at = None if failed_at is None else ts(failed_at, "failed_at")
    expired = None if expired is None else ts(expired, "expired_at")
    cancelling = None if cancelling is None else ts(cancelling, "cancelling_at")
    cancelled = None if cancelled is None else ts(cancelled, "cancelled_at")
    expires = None if expires is None else ts(expires, "expires_at")
    input_file = get("input_file_id")
    output_file = get("output_file_id")
    error_file = get("error_file_id")
    if type(input_file) is not str and input_file is not None:
        txt(input_file, "input_file_id")
    if type(output_file) is not str and output_file is not None:
        txt(output_file, "output_file_id")
    if type(error_file) is not str and error_file is not None:
        txt(error_file, "error_file_id")
    errors = get("errors")
    usage = get("usage")
    return Snapshot(
        source, provider, batch_id, IDENTITY.get(raw, "unknown"), raw, observed,
        endpoint, model, window,
        created, in_progress, finalizing, completed_at, failed_at, expired, cancelling, cancelled,
        expires,
        total, completed, failed,
        input_file, output_file, error_file,
        [] if errors is None else f.error_list(errors), meta,
        None if usage is None else f.usage(usage),
        {}, extra, *openai_usage(usage),
    )


def normalise_general(obj: dict[str, Any], source: str, observed_at: str, provider: str) -> Snapshot:
    """The general path: every field through its typed reader. :func:`normalise_shaped` must give
    exactly this snapshot (or raise exactly this error) for every input."""
    batch_id = f.batch_id(obj.get("id"), "id")
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
        more, f.extras(obj, KNOWN), *openai_usage(get("usage")),
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
