"""What the two Google batch APIs (Gemini, Vertex AI) share: ``STATE_`` prefixes, RFC 3339
times, int64 counts as JSON strings, and ``google.rpc.Status`` errors ``{code, message}``."""

from __future__ import annotations

from typing import Any

from pipeline.providers import fields as f


def state(raw: object, table: dict[str, str]) -> tuple[str, str]:
    """``BATCH_STATE_RUNNING`` / ``JOB_STATE_RUNNING`` -> canonical via the bare state name."""
    if type(raw) is str:
        bare = raw.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
        return table.get(bare, "unknown"), raw
    return f.status_of(raw, table, "state")


def statuses(*values: object) -> f.Errors:
    """``google.rpc.Status`` objects (``error``, ``partialFailures[]``) as canonical errors."""
    out: f.Errors = []
    for value in values:
        items = value if isinstance(value, list) else [value] if value is not None else []
        for item in items:
            status = f.mapping(item, "error")
            if status:
                code = status.get("code")  # a google.rpc.Code number: kept as text
                out.append(f.error(str(code) if type(code) is int else code, status.get("message")))
    return out


def short_id(name: str) -> str:
    """The last segment of a resource name (``projects/p/.../batchPredictionJobs/123`` -> ``123``)."""
    return name.rsplit("/", 1)[-1] or name


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return f.metadata(obj.get("labels"), "labels")
