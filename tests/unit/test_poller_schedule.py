"""SourcePoller's refresh schedule against an in-test Simulator on a stepped clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.core.models import TERMINAL
from pipeline.polling.metrics import render
from pipeline.polling.poller import SourcePoller
from simulator.fleet import CREATION_SPAN
from simulator.server import Simulator
from tests.support.clocks import FakeClock
from tests.support.sinks import CaptureSink

SPEED, BATCHES, LIMIT = 60.0, 60, 10
POLL, ACTIVE = 60.0, 1800.0  # simulated seconds (the poller reads the simulator's clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=BATCHES, speed=SPEED, seed=3, sources=1, providers=("openai",))
    async with Simulator(config, clock=clock) as simulator:
        clock.now = (CREATION_SPAN / 2 + 60.0) / SPEED  # every batch exists
        yield simulator


def poller_for(sim: Simulator, sink: CaptureSink, *, sweep: float = 0.0) -> SourcePoller:
    """A poller of the simulator's ``sim-1`` in its time base (no sweep unless ``sweep``)."""
    source = SourceConfig(name="sim-1", provider=sim.provider("sim-1"), base_url=sim.source_url("sim-1"),
                          page_limit=LIMIT, poll_interval=POLL, active_interval=ACTIVE, max_rps=1e6,
                          sweep_interval=sweep)
    return SourcePoller(source, sink, clock=lambda: sim.epoch + sim.now())


async def test_a_quiet_cycle_lists_one_page_and_fetches_nothing(sim: Simulator) -> None:
    sink = CaptureSink()
    poller = poller_for(sim, sink)
    async with aiohttp.ClientSession() as http:
        await poller.poll_once(http)
        assert poller.ordered  # the simulator lists newest first
        assert poller.last_cycle == (math.ceil(BATCHES / LIMIT), 0)  # the first listing goes to the end
        assert any(not k.settled for k in poller.known.values())
        await poller.poll_once(http)  # same instant: nothing is due, nothing is new
    assert poller.last_cycle == (1, 0)


async def test_every_active_batch_is_refreshed_within_the_active_interval(
    sim: Simulator, clock: FakeClock,
) -> None:
    sink = CaptureSink()
    poller = poller_for(sim, sink)
    async with aiohttp.ClientSession() as http:
        await poller.poll_once(http)
        active = {b for b, k in poller.known.items() if not k.settled}
        terminal = {b for b, k in poller.known.items() if k.settled}
        start = len(sink.ids)
        for _ in range(int(ACTIVE / POLL)):
            clock.now += POLL / SPEED
            await poller.poll_once(http)
            assert poller.last_cycle[0] <= math.ceil(BATCHES / LIMIT)
    later = set(sink.ids[start:])
    assert active <= later  # each was observed again
    assert not later & terminal  # terminal history is never fetched again


async def test_due_batches_deep_in_the_list_cost_gets_not_pages(sim: Simulator, clock: FakeClock) -> None:
    sink = CaptureSink()
    poller = poller_for(sim, sink)
    async with aiohttp.ClientSession() as http:
        await poller.poll_once(http)
        newest_first = sorted(poller.known, key=lambda b: poller.known[b].created or 0.0, reverse=True)
        for known in poller.known.values():  # only the oldest active batch is due
            known.due = math.inf
        oldest_active = next(b for b in reversed(newest_first) if not poller.known[b].settled)
        poller.known[oldest_active].due = 0.0
        sink.clear()
        await poller.poll_once(http)
    assert poller.last_cycle == (1, 1)  # the newest page (discovery), then one GET
    assert sink.ids[-1] == oldest_active  # after the newest page's active batches
    assert sink.ids.count(oldest_active) == 1
    assert poller.known[oldest_active].due > 0.0


async def test_many_due_batches_are_refreshed_by_listing(sim: Simulator) -> None:
    poller = poller_for(sim, CaptureSink())
    async with aiohttp.ClientSession() as http:
        await poller.poll_once(http)
        for known in poller.known.values():
            known.due = 0.0
        active = sum(1 for k in poller.known.values() if not k.settled)
        await poller.poll_once(http)
    pages, gets = poller.last_cycle
    assert pages + gets <= min(math.ceil(BATCHES / LIMIT), 1 + active)
    assert all(k.due > 0.0 for k in poller.known.values() if k.status not in TERMINAL)


async def test_an_active_batch_the_listing_passed_without_it_vanishes_without_a_get(
        clock: FakeClock) -> None:
    config = SimulatorConfig(port=0, batches=300, speed=SPEED, seed=3, sources=1, providers=("openai",),
                             vanish_share=1.0, vanish_after=0.0)
    async with Simulator(config, clock=clock) as sim:
        clock.now = (CREATION_SPAN / 2 + 60.0) / SPEED
        sink = CaptureSink()
        poller = poller_for(sim, sink)
        source = sim.sources["sim-1"]
        async with aiohttp.ClientSession() as http:
            await poller.poll_once(http)
            active = {b for b, k in poller.known.items() if not k.settled}
            for known in poller.known.values():
                known.due = math.inf  # nothing is due: only the listing can reveal a vanished batch
            clock.now += 60 * 60 / SPEED
            t = sim.now()
            oldest_listed = int(sim.epoch + source.visible(t)[LIMIT - 1].created)
            gone = {b.id for b in source.fleet if b.id in active and source.vanish[b.index] <= t
                    and int(sim.epoch + b.created) > oldest_listed}
            assert gone  # the case is exercised
            await poller.poll_once(http)
    # a stable (id cursor), newest-first listing that went past them proves them gone: no GET
    assert poller.last_cycle == (1, 0)
    assert poller.metrics.vanished == len(gone)
    assert not gone & set(poller.known)
    assert sorted(sink.vanished) == sorted(gone)


class OldestFirst:
    """An OpenAI-style list served oldest first (not the documented order), two per page."""

    def __init__(self, count: int) -> None:
        self.batches = {f"batch_{i}": {"id": f"batch_{i}", "object": "batch", "status": "in_progress",
                                       "endpoint": "/v1/chat/completions", "completion_window": "24h",
                                       "created_at": 1_700_000_000 + i, "in_progress_at": 1_700_000_100 + i,
                                       "expires_at": 1_800_000_000,
                                       "request_counts": {"total": 10, "completed": 0, "failed": 0}}
                        for i in range(count)}
        self.gets = 0

    async def list(self, request: web.Request) -> web.StreamResponse:
        ids = list(self.batches)
        after = request.query.get("after")
        start = ids.index(after) + 1 if after in ids else 0
        page = [self.batches[i] for i in ids[start:start + 2]]
        return web.json_response({"object": "list", "data": page, "has_more": start + 2 < len(ids),
                                  "last_id": page[-1]["id"] if page else None})

    async def get(self, request: web.Request) -> web.StreamResponse:
        self.gets += 1
        found = self.batches.get(request.match_info["id"])
        if found is None:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        return web.json_response(found)


async def test_a_list_not_newest_first_is_refreshed_by_gets_and_a_gone_batch_vanishes() -> None:
    server = OldestFirst(4)
    app = web.Application()
    app.router.add_get("/v1/batches", server.list)
    app.router.add_get("/v1/batches/{id}", server.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        source = SourceConfig(name="s", provider="openai", base_url=url, page_limit=2, max_rps=1e6)
        poller = SourcePoller(source, CaptureSink(), clock=lambda: 1_700_001_000.0)
        async with aiohttp.ClientSession() as http:
            await poller.poll_once(http)
            assert poller.last_cycle == (2, 0)
            assert len(poller.known) == 4
            assert not poller.ordered
            for known in poller.known.values():
                known.due = 0.0
            del server.batches["batch_3"]  # on the second page
            await poller.poll_once(http)
    finally:
        await runner.cleanup()
    # the first page holds nothing new; the list is not newest first, so no page-count estimate:
    # the due batches beyond it are fetched one by one, and the one gone answers 404
    assert poller.last_cycle == (1, 2)
    assert server.gets == poller.metrics.gets == 2
    assert poller.metrics.list_pages == 2 + 1
    sample = 'batchscope_poller_batch_gets_total{source="s",provider="openai"} 2'
    assert sample in render([poller.metrics])
    assert poller.metrics.vanished == 1
    assert set(poller.known) == {"batch_0", "batch_1", "batch_2"}


async def test_a_page_numbered_list_growing_while_listed_stays_newest_first(clock: FakeClock) -> None:
    config = SimulatorConfig(port=0, batches=BATCHES, speed=SPEED, seed=3, sources=1, providers=("mistral",))
    async with Simulator(config, clock=clock) as sim:  # at start, half the batches exist

        def grow() -> None:  # after each page: about three new batches at the top of the list
            clock.now += 3 * CREATION_SPAN / BATCHES / SPEED

        sink = CaptureSink(then=grow)
        source = SourceConfig(name="sim-1", provider="mistral", base_url=sim.source_url("sim-1"),
                              page_limit=LIMIT, poll_interval=POLL, active_interval=ACTIVE, max_rps=1e6)
        poller = SourcePoller(source, sink, clock=lambda: sim.epoch + sim.now())
        async with aiohttp.ClientSession() as http:
            await poller.poll_once(http)
    # the items pushed from one page onto the next were listed already: the order still holds,
    # so refreshes go on listing pages instead of one GET per active batch
    assert poller.last_cycle[0] >= 3
    assert poller.ordered
    assert len(sink.ids) == len(set(sink.ids))


@pytest.mark.parametrize("provider", ["openai", "mistral", "gemini", "together"])
@pytest.mark.parametrize("active_share", [0.0, 1.0])
async def test_every_batch_that_vanishes_is_published_once_as_gone(provider: str,
                                                                  active_share: float) -> None:
    """Terminal batches that leave the list are found by the sweeps (proven by a stable listing, or
    confirmed by a GET's 404), active ones by their refresh; each is published as gone once. The
    truth says which the poller was served, and in what status it saw them last."""
    clock = FakeClock()
    config = SimulatorConfig(port=0, batches=BATCHES, speed=SPEED, seed=5, sources=1, providers=(provider,),
                             vanish_share=0.5, vanish_after=6 * 3600.0, vanish_active=active_share)
    async with Simulator(config, clock=clock) as sim:
        sink = CaptureSink()
        poller = poller_for(sim, sink, sweep=4 * ACTIVE)
        source = sim.sources["sim-1"]
        async with aiohttp.ClientSession() as http:
            while sim.now() < max(source.vanish.values()) + 4 * ACTIVE:
                clock.now += ACTIVE / SPEED
                await poller.poll_once(http)
        truth = [b for b in sim.truth()["batches"] if b["vanishes_at"] is not None and b["served"]]
    purged = {b["batch_id"] for b in truth if b["served"][-1] in TERMINAL}
    vanished = {b["batch_id"] for b in truth} - purged
    assert purged if active_share == 0 else vanished  # the case is exercised
    assert (purged if active_share else vanished) == set()  # seen terminal 6 h before, or gone midway
    assert sorted(sink.vanished) == sorted(purged | vanished)  # each once
    assert (poller.metrics.purged, poller.metrics.vanished) == (len(purged), len(vanished))
    assert not (purged | vanished) & set(poller.known)
