"""How the simulator renders one simulated batch in each provider's wire format.

The fleet model (:mod:`simulator.server`) is one seeded lifecycle per batch in the canonical
vocabulary. Here it is rendered per provider: ids (``batch_...``, ``msgbatch_...``, UUIDs,
``batches/...``, Vertex resource names, Bedrock ARNs), status words, timestamp formats (unix
seconds, RFC 3339 with micro- or nanoseconds, ISO 8601 with an offset), counts (int64 as JSON
strings on Google APIs) and error bodies. :func:`project` says which canonical status a
provider can show for a canonical one (no ``finalizing`` outside the OpenAI family, Anthropic's
``ended`` by counts, ...): the ground truth is the projected lifecycle, which is what the
provider's normaliser reads back from the rendered object (a unit test checks every provider).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.core.models import TERMINAL
from simulator import usage as simusage
from simulator.fleet import WINDOW, SimBatch

ANTHROPIC_RESULTS = "https://api.anthropic.com/v1/messages/batches"
VERTEX_PARENT = "projects/sim-project/locations/us-central1"
AWS_ACCOUNT = "123456789012"
Obj = dict[str, Any]
# The simulated path of each provider's API root under /{source} (the adapter's paths follow).
BASE_PATHS = {
    "openai": "/v1", "azure_openai": "/openai", "orq": "/v3/router", "anthropic": "/v1",
    "mistral": "/v1", "groq": "/openai/v1", "together": "/v1", "gemini": "/v1beta",
    "vertex": f"/v1/{VERTEX_PARENT}", "bedrock": "",
}
OPENAI_SHAPED = frozenset({"openai", "azure_openai", "orq", "groq"})
NO_FINALIZING = {"finalizing": "in_progress"}


# --- canonical projection -------------------------------------------------------------------------


def project(provider: str, batch: SimBatch, status: str) -> str:
    """The canonical status a provider's object shows while the fleet model is in ``status``."""
    if provider in OPENAI_SHAPED:
        return status
    if provider == "anthropic":
        if status in ("validating", "finalizing"):
            return "in_progress"
        return "failed" if status == "completed" and batch.failed >= batch.total else status
    if provider == "gemini" and status == "cancelling":
        return "in_progress"
    return NO_FINALIZING.get(status, status)


def projected_timeline(provider: str, batch: SimBatch) -> list[tuple[str, float]]:
    """The lifecycle as the provider shows it: projected, repeated statuses merged."""
    out: list[tuple[str, float]] = []
    for status, at in batch.timeline:
        shown = project(provider, batch, status)
        if not out or out[-1][0] != shown:
            out.append((shown, at))
    return out


# --- ids --------------------------------------------------------------------------------------------


def wire_id(provider: str, batch: SimBatch, source: str) -> str:
    """The batch's id on the wire (the field the adapter's ``batch_id`` reads)."""
    n = f"{zlib.crc32(source.encode()):010d}{batch.index:06d}"
    if provider == "anthropic":
        return f"msgbatch_{source.replace('-', '')}_{batch.index:06d}"
    if provider in ("mistral", "together"):
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"batchscope-sim/{source}/{batch.index}"))
    if provider == "gemini":
        return f"batches/{source.replace('-', '')}{batch.index:06d}"
    if provider == "vertex":
        return f"{VERTEX_PARENT}/batchPredictionJobs/{n}"
    if provider == "bedrock":
        return f"arn:aws:bedrock:us-east-1:{AWS_ACCOUNT}:model-invocation-job/sim{n}"
    return batch.id


def snapshot_id(provider: str, wire: str) -> str:
    """The id as the normaliser puts it in ``snapshot.batch_id`` (Vertex: the job number)."""
    return wire.rsplit("/", 1)[-1] if provider == "vertex" else wire


# --- times ------------------------------------------------------------------------------------------


def rfc3339_micro(x: float) -> str:
    return datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_nano(x: float) -> str:
    whole = datetime.fromtimestamp(int(x), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{round((x % 1) * 1e9) % 1_000_000_000:09d}Z"


def iso_offset(x: float) -> str:
    return datetime.fromtimestamp(x, UTC).isoformat()


def iso_millis(x: float) -> str:
    return datetime.fromtimestamp(x, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class View:
    """A batch at simulated time ``t``, with absolute times (``epoch`` + offset) for rendering."""

    def __init__(self, batch: SimBatch, t: float, epoch: float) -> None:
        self.batch, self.epoch, self.now = batch, epoch, epoch + t
        self.status = batch.status_at(t) or "validating"
        self.passed = {s: epoch + at for s, at in batch.timeline if at <= t}
        self.completed, self.failed = batch.progress_at(t)
        self.created = epoch + batch.created
        self.expires = self.created + WINDOW
        self.done = self.status in TERMINAL
        self.ended = self.passed.get(self.status) if self.done else None
        self.started = self.passed.get("in_progress")

    @property
    def total(self) -> int:
        return self.batch.total if self.status != "validating" else 0

    def maybe(self, fmt: Callable[[float], Any], at: float | None) -> Any:
        return None if at is None else fmt(at)


# --- one renderer per provider ------------------------------------------------------------------


def openai_shaped(v: View, batch_id: str, provider: str) -> Obj:
    b = v.batch
    endpoint = b.endpoint.removeprefix("/v1") if provider == "azure_openai" else b.endpoint
    stamp = {s: int(at) for s, at in v.passed.items()}
    return {
        "id": batch_id, "object": "batch", "endpoint": endpoint,
        "errors": _openai_errors(b) if v.status == "failed" else None,
        "input_file_id": f"file-in-{b.index:06d}", "completion_window": "24h", "status": v.status,
        "output_file_id": f"file-out-{b.index:06d}" if v.done and v.completed else None,
        "error_file_id": f"file-err-{b.index:06d}" if v.done and v.failed else None,
        "created_at": int(v.created), "in_progress_at": stamp.get("in_progress"),
        "expires_at": int(v.expires), "finalizing_at": stamp.get("finalizing"),
        "completed_at": stamp.get("completed"), "failed_at": stamp.get("failed"),
        "expired_at": stamp.get("expired"), "cancelling_at": stamp.get("cancelling"),
        "cancelled_at": stamp.get("cancelled"),
        "request_counts": {"total": v.total, "completed": v.completed, "failed": v.failed},
        "metadata": {"team": ("search", "ads", "eval")[b.index % 3], "job": f"job-{b.index}"},
        "model": b.model, "usage": simusage.usage(b, v.completed),
    }


def _openai_errors(batch: SimBatch) -> Obj:
    return {"object": "list", "data": [
        {"code": batch.error_code, "message": f"Simulated validation error: {batch.error_code}",
         "param": None, "line": 1},
    ]}


def anthropic(v: View, batch_id: str) -> Obj:
    b, s = v.batch, v.status
    cancel_at = v.passed.get("cancelling")
    counts = {"processing": 0, "succeeded": v.completed, "errored": v.failed, "canceled": 0, "expired": 0}
    if not v.done:
        counts["processing"] = b.total - v.completed - v.failed
    elif s == "failed":
        counts.update(succeeded=0, errored=b.total)
    elif s == "expired":
        counts.update(succeeded=0, expired=b.total - v.failed)
    elif s == "cancelled":
        counts["canceled"] = b.total - v.completed - v.failed
    status = "ended" if v.done else "canceling" if s == "cancelling" else "in_progress"
    return {
        "id": batch_id, "type": "message_batch", "processing_status": status, "request_counts": counts,
        "ended_at": v.maybe(rfc3339_micro, v.ended), "created_at": rfc3339_micro(v.created),
        "expires_at": rfc3339_micro(v.expires), "archived_at": None,
        "cancel_initiated_at": v.maybe(rfc3339_micro, cancel_at),
        "results_url": f"{ANTHROPIC_RESULTS}/{batch_id}/results" if v.done else None,
    }


MISTRAL = {"validating": "QUEUED", "in_progress": "RUNNING", "finalizing": "RUNNING", "completed": "SUCCESS",
           "failed": "FAILED", "expired": "TIMEOUT_EXCEEDED", "cancelling": "CANCELLATION_REQUESTED",
           "cancelled": "CANCELLED"}


def mistral(v: View, batch_id: str) -> Obj:
    b = v.batch
    failed = v.status == "failed"
    errors = [{"message": f"Simulated validation error: {b.error_code}", "count": 1}] if failed else []
    return {
        "id": batch_id, "object": "batch", "input_files": [f"file-in-{b.index:06d}"],
        "metadata": {"team": ("search", "ads", "eval")[b.index % 3]},
        "endpoint": b.endpoint, "model": "mistral-small-latest", "status": MISTRAL[v.status],
        "output_file": f"file-out-{b.index:06d}" if v.done and v.completed else None,
        "error_file": f"file-err-{b.index:06d}" if v.done and v.failed else None, "errors": errors,
        "created_at": int(v.created), "started_at": v.maybe(int, v.started),
        "completed_at": v.maybe(int, v.ended), "total_requests": v.total,
        "completed_requests": v.completed + v.failed, "succeeded_requests": v.completed,
        "failed_requests": v.failed,
    }


TOGETHER = {"validating": "VALIDATING", "in_progress": "IN_PROGRESS", "finalizing": "IN_PROGRESS",
            "completed": "COMPLETED", "failed": "FAILED", "expired": "EXPIRED", "cancelling": "CANCELING",
            "cancelled": "CANCELLED"}


def together(v: View, batch_id: str) -> Obj:
    b = v.batch
    progress = 0.0 if not b.total else round(100.0 * (v.completed + v.failed) / b.total, 2)
    return {
        "id": batch_id, "user_id": "sim-user", "input_file_id": f"file-in-{b.index:06d}",
        "file_size_bytes": 1000 + b.total, "status": TOGETHER[v.status],
        "job_deadline": iso_offset(v.expires), "created_at": iso_offset(v.created),
        "endpoint": b.endpoint, "progress": progress, "model_id": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "output_file_id": f"file-out-{b.index:06d}" if v.done and v.completed else None,
        "error_file_id": f"file-err-{b.index:06d}" if v.done and v.failed else None,
        "error": f"Simulated validation error: {b.error_code}" if v.status == "failed" else None,
        "completed_at": v.maybe(iso_offset, v.ended),
    }


GEMINI = {"validating": "PENDING", "in_progress": "RUNNING", "finalizing": "RUNNING", "cancelling": "RUNNING",
          "completed": "SUCCEEDED", "failed": "FAILED", "expired": "EXPIRED", "cancelled": "CANCELLED"}


def gemini(v: View, batch_id: str) -> Obj:
    b = v.batch
    stats = {"requestCount": str(v.total), "successfulRequestCount": str(v.completed),
             "failedRequestCount": str(v.failed),
             "pendingRequestCount": str(max(v.total - v.completed - v.failed, 0))}
    batch: Obj = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        "name": batch_id, "model": "models/gemini-2.5-flash", "displayName": f"job-{b.index}",
        "inputConfig": {"fileName": f"files/in-{b.index:06d}"}, "state": f"BATCH_STATE_{GEMINI[v.status]}",
        "createTime": rfc3339_micro(v.created), "updateTime": rfc3339_micro(v.ended or v.created),
        "batchStats": stats,
    }
    if v.done:
        batch["endTime"] = rfc3339_micro(v.ended or v.created)
        if v.completed:
            batch["output"] = {"responsesFile": f"files/out-{b.index:06d}"}
    op: Obj = {"name": batch_id, "metadata": batch, "done": v.done}
    if v.status == "failed":
        op["error"] = {"code": 3, "message": f"Simulated validation error: {b.error_code}"}
    return op


VERTEX = {"validating": "QUEUED", "in_progress": "RUNNING", "finalizing": "RUNNING", "completed": "SUCCEEDED",
          "failed": "FAILED", "expired": "EXPIRED", "cancelling": "CANCELLING", "cancelled": "CANCELLED"}


def vertex(v: View, batch_id: str) -> Obj:
    b = v.batch
    state = VERTEX[v.status]
    if v.status == "completed" and v.failed:
        state = "PARTIALLY_SUCCEEDED"
    job: Obj = {
        "name": batch_id, "displayName": f"job-{b.index}",
        "model": "publishers/google/models/gemini-2.0-flash-001",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [f"gs://sim/in/{b.index:06d}.jsonl"]}},
        "outputConfig": {"predictionsFormat": "jsonl",
                         "gcsDestination": {"outputUriPrefix": f"gs://sim/out/{b.index:06d}"}},
        "state": f"JOB_STATE_{state}", "createTime": rfc3339_nano(v.created),
        "updateTime": rfc3339_nano(v.ended or v.started or v.created),
        "labels": {"team": ("search", "ads", "eval")[b.index % 3]},
    }
    if v.started is not None:
        job["startTime"] = rfc3339_nano(v.started)
        job["completionStats"] = {"successfulCount": str(v.completed), "failedCount": str(v.failed),
                                  "incompleteCount": str(max(v.total - v.completed - v.failed, 0))}
    if v.done:
        job["endTime"] = rfc3339_nano(v.ended or v.created)
        job["outputInfo"] = {"gcsOutputDirectory": f"gs://sim/out/{b.index:06d}/prediction"}
    if v.status == "failed":
        job["error"] = {"code": 3, "message": f"Simulated validation error: {b.error_code}"}
    return job


BEDROCK = {"validating": "Submitted", "in_progress": "InProgress", "finalizing": "InProgress",
           "completed": "Completed", "failed": "Failed", "expired": "Expired", "cancelling": "Stopping",
           "cancelled": "Stopped"}


def bedrock(v: View, batch_id: str) -> Obj:
    b = v.batch
    status = BEDROCK[v.status]
    if v.status == "expired" and v.completed:
        status = "PartiallyCompleted"
    if v.status == "validating" and v.now - v.created > 60:
        status = "Validating"
    message = {"Failed": f"Simulated validation error: {b.error_code}",
               "PartiallyCompleted": "Job timed out with partial results",
               "Expired": "Job expired", "Stopped": "Stopped by user"}.get(status)
    summary: Obj = {
        "jobArn": batch_id, "jobName": f"job-{b.index}", "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "roleArn": f"arn:aws:iam::{AWS_ACCOUNT}:role/sim-batch", "status": status,
        "submitTime": iso_millis(v.created),
        "lastModifiedTime": iso_millis(v.ended or v.started or v.created),
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://sim/in/{b.index:06d}.jsonl",
                                                  "s3InputFormat": "JSONL"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://sim/out/{b.index:06d}/"}},
        "timeoutDurationInHours": 24, "jobExpirationTime": iso_millis(v.expires),
        "totalRecordCount": v.total, "processedRecordCount": v.completed + v.failed,
        "successRecordCount": v.completed, "errorRecordCount": v.failed,
    }
    if message:
        summary["message"] = message
    if v.done:
        summary["endTime"] = iso_millis(v.ended or v.created)
    return summary


def render(provider: str, batch: SimBatch, t: float, epoch: float, batch_id: str) -> Obj:
    """The batch as the provider's ``GET`` (and list item) shows it at simulated time ``t``."""
    v = View(batch, t, epoch)
    if provider in OPENAI_SHAPED:
        return openai_shaped(v, batch_id, provider)
    renderer: Callable[[View, str], Obj] = RENDERERS[provider]
    return renderer(v, batch_id)


RENDERERS: dict[str, Callable[[View, str], Obj]] = {
    "anthropic": anthropic, "mistral": mistral, "together": together, "gemini": gemini,
    "vertex": vertex, "bedrock": bedrock,
}
# The field holding the status word, corrupted (made a number) in a malformed object.
STATUS_FIELD = {"anthropic": "processing_status", "vertex": "state", "gemini": "metadata"}


def malformed(provider: str, obj: Obj) -> Obj:
    """A batch object the provider's normaliser rejects (its status is a number), id kept."""
    bad = dict(obj)
    key = STATUS_FIELD.get(provider, "status")
    if provider == "gemini":
        bad["metadata"] = {**obj["metadata"], "state": 7}
    else:
        bad[key] = 7
    return bad


# --- error bodies -------------------------------------------------------------------------------


def error_body(provider: str, status: int, code: str | None, message: str) -> tuple[bytes, dict[str, str]]:
    """(body, extra headers) of an error answer, in the provider's error shape."""
    if provider == "anthropic":
        kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}}), {}
    if provider in ("gemini", "vertex"):
        word = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND"}.get(status, "UNKNOWN")
        return orjson.dumps({"error": {"code": status, "message": message, "status": word}}), {}
    if provider == "bedrock":
        kind = {403: "InvalidSignatureException", 404: "ResourceNotFoundException"}.get(
            status, "ValidationException")
        return orjson.dumps({"message": message}), {"x-amzn-ErrorType": kind}
    if provider == "mistral":
        return orjson.dumps({"object": "error", "message": message, "type": "invalid_request_error",
                             "param": None, "code": code}), {}
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": code}}), {}
