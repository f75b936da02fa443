"""pipeline.polling.client: the provider HTTP client alone, against a tiny loopback server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from pipeline.config import SourceConfig
from pipeline.core.errors import SourceError
from pipeline.core.secret import Secret
from pipeline.polling.client import ProviderClient
from pipeline.polling.metrics import SourceMetrics
from pipeline.polling.retry import RetryPolicy
from pipeline.providers import adapter
from tests import loopback

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
KEY = "sk-proj-FAKEclient1234567890abcdefWXYZ"

Answer = tuple[int, bytes]
Serve = Callable[[list[Answer]], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A server that gives ``answers`` in turn (the last one again when they run out)."""
    async with contextlib.AsyncExitStack() as servers:

        async def start(answers: list[Answer]) -> str:
            async def handler(request: web.Request) -> web.Response:
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                return web.Response(status=status, body=body, content_type="application/json")

            return await servers.enter_async_context(loopback.serving({"/{tail:.*}": handler})) + "/v1"

        yield start


def client(url: str) -> ProviderClient:
    source = SourceConfig(name="edge", provider="openai", base_url=url, api_key=Secret(KEY), max_rps=1000.0)
    return ProviderClient(source, adapter("openai"), FAST, SourceMetrics("edge", "openai"))


async def test_a_503_is_retried_then_the_answer_parsed(serve: Serve) -> None:
    c = client(await serve([(503, b'{"error": {"message": "busy"}}'), (200, b'{"data": []}')]))
    async with c.session() as session:
        assert await c.request(session, "/batches", {"limit": "2"}) == {"data": []}
    m = c.metrics
    assert (m.requests["retried"], m.requests["ok"], m.requests["failed"], m.retries) == (1, 1, 0, 1)
    assert m.errors["http_5xx"] == 1


async def test_a_401_is_not_retried_and_its_message_is_masked(serve: Serve) -> None:
    echo = b'{"error": {"message": "Incorrect API key provided: ' + KEY.encode() + b'"}}'
    c = client(await serve([(401, echo), (200, b"{}")]))
    async with c.session() as session:
        with pytest.raises(SourceError) as info:
            await c.request(session, "/batches", {})
    assert info.value.status == 401
    assert "HTTP 401: Incorrect API key provided: ***" in str(info.value)  # echoed, masked
    assert KEY[:12] not in str(info.value)
    assert KEY[-8:] not in str(info.value)
    m = c.metrics
    assert (m.requests["failed"], m.requests["retried"], m.requests["ok"]) == (1, 0, 0)
    assert m.errors["http_401"] == 1


async def test_get_one_refuses_a_body_that_is_not_a_batch(serve: Serve) -> None:
    c = client(await serve([(200, b'{"object": "list"}')]))
    async with c.session() as session:
        with pytest.raises(SourceError, match="response is not a batch object"):
            await c.get_one(session, "b1")
    assert c.metrics.errors["malformed_body"] == 1


def test_headers_url_and_masking() -> None:
    c = client("http://user:pw-secret@example.test/v1")
    assert c.headers()["Authorization"] == f"Bearer {KEY}"
    assert c.url("/batches", {"after": "a b", "limit": "2"}) == (
        "http://user:pw-secret@example.test/v1/batches?after=a%20b&limit=2")
    assert c.masked(f"key {KEY} and pw-secret") == "key *** and ***"
    assert len(c.masked("x" * 1000)) == 500
