"""Replaying the same Kafka records into the sink changes no row count, with FINAL or without.

Real Kafka records (snapshots and change events over 3 partitions) are read back with their
offsets and fed through the sink path (``cut`` + :class:`ClickHouseSink`) into chDB: once, then
again as a restart with the offsets rewound to the start, to the middle, with other batch
boundaries, and with the high-water marks lost so that only the deduplication tokens protect.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.sink_bench import fleet_snapshots
from pipeline.config import KafkaConfig
from pipeline.kafka import ensure_topics
from pipeline.models import Snapshot
from pipeline.sink import ClickHouseSink, Position, Record, cut, version
from pipeline.store import AsyncStore, Store
from pipeline.transitions import BatchState, apply

pytestmark = pytest.mark.integration

ALIGN = 8
COUNTS = {
    "snapshots": "SELECT count() FROM batch_snapshots",
    "latest": "SELECT count() FROM batch_latest",
    "latest_final": "SELECT count() FROM batch_latest FINAL",
    "changes": "SELECT count() FROM batch_changes",
    "changes_final": "SELECT count() FROM batch_changes FINAL",
    "distinct_positions": "SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM batch_snapshots",
}


def changes_of(snaps: list[Snapshot]) -> list[bytes]:
    states: dict[str, BatchState] = {}
    out = []
    for snap in snaps:
        states[snap.key], events = apply(states.get(snap.key), snap)
        out += [e.to_json() for e in events]
    return out


async def produce_and_read(config: KafkaConfig, snaps: list[Snapshot]) -> list[Record]:
    await ensure_topics(config, ("snapshots", "changes"))
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for snap in snaps:
            await producer.send(config.topic("snapshots"), snap.to_json(), key=snap.key.encode())
        for change in changes_of(snaps):
            await producer.send(config.topic("changes"), change, key=b"k" + change[:40])
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(config.topic("snapshots"), config.topic("changes"),
                                bootstrap_servers=config.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list[Record] = []
    want = len(snaps) + len(changes_of(snaps))
    try:
        while len(records) < want:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                records += [Record(Position(tp.topic, tp.partition, m.offset), m.value) for m in messages]
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    plain = Store(f"chdb://{tmp_path / 'clickhouse'}", "replay_test")
    plain.migrate()
    wrapped = AsyncStore(plain)
    yield wrapped
    wrapped.close_now()


async def feed(store: AsyncStore, records: list[Record], batch: int, changes_topic: str) -> None:
    """What the sink agent does with each batch take_events gives it."""
    sink = ClickHouseSink(store)  # a fresh process: high-water marks are read from ClickHouse
    for start in range(0, len(records), batch):
        blocks, bad = cut(records[start:start + batch], ALIGN, changes_topic)
        assert bad == []
        for block in blocks:
            await sink.write(block)


async def counts(store: AsyncStore) -> dict[str, int]:
    return {name: (await store.run(store.store.query, sql)).rows[0][0] for name, sql in COUNTS.items()}


async def test_replayed_offsets_change_no_row_count(
        store: AsyncStore, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3,
                         app_id=topic_prefix)
    snaps = fleet_snapshots(40, source="replay")
    records = await produce_and_read(config, snaps)
    changes_topic = config.topic("changes")
    n_changes = sum(r.pos.topic == changes_topic for r in records)
    assert n_changes > 0

    before = datetime.now(UTC)
    await feed(store, records, 5, changes_topic)
    first = await counts(store)
    sunk = await store.run(store.store.query, "SELECT min(sunk_at), max(sunk_at) FROM batch_changes")
    earliest, latest = sunk.rows[0]
    # sunk_at is the server's insert time (migration 003), not a value the sink sent.
    assert before - timedelta(seconds=1) <= earliest.replace(tzinfo=UTC) <= latest.replace(tzinfo=UTC)
    assert latest.replace(tzinfo=UTC) <= datetime.now(UTC) + timedelta(seconds=1)
    assert first["snapshots"] == first["distinct_positions"] == len(snaps)  # nothing lost
    assert first["changes"] == first["changes_final"] == n_changes
    assert first["latest_final"] == 40
    # The materialized view's version is pipeline.sink.version(), and FINAL keeps the newest.
    newest: dict[tuple[str, str], int] = {}
    for snap in snaps:
        newest[(snap.source, snap.batch_id)] = max(newest.get((snap.source, snap.batch_id), 0), version(snap))
    stored = await store.run(store.store.query, "SELECT source, batch_id, version FROM batch_latest FINAL")
    assert {(s, b): v for s, b, v in stored.rows} == newest

    await feed(store, records, 11, changes_topic)  # restart, offsets rewound to the start
    assert await counts(store) == first
    await feed(store, records[len(records) // 2:], 3, changes_topic)  # rewound to the middle
    assert await counts(store) == first

    # The high-water marks lost (as if the rows had not been read back): the same blocks come
    # again with the same deduplication tokens, and ClickHouse drops them.
    monkeypatch.setattr(store.store, "high_water", lambda table: {})
    await feed(store, records, 5, changes_topic)
    assert await counts(store) == first
    again = await store.run(store.store.query, "SELECT min(sunk_at), max(sunk_at) FROM batch_changes")
    assert again.rows == sunk.rows  # the replayed blocks were dropped: first insert times stay
