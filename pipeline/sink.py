"""The ClickHouse sink: canonical records -> insert blocks for the three core tables.

Row building is pure. :class:`ClickHouseSink` writes one block per table per flush, each with an
``insert_deduplication_token`` derived from the Kafka offset ranges it covers, retrying
retriable failures with capped backoff so the caller acknowledges offsets only after ClickHouse
has acknowledged the insert.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import StoreError
from pipeline.models import ChangeEvent, Snapshot
from pipeline.store import AsyncStore
from pipeline.timeutil import iso_to_ms
from pipeline.transitions import RANK

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Block:
    """Rows bound for the tables, with the Kafka positions they came from."""

    snapshots: list[bytes] = field(default_factory=list)
    latest: list[bytes] = field(default_factory=list)
    changes: list[bytes] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)

    def add_snapshot(self, snap: Snapshot, pos: Position) -> None:
        row = snapshot_row(snap)
        latest = orjson.dumps({**row, "version": version(snap)})  # may raise: nothing added yet
        self.snapshots.append(orjson.dumps({**row, "kafka_partition": pos.partition,
                                            "kafka_offset": pos.offset}))
        self.latest.append(latest)
        self.positions.append(pos)

    def add_change(self, event: ChangeEvent, pos: Position) -> None:
        self.changes.append(orjson.dumps(change_row(event)))
        self.positions.append(pos)

    def token(self, table: str) -> str:
        return f"{table}:{offset_ranges(self.positions)}"


def snapshot_row(snap: Snapshot) -> dict[str, Any]:
    row = snap.to_dict()
    row["errors"] = orjson.dumps(snap.errors).decode()
    row["usage"] = orjson.dumps(snap.usage).decode() if snap.usage is not None else None
    return row


def version(snap: Snapshot) -> int:
    """Grows along the lifecycle first, then with observation time (ms fit in 42 bits)."""
    return (RANK.get(snap.status, 0) << 42) | iso_to_ms(snap.observed_at)


def change_row(event: ChangeEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id, "kind": event.kind, "source": event.source,
        "provider": event.provider, "batch_id": event.batch_id, "observed_at": event.observed_at,
        "at": event.at, "from_status": event.from_status, "to_status": event.to_status,
        "seconds_in_previous": event.seconds_in_previous, "status": event.snapshot.status,
        "snapshot": event.snapshot.to_json().decode(), "schema_version": event.schema_version,
    }


def offset_ranges(positions: Sequence[Position]) -> str:
    """``topic/partition:first-last`` per partition, sorted: the identity of a block."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for p in positions:
        lo, hi = spans.get((p.topic, p.partition), (p.offset, p.offset))
        spans[(p.topic, p.partition)] = (min(lo, p.offset), max(hi, p.offset))
    return ",".join(f"{t}/{part}:{lo}-{hi}" for (t, part), (lo, hi) in sorted(spans.items()))


class ClickHouseSink:
    """Writes blocks; returns only once ClickHouse has acknowledged every table's insert."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self.rows_written = 0

    async def write(self, block: Block) -> None:
        for table, rows in (("batch_snapshots", block.snapshots), ("batch_latest", block.latest),
                            ("batch_changes", block.changes)):
            if rows:
                await self._insert(table, rows, block.token(table))
                self.rows_written += len(rows)

    async def _insert(self, table: str, rows: list[bytes], token: str) -> None:
        attempt = 0
        while True:
            try:
                await self._store.run(self._store.store.insert_json, table, rows, token)
                return
            except StoreError as exc:
                if not exc.retriable:
                    raise
                attempt += 1
                delay = random.uniform(0, min(MAX_BACKOFF, 0.5 * 2**attempt))  # full jitter
                log.warning("insert into %s failed (attempt %d), retrying in %.1fs: %s",
                            table, attempt, delay, exc)
                await asyncio.sleep(delay)
