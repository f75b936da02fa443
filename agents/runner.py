"""``batchscope run``: poller, agents and sink in one process, for one machine (and the alerts
service, when ``[[alerts]]`` rules are configured).

Before the Faust worker starts: migrations are applied and the topics created, so the track
table's co-partitioning holds from the first record. With no source configured the simulator
starts in process and its sources are polled, so a newcomer sees the pipeline work without an
API key. Signals are handled once, by the Faust worker, which stops services in reverse order.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import TYPE_CHECKING

import faust
from mode import Service

from agents.app import create_app
from agents.counters import Counters
from agents.plugins import install_plugins
from pipeline.alerts.service import AlertService, service_of
from pipeline.clickhouse import spend
from pipeline.clickhouse.queryserver import QueryServer
from pipeline.clickhouse.store import AsyncStore, Store, redact
from pipeline.config import Settings, SourceConfig
from pipeline.kafka import ensure_topics
from pipeline.polling.metrics import REPORT_EVERY
from pipeline.polling.service import Polling
from pipeline.webhooks.receiver import Receiver

if TYPE_CHECKING:
    from simulator.server import Simulator

log = logging.getLogger(__name__)



def demo_simulator(settings: Settings) -> Simulator:
    """The simulator of the demo (no source configured). Imported here, not at the top: a
    configured pipeline never loads the simulator."""
    from simulator.server import Simulator

    return Simulator(settings.simulator)


def simulator_sources(settings: Settings, sim: Simulator) -> tuple[SourceConfig, ...]:
    """The in-process simulator's sources. Its timestamps run ``speed`` times faster than the
    poller's clock, so the refresh schedule could not project expected ends from them: every
    active batch is refreshed every cycle (``active_interval`` = ``poll_interval``), and the list is
    swept to its end every ten cycles (``sweep_interval``)."""
    interval = settings.simulator.poll_interval
    return tuple(
        SourceConfig(name=name, provider=sim.provider(name), base_url=sim.source_url(name),
                     poll_interval=interval, active_interval=interval, sweep_interval=10 * interval,
                     tags={"simulated": "true"},
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
        # Its own ClickHouse sessions and thread, never the sink's. With a ClickHouse server there is
        # nothing to serve: `batchscope query` connects to the server itself.
        self.http = QueryServer(settings) if not settings.clickhouse.dsn else None
        self.polling: Polling | None = None  # once the sources are known (the demo's: once it serves)
        self.alerts = _alert_service(settings)
        self._alerts_stop = asyncio.Event()
        # the webhook receiver, when a source takes webhooks (docs/webhooks.md)
        self.receiver = Receiver(settings) if any(s.webhooks for s in settings.sources) else None

    async def on_start(self) -> None:
        sources = self.settings.sources
        if self.simulator is not None:
            await self.simulator.start()
            sources = simulator_sources(self.settings, self.simulator)
        if self.http is not None:
            await self.http.start()
        if self.receiver is not None:
            await self.receiver.start()
        text = self.receiver.metrics_text if self.receiver is not None else None
        self.polling = Polling(self.settings, sources, self.counters.metrics, text)
        await self.polling.start()
        if self.alerts is not None:
            self.add_future(self.alerts.run(self._alerts_stop))
        self.add_future(self._report())

    async def on_stop(self) -> None:
        self._alerts_stop.set()
        if self.polling is not None:
            await self.polling.stop()
        if self.receiver is not None:
            await self.receiver.stop()
        if self.http is not None:
            await self.http.stop()
        if self.simulator is not None:
            await self.simulator.stop()

    async def _report(self) -> None:
        while not self.should_stop:
            await self.sleep(REPORT_EVERY)
            observed = self.polling.poller.observed if self.polling else 0
            c = self.counters
            log.info("pipeline: observed %d, normalised %d, changes %d, sunk %d, dead letters %d",
                     observed, c.normalised, c.changes, c.sunk, c.dead_letters)
            if self.alerts is not None:
                log.info("%s", self.alerts.counts.line())


def _alert_service(settings: Settings) -> AlertService | None:
    """The alerts service of the settings' rules, None without rules."""
    return service_of(settings) if settings.alerts else None


async def prepare(settings: Settings, store: AsyncStore) -> None:
    applied = await store.run(store.store.migrate)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    log.info("spend: %s", (await store.run(spend.load, store.store, settings)).line())
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


# Container allocations between two young-generation passes of CPython's cyclic collector (its
# default is 700). The agents make a dict for every JSON object they read and free it by
# reference count, so those passes found nothing; but every 100 or so of them came a full pass
# over the whole heap (Faust, aiokafka, the app): 0.6 s of the 3.5 s of a worker_bench drain.
GC_YOUNG = 50_000


def tune_gc() -> None:
    """Freeze what start-up built (the collector never scans it again) and run the young pass
    every :data:`GC_YOUNG` allocations: the full passes become rare and short. Cycles are still
    collected, later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


def execute(app: faust.App, loop: asyncio.AbstractEventLoop, settings: Settings, store: AsyncStore,
            *services: Service) -> int:
    """Run the Faust worker (and ``services``) until a signal; returns its exit code. The plugins
    named in ``BATCHSCOPE_PLUGINS`` are installed first (:mod:`agents.plugins`), and the garbage
    collector is tuned for the agents' allocations (:func:`tune_gc`)."""
    install_plugins(app, store)
    tune_gc()
    worker = faust.Worker(app, *services, loop=loop, loglevel=settings.pipeline.log_level, quiet=True,
                          redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        store.close_now()
