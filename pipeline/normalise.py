"""Provider object -> canonical :class:`~pipeline.models.Snapshot` (OpenAI Batch API shape)."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.errors import InvalidRecord
from pipeline.models import STATUSES, UNKNOWN, Envelope, Snapshot
from pipeline.timeutil import to_iso

TIME_FIELDS = (
    "created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
    "expired_at", "cancelling_at", "cancelled_at", "expires_at",
)
TEXT_FIELDS = ("endpoint", "model", "completion_window",
               "input_file_id", "output_file_id", "error_file_id")


def normalise(envelope: Envelope) -> Snapshot:
    """The canonical snapshot of one observed provider object; raises :class:`InvalidRecord`."""
    obj = envelope.payload
    batch_id = obj.get("id")
    if not isinstance(batch_id, str) or not batch_id:
        raise InvalidRecord("payload: 'id' missing or not a non-empty string")
    raw_status = obj.get("status")
    if not isinstance(raw_status, str):
        raise InvalidRecord(f"payload {batch_id}: 'status' missing or not a string")
    status = raw_status if raw_status in STATUSES else UNKNOWN
    counts = _counts(obj.get("request_counts"), batch_id)
    return Snapshot(
        source=envelope.source,
        provider=envelope.provider,
        batch_id=batch_id,
        status=status,
        provider_status=raw_status,
        observed_at=_required_time(envelope.observed_at),
        **{name: _text(obj.get(name), name) for name in TEXT_FIELDS},
        **{name: to_iso(obj.get(name), name) for name in TIME_FIELDS},
        requests_total=counts["total"],
        requests_completed=counts["completed"],
        requests_failed=counts["failed"],
        errors=_errors(obj.get("errors")),
        metadata=_metadata(obj.get("metadata")),
        usage=_usage(obj.get("usage")),
    )


def _required_time(value: str) -> str:
    iso = to_iso(value, "observed_at")
    if iso is None:
        raise InvalidRecord("observed_at: missing")
    return iso


def _text(value: object, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidRecord(f"{name}: expected a string, got {type(value).__name__}")


def _int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRecord(f"{name}: expected an integer, got {type(value).__name__}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRecord(f"{name}: expected an integer, got {str(value)[:32]!r}") from None
    if number < 0:
        raise InvalidRecord(f"{name}: negative count {number}")
    return number


def _counts(value: object, batch_id: str) -> dict[str, int | None]:
    if value is None:
        return {"total": None, "completed": None, "failed": None}
    if not isinstance(value, dict):
        raise InvalidRecord(f"payload {batch_id}: 'request_counts' is not an object")
    return {k: _int(value.get(k), f"request_counts.{k}") for k in ("total", "completed", "failed")}


def _errors(value: object) -> list[dict[str, Any]]:
    """OpenAI's ``errors`` is ``{object: list, data: [...]}``; a bare list is accepted too."""
    if value is None:
        return []
    items = value.get("data") if isinstance(value, dict) else value
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidRecord("errors: expected a list of error objects")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRecord("errors: each error must be an object")
        line = item.get("line")
        out.append({
            "code": _text(item.get("code"), "errors.code"),
            "message": _text(item.get("message"), "errors.message"),
            "param": _text(item.get("param"), "errors.param"),
            "line": _int(line, "errors.line"),
        })
    return out


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRecord("metadata: expected an object")
    return {str(k): v if isinstance(v, str) else _json_text(v) for k, v in value.items()}


def _usage(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRecord("usage: expected an object")
    return value


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()
