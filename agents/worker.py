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

from agents.app import AGENTS, create_app
from pipeline.cli import open_store, setup_logging
from pipeline.codec import CODECS
from pipeline.config import Settings, load_settings
from pipeline.errors import BatchscopeError
from pipeline.kafka import ensure_topics
from pipeline.runner import execute, prepare
from pipeline.store import AsyncStore

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
        settings = load_settings(args.config)
    except BatchscopeError as exc:
        sys.stderr.write(f"worker: {exc}\n")
        return 2
    setup_logging(settings.pipeline.log_level)
    return serve(settings, args.agents.split(","), args.codec)


def serve(settings: Settings, agents: Sequence[str], codec: str = "orjson") -> int:
    """Run the chosen agents until a signal; returns the worker's exit code."""
    settings.pipeline.data_path.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    store = AsyncStore(open_store(settings))  # opened only if the sink agent runs
    if "sink" in agents:
        loop.run_until_complete(prepare(settings, store))  # the sink's tables, then the topics
    else:
        loop.run_until_complete(ensure_topics(settings.kafka))
    app, _ = create_app(settings, store, agents=agents, codec=CODECS[codec])
    log.info("worker: agents %s, codec %s", ",".join(agents), codec)
    return execute(app, loop, settings, store)


if __name__ == "__main__":
    raise SystemExit(main())
