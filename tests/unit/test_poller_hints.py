"""The poller's hints (pipeline/polling/hints.py, SourcePoller.on_hint) against an in-test
Simulator, and the simulator's signed webhooks (simulator/webhooks.py) into a loopback app."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.core import webhooks as wh
from pipeline.core.models import TERMINAL
from pipeline.polling.poller import SourcePoller
from simulator.server import Simulator
from tests.support.clocks import FakeClock
from tests.support.sinks import CaptureSink

SECRET = "whsec_" + base64.b64encode(b"simulator-test-secret").decode()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    clock = FakeClock(50.0)
    config = SimulatorConfig(port=0, batches=20, speed=3600.0, seed=5, sources=1, providers=("gemini",))
    async with Simulator(config, clock=clock) as simulator:
        yield simulator


def hinted_source(sim: Simulator) -> SourceConfig:
    return SourceConfig(name="sim-1", provider="gemini", base_url=sim.source_url("sim-1"),
                        poll_interval=3600.0, max_rps=1000.0, webhook_secret_env="HOOK")


async def test_a_hint_fetches_an_unknown_batch_once_and_a_known_terminal_one_costs_nothing(
        sim: Simulator) -> None:
    sink = CaptureSink()
    poller = SourcePoller(hinted_source(sim), sink)
    source = sim.sources["sim-1"]
    ended = next(b for b in source.visible(sim.now()) if b.status_at(sim.now()) in TERMINAL)
    batch_id = source.snapshot_id(ended)
    assert batch_id.startswith("batches/")
    async with aiohttp.ClientSession() as http:
        await poller.on_hint(http, batch_id)  # unknown: discovered by one GET
        assert [e.batch_id for e in sink.envelopes] == [batch_id]
        assert (poller.metrics.hints, poller.metrics.hint_gets, poller.metrics.hints_known) == (1, 1, 0)
        await poller.on_hint(http, batch_id)  # known terminal now: no call
        assert (poller.metrics.hints, poller.metrics.hint_gets, poller.metrics.hints_known) == (2, 1, 1)
        await poller.on_hint(http, "batches/never-was")  # a 404: counted, logged, nothing published
    assert poller.metrics.errors["hint_not_found"] == 1
    assert len(sink.envelopes) == 1
    assert sum(poller.metrics.requests.values()) == 2


async def test_hints_are_served_between_cycles_and_marked_done(sim: Simulator) -> None:
    sink = CaptureSink()
    poller = SourcePoller(hinted_source(sim), sink)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await asyncio.sleep(0.2)  # the first cycle lists everything
    known = next(bid for bid, k in poller.known.items() if k.status in TERMINAL)
    await asyncio.wait_for(poller.hinted(known), timeout=5)  # answered while the poller waits
    stop.set()
    await task
    assert (poller.metrics.hints, poller.metrics.hints_known, poller.metrics.cycles) == (1, 1, 1)


async def test_the_simulator_signs_its_webhooks_and_forges_some() -> None:
    received: list[tuple[str, bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.path, await request.read(), dict(request.headers)))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hooks/{source}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = SimulatorConfig(port=0, batches=40, speed=50_000.0, seed=3, sources=2,
                             providers=("openai", "anthropic"), webhook_url=f"http://127.0.0.1:{port}/hooks",
                             webhook_duplicate=0.3, webhook_forged=0.3, webhook_lost=0.2, webhook_delayed=0.3,
                             webhook_delay=0.2, creation_span=0.5)
    try:
        async with Simulator(config, webhook_secret=SECRET) as sim:
            last_end = max(b["transitions"][-1]["at"] for b in sim.truth()["batches"]) - sim.epoch
            await asyncio.sleep(last_end / config.speed + 0.8)  # every batch ended, the delayed sent
            report = sim.truth()["webhooks"]
    finally:
        await runner.cleanup()
    key = wh.decode_secret(SECRET)
    events = report["events"]
    assert events
    assert {e["source"] for e in events} == {"sim-1"}
    sent = report["sent"]
    assert sent["duplicate"] > 0
    assert sent["lost"] > 0
    assert sent["bad_signature"] + sent["stale"] > 0
    assert len(received) == sum(n for kind, n in sent.items() if kind != "lost")
    good = bad = 0
    for path, body, headers in received:
        assert path == "/hooks/sim-1"
        try:
            wh.verify((key,), {k.lower(): v for k, v in headers.items()}, body, time.time())
        except wh.Refused:
            bad += 1
            continue
        good += 1
        event = wh.read_event(body, "openai")
        assert event is not None
        assert event.type.startswith("batch.")
    assert bad == sent["bad_signature"] + sent["stale"]
    assert good == sent["genuine"] + sent["duplicate"]
