"""Replaying the same Kafka records into the sink changes no row count, with FINAL or without.

Real Kafka records (snapshots and change events over 3 partitions) are read back with their
offsets and fed through the sink path (``cut`` + :class:`ClickHouseSink`) into chDB: once, then
again as a restart with the offsets rewound to the start, to the middle, with other batch
boundaries, and with the high-water marks lost so that only the deduplication tokens protect.
Then the same with snapshot records of many snapshots (``docs/records.md``) written a batch at a
time (``write_all``, as the sink agent does), replayed after a partial write: one month's part
of an INSERT stored, the other not, so that some records are stored in part.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.clickhouse.sink import ClickHouseSink, Position, Record, cut, entries, version
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.config import KafkaConfig
from pipeline.core.models import Snapshot
from pipeline.core.records import pack_changes, partition_of
from pipeline.core.transitions import BatchState, apply
from pipeline.kafka import ensure_topics
from tests.support.workload import fleet_snapshots

pytestmark = pytest.mark.integration

ALIGN = 8
COUNTS = {
    "snapshots": "SELECT count() FROM batch_snapshots",
    "latest": "SELECT count() FROM batch_latest",
    "latest_final": "SELECT count() FROM batch_latest FINAL",
    "changes": "SELECT count() FROM batch_changes",
    "changes_final": "SELECT count() FROM batch_changes FINAL",
    "distinct_positions": "SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset, kafka_index) "
                          "FROM batch_snapshots",
    "distinct_change_positions": "SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset, kafka_index) "
                                 "FROM batch_changes",
}


def changes_of(snaps: list[Snapshot]) -> list[bytes]:
    states: dict[str, BatchState] = {}
    out = []
    for snap in snaps:
        states[snap.key], events = apply(states.get(snap.key), snap)
        out += [e.to_json() for e in events]
    return out


async def produce_and_read(config: KafkaConfig, snaps: list[Snapshot], per_record: int = 1) -> list[Record]:
    """The snapshots (in records of ``per_record`` of one partition) and their change events (in
    change sets of ``per_record``, or alone), produced and read back with their Kafka positions."""
    await ensure_topics(config, ("snapshots", "changesets"))
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    values = packed(snaps, config.partitions, per_record)
    try:
        for partition, key, value in values:
            await producer.send(config.topic("snapshots"), value, key=key, partition=partition)
        events = changes_of(snaps)
        sets = [events[i] if per_record == 1 else pack_changes(events[i:i + per_record])[0]
                for i in range(0, len(events), per_record)]
        for change_set in sets:
            await producer.send(config.topic("changesets"), change_set, key=b"k" + change_set[:40])
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(config.topic("snapshots"), config.topic("changesets"),
                                bootstrap_servers=config.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list[Record] = []
    want = len(values) + len(sets)
    try:
        while len(records) < want:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                records += [Record(Position(tp.topic, tp.partition, m.offset), m.value) for m in messages]
    finally:
        await consumer.stop()
    return records


def packed(snaps: list[Snapshot], partitions: int, per_record: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) snapshot records: alone, or version 2 records of up to
    ``per_record`` consecutive snapshots of one partition, in the partition's order."""
    runs: dict[int, list[Snapshot]] = {}
    out = []
    for snap in snaps:
        partition = partition_of(snap.key.encode(), partitions)
        run = runs.setdefault(partition, [])
        run.append(snap)
        if len(run) == per_record or snap is snaps[-1]:
            out.append(pack(partition, run))
            runs[partition] = []
    return out + [pack(partition, run) for partition, run in runs.items() if run]


def pack(partition: int, run: list[Snapshot]) -> tuple[int, bytes, bytes]:
    if len(run) == 1:
        return partition, run[0].key.encode(), run[0].to_json()
    value = b'{"v":2,"snapshots":[' + b",".join(s.to_json() for s in run) + b"]}"
    return partition, run[0].key.encode(), value


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
    changes_topic = config.topic("changesets")
    n_changes = sum(r.pos.topic == changes_topic for r in records)  # one event a record
    assert n_changes == len(changes_of(snaps)) > 0

    before = datetime.now(UTC)
    await feed(store, records, 5, changes_topic)
    first = await counts(store)
    sunk = await store.run(store.store.query, "SELECT min(sunk_at), max(sunk_at) FROM batch_changes")
    earliest, latest = sunk.rows[0]
    # sunk_at is the server's insert time (migration 003), not a value the sink sent.
    assert before - timedelta(seconds=1) <= earliest.replace(tzinfo=UTC) <= latest.replace(tzinfo=UTC)
    assert latest.replace(tzinfo=UTC) <= datetime.now(UTC) + timedelta(seconds=1)
    assert first["snapshots"] == first["distinct_positions"] == len(snaps)  # nothing lost
    assert first["changes"] == first["changes_final"] == first["distinct_change_positions"] == n_changes
    assert first["latest_final"] == 40
    # The materialized view's version is pipeline.clickhouse.sink.version(), and FINAL keeps the newest.
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
    monkeypatch.setattr(store.store, "high_water", lambda table, indexed=False: {})
    await feed(store, records, 5, changes_topic)
    assert await counts(store) == first
    again = await store.run(store.store.query, "SELECT min(sunk_at), max(sunk_at) FROM batch_changes")
    assert again.rows == sunk.rows  # the replayed blocks were dropped: first insert times stay


async def feed_batches(store: AsyncStore, records: list[Record], batch: int, changes_topic: str) -> None:
    """What the sink agent does with each batch: one INSERT per table (``write_all``)."""
    sink = ClickHouseSink(store)
    for start in range(0, len(records), batch):
        blocks, bad = cut(records[start:start + batch], ALIGN, changes_topic)
        assert bad == []
        assert await sink.write_all(blocks) == []


async def test_records_of_many_replayed_after_a_partial_write_are_stored_once(
        store: AsyncStore, kafka_bootstrap: str, topic_prefix: str) -> None:
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3,
                         app_id=topic_prefix)
    snaps = fleet_snapshots(60, source="many")
    records = await produce_and_read(config, snaps, per_record=7)
    changes_topic = config.topic("changesets")
    snapshot_records = [r for r in records if r.pos.topic != changes_topic]
    assert len(snapshot_records) < len(snaps) / 3  # mostly records of many
    # Snapshots first, partitions interleaved, as a consumer may deliver them.
    records.sort(key=lambda r: (r.pos.topic == changes_topic, r.pos.offset, r.pos.partition))

    # The crash: of the first INSERT (the first 40 records), only the part of one month was stored.
    blocks, _ = cut(records[:40], ALIGN, changes_topic)
    october = [b for b in blocks
               if b.snapshots and orjson.loads(b.snapshots[0][2])["observed_at"].startswith("2026-10")]
    later = [b for b in blocks if b not in october]
    split = {p for b in october for p in b.positions} & {p for b in later for p in b.positions}
    assert split, "no record with snapshots of both months in the first batch: the test would prove less"
    partial = ClickHouseSink(store)
    for block in october:
        await partial.write(block)
    stored_before = (await counts(store))["snapshots"]
    assert 0 < stored_before < sum(b.rows for b in blocks if b.snapshots)

    await feed_batches(store, records, 40, changes_topic)  # the restart: from the first offset again
    first = await counts(store)
    assert first["snapshots"] == first["distinct_positions"] == len(snaps)  # each snapshot once
    assert first["latest"] == first["latest_final"] == 60
    newest: dict[str, int] = {}
    for snap in snaps:
        newest[snap.key] = max(newest.get(snap.key, 0), version(snap))
    stored = await store.run(store.store.query, "SELECT source, batch_id, version FROM batch_latest FINAL")
    assert {f"{s}/{b}": v for s, b, v in stored.rows} == newest
    # Each row names its record and its place in it.
    positions = await store.run(store.store.query,
                                "SELECT kafka_partition, kafka_offset, count(), max(kafka_index) "
                                "FROM batch_snapshots GROUP BY kafka_partition, kafka_offset")
    sizes = {(r.pos.partition, r.pos.offset): len(entries(r)[0]) for r in snapshot_records}
    assert {(p, o): (n, i) for p, o, n, i in positions.rows} == {at: (n, n - 1) for at, n in sizes.items()}

    # And each change event, at its change set's position.
    n_changes = len(changes_of(snaps))
    assert first["changes"] == first["changes_final"] == first["distinct_change_positions"] == n_changes
    sets = {(r.pos.partition, r.pos.offset): len(entries(r, changes=True)[0])
            for r in records if r.pos.topic == changes_topic}
    assert len(sets) < n_changes / 3  # mostly change sets of many
    positions = await store.run(store.store.query,
                                "SELECT kafka_partition, kafka_offset, count(), max(kafka_index) "
                                "FROM batch_changes GROUP BY kafka_partition, kafka_offset")
    assert {(p, o): (n, i) for p, o, n, i in positions.rows} == {at: (n, n - 1) for at, n in sets.items()}

    for batch in (7, 40, 1000):  # more restarts, other batch boundaries
        await feed_batches(store, records, batch, changes_topic)
        assert await counts(store) == first
