"""The poller with what it publishes through (the Kafka producer and the outage buffer) and its
``/metrics`` and ``/health``: the one wiring of ``batchscope poll`` and ``batchscope run``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from pipeline.config import PipelineConfig, Settings, SourceConfig
from pipeline.kafka import Publisher
from pipeline.polling.buffer import BufferedPublisher
from pipeline.polling.hints import HintReader
from pipeline.polling.metrics import MetricsServer, render, stale_reason, start_metrics
from pipeline.polling.poller import Poller


class Polling:
    """Start, run until stopped, stop: the publisher, the buffer and the poller of ``sources``,
    with the metrics endpoint (``extra`` adds the caller's own counters to ``/metrics``, ``text``
    the caller's own families), and, when a source takes webhooks, the reader of their hints."""

    def __init__(self, settings: Settings, sources: tuple[SourceConfig, ...],
                 extra: Callable[[], dict[str, float]] | None = None,
                 text: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self.publisher = Publisher(settings.kafka)
        self.buffer = BufferedPublisher(self.publisher)
        self.poller = Poller(sources, self.buffer)
        self.publisher.on_refused = self.poller.refused
        p: PipelineConfig = settings.pipeline
        self.metrics = MetricsServer(p.metrics_host, p.metrics_port, self.metrics_text, self.health)
        self._extra = extra
        self._text = text
        self._task: asyncio.Task[None] | None = None
        hinted = {p.source.name: p for p in self.poller.pollers if p.source.webhooks}
        self.hints = HintReader(settings.kafka, hinted) if hinted else None
        self._hints_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.publisher.start()
        await self.buffer.start()
        await start_metrics(self.metrics)
        self._task = asyncio.create_task(self.poller.run())
        if self.hints is not None:
            self._hints_task = asyncio.create_task(self.hints.run())

    async def finished(self) -> None:
        """Until the poller stopped (:meth:`Poller.stop`, e.g. on a signal)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        self.poller.stop()
        if self._hints_task is not None:  # what it had not committed is read again by the next poller
            self._hints_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._hints_task
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.buffer.stop()
        await self.publisher.stop()
        await self.metrics.stop()

    def metrics_text(self) -> str:
        extra = {"poller_pending_observations": float(self.buffer.pending),
                 "poller_held_observations_total": float(self.buffer.held),
                 **(self._extra() if self._extra is not None else {})}
        return render(self.poller.metrics(), extra) + (self._text() if self._text is not None else "")

    def health(self) -> str | None:
        return stale_reason(self.poller.metrics(), self.settings.pipeline.stale_intervals)
