"""Publish poller pages to ``<prefix>.raw`` with a code tree's own ``pipeline.kafka.Publisher``.

Run as a script, not as ``-m bench.pagepub``, in a process whose ``PYTHONPATH`` is the tree
(:meth:`bench.baseline.Tree.env`): it imports only ``pipeline`` and the libraries, so the
baseline's Publisher publishes for the baseline and today's for today. Input: a file of JSON
lines, one page each, ``{"source", "provider", "observed_at", "payloads": [object, ...]}``; every
page is one ``Publisher.publish`` call, awaited before the next, as the poller does. Prints
``published <pages> pages, <observations> observations`` and where ``pipeline`` came from.

    PYTHONPATH=TREE python bench/pagepub.py --bootstrap HOST:PORT --prefix P --partitions N PAGES
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import orjson

import pipeline
from pipeline.config import KafkaConfig
from pipeline.kafka import Publisher

try:  # a tree that reads the batch id when the envelope is made (the poller does)
    from pipeline.providers import envelope as observed
except ImportError:  # a baseline tree (before the layout by stage): the envelope reads it itself
    from pipeline.models import Envelope as observed  # type: ignore[import-not-found,no-redef]


async def publish(kafka: KafkaConfig, lines: list[bytes]) -> int:
    count = 0
    async with Publisher(kafka) as publisher:
        for line in lines:
            page = orjson.loads(line)
            head = (page["source"], page["provider"], page["observed_at"])
            await publisher.publish([observed(*head, payload) for payload in page["payloads"]])
            count += len(page["payloads"])
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("pages", type=Path)
    args = parser.parse_args()
    lines = args.pages.read_bytes().splitlines()
    kafka = KafkaConfig(bootstrap=args.bootstrap, topic_prefix=args.prefix, app_id=args.prefix,
                        partitions=args.partitions)
    count = asyncio.run(publish(kafka, lines))
    print(f"published {len(lines)} pages, {count} observations with {Path(pipeline.__file__).parent}")


if __name__ == "__main__":
    main()
