"""/health of the poller: it fails, and so does ``batchscope health``, while a source completed no
cycle for ``pipeline.stale_intervals`` poll intervals; /metrics answers 200 all along."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from batchscope.cli import main
from batchscope.health import check
from pipeline.config import SourceConfig
from pipeline.polling.metrics import MetricsServer, SourceMetrics, render, stale_reason
from pipeline.polling.poller import Poller
from tests.loopback import serving, until
from tests.support.clocks import FakeClock
from tests.support.sinks import CaptureSink

WITHIN = 30.0


def test_a_source_is_stale_after_stale_intervals_without_a_completed_cycle() -> None:
    clock = FakeClock(1000.0)
    never = SourceMetrics("never", "openai", poll_interval=30.0, started=1000.0)
    recent = SourceMetrics("recent", "openai", poll_interval=30.0, started=0.0, last_success=1000.0)
    assert stale_reason([never, recent], 10, clock) is None
    clock.now = 1000.0 + 300.0  # exactly ten intervals: not yet
    assert stale_reason([never, recent], 10, clock) is None
    clock.now = 1000.0 + 301.0
    reason = stale_reason([never, recent], 10, clock)
    assert reason == ("2 source(s) completed no poll cycle for over 10 poll intervals: "
                      "never (301s), recent (301s)")
    recent.last_success = clock.now
    assert stale_reason([never, recent], 10, clock) == (
        "1 source(s) completed no poll cycle for over 10 poll intervals: never (301s)")
    assert stale_reason([never], 11, clock) is None


def test_many_stale_sources_make_one_short_line() -> None:
    many = [SourceMetrics(f"s{i}", "openai", poll_interval=1.0, started=0.0) for i in range(40)]
    reason = stale_reason(many, 1, FakeClock(10.0))
    assert reason is not None
    assert "\n" not in reason
    assert reason.endswith("s4 (10s) and 35 more")


@pytest.fixture
async def provider() -> AsyncIterator[str]:
    """``/good/v1/batches`` answers an empty list; ``/broken/v1/batches`` 503."""
    async def good(request: web.Request) -> web.Response:
        return web.json_response({"data": [], "has_more": False})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "down"}}, status=503)

    async with serving({"/good/v1/batches": good, "/broken/v1/batches": broken}) as url:
        yield url


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test server
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def polling(provider: str, *names_intervals: tuple[str, float]) -> tuple[Poller, MetricsServer]:
    sources = tuple(SourceConfig(name=n, provider="openai", base_url=f"{provider}/{n}/v1", poll_interval=i,
                                 max_rps=100.0) for n, i in names_intervals)
    poller = Poller(sources, CaptureSink())
    server = MetricsServer("127.0.0.1", 0, lambda: render(poller.metrics()),
                           lambda: stale_reason(poller.metrics(), 2))
    await server.start()
    return poller, server


async def test_health_fails_naming_the_stale_source_and_metrics_still_answer(
    provider: str, capsys: pytest.CaptureFixture[str],
) -> None:
    poller, server = await polling(provider, ("good", 30.0), ("broken", 0.05))
    task = asyncio.create_task(poller.run())
    try:
        await until(lambda: poller.pollers[0].cycles >= 1, WITHIN)
        await until(lambda: poller.pollers[1].metrics.stale_for(time.monotonic(), 2) is not None, WITHIN)
        status, text = await asyncio.to_thread(get, server.health_url)
        assert status == 503
        assert text.count("\n") == 1
        assert "1 source(s) completed no poll cycle for over 2 poll intervals: broken (" in text
        assert "good" not in text
        assert (await asyncio.to_thread(get, server.url))[0] == 200
        assert await asyncio.to_thread(main, ["health", "--url", server.health_url]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "answered HTTP 503: 1 source(s) completed no poll cycle" in err
        assert "broken" in err
    finally:
        poller.stop()
        await asyncio.wait_for(task, WITHIN)
        await server.stop()


async def test_health_passes_while_every_source_completes_cycles(provider: str) -> None:
    poller, server = await polling(provider, ("good", 30.0))
    task = asyncio.create_task(poller.run())
    try:
        await until(lambda: poller.pollers[0].cycles >= 1, WITHIN)
        assert await asyncio.to_thread(check, server.health_url) == 200
        assert await asyncio.to_thread(get, server.health_url) == (200, "ok\n")
    finally:
        poller.stop()
        await asyncio.wait_for(task, WITHIN)
        await server.stop()
