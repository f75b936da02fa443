"""The worker's /metrics and /health endpoints; its container healthcheck (``batchscope health``)
reads /health."""

from __future__ import annotations

import asyncio

import pytest

from agents.counters import Counters
from agents.worker import WorkerMetrics
from batchscope.health import check
from pipeline.config import PipelineConfig, Settings
from pipeline.core.errors import BatchscopeError


async def test_worker_serves_its_counters_for_the_healthcheck() -> None:
    settings = Settings(pipeline=PipelineConfig(metrics_port=0))  # any free port on loopback
    counters = Counters(normalised=7, changes=3, dead_letters=1, sunk=9)
    service = WorkerMetrics(settings, counters)
    await service.on_start()
    try:
        assert service.server.url.startswith("http://127.0.0.1:")
        assert await asyncio.to_thread(check, service.server.url) == 200
        assert service.server.health_url == service.server.url.replace("/metrics", "/health")
        assert await asyncio.to_thread(check, service.server.health_url) == 200
        counters.sunk += 1
        text = service.text()
        assert "batchscope_pipeline_sunk{} 10" in text
        assert "batchscope_pipeline_normalised{} 7" in text
        assert "batchscope_pipeline_dead_letters{} 1" in text
    finally:
        await service.on_stop()
    with pytest.raises(BatchscopeError, match="unreachable"):  # stopped: the healthcheck fails
        await asyncio.to_thread(check, service.server.url, 2.0)
