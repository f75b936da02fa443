"""The poller against a simulator where 30% of requests fail (429 in both Retry-After forms,
500/502/503/529, hangs, truncated and malformed bodies), over 10 sources that speak all ten
providers' APIs: every batch's final (canonical) status is observed and no request is sent before
a Retry-After the simulator gave has passed. Then every pagination style under fast creation."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise
from pipeline.polling.poller import Poller
from pipeline.providers import PROVIDERS
from simulator.faults import FAULTS
from simulator.fleet import CREATION_SPAN
from simulator.server import Simulator

pytestmark = pytest.mark.integration

SOURCES, BATCHES = 10, 100


class LatestStatus:
    """A sink that keeps the last observed canonical status per batch."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str], str] = {}
        self.invalid: list[str] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        for e in envelopes:
            try:
                snap = normalise(e)
            except InvalidRecord:
                self.invalid.append(e.key)
                continue
            self.status[(e.source, snap.batch_id)] = snap.status


async def test_every_final_status_observed_under_a_fault_storm() -> None:
    config = SimulatorConfig(port=0, batches=BATCHES, sources=SOURCES, speed=4000.0, seed=11,
                             fault_rate=0.3, retry_after=0.3, hang_seconds=1.0, providers=PROVIDERS)
    sink = LatestStatus()
    async with Simulator(config) as sim:
        sources = tuple(SourceConfig(name=n, provider=sim.provider(n), base_url=sim.source_url(n),
                                     poll_interval=0.2, request_timeout=0.5, max_rps=200.0,
                                     breaker_threshold=8, breaker_reset=0.5)
                        for n in sim.sources)
        poller = Poller(sources, sink)
        task = asyncio.create_task(poller.run())
        deadline = time.monotonic() + 150
        truth = sim.truth()
        finals = {(b["source"], b["batch_id"]): b["final_status"] for b in truth["batches"]}
        while time.monotonic() < deadline:
            if sim.truth()["all_terminal"] and all(sink.status.get(k) == v for k, v in finals.items()):
                break
            await asyncio.sleep(0.5)
        poller.stop()
        await asyncio.wait_for(task, timeout=30)
        report = sim.faults.report()

    assert len(finals) == SOURCES * BATCHES
    assert {b["provider"] for b in truth["batches"]} == set(PROVIDERS)
    assert sink.invalid == []
    missing = {k: (sink.status.get(k), v) for k, v in finals.items() if sink.status.get(k) != v}
    assert not missing, f"{len(missing)} batches without their final status, e.g. {list(missing.items())[:3]}"
    injected = report["injected"]
    assert isinstance(injected, dict)
    assert set(injected) == set(FAULTS), injected  # every kind of fault was exercised
    assert report["early_requests"] == {}, report
    metrics = poller.metrics()
    assert sum(m.retries for m in metrics) > 0
    assert all(m.cycles > 0 for m in metrics)


STYLES = {"openai": "cursor after", "anthropic": "cursor after_id", "mistral": "page numbers",
          "gemini": "page tokens", "bedrock": "page tokens (SigV4 API)", "together": "one bare array"}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("provider", list(STYLES))
async def test_batches_created_between_page_fetches_are_neither_missed_nor_duplicated(
    provider: str, seed: int,
) -> None:
    """Small pages and fast creation: new batches arrive while the poller pages through the list."""
    config = SimulatorConfig(port=0, batches=60, sources=1, speed=12000.0, seed=seed, providers=(provider,))
    pages: list[list[str | None]] = []

    class Pages:
        async def publish(self, envelopes: list[Envelope]) -> None:
            pages.append([e.batch_id for e in envelopes])

    async with Simulator(config) as sim:
        source = SourceConfig(name="sim-1", provider=provider, base_url=sim.source_url("sim-1"),
                              poll_interval=0.02, page_limit=3, max_rps=1000.0)
        poller = Poller((source,), Pages())
        task = asyncio.create_task(poller.run())
        # Until the last batch has been created (half the creation span after start), then a few
        # more cycles so it is listed.
        await asyncio.sleep(CREATION_SPAN / 2 / config.speed + 0.5)
        poller.stop()
        await asyncio.wait_for(task, timeout=10)
        fleet = {b["batch_id"] for b in sim.truth()["batches"]}
    published = [i for page in pages for i in page]
    assert set(published) == fleet  # none missed
    assert all(len(page) == len(set(page)) for page in pages)  # no duplicate within a page
    assert poller.pollers[0].metrics.cycles > 3
