"""pipeline.core.normalise + pipeline.core.models: OpenAI batch object -> Snapshot, and the JSON contracts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import STATUSES, ChangeEvent, Envelope, Snapshot
from pipeline.core.normalise import normalise
from pipeline.core.timeutil import to_iso
from pipeline.providers import envelope as observed

OBSERVED = "2024-05-01T12:00:00.123Z"
T0 = 1_714_560_000  # 2024-05-01T10:40:00Z


def iso(seconds: int) -> str:
    value = to_iso(seconds, "t")
    assert value is not None
    return value


def full_batch(**overrides: Any) -> dict[str, Any]:
    """Every field of an OpenAI batch object, with distinct values so none can be confused."""
    obj: dict[str, Any] = {
        "id": "batch_abc123",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": {"object": "list", "data": [
            {"code": "invalid_json_line", "message": "Line 3 is not JSON", "param": "body", "line": 3},
            {"code": "too_long", "message": "Too many tokens", "param": None, "line": None},
        ]},
        "input_file_id": "file-in-1",
        "completion_window": "24h",
        "status": "completed",
        "output_file_id": "file-out-1",
        "error_file_id": "file-err-1",
        "created_at": T0,
        "in_progress_at": T0 + 60,
        "expires_at": T0 + 86_400,
        "finalizing_at": T0 + 600,
        "completed_at": T0 + 660,
        "failed_at": T0 + 1,
        "expired_at": T0 + 2,
        "cancelling_at": T0 + 3,
        "cancelled_at": T0 + 4,
        "request_counts": {"total": 100, "completed": 95, "failed": 5},
        "metadata": {"team": "search", "job": "nightly"},
        "usage": {"input_tokens": 1000, "output_tokens": 200, "total_tokens": 1200,
                  "input_tokens_details": {"cached_tokens": 0}},
        "model": "gpt-4o-mini-2024-07-18",
    }
    obj.update(overrides)
    return obj


def envelope(payload: dict[str, Any], observed_at: str = OBSERVED) -> Envelope:
    return observed("prod", "openai", observed_at, payload)  # the batch id read, as the poller does


def test_every_field_lands_in_the_snapshot() -> None:
    snap = normalise(envelope(full_batch()))
    assert snap == Snapshot(
        source="prod",
        provider="openai",
        batch_id="batch_abc123",
        status="completed",
        provider_status="completed",
        observed_at=OBSERVED,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini-2024-07-18",
        completion_window="24h",
        created_at=iso(T0),
        in_progress_at=iso(T0 + 60),
        finalizing_at=iso(T0 + 600),
        completed_at=iso(T0 + 660),
        failed_at=iso(T0 + 1),
        expired_at=iso(T0 + 2),
        cancelling_at=iso(T0 + 3),
        cancelled_at=iso(T0 + 4),
        expires_at=iso(T0 + 86_400),
        requests_total=100,
        requests_completed=95,
        requests_failed=5,
        input_file_id="file-in-1",
        output_file_id="file-out-1",
        error_file_id="file-err-1",
        errors=[
            {"code": "invalid_json_line", "message": "Line 3 is not JSON", "param": "body", "line": 3},
            {"code": "too_long", "message": "Too many tokens", "param": None, "line": None},
        ],
        metadata={"team": "search", "job": "nightly"},
        usage={"input_tokens": 1000, "output_tokens": 200, "total_tokens": 1200,
               "input_tokens_details": {"cached_tokens": 0}},
        provider_extra={"object": "batch"},
        input_tokens=1000, cached_input_tokens=0, output_tokens=200, reasoning_tokens=0,
        usage_source="object",
    )
    assert snap.created_at == "2024-05-01T10:40:00.000Z"
    assert snap.key == "prod/batch_abc123"


def test_snapshot_covers_every_text_and_time_field() -> None:
    """Guard: a field added to Snapshot must be filled by normalise for a full object."""
    snap = normalise(envelope(full_batch()))
    empty = [f.name for f in dataclasses.fields(Snapshot) if getattr(snap, f.name) in (None, [], {})]
    assert empty == ["requests_extra"]  # OpenAI has no counts beyond total/completed/failed


def test_minimal_object() -> None:
    snap = normalise(envelope({"id": "b1", "status": "validating"}))
    assert snap.batch_id == "b1"
    assert snap.status == "validating"
    assert snap.created_at is None
    assert (snap.requests_total, snap.requests_completed, snap.requests_failed) == (None, None, None)
    assert snap.errors == []
    assert snap.metadata == {}
    assert snap.usage is None


@pytest.mark.parametrize("status", STATUSES)
def test_known_statuses_pass_through(status: str) -> None:
    snap = normalise(envelope(full_batch(status=status)))
    assert snap.status == status
    assert snap.provider_status == status


def test_unknown_status_keeps_the_provider_status() -> None:
    snap = normalise(envelope(full_batch(status="paused")))
    assert snap.status == "unknown"
    assert snap.provider_status == "paused"


def test_null_request_counts() -> None:
    snap = normalise(envelope(full_batch(request_counts=None)))
    assert (snap.requests_total, snap.requests_completed, snap.requests_failed) == (None, None, None)


def test_partial_request_counts() -> None:
    snap = normalise(envelope(full_batch(request_counts={"total": 3})))
    assert (snap.requests_total, snap.requests_completed, snap.requests_failed) == (3, None, None)


def test_string_counts_become_ints() -> None:
    snap = normalise(envelope(full_batch(request_counts={"total": "100", "completed": " 7 ", "failed": "0"})))
    assert (snap.requests_total, snap.requests_completed, snap.requests_failed) == (100, 7, 0)
    assert isinstance(snap.requests_total, int)


def test_iso_times_and_observed_at_are_normalised() -> None:
    payload = full_batch(created_at="2024-05-01T12:40:00.5+02:00", completed_at="1714560660")
    snap = normalise(envelope(payload, observed_at="2024-05-01T12:00:00Z"))
    assert snap.created_at == "2024-05-01T10:40:00.500Z"
    assert snap.completed_at == "2024-05-01T10:51:00.000Z"
    assert snap.observed_at == "2024-05-01T12:00:00.000Z"


def test_bare_error_list_and_string_line() -> None:
    errors = [{"code": "x", "message": "m", "line": "12"}]
    snap = normalise(envelope(full_batch(errors=errors)))
    assert snap.errors == [{"code": "x", "message": "m", "param": None, "line": 12}]


@pytest.mark.parametrize("errors", [None, {"object": "list"}, {"object": "list", "data": None}, []])
def test_no_errors(errors: object) -> None:
    assert normalise(envelope(full_batch(errors=errors))).errors == []


def test_non_string_metadata_values_become_json_text() -> None:
    snap = normalise(envelope(full_batch(metadata={"n": 3, "flag": True, "obj": {"a": [1]}, "s": "x"})))
    assert snap.metadata == {"n": "3", "flag": "true", "obj": '{"a":[1]}', "s": "x"}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"id": None}, "'id' missing"),
        ({"id": ""}, "'id' missing"),
        ({"id": 123}, "'id' missing"),
        ({"status": None}, "'status' missing"),
        ({"status": 3}, "'status' missing"),
        ({"endpoint": 5}, "endpoint: expected a string"),
        ({"model": ["gpt"]}, "model: expected a string"),
        ({"created_at": True}, "created_at: expected a timestamp"),
        ({"created_at": "soon"}, "not an ISO 8601 timestamp"),
        ({"created_at": [1]}, "created_at: expected a timestamp"),
        ({"request_counts": [1, 2]}, "'request_counts' is not an object"),
        ({"request_counts": {"total": 1.5}}, "request_counts.total: expected an integer"),
        ({"request_counts": {"total": True}}, "request_counts.total: expected an integer"),
        ({"request_counts": {"total": "many"}}, "request_counts.total: expected an integer"),
        ({"request_counts": {"failed": -1}}, "request_counts.failed: negative count"),
        ({"errors": "boom"}, "errors: expected a list"),
        ({"errors": {"data": "boom"}}, "errors: expected a list"),
        ({"errors": ["boom"]}, "errors: each error must be an object"),
        ({"errors": [{"code": 1}]}, "errors.code: expected a string"),
        ({"errors": [{"line": "x"}]}, "errors.line: expected an integer"),
        ({"metadata": ["a"]}, "metadata: expected an object"),
        ({"usage": "lots"}, "usage: expected an object"),
    ],
)
def test_invalid_payloads(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRecord, match=match):
        normalise(envelope(full_batch(**overrides)))


def test_missing_id_key() -> None:
    payload = full_batch()
    del payload["id"]
    with pytest.raises(InvalidRecord, match="'id' missing"):
        normalise(envelope(payload))


def test_bad_observed_at() -> None:
    with pytest.raises(InvalidRecord):
        normalise(envelope(full_batch(), observed_at="not a time"))


def test_out_of_range_provider_time_is_invalid_record() -> None:
    with pytest.raises(InvalidRecord):
        normalise(envelope(full_batch(expires_at="9999-12-31T23:59:59-01:00")))


# --- JSON contracts ---------------------------------------------------------------------------


def test_envelope_round_trip() -> None:
    env = envelope(full_batch())
    assert env.key == "prod/batch_abc123"
    assert Envelope.from_json(env.to_json()) == env


def test_envelope_key_without_id() -> None:
    assert envelope({}).key == "prod/"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b"null", "expected a JSON object, got NoneType"),
        (b'{"provider": "openai", "observed_at": "x", "payload": {}}', "'source' missing"),
        (b'{"source": "", "provider": "openai", "observed_at": "x", "payload": {}}', "'source' missing"),
        (b'{"source": "s", "provider": 1, "observed_at": "x", "payload": {}}', "'provider' missing"),
        (b'{"source": "s", "provider": "p", "payload": {}}', "'observed_at' missing"),
        (b'{"source": "s", "provider": "p", "observed_at": "x"}', "'payload' missing"),
        (b'{"source": "s", "provider": "p", "observed_at": "x", "payload": [1]}', "'payload' missing"),
    ],
)
def test_envelope_from_json_errors(data: bytes, match: str) -> None:
    with pytest.raises(InvalidRecord, match=match):
        Envelope.from_json(data)


def test_snapshot_round_trip() -> None:
    snap = normalise(envelope(full_batch()))
    assert Snapshot.from_json(snap.to_json()) == snap
    assert orjson.loads(snap.to_json()) == snap.to_dict()


def test_snapshot_status_time() -> None:
    snap = normalise(envelope(full_batch()))
    assert snap.status_time("validating") == snap.created_at
    assert snap.status_time("completed") == snap.completed_at
    assert snap.status_time("unknown") is None
    assert normalise(envelope({"id": "b", "status": "in_progress"})).status_time("in_progress") is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{", "snapshot: not valid JSON"),
        (b"[]", "snapshot: expected a JSON object"),
        (b'{"source": "s"}', "snapshot:"),
    ],
)
def test_snapshot_from_json_errors(data: bytes, match: str) -> None:
    with pytest.raises(InvalidRecord, match=match):
        Snapshot.from_json(data)


def test_snapshot_from_json_unknown_field() -> None:
    obj = orjson.loads(normalise(envelope(full_batch())).to_json())
    obj["surprise"] = 1
    with pytest.raises(InvalidRecord, match="snapshot:"):
        Snapshot.from_json(orjson.dumps(obj))


def change_event() -> ChangeEvent:
    snap = normalise(envelope(full_batch()))
    return ChangeEvent(
        event_id="0b3f5a7e-0000-5000-8000-000000000001", kind="status_changed", source=snap.source,
        provider=snap.provider, batch_id=snap.batch_id, observed_at=snap.observed_at,
        at=snap.completed_at or "", snapshot=snap, from_status="finalizing", to_status="completed",
        seconds_in_previous=60.0,
    )


def test_change_event_round_trip() -> None:
    event = change_event()
    assert event.key == "prod/batch_abc123"
    back = ChangeEvent.from_json(event.to_json())
    assert back == event
    assert isinstance(back.snapshot, Snapshot)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda o: o.pop("snapshot"), "'snapshot' missing"),
        (lambda o: o.update(snapshot="x"), "'snapshot' missing"),
        (lambda o: o.update(extra=1), "change event:"),
        (lambda o: o.pop("event_id"), "change event:"),
        (lambda o: o["snapshot"].update(extra=1), "change event:"),
        (lambda o: o["snapshot"].pop("batch_id"), "change event:"),
    ],
)
def test_change_event_from_json_errors(mutate: Callable[[dict[str, Any]], object], match: str) -> None:
    obj = orjson.loads(change_event().to_json())
    mutate(obj)
    with pytest.raises(InvalidRecord, match=match):
        ChangeEvent.from_json(orjson.dumps(obj))


@pytest.mark.parametrize("data", [b"nope", b"[]", b"1"])
def test_change_event_from_json_not_an_object(data: bytes) -> None:
    with pytest.raises(InvalidRecord, match="change event:"):
        ChangeEvent.from_json(data)
