"""The machine's ceiling for the worker: a bare aiokafka consume -> orjson parse -> produce loop.

Reads a topic (``<prefix>.raw`` as the poller filled it) from the beginning to its end offsets
with a plain assigned consumer, parses every record with orjson, and produces it again
(re-serialised, same key) to ``<topic>.bare`` with an idempotent ``acks=all`` producer, one
fetched batch in flight: the work any worker must do per record, with none of Faust's. The rate
is per record and per observation (a version 2 raw record carries ``len(payloads)``), from the
first fetched record to the last delivery. ``bench.worker_bench`` runs it beside the worker on
the same topic, in the same run.

    python -m bench.bareloop TOPIC [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from tests.support.kafka import PARTITIONS

LINGER_MS = 5
MAX_RECORDS = 1000  # records fetched per getmany


@dataclass(frozen=True, slots=True)
class BareResult:
    records: int
    observations: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def observations_per_s(self) -> float:
        return self.observations / self.seconds


def observations_in(obj: Any) -> int:
    """Observations a parsed raw record carries: a version 2 record its payloads, else one."""
    if isinstance(obj, dict) and "v" in obj and isinstance(obj.get("payloads"), list):
        return len(obj["payloads"])
    return 1


async def bare_loop(bootstrap: str, topic: str, out_topic: str | None = None,
                    partitions: int = PARTITIONS) -> BareResult:
    await create_topic(bootstrap, out_topic or f"{topic}.bare", partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=LINGER_MS, max_batch_size=512 * 1024)
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        return await _drain(consumer, producer, parts, ends, out_topic or f"{topic}.bare")
    finally:
        await producer.stop()
        await consumer.stop()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create the output topic (the broker creates none by itself); one that exists is fine."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1)])
        for topic, code, *_ in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise SystemExit(f"cannot create {topic}: error code {code}")
    finally:
        await admin.close()


async def _drain(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, parts: list[TopicPartition],
                 ends: dict[TopicPartition, int], out: str) -> BareResult:
    records = observations = 0
    started: float | None = None
    left = {tp for tp in parts if ends[tp] > 0}
    while left:
        batch = await consumer.getmany(*left, timeout_ms=1000, max_records=MAX_RECORDS)
        if started is None and batch:
            started = time.perf_counter()
        sent = []
        for tp, rows in batch.items():
            for r in rows:
                obj = orjson.loads(r.value)
                observations += observations_in(obj)
                sent.append(await producer.send(out, key=r.key, value=orjson.dumps(obj)))
            records += len(rows)
            if rows and rows[-1].offset + 1 >= ends[tp]:
                left.discard(tp)
        await asyncio.gather(*sent)
    return BareResult(records, observations, time.perf_counter() - (started or time.perf_counter()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("topic")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    r = asyncio.run(bare_loop(args.bootstrap, args.topic))
    print(f"{r.records:,} records ({r.observations:,} observations) in {r.seconds:.2f} s: "
          f"{r.records_per_s:,.0f} records/s, {r.observations_per_s:,.0f} observations/s")


if __name__ == "__main__":
    main()
