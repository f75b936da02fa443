"""Together batches (``/v1/batches``): the list is a bare JSON array, with no paging.

Statuses are upper-case (``IN_PROGRESS``, ``CANCELING``, ...) and are lower-cased, with
``CANCELING`` -> ``cancelling``. Times are ISO 8601; ``job_deadline`` is ``expires_at`` and
``completed_at`` the end time of the terminal status reached. ``model_id`` is the model; there
are no request counts, only a float ``progress`` (kept in ``provider_extra``); ``error`` is one message.
A single-object response may be wrapped as ``{"job": {...}}``.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.models import STATUSES, Snapshot
from pipeline.providers import fields as f
from pipeline.providers.base import Adapter, bearer
from pipeline.providers.paging import SinglePage

STATUS = {s.upper(): s for s in STATUSES} | {"CANCELING": "cancelling"}
KNOWN = frozenset({"id", "status", "model_id", "endpoint", "input_file_id", "output_file_id",
                   "error_file_id", "error", "created_at", "completed_at", "job_deadline"})


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    job = obj.get("job")
    if isinstance(job, dict) and "id" not in obj:
        obj = job
    batch_id = f.batch_id(obj.get("id"), "id")
    r = f.Reader(obj)
    raw_status = obj.get("status")
    status, raw = f.status_of(raw_status.upper() if type(raw_status) is str else raw_status, STATUS)
    message = r.text("error")
    return Snapshot(
        source=source, provider="together", batch_id=batch_id, status=status,
        provider_status=raw_status if type(raw_status) is str else raw,
        observed_at=f.required_time(observed_at),
        endpoint=r.text("endpoint"), model=r.text("model_id"),
        created_at=r.time("created_at"),
        expires_at=r.time("job_deadline"),
        **f.terminal_times(status, r.time("completed_at")),
        input_file_id=r.text("input_file_id"),
        output_file_id=r.text("output_file_id"),
        error_file_id=r.text("error_file_id"),
        errors=[f.error(None, message)] if message else [],
        provider_extra=f.extras(obj, KNOWN),
    )


ADAPTER = Adapter(
    name="together",
    list_path="/batches",
    get_path="/batches/{id}",
    paging=SinglePage(),
    items_key=None,
    auth=bearer,
    normalise=normalise,
    default_base_url="https://api.together.xyz/v1",
    raw_id=lambda obj: (job.get("id") if "id" not in obj and isinstance(job := obj.get("job"), dict)
                        else obj.get("id")),
)
