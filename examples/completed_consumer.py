"""Example downstream consumer: react to batches that reach ``completed``.

Reads ``<prefix>.changes`` with aiokafka, keeps only ``status_changed`` events whose
``to_status`` is ``completed``, skips event ids it has already handled (delivery is at least
once), and prints one line per batch. ``completed`` is not success: the line says how many
requests failed, from the counts in the snapshot.

    python -m examples.completed_consumer --bootstrap 127.0.0.1:9092 --prefix batchscope
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

SEEN_LIMIT = 100_000


class Seen:
    """The most recent event ids handled, for at-least-once de-duplication."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, event_id: str) -> bool:
        """True the first time an id is added."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True


def completed(event: dict[str, Any]) -> str | None:
    """The line to report for a change event, or None when it is not a completion."""
    if event.get("kind") != "status_changed" or event.get("to_status") != "completed":
        return None
    snap = event["snapshot"]
    failed = snap.get("requests_failed") or 0
    total = snap.get("requests_total") or 0
    verdict = "all requests succeeded" if failed == 0 else f"{failed} of {total} requests FAILED"
    output = snap.get("output_file_id") or "no output file"
    return f"{event['source']}/{event['batch_id']} completed: {verdict}; output: {output}"


async def consume(bootstrap: str, prefix: str, group: str, react: Callable[[str], None]) -> None:
    consumer = AIOKafkaConsumer(f"{prefix}.changes", bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=True)
    seen = Seen()
    await consumer.start()
    try:
        async for record in consumer:
            event = json.loads(record.value)
            line = completed(event)
            if line is not None and seen.add(event["event_id"]):
                react(line)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="batchscope", help="kafka.topic_prefix of the pipeline")
    parser.add_argument("--group", default="completed-batches", help="consumer group id")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume(args.bootstrap, args.prefix, args.group, lambda line: print(line, flush=True)))


if __name__ == "__main__":
    main()
