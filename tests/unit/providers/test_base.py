"""The registry, auth headers, error bodies and the retry classification shared by every adapter."""

from __future__ import annotations

import pytest

from pipeline.config import PROVIDERS, Secret
from pipeline.errors import InvalidRecord
from pipeline.models import Envelope
from pipeline.normalise import normalise
from pipeline.providers import ADAPTERS, adapter
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
    with pytest.raises(InvalidRecord, match="expected an array of batch objects"):
        adapter("openai").batch_objects({"data": [1, 2]})
    with pytest.raises(InvalidRecord, match="expected a JSON object or array"):
        adapter("openai").batch_objects("text")
    with pytest.raises(InvalidRecord, match="list response"):
        adapter("mistral").items([1])


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


def test_config_base_urls_match_the_adapters() -> None:
    from pipeline.config import DEFAULT_BASE_URLS

    defaults = {n: a.default_base_url for n, a in ADAPTERS.items() if a.default_base_url}
    assert defaults == DEFAULT_BASE_URLS
