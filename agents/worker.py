"""A worker running a chosen subset of the agents, without poller, simulator or query endpoint.

``batchscope worker [--agents ...]`` runs it (the docker compose ``worker`` service; start several
to share the partitions); ``batchscope run`` is the full pipeline in one process. The module entry
point adds ``--codec`` for the broker benchmark:

    python -m agents.worker --config PATH [--agents normalise,track] [--codec orjson|json]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from mode import Service

from agents.app import AGENTS, create_app
from agents.counters import Counters
from agents.runner import execute
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.config import Secrets, Settings, load_settings
from pipeline.core.codec import CODECS
from pipeline.core.errors import BatchscopeError, StoreError
from pipeline.kafka import ensure_topics
from pipeline.logs import setup_logging
from pipeline.polling.metrics import MetricsServer, render, start_metrics

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agents.worker", description=__doc__)
    parser.add_argument("--config", "-c", metavar="PATH", help="settings file")
    parser.add_argument("--agents", default="normalise,track", help=f"comma-separated subset of {AGENTS}")
    parser.add_argument("--codec", choices=sorted(CODECS), default="orjson")
    args = parser.parse_args(argv)
    unknown = set(args.agents.split(",")) - set(AGENTS)
    if unknown:
        parser.error(f"unknown agent(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config, secrets=Secrets.CLICKHOUSE_PASSWORD)
    except BatchscopeError as exc:
        sys.stderr.write(f"worker: {exc}\n")
        return 2
    setup_logging(settings.pipeline.log_level)
    try:
        return serve(settings, args.agents.split(","), args.codec)
    except BatchscopeError as exc:  # e.g. a Faust without an attribute the guards use: one line
        sys.stderr.write(f"worker: {exc}\n")
        return 1


def serve(settings: Settings, agents: Sequence[str], codec: str = "orjson") -> int:
    """Run the chosen agents until a signal; returns the worker's exit code."""
    settings.pipeline.data_path.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    store = AsyncStore(Store.from_settings(settings))  # opened only if the sink agent runs
    if "sink" in agents:
        loop.run_until_complete(migrate_if_allowed(store))
    loop.run_until_complete(ensure_topics(settings.kafka))
    app, counters = create_app(settings, store, agents=agents, codec=CODECS[codec])
    log.info("worker: agents %s, codec %s", ",".join(agents), codec)
    return execute(app, loop, settings, store, WorkerMetrics(settings, counters))


async def migrate_if_allowed(store: AsyncStore) -> None:
    """Apply the migrations the sink needs, where this worker's ClickHouse user may.

    A least-privilege sink user (docker compose) may not: then the one-shot ``migrate`` service
    applies them, and until it has, the sink waits with its partitions paused (an unknown table
    is a retriable error), so nothing is dead-lettered for it.
    """
    try:
        applied = await store.run(store.store.migrate)
    except StoreError as exc:
        log.warning("worker: migrations not applied (%s); the sink waits for `batchscope migrate`", exc)
        return
    if applied:
        log.info("worker: applied migrations: %s", ", ".join(applied))


class WorkerMetrics(Service):
    """The worker's counters on ``/metrics`` (``pipeline.metrics_port``) for Prometheus, and
    ``/health`` (200 while it serves) for the container healthcheck (``batchscope health``)."""

    def __init__(self, settings: Settings, counters: Counters) -> None:
        super().__init__()
        p = settings.pipeline
        self.counters = counters
        self.server = MetricsServer(p.metrics_host, p.metrics_port, self.text)

    def text(self) -> str:
        return render([], self.counters.metrics())

    async def on_start(self) -> None:
        await start_metrics(self.server)

    async def on_stop(self) -> None:
        await self.server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
