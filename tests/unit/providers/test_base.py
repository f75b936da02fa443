"""The registry, auth headers, error bodies and the retry classification shared by every adapter."""

from __future__ import annotations

import pytest

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise
from pipeline.core.secret import Secret
from pipeline.providers import ADAPTERS, PROVIDERS, adapter, envelope
from pipeline.providers.base import ProviderError, read_error


def test_one_adapter_per_provider_name() -> None:
    assert tuple(ADAPTERS) == PROVIDERS
    assert all(a.name == name for name, a in ADAPTERS.items())


def test_unknown_provider_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="provider 'nope' is not one of"):
        normalise(Envelope("s", "nope", "2024-01-01T00:00:00Z", {"id": "b", "status": "completed"}))


def test_envelope_dispatch_uses_the_provider() -> None:
    env = Envelope("s", "together", "2024-01-01T00:00:00Z", {"id": "b", "status": "CANCELING"})
    snap = normalise(env)
    assert (snap.provider, snap.status, snap.observed_at) == ("together", "cancelling",
                                                             "2024-01-01T00:00:00.000Z")


@pytest.mark.parametrize("name", ["openai", "orq", "mistral", "groq", "together", "vertex"])
def test_bearer_providers(name: str) -> None:
    headers = adapter(name).auth(Secret("tok"))
    assert headers == {"Authorization": "Bearer tok"}


def test_a_list_body_of_the_wrong_shape_is_invalid() -> None:
    with pytest.raises(InvalidRecord, match="list response is not a JSON object with a 'data' array"):
        adapter("openai").batch_objects({"data": "none"})
    with pytest.raises(InvalidRecord, match="expected a JSON object or array"):
        adapter("openai").batch_objects("text")
    with pytest.raises(InvalidRecord, match="list response"):
        adapter("mistral").items([1])


def test_entries_that_are_not_objects_are_skipped_and_counted_for_every_caller() -> None:
    body = {"object": "list", "data": [{"id": "b1"}, 1, "x", {"id": "b2"}]}
    assert adapter("openai").list_entries(body) == ([{"id": "b1"}, {"id": "b2"}], 2)
    assert adapter("openai").batch_objects(body) == [{"id": "b1"}, {"id": "b2"}]  # the CLI, as the poller
    assert adapter("gemini").list_entries({}) == ([], 0)  # Google's empty list response


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}',
     ProviderError(429, "rate_limit_exceeded", "Rate limit reached", True)),
    (429, b'{"error": {"message": "You exceeded your quota", "type": "insufficient_quota"}}',
     ProviderError(429, "insufficient_quota", "You exceeded your quota", False)),
    (529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
     ProviderError(529, "overloaded_error", "Overloaded", True)),
    (404, b'{"error": {"code": 404, "message": "Batch not found", "status": "NOT_FOUND"}}',
     ProviderError(404, "404", "Batch not found", False)),
    (401, b'{"object": "error", "message": "Unauthorized", "type": "invalid_request_error"}',
     ProviderError(401, "invalid_request_error", "Unauthorized", False)),
    (400, b'{"detail": "bad page"}', ProviderError(400, None, "bad page", False)),
    (503, b"<html>upstream down</html>", ProviderError(503, None, "<html>upstream down</html>", True)),
    (408, b"", ProviderError(408, None, "HTTP 408", True)),
    (409, b'{"message": "conflict"}', ProviderError(409, None, "conflict", True)),
])
def test_error_bodies(status: int, body: bytes, expected: ProviderError) -> None:
    assert read_error(status, body) == expected
    assert adapter("anthropic").read_error(status, body) == expected


def test_every_provider_has_a_base_url_or_the_shape_of_one() -> None:
    from pipeline.providers import DEFAULT_BASE_URLS, NO_DEFAULT_HINT

    assert set(DEFAULT_BASE_URLS) | set(NO_DEFAULT_HINT) == set(ADAPTERS)
    assert all(hint.startswith("https://<") or hint.startswith("https://bedrock.<")
               for hint in NO_DEFAULT_HINT.values())


@pytest.mark.parametrize(("provider", "obj", "expected"), [
    ("openai", {"id": "batch_1"}, "batch_1"),
    ("anthropic", {"id": "msgbatch_1"}, "msgbatch_1"),
    ("together", {"job": {"id": "t-1"}}, "t-1"),
    ("gemini", {"name": "batches/b1", "metadata": {"name": "batches/b1", "state": "BATCH_STATE_RUNNING"}},
     "batches/b1"),
    ("vertex", {"name": "projects/p/locations/l/batchPredictionJobs/123"}, "123"),
    ("bedrock", {"jobArn": "arn:aws:bedrock:us-east-1:1:model-invocation-job/j1"},
     "arn:aws:bedrock:us-east-1:1:model-invocation-job/j1"),
    ("openai", {"id": 5}, None),
    ("vertex", {"name": ""}, None),
    ("bedrock", {"id": "x"}, None),
])
def test_batch_id_of_a_raw_object_and_the_envelope_key(provider: str, obj: dict[str, object],
                                                       expected: str | None) -> None:
    assert adapter(provider).batch_id(obj) == expected
    env = envelope("acct", provider, "2024-01-01T00:00:00Z", obj)  # as the poller makes it
    assert env.batch_id == expected
    assert env.key == f"acct/{expected or ''}"
    if expected is not None and provider != "together":
        full = {"openai": {"status": "completed"}, "anthropic": {"processing_status": "ended"},
                "gemini": {}, "vertex": {"state": "JOB_STATE_RUNNING"}, "bedrock": {"status": "InProgress"}}
        assert normalise(Envelope("acct", provider, "2024-01-01T00:00:00Z", {**obj, **full[provider]})).key \
            == env.key
