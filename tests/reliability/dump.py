"""``python -m tests.reliability.dump CONFIG``: the checker's tables as JSON on stdout.

Opens the embedded database directly, so it runs after the worker holding it has stopped
(chDB allows one engine per process; the test process keeps none).
"""

from __future__ import annotations

import sys

import orjson

from pipeline.clickhouse.store import Store
from pipeline.config import load_settings
from tests.reliability.harness import dump


def main(config: str) -> int:
    store = Store.from_settings(load_settings(config))
    try:
        tables = dump(lambda sql: store.query(sql).rows)
    finally:
        store.close()
    sys.stdout.buffer.write(orjson.dumps(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
