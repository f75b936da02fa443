"""pipeline.polling.poller: SourcePoller against an in-test Simulator and small loopback aiohttp apps."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.core.errors import SourceError
from pipeline.core.models import TERMINAL
from pipeline.core.normalise import normalise
from pipeline.core.secret import Secret
from pipeline.core.timeutil import parse_iso
from pipeline.polling.metrics import report_every
from pipeline.polling.poller import Poller, SourcePoller
from pipeline.polling.retry import RetryPolicy
from pipeline.providers import PROVIDERS
from pipeline.providers.base import read_error
from simulator.fleet import CREATION_SPAN
from simulator.server import Simulator, simulator_secret
from tests import loopback
from tests.support.clocks import FakeClock
from tests.support.sinks import CaptureSink

SPEED = 3600.0
FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
SIM_KEY = "sk-sim-server-key-5a1b"
WRONG_KEY = "sk-client-wrong-key-9f3c"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(50.0)


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=30, speed=SPEED, seed=5, sources=2, providers=("openai",))
    async with Simulator(config, clock=clock) as simulator:
        yield simulator


@pytest.fixture
async def guarded_sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=10, speed=SPEED, sources=2, providers=("openai",))
    async with Simulator(config, api_key=SIM_KEY, clock=clock) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def source_for(url: str, *, name: str = "sim-1", page_limit: int = 7, key: str | None = None) -> SourceConfig:
    return SourceConfig(name=name, provider="openai", base_url=url, page_limit=page_limit,
                        api_key=Secret(key) if key is not None else None, poll_interval=0.01,
                        max_rps=1000.0)


async def test_poll_once_publishes_every_visible_batch_once(
    sim: Simulator, http: aiohttp.ClientSession,
) -> None:
    sink = CaptureSink()
    poller = SourcePoller(source_for(sim.source_url("sim-1")), sink)
    seen = await poller.poll_once(http)
    visible = sim.sources["sim-1"].visible(sim.now())
    assert seen == len(visible)
    assert [e.payload["id"] for e in sink.envelopes] == [b.id for b in visible]
    assert [len(p) for p in sink.pages][:-1] == [7] * (len(sink.pages) - 1)
    for env in sink.envelopes:
        assert env.source == "sim-1"
        assert env.provider == "openai"
        assert env.key == f"sim-1/{env.payload['id']}"
        parse_iso(env.observed_at)
        assert normalise(env).batch_id == env.payload["id"]


async def test_later_cycles_publish_new_and_active_batches_only(
    sim: Simulator, clock: FakeClock, http: aiohttp.ClientSession,
) -> None:
    sink = CaptureSink()
    poller = SourcePoller(source_for(sim.source_url("sim-2"), name="sim-2"), sink)
    first = await poller.poll_once(http)
    terminal_after_first = {f"sim-2/{e.payload['id']}" for e in sink.envelopes
                            if e.payload["status"] in TERMINAL}
    clock.now += CREATION_SPAN / SPEED  # every batch now exists
    start = len(sink.envelopes)
    second = await poller.poll_once(http)
    keys = [e.key for e in sink.envelopes[start:]]
    assert len(keys) == len(set(keys)) == second
    assert not set(keys) & terminal_after_first  # terminal history is never re-published
    assert {e.key for e in sink.envelopes} == {f"sim-2/{b.id}" for b in sim.sources["sim-2"].fleet}
    assert first + second > 30 - len(terminal_after_first)


@pytest.mark.parametrize("limit", [1, 7, 30, 100])
async def test_page_limits(sim: Simulator, clock: FakeClock, http: aiohttp.ClientSession, limit: int) -> None:
    clock.now += CREATION_SPAN / SPEED
    sink = CaptureSink()
    seen = await SourcePoller(source_for(sim.source_url("sim-1"), page_limit=limit), sink).poll_once(http)
    assert seen == 30
    assert len({e.key for e in sink.envelopes}) == 30
    assert len(sink.pages) == -(-30 // limit)


async def test_correct_api_key_is_sent(guarded_sim: Simulator, http: aiohttp.ClientSession) -> None:
    sink = CaptureSink()
    poller = SourcePoller(source_for(guarded_sim.source_url("sim-1"), key=SIM_KEY), sink)
    async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
        assert await poller.poll_once(session) == len(guarded_sim.sources["sim-1"].visible(guarded_sim.now()))


@pytest.mark.parametrize("key", [WRONG_KEY, None])
async def test_401_is_a_source_error_without_the_key(guarded_sim: Simulator, key: str | None) -> None:
    sink = CaptureSink()
    poller = SourcePoller(source_for(guarded_sim.source_url("sim-1"), key=key), sink)
    async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
        with pytest.raises(SourceError) as info:
            await poller.poll_once(session)
    err = info.value
    assert err.status == 401
    assert err.retriable is False
    assert "HTTP 401" in str(err)
    assert "Incorrect API key provided." in str(err)
    assert WRONG_KEY not in str(err)
    assert WRONG_KEY not in repr(err)
    assert SIM_KEY not in str(err)
    assert sink.pages == []


def test_headers() -> None:
    assert "Authorization" not in SourcePoller(source_for("http://x"), CaptureSink()).client.headers()
    headers = SourcePoller(source_for("http://x", key="k1"), CaptureSink()).client.headers()
    assert headers["Authorization"] == "Bearer k1"
    assert headers["Accept"] == "application/json"


async def test_run_cycles_until_stopped(sim: Simulator) -> None:
    stop = asyncio.Event()
    sink = CaptureSink(then=stop.set)
    poller = SourcePoller(source_for(sim.source_url("sim-1"), page_limit=100), sink)
    await asyncio.wait_for(poller.run(stop), timeout=30)
    assert poller.cycles == 1
    assert poller.observed == len(sim.sources["sim-1"].visible(sim.now()))


async def test_poller_runs_all_sources_until_stop(sim: Simulator) -> None:
    both = asyncio.Event()

    def check() -> None:
        if {e.source for e in sink.envelopes} == {"sim-1", "sim-2"}:
            both.set()

    sink = CaptureSink(then=check)
    poller = Poller((source_for(sim.source_url("sim-1")), source_for(sim.source_url("sim-2"), name="sim-2")),
                    sink)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(both.wait(), timeout=30)
    poller.stop()
    await asyncio.wait_for(task, timeout=30)
    assert all(p.cycles >= 1 for p in poller.pollers)


# --- error responses from a hand-written server -----------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/v1/batches", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


def responding(body: bytes, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type="application/json")

    return handler


@pytest.mark.parametrize(
    ("status", "body", "retriable", "fragment"),
    [
        (500, b"<html>oops</html>", True, "HTTP 500: <html>oops</html>"),
        (503, b'{"error": {"message": "overloaded"}}', True, "HTTP 503: overloaded"),
        (429, b'{"error": {"message": "slow down"}}', True, "HTTP 429: slow down"),
        (408, b"", True, "HTTP 408"),
        (400, b'{"error": {"message": "bad"}}', False, "HTTP 400: bad"),
        (404, b"nope", False, "HTTP 404: nope"),
    ],
)
async def test_http_errors(serve: Callable[[Handler], Awaitable[str]], http: aiohttp.ClientSession,
                           status: int, body: bytes, retriable: bool, fragment: str) -> None:
    sink = CaptureSink()
    url = await serve(responding(body, status))
    with pytest.raises(SourceError) as info:
        await SourcePoller(source_for(url, name="edge"), sink, FAST).poll_once(http)
    assert info.value.status == status
    assert info.value.retriable is retriable
    assert str(info.value).startswith("source edge: ")
    assert fragment in str(info.value)
    assert sink.pages == []


@pytest.mark.parametrize(
    ("body", "fragment", "retriable"),
    [
        (b"not json", "not JSON", True),
        (b"[1, 2]", "list response is not a JSON object with a 'data' array", False),
        (b'{"object": "list"}', "list response is not a JSON object", False),
        (b'{"data": {"id": "x"}}', "list response is not a JSON object", False),
    ],
)
async def test_malformed_list_responses(
    serve: Callable[[Handler], Awaitable[str]], http: aiohttp.ClientSession,
    body: bytes, fragment: str, retriable: bool,
) -> None:
    url = await serve(responding(body))
    poller = SourcePoller(source_for(url), CaptureSink(), FAST)
    with pytest.raises(SourceError, match=fragment) as info:
        await poller.poll_once(http)
    assert info.value.retriable is retriable
    assert poller.metrics.errors["malformed_body"] == 1  # counted for the source; the next cycle retries


async def test_pagination_without_last_id_uses_the_last_item(
    serve: Callable[[Handler], Awaitable[str]], http: aiohttp.ClientSession,
) -> None:
    afters: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        after = request.query.get("after")
        afters.append(after)
        if after is None:
            return web.json_response({"data": [{"id": "b3"}, "junk", {"id": "b2"}], "has_more": True})
        return web.json_response({"data": [{"id": "b1"}], "has_more": False})

    sink = CaptureSink()
    seen = await SourcePoller(source_for(await serve(handler)), sink).poll_once(http)
    assert seen == 3
    assert afters == [None, "b2"]
    assert [e.payload["id"] for e in sink.envelopes] == ["b3", "b2", "b1"]


async def test_connection_failure_is_retriable(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nothing listens there
    poller = SourcePoller(source_for(f"http://127.0.0.1:{port}/v1"), CaptureSink(), FAST)
    with pytest.raises(SourceError) as info:
        await poller.poll_once(http)
    assert info.value.retriable is True
    assert info.value.status is None


async def test_failed_cycle_is_logged_not_raised(
    serve: Callable[[Handler], Awaitable[str]], http: aiohttp.ClientSession,
) -> None:
    poller = SourcePoller(source_for(await serve(responding(b"down", 502))), CaptureSink(), FAST)
    await poller._cycle(http)
    assert poller.cycles == 0
    assert poller.observed == 0


# --- error bodies, read by the providers' shared reader ------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}',
         "Incorrect API key provided."),
        (b'{"error": {"message": "x"}, "other": 1}', "x"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b"", "HTTP 400"),
        (b'{"error": {"message": 5}}', '{"error": {"message": 5}}'),
        (b"[1,2]", "[1,2]"),
        (b"\xff\xfebad", "\ufffd\ufffdbad"),
    ],
)
def test_error_message(body: bytes, expected: str) -> None:
    assert read_error(400, body).message == expected


def test_error_message_is_short() -> None:
    assert len(read_error(400, b"x" * 5000).message) == 200
    long = b'{"error": {"message": "' + b"m" * 5000 + b'"}}'
    assert read_error(400, long).message == "m" * 200


async def test_retry_after_on_the_last_attempt_holds_for_the_next_cycle(
    serve: Callable[[Handler], Awaitable[str]], http: aiohttp.ClientSession,
) -> None:
    """A cycle that gives up on a 429 must not let the next cycle call before Retry-After passed."""
    arrivals: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        arrivals.append(asyncio.get_running_loop().time())
        if len(arrivals) == 1:
            return web.Response(status=429, body=b"{}", headers={"Retry-After": "0.3"})
        return web.json_response({"data": [], "has_more": False})

    one_attempt = RetryPolicy(max_attempts=1)
    poller = SourcePoller(source_for(await serve(handler)), CaptureSink(), one_attempt)
    await poller._cycle(http)
    assert poller.cycles == 0
    await poller._cycle(http)
    assert poller.cycles == 1
    assert arrivals[1] - arrivals[0] >= 0.29


# --- every provider, through its adapter ------------------------------------------------------


@pytest.fixture
async def fleet(clock: FakeClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=25, sources=len(PROVIDERS), providers=PROVIDERS, speed=SPEED,
                             seed=8, malformed=6)
    async with Simulator(config, api_key=SIM_KEY, clock=clock) as simulator:
        yield simulator


def provider_source(sim: Simulator, name: str, key: str = SIM_KEY) -> SourceConfig:
    provider = sim.provider(name)
    return SourceConfig(name=name, provider=provider, base_url=sim.source_url(name), page_limit=4,
                        api_key=Secret(simulator_secret(provider, key)), poll_interval=0.01, max_rps=1000.0)


async def test_every_provider_is_polled_through_its_adapter(fleet: Simulator, clock: FakeClock) -> None:
    """Each batch once per cycle, keyed by the adapter's id; malformed objects published once."""
    truth_ids = {(b["source"], b["batch_id"]) for b in fleet.truth()["batches"]}
    malformed = set(fleet.truth()["malformed"])
    for name in fleet.sources:
        sink = CaptureSink()
        poller = SourcePoller(provider_source(fleet, name), sink)
        async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
            first = await poller.poll_once(session)
            assert first == len(fleet.sources[name].visible(fleet.now()))
            clock.now += CREATION_SPAN / SPEED
            await poller.poll_once(session)
            clock.now -= CREATION_SPAN / SPEED
        keys = [e.key for e in sink.envelopes]
        assert {tuple(k.split("/", 1)) for k in keys} == {k for k in truth_ids if k[0] == name}
        for page in sink.pages:
            assert len({e.key for e in page}) == len(page)
        rejected = [e.key for e in sink.envelopes if e.key in malformed]
        assert sorted(rejected) == sorted(k for k in malformed if k.startswith(f"{name}/"))  # once each
        for env in sink.envelopes:
            if env.key not in malformed:
                assert normalise(env).key == env.key
        assert poller.metrics.errors["invalid_object"] == len(rejected)
        assert poller.metrics.errors["http_401"] == 0


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "vertex", "bedrock", "azure_openai"])
async def test_a_wrong_credential_is_refused_per_provider(clock: FakeClock, provider: str) -> None:
    config = SimulatorConfig(port=0, batches=3, sources=1, providers=(provider,), speed=SPEED)
    async with Simulator(config, api_key=SIM_KEY, clock=clock) as sim:
        poller = SourcePoller(provider_source(sim, "sim-1", key=WRONG_KEY), CaptureSink(), FAST)
        async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
            with pytest.raises(SourceError) as info:
                await poller.poll_once(session)
    assert info.value.status == (403 if provider == "bedrock" else 401)
    assert info.value.retriable is False
    assert WRONG_KEY not in str(info.value)


async def test_stragglers_are_fetched_by_the_adapter_path_and_vanish(clock: FakeClock) -> None:
    """Active batches beyond the stop page are fetched one by one; a vanished one counts once."""
    for provider in ("vertex", "bedrock", "gemini", "azure_openai"):
        config = SimulatorConfig(port=0, batches=20, sources=1, providers=(provider,), speed=SPEED, seed=2,
                                 vanish_share=1.0, vanish_after=0.0)
        async with Simulator(config, clock=clock) as sim:
            sink = CaptureSink()
            poller = SourcePoller(provider_source(sim, "sim-1"), sink)
            async with aiohttp.ClientSession(headers=poller.client.headers()) as session:
                await poller.poll_once(session)
                active = [k for k, v in poller.known.items() if not v.settled]
                assert active
                clock.now += (CREATION_SPAN + 2 * 24 * 3600) / SPEED  # all ended, all vanished
                await poller.poll_once(session)
            assert poller.metrics.vanished == len(active), provider
            assert not any(not v.settled for v in poller.known.values())


async def test_simulated_latency_beyond_the_request_timeout_is_a_retriable_timeout(clock: FakeClock) -> None:
    config = SimulatorConfig(port=0, batches=3, sources=1, providers=("mistral",), speed=SPEED, latency=1.0)
    async with Simulator(config, clock=clock) as sim:
        source = SourceConfig(name="slow", provider="mistral", base_url=sim.source_url("sim-1"),
                              request_timeout=0.1, max_rps=1000.0)
        poller = SourcePoller(source, CaptureSink(), RetryPolicy(max_attempts=1))
        async with aiohttp.ClientSession(timeout=poller.client.timeout) as session:
            with pytest.raises(SourceError) as info:
                await poller.poll_once(session)
    assert info.value.retriable is True
    assert poller.metrics.errors["timeout"] == 1


# --- what a cycle logs ------------------------------------------------------------------------


async def test_a_cycle_logs_its_line_at_debug_only(
    sim: Simulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
) -> None:
    poller = SourcePoller(source_for(sim.source_url("sim-1"), page_limit=100), CaptureSink())
    with caplog.at_level(logging.DEBUG, logger="pipeline.polling.poller"):
        await poller._cycle(http)
    [line] = [r for r in caplog.records if "cycle 1:" in r.getMessage()]
    assert line.levelno == logging.DEBUG
    assert line.getMessage().startswith("source sim-1: cycle 1: ")
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_the_periodic_summary_is_at_info(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    sink = CaptureSink(then=stop.set)
    poller = Poller((source_for(sim.source_url("sim-1"), page_limit=100),), sink)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(stop.wait(), timeout=30)
    poller.stop()
    await asyncio.wait_for(task, timeout=30)
    with caplog.at_level(logging.INFO, logger="pipeline.polling.metrics"):
        report = asyncio.create_task(report_every(0.01, poller.summary))
        await loopback.until(lambda: bool(caplog.records), 30, 0.01)
        report.cancel()
    [line, *_] = caplog.records
    assert line.levelno == logging.INFO
    assert line.getMessage() == (f"poller: 1 sources, 1 cycles, observed {poller.observed}, "
                                 f"tracked {poller.pollers[0].metrics.tracked}, "
                                 f"active {poller.pollers[0].metrics.active}, failed requests 0")
    assert poller.observed == len(sink.envelopes) > 0
