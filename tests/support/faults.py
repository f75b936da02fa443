"""The test suite's fault hooks, a worker plugin (:mod:`agents.plugins`): a worker or ``batchscope
run`` started with ``BATCHSCOPE_PLUGINS=tests.support.faults`` (see :func:`plugin_env`) installs

- ``BATCHSCOPE_FAULT_DROP=TOPIC:PARTITION:FIRST[-LAST][:jump]``: :func:`drop_once`;
- ``BATCHSCOPE_FAULT_CLICKHOUSE_FILE=PATH``: while that file exists, every insert fails as if
  ClickHouse were unreachable (retriable), :func:`fail_inserts_while`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import faust
from faust.types import Message

from agents.faustcore import ConsumerView, Deliver
from agents.plugins import PLUGINS_ENV
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.core.errors import StoreError

log = logging.getLogger(__name__)

FAULT_ENV = "BATCHSCOPE_FAULT_DROP"
CLICKHOUSE_DOWN_ENV = "BATCHSCOPE_FAULT_CLICKHOUSE_FILE"
ROOT = Path(__file__).resolve().parents[2]


def plugin_env(**faults: str) -> dict[str, str]:
    """The environment a subprocess needs to load this plugin with ``faults`` (names above), from
    any working directory."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {PLUGINS_ENV: __name__, "PYTHONPATH": path, **faults}


def install(app: faust.App, store: AsyncStore) -> None:
    if spec := os.environ.get(FAULT_ENV):
        drop_once(ConsumerView(app), spec)
    if down := os.environ.get(CLICKHOUSE_DOWN_ENV):
        fail_inserts_while(store.store, Path(down))


def fail_inserts_while(store: Store, path: Path) -> None:
    """While ``path`` exists, the store's inserts fail as if ClickHouse were unreachable."""
    insert = store.insert_json

    def insert_json(table: str, rows: Sequence[bytes], token: str) -> None:
        if rows and path.exists():
            raise StoreError(f"ClickHouse unavailable (fault injected by {path})", retriable=True)
        insert(table, rows, token)

    store.insert_json = insert_json  # type: ignore[method-assign]


def drop_once(consumer: ConsumerView, spec: str) -> None:
    """Fault injection (``BATCHSCOPE_FAULT_DROP=TOPIC:PARTITION:FIRST[-LAST][:jump]``): the
    consumer loses the first delivery of those records, as Faust does at a rebalance; its read
    offset moves on. With ``:jump`` the records are also counted done, as Faust's fetch loop
    counts every offset its read position jumps over (``Consumer._add_gap``).

    Installed before the worker starts, so the fetch loop picks up the wrapped callback.
    """
    match = re.fullmatch(r"(.+):(\d+):(\d+)(?:-(\d+))?(:jump)?", spec)
    if match is None:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected TOPIC:PARTITION:FIRST[-LAST][:jump]")
    topic, partition, first = match[1], int(match[2]), int(match[3])
    last, jump = int(match[4] or first), bool(match[5])
    pending = set(range(first, last + 1))

    def wrap(deliver: Deliver) -> Deliver:
        async def callback(message: Message) -> None:
            if (message.topic, message.partition) == (topic, partition) and message.offset in pending:
                pending.discard(message.offset)
                log.warning("fault injected: the record at %s[%d]@%d is not handed to the agents",
                            topic, partition, message.offset)
                if jump and message.offset == first:
                    await consumer.add_gap(message.tp, first, last)
                return
            await deliver(message)

        return callback

    consumer.intercept(wrap)
