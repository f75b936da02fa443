"""The poller against hostile providers (issue 12): redirects, unbounded bodies, paging loops, long
waits at stop, echoed keys, surprising exceptions and list entries that are not objects. Each
provider is a real aiohttp server on a free loopback port."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline.config import SourceConfig
from pipeline.core.errors import SourceError
from pipeline.core.secret import Secret
from pipeline.polling.metrics import render
from pipeline.polling.poller import SourcePoller
from pipeline.polling.retry import RetryPolicy
from tests import loopback
from tests.support.sinks import CaptureSink

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
KEY = "sk-proj-FAKEc0ffee1234567890abcdefWXYZ"
AWS_KEY = "AKIAFAKEFAKEFAKE0001:fakeSecretAccessKey0123456789abcdef:FakeSessionToken0123456789zz"
MIB = 1024 * 1024
STOPPED_WITHIN = 30.0  # a guard against hanging, far below the 300 s waits stopped

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a server answering every path with ``handler``; returns its root URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def source(url: str, provider: str = "openai", *, key: str | None = KEY, **more: object) -> SourceConfig:
    settings: dict[str, object] = {"poll_interval": 0.01, "max_rps": 1000.0, **more}
    return SourceConfig(name="edge", provider=provider, base_url=url, page_limit=2,
                        api_key=Secret(key) if key is not None else None, **settings)  # type: ignore[arg-type]


async def poll_once(poller: SourcePoller) -> int:
    async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
        return await poller.poll_once(session)


def listing(*ids: str, **more: object) -> dict[str, object]:
    return {"object": "list", "data": [{"id": i, "status": "in_progress"} for i in ids], **more}


async def run_until(poller: SourcePoller, stop: asyncio.Event) -> None:
    await asyncio.wait_for(poller.run(stop), STOPPED_WITHIN)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most ``STOPPED_WITHIN``) until ``condition`` holds."""
    await loopback.until(condition, STOPPED_WITHIN, 0.01)


# --- 5: redirects are not followed; no auth header reaches another origin -----------------------

AUTH_HEADERS = {"openai": "Authorization", "anthropic": "x-api-key", "azure_openai": "api-key",
                "gemini": "x-goog-api-key", "bedrock": "x-amz-security-token"}


@pytest.mark.parametrize("provider", sorted(AUTH_HEADERS))
async def test_a_redirect_is_not_followed_and_no_key_reaches_its_target(serve: Serve, provider: str) -> None:
    reached: list[dict[str, str]] = []

    async def thief(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response(listing())

    elsewhere = await serve(thief)

    async def redirecting(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{elsewhere.replace('http://', 'http://user:pw@')}/collect?steal=1")

    poller = SourcePoller(source(await serve(redirecting), provider,
                                 key=AWS_KEY if provider == "bedrock" else KEY), CaptureSink(), FAST)
    with pytest.raises(SourceError) as info:
        await poll_once(poller)
    assert reached == []
    assert info.value.status == 302
    assert info.value.retriable is False
    assert poller.metrics.errors["redirect"] == 1
    message = str(info.value)
    assert f"redirect to {elsewhere} not followed" in message
    assert "collect" not in message
    assert "steal" not in message
    assert "pw" not in message


async def test_a_same_origin_redirect_is_not_followed_either(serve: Serve) -> None:
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        paths.append(request.path)
        if request.path.endswith("/batches"):
            raise web.HTTPMovedPermanently("/v2/batches")
        return web.json_response(listing("b1"))

    url = await serve(handler)
    poller = SourcePoller(source(f"{url}/v1"), CaptureSink(), FAST)
    with pytest.raises(SourceError, match=f"HTTP 301: redirect to {url} not followed"):
        await poll_once(poller)
    assert paths == ["/v1/batches"]


# --- 8: no exception ends a source's task silently --------------------------------------------


async def test_a_redirect_to_a_url_with_userinfo_does_not_end_the_task(serve: Serve) -> None:
    """aiohttp raised ValueError following it (credentials in the URL plus an Authorization
    header): not a ClientError, so the task died without a log line."""
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise web.HTTPFound("http://user:hunter2pw@127.0.0.1:1/v1/batches")
        return web.json_response(listing("b1"))

    stop = asyncio.Event()
    poller = SourcePoller(source(f"{await serve(handler)}/v1"), CaptureSink(then=stop.set), FAST)
    await run_until(poller, stop)
    assert poller.metrics.errors["redirect"] == 1
    assert poller.cycles == 1
    assert poller.observed == 1


async def test_an_unexpected_error_is_logged_with_the_source_counted_and_the_source_goes_on(
    serve: Serve, caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(listing("b1"))

    stop = asyncio.Event()
    sink = CaptureSink(fail_first=RuntimeError(f"broken sink, it quotes {KEY}"), then=stop.set)
    poller = SourcePoller(source(f"{await serve(handler)}/v1"), sink, FAST)
    with caplog.at_level(logging.INFO, logger="pipeline.polling.poller"):
        await run_until(poller, stop)
    assert poller.metrics.errors["unexpected"] == 1
    assert poller.cycles == 1
    assert [e.payload["id"] for e in sink.envelopes] == ["b1"]
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.getMessage().startswith("source edge: cycle failed unexpectedly: RuntimeError: broken sink")
    assert "in publish" in line.getMessage()  # where it was raised
    assert KEY[:12] not in caplog.text
    assert KEY[-8:] not in caplog.text


async def test_a_base_url_with_userinfo_fails_each_cycle_loudly_without_the_password(
    serve: Serve, caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(listing("b1"))

    url = (await serve(handler)).replace("http://", "http://admin:hunter2-secret-pw@")
    stop = asyncio.Event()
    poller = SourcePoller(source(f"{url}/v1"), CaptureSink(), FAST)
    task = asyncio.create_task(poller.run(stop))
    await until(lambda: poller.metrics.errors["unexpected"] >= 2 or task.done())
    stop.set()
    await asyncio.wait_for(task, STOPPED_WITHIN)
    assert poller.metrics.errors["unexpected"] >= 2  # every cycle, and the task lived on
    assert "source edge: cycle failed unexpectedly: ValueError" in caplog.text
    assert "hunter2" not in caplog.text
    assert "secret-pw" not in caplog.text


# --- 7: response bodies are capped, decompressed bytes counted -------------------------------

def padded(mib: int) -> bytes:
    """A valid, empty list page of ``mib`` MiB and a bit."""
    return b'{"object": "list", "data": [], "has_more": false, "pad": "' + b"x" * (mib * MIB) + b'"}'


PADDED = padded(2)


def chunked(body: bytes) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await resp.write(body[start:start + 64 * 1024])
        await resp.write_eof()
        return resp

    return handler


def whole(body: bytes, encoding: str | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": encoding} if encoding else {}
        return web.Response(body=body, content_type="application/json", headers=headers)

    return handler


@pytest.mark.parametrize(
    ("what", "handler"),
    [
        ("content-length", whole(PADDED)),
        ("chunked, no length", chunked(PADDED)),
        ("gzip bomb", whole(gzip.compress(padded(8)), "gzip")),
        ("deflate bomb", whole(zlib.compress(padded(8)), "deflate")),
    ],
)
async def test_a_body_over_max_body_mib_is_refused(serve: Serve, what: str, handler: Handler) -> None:
    sink = CaptureSink()
    poller = SourcePoller(source(f"{await serve(handler)}", max_body_mib=1), sink, FAST)
    with pytest.raises(SourceError, match="response body refused") as info:
        await poll_once(poller)
    assert "over max_body_mib (1 MiB)" in str(info.value)
    assert info.value.retriable is False
    assert poller.metrics.errors["body_too_large"] == 1
    assert sink.envelopes == []


async def test_a_compressed_body_under_the_cap_is_read(serve: Serve) -> None:
    body = b'{"data": [{"id": "b1", "status": "in_progress"}], "pad": "' + b"y" * (MIB // 2) + b'"}'
    url = await serve(whole(gzip.compress(body), "gzip"))
    poller = SourcePoller(source(url, max_body_mib=1), CaptureSink(), FAST)
    assert await poll_once(poller) == 1
    assert poller.metrics.errors["body_too_large"] == 0


# --- 9: paging stops on a cursor already requested and on a page with no new id --------------


async def test_a_cursor_cycle_stops_the_listing(serve: Serve) -> None:
    """A -> B -> A: the third page names a cursor already requested."""
    pages = {None: ("a1", "A"), "A": ("b1", "B"), "B": ("c1", "A")}
    afters: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        after = request.query.get("after")
        afters.append(after)
        item, last = pages[after]
        return web.json_response(listing(item, has_more=True, last_id=last))

    poller = SourcePoller(source(await serve(handler)), CaptureSink(), FAST)
    assert await poll_once(poller) == 3
    assert afters == [None, "A", "B"]
    assert poller.metrics.errors["paging_cursor_repeated"] == 1


async def test_new_cursors_over_the_same_items_stop_the_listing(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(listing("same1", "same2", has_more=True, last_id=f"cursor{calls}"))

    poller = SourcePoller(source(await serve(handler)), CaptureSink(), FAST)
    assert await poll_once(poller) == 2
    assert calls == 2
    assert poller.metrics.errors["paging_no_new_id"] == 1


async def test_mistral_pages_without_total_that_repeat_stop_the_listing(serve: Serve) -> None:
    """The server ignores ``page``: every page is the first, full, without ``total``."""
    pages: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        pages.append(request.query["page"])
        return web.json_response(listing("m1", "m2"))

    poller = SourcePoller(source(await serve(handler), "mistral"), CaptureSink(), FAST)
    assert await poll_once(poller) == 2
    assert pages == ["0", "1"]
    assert poller.metrics.errors["paging_no_new_id"] == 1


async def test_gemini_page_tokens_that_cycle_stop_the_listing(serve: Serve) -> None:
    tokens = {None: "T1", "T1": "T2", "T2": "T1"}
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        token = request.query.get("pageToken")
        seen.append(token)
        op = {"name": f"batches/{len(seen)}", "metadata": {"state": "BATCH_STATE_RUNNING"}}
        return web.json_response({"operations": [op], "nextPageToken": tokens[token]})

    poller = SourcePoller(source(await serve(handler), "gemini"), CaptureSink(), FAST)
    await poll_once(poller)
    assert seen == [None, "T1", "T2"]
    assert poller.metrics.errors["paging_cursor_repeated"] == 1


# --- 12: every wait wakes on stop -------------------------------------------------------------


def answering(status: int, headers: dict[str, str] | None = None) -> tuple[Handler, list[int]]:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(status)
        if status == 200:
            return web.json_response(listing())
        return web.json_response({"error": {"message": "no"}}, status=status, headers=headers or {})

    return handler, calls


@pytest.mark.parametrize(
    ("wait", "status", "headers", "settings", "policy"),
    [
        ("Retry-After 300 s", 429, {"Retry-After": "300"}, {}, RetryPolicy()),
        ("retry backoff of 300 s", 503, {}, {}, RetryPolicy(base_delay=300.0, max_delay=300.0)),
        ("breaker open for 300 s", 503, {}, {"breaker_threshold": 1, "breaker_reset": 300.0},
         RetryPolicy(max_attempts=1)),
        ("rate limiter at one request per 1000 s", 200, {}, {"max_rps": 0.001}, RetryPolicy()),
    ],
)
async def test_stop_wakes_every_wait(serve: Serve, wait: str, status: int, headers: dict[str, str],
                                     settings: dict[str, Any], policy: RetryPolicy) -> None:
    handler, calls = answering(status, headers)
    poller = SourcePoller(replace(source(await serve(handler)), **settings), CaptureSink(), policy)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await until(lambda: bool(calls))
    await asyncio.sleep(0.2)  # now in the wait
    assert len(calls) == 1, wait
    stop.set()
    await asyncio.wait_for(task, STOPPED_WITHIN)


# --- 13: a key the provider echoes is masked --------------------------------------------------

ECHOES = [
    (401, b'{"error": {"message": "Incorrect API key provided: ' + KEY.encode() + b'.", "code": "bad_key"}}'),
    (401, b'{"error": {"message": "Incorrect API key provided: ' + KEY[:12].encode() + b"*" * 20
          + KEY[-4:].encode() + b'."}}'),
    (400, b"<html>bad request for key " + KEY[3:30].encode() + b"</html>"),
    (403, b'{"message": "The security token ' + AWS_KEY.split(":")[2].encode() + b' is invalid"}'),
]


@pytest.mark.parametrize(("status", "body"), ECHOES)
async def test_a_key_the_provider_echoes_is_masked_in_logs_errors_and_metrics(
    serve: Serve, caplog: pytest.LogCaptureFixture, status: int, body: bytes,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    provider, key = ("bedrock", AWS_KEY) if status == 403 else ("openai", KEY)
    poller = SourcePoller(source(await serve(handler), provider, key=key), CaptureSink(), FAST)
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
            await poller._cycle(session)
            with pytest.raises(SourceError) as info:
                await poller.poll_once(session)
    assert poller.metrics.errors[f"http_{status}"] == 2
    assert f"HTTP {status}" in caplog.text
    for text in (caplog.text, str(info.value), render([poller.metrics])):
        for part in (*key.split(":"), key[:12], key[-4:], key[3:30]):
            assert part not in text


def test_masking_keeps_the_rest_of_the_message() -> None:
    from pipeline.polling.fetch import mask

    assert mask(f"Incorrect API key provided: {KEY}.", [KEY]) == "Incorrect API key provided: ***."
    assert mask(f"key {KEY[:12]}****{KEY[-4:]} refused", [KEY]) == "key ***" + "****" + "*** refused"
    assert mask("nothing to hide here", [KEY]) == "nothing to hide here"
    assert mask("short k1 key", ["k1"]) == "short *** key"


# --- 16: list entries that are not objects are counted ----------------------------------------


async def test_list_entries_that_are_not_objects_are_counted(
    serve: Serve, caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "b1"}, "junk", 5, None, ["b2"]], "has_more": False})

    sink = CaptureSink()
    poller = SourcePoller(source(await serve(handler)), sink, FAST)
    assert await poll_once(poller) == 1
    assert [e.payload["id"] for e in sink.envelopes] == ["b1"]
    assert poller.metrics.errors["non_object_entry"] == 4
    assert 'error="non_object_entry"} 4' in render([poller.metrics])
    assert "4 list entries that are not JSON objects skipped" in caplog.text
