"""API keys never reach a log line, an error, a metric or a published observation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipeline.config import SimulatorConfig, SourceConfig
from pipeline.core.secret import Secret
from pipeline.polling.metrics import render
from pipeline.polling.poller import Poller
from simulator.server import Simulator, simulator_secret
from tests.support.sinks import CaptureSink

KEY = "sk-proj-FAKE-9d8c7b6a5f4e3d2c1b0a"
WRONG = "sk-proj-WRONG-0a1b2c3d4e5f6a7b8c9d"


PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "vertex", "azure_openai")


def source(sim: Simulator, name: str, key: str, label: str) -> SourceConfig:
    provider = sim.provider(name)
    return SourceConfig(name=f"{label}-{provider}", provider=provider, base_url=sim.source_url(name),
                        api_key=Secret(simulator_secret(provider, key)), poll_interval=0.05,
                        request_timeout=0.1, max_rps=500.0)


def polled_every_way(poller: Poller) -> bool:
    """Every good source observed something and every bad one was refused at least once."""
    metrics = poller.metrics()
    good, bad = metrics[:len(PROVIDERS)], metrics[len(PROVIDERS):]
    return all(m.observations > 0 for m in good) and all(m.errors["http_401"] + m.errors["http_403"] > 0
                                                         for m in bad)


async def test_keys_appear_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    """Bearer, x-api-key, x-goog-api-key, api-key and SigV4 sources, each with the right and a wrong key."""
    caplog.set_level(logging.DEBUG)
    config = SimulatorConfig(port=0, batches=10, sources=len(PROVIDERS), providers=PROVIDERS, speed=2000.0,
                             fault_rate=0.3, retry_after=0.05, hang_seconds=0.2)
    sink = CaptureSink()
    async with Simulator(config, api_key=KEY) as sim:
        sources = tuple(source(sim, n, KEY, "good") for n in sim.sources) + tuple(
            source(sim, n, WRONG, "bad") for n in sim.sources)
        poller = Poller(sources, sink)
        task = asyncio.create_task(poller.run())
        # Until every source was polled both ways: a fixed 2 s was too short on a busy machine.
        for _ in range(300):
            if polled_every_way(poller):
                break
            await asyncio.sleep(0.1)
        poller.stop()
        await asyncio.wait_for(task, timeout=10)
    metrics = poller.metrics()
    good, bad = metrics[:len(PROVIDERS)], metrics[len(PROVIDERS):]
    assert all(m.observations > 0 for m in good), "every good source must have been polled"
    assert all(m.errors["http_401"] + m.errors["http_403"] > 0 for m in bad), "every bad source refused"
    haystacks = [caplog.text, render(metrics), repr(sources), str(sources),
                 *(e.to_json().decode() for e in sink.envelopes)]
    for record in caplog.records:
        haystacks.append(str(record.exc_info))
    for text in haystacks:
        assert KEY not in text
        assert WRONG not in text
        assert "FAKE-9d8c" not in text
