"""``batchscope run``: poller, agents and sink in one process, for one machine.

Before the Faust worker starts: migrations are applied and the topics created, so the track
table's co-partitioning holds from the first record. With no source configured the simulator
starts in process and its sources are polled, so a newcomer sees the pipeline work without an
API key. Signals are handled once, by the Faust worker, which stops services in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import faust
from mode import Service

from agents.app import Counters, create_app
from pipeline.clickhouse.queryserver import QueryServer
from pipeline.clickhouse.store import AsyncStore, Store, redact
from pipeline.config import Settings, SourceConfig
from pipeline.kafka import Publisher, ensure_topics
from pipeline.polling.buffer import BufferedPublisher
from pipeline.polling.metrics import MetricsServer, render, stale_reason
from pipeline.polling.poller import Poller

if TYPE_CHECKING:
    from simulator.server import Simulator

log = logging.getLogger(__name__)

REPORT_EVERY = 10.0


def demo_simulator(settings: Settings) -> Simulator:
    """The simulator of the demo (no source configured). Imported here, not at the top: a
    configured pipeline never loads the simulator."""
    from simulator.server import Simulator

    return Simulator(settings.simulator)


def simulator_sources(settings: Settings, sim: Simulator) -> tuple[SourceConfig, ...]:
    """The in-process simulator's sources. Its timestamps run ``speed`` times faster than the
    poller's clock, so the refresh schedule could not project expected ends from them: every
    active batch is refreshed every cycle (``active_interval`` = ``poll_interval``)."""
    interval = settings.simulator.poll_interval
    return tuple(
        SourceConfig(name=name, provider=sim.provider(name), base_url=sim.source_url(name),
                     poll_interval=interval, active_interval=interval, tags={"simulated": "true"},
                     max_rps=100.0)
        for name in sim.sources
    )


class PipelineService(Service):
    """Everything around the Faust app: simulator, publisher, poller, query endpoint, reports."""

    def __init__(self, settings: Settings, counters: Counters) -> None:
        super().__init__()
        self.settings = settings
        self.counters = counters
        self.simulator = demo_simulator(settings) if not settings.sources else None
        self.publisher = Publisher(settings.kafka)
        self.buffer = BufferedPublisher(self.publisher)
        p = settings.pipeline
        # Its own ClickHouse sessions and thread, never the sink's. With a ClickHouse server there is
        # nothing to serve: `batchscope query` connects to the server itself.
        self.http = QueryServer(settings) if not settings.clickhouse.dsn else None
        self.metrics = MetricsServer(p.metrics_host, p.metrics_port, self._metrics_text, self._health)
        self.poller: Poller | None = None
        self._poll_task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        sources = self.settings.sources
        if self.simulator is not None:
            await self.simulator.start()
            sources = simulator_sources(self.settings, self.simulator)
        await self.publisher.start()
        await self.buffer.start()
        if self.http is not None:
            await self.http.start()
        await start_metrics(self.metrics)
        self.poller = Poller(sources, self.buffer)
        self.publisher.on_refused = self.poller.refused
        self._poll_task = asyncio.create_task(self.poller.run())
        self.add_future(self._report())

    async def on_stop(self) -> None:
        if self.poller is not None and self._poll_task is not None:
            self.poller.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        await self.buffer.stop()
        await self.publisher.stop()
        await self.metrics.stop()
        if self.http is not None:
            await self.http.stop()
        if self.simulator is not None:
            await self.simulator.stop()

    def _metrics_text(self) -> str:
        extra = {"poller_pending_observations": float(self.buffer.pending), **self.counters.metrics()}
        return render(self.poller.metrics() if self.poller else [], extra)

    def _health(self) -> str | None:
        if self.poller is None:
            return None
        return stale_reason(self.poller.metrics(), self.settings.pipeline.stale_intervals)

    async def _report(self) -> None:
        while not self.should_stop:
            await self.sleep(REPORT_EVERY)
            observed = self.poller.observed if self.poller else 0
            c = self.counters
            log.info("pipeline: observed %d, normalised %d, changes %d, sunk %d, dead letters %d",
                     observed, c.normalised, c.changes, c.sunk, c.dead_letters)


async def report_every(seconds: float, line: Callable[[], str]) -> None:
    """Log ``line()`` at INFO every ``seconds``, until cancelled (``batchscope poll``'s progress)."""
    while True:
        await asyncio.sleep(seconds)
        log.info("%s", line())


async def start_metrics(server: MetricsServer) -> None:
    """Metrics are worth having, not worth failing the pipeline for (e.g. the port is taken)."""
    try:
        await server.start()
    except OSError as exc:
        log.warning("metrics endpoint not started: %s (set pipeline.metrics_port)", exc)
        return
    log.info("metrics on %s", server.url)


async def prepare(settings: Settings, store: AsyncStore) -> None:
    applied = await store.run(store.store.migrate)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    await ensure_topics(settings.kafka)


def run(settings: Settings) -> int:
    """Run until a signal; returns the worker's exit code."""
    store = AsyncStore(Store.from_settings(settings))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    log.info("ClickHouse: %s (database %s); Kafka: %s (prefix %s)", redact(settings.clickhouse_dsn),
             settings.clickhouse.database, settings.kafka.bootstrap, settings.kafka.topic_prefix)
    loop.run_until_complete(prepare(settings, store))
    app, counters = create_app(settings, store)
    return execute(app, loop, settings, store, PipelineService(settings, counters))


def execute(app: faust.App, loop: asyncio.AbstractEventLoop, settings: Settings, store: AsyncStore,
            *services: Service) -> int:
    """Run the Faust worker (and ``services``) until a signal; returns its exit code."""
    worker = faust.Worker(app, *services, loop=loop, loglevel=settings.pipeline.log_level, quiet=True,
                          redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        store.close_now()
