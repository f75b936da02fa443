"""Snapshot records packed across raw records: the snapshots of consecutive raw records of one
partition travel in one snapshot record.

Faust's cost is per event (its fetch loop, dispatch and stream: several hundred µs of the
worker's CPU per record on this machine), and the track agent and the sink each pay it once per
snapshot record. One snapshot record per raw record carried about 9 observations (a list page of
100 split over the partitions, less the batches known terminal). The normalise agent appends a
raw record's snapshots to its partition's open record instead, and the open records are sent
:data:`LINGER` seconds after the first raw record began to wait in them, or at once when
:data:`MOST` raw records wait, when a record would pass
:data:`~pipeline.core.records.PACK_BYTES`, or before the agent holds a record back. (Faust's
fetch loop hands the stream one record per loop step, so "no record waiting" cannot be seen from
the agent: the stream's queue is empty at every step.) Under load a snapshot record holds the
snapshots of many raw records; idle, a raw record's snapshots wait at most the linger. A raw
record is acknowledged (through the in-flight queue) once every snapshot record holding its
snapshots is delivered. A batch's snapshots keep their order: they are appended in order, and
one flush at a time sends each partition's records in the order they were filled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from faust.exceptions import ProducerSendError

from agents.outputs import Send
from agents.parsed import MadeRecords
from pipeline.core.models import Snapshot
from pipeline.core.records import PACK_BYTES, Made, pack_snapshots

Item = tuple[bytes, bytes, int]  # (key, snapshot JSON, index in its raw record)
Objects = dict[int, Snapshot | dict[str, Any]]  # a raw record's snapshot objects by index (normalise_raw)
MOST = 128  # raw records whose snapshots may wait unsent (well under the in-flight queue's 256)
LINGER = 0.05  # seconds the first of them waits at most (the end-to-end latency budget is seconds)
log = logging.getLogger(__name__)

HEAD = 24  # the bytes of a packed record's JSON around its snapshots


@dataclass(slots=True)
class Record:
    """One snapshot record being filled, and the future its raw records wait on."""

    partition: int
    items: list[tuple[bytes, bytes]]
    size: int
    delivered: asyncio.Future[Any]
    objects: list[Snapshot | dict[str, Any]] | None  # the items' objects, while every item has one


class Packer:
    """The normalise agent's open snapshot records, one per partition."""

    def __init__(self, send: Send, topic: str, budget: int = PACK_BYTES, most: int = MOST,
                 linger: float = LINGER, made: MadeRecords | None = None) -> None:
        self._send, self._topic, self._budget, self._most, self._linger = send, topic, budget, most, linger
        self._made = made  # where the records sent are kept for this worker's readers
        self._open: dict[int, Record] = {}
        self._full: list[Record] = []  # filled, not yet sent, in the order filled
        self._holding = 0  # raw records with snapshots in records not yet sent
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # one flush at a time: a partition's records go in order
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def holding(self) -> int:
        return self._holding

    def held(self) -> None:
        """One more raw record waits in the open records; the first starts the linger."""
        self._holding += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._lingered)

    def _lingered(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:  # the raw records are never acked
            log.error("sending the snapshot records failed: %r", exc)

    def add(self, partition: int, run: list[Item],
            objects: Objects | None = None) -> list[tuple[Record, list[Item]]]:
        """Append one raw record's snapshots of ``partition`` (with their ``objects``, to keep the
        records made); the records they went into, each with its share of them (one record,
        unless one filled up)."""
        shares: list[tuple[Record, list[Item]]] = []
        for item in run:
            record = self._open.get(partition)
            grows = len(item[1]) + 1
            if record is not None and record.size + grows > self._budget:
                self._full.append(record)
                record = None
            if record is None:
                record = Record(partition, [], HEAD, asyncio.get_running_loop().create_future(),
                                [] if self._made is not None else None)
                self._open[partition] = record
            record.items.append((item[0], item[1]))
            if record.objects is not None:
                found = objects.get(item[2]) if objects is not None else None
                if found is None:
                    record.objects = None
                else:
                    record.objects.append(found)
            record.size += grows
            if shares and shares[-1][0] is record:
                shares[-1][1].append(item)
            else:
                shares.append((record, [item]))
        return shares

    def due(self) -> bool:
        """Whether the records should go now: too many raw records wait, or one filled up."""
        return self._holding >= self._most or bool(self._full)

    async def flush(self) -> None:
        """Hand every filled and open record to the producer, each partition's in the order
        filled; each record's future settles with its delivery (or the producer's refusal)."""
        async with self._lock:
            await self._send_all()

    async def _send_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        records = [*self._full, *self._open.values()]
        self._full, self._open, self._holding = [], {}, 0
        for record in records:
            key, value = pack_snapshots(record.items)
            if self._made is not None and record.objects is not None:
                jsons = [json for _, json in record.items]
                self._made.keep(value, Made(jsons, record.objects, len(jsons) if len(jsons) > 1 else None))
            try:
                sent = await self._send(self._topic, key, value, record.partition, None, None)
            except ProducerSendError as exc:  # too large at once: its raw records send theirs alone
                record.delivered.set_exception(exc)
                continue
            asyncio.ensure_future(sent).add_done_callback(partial(_settle, record.delivered))

    def drop(self) -> None:
        """Forget the records not sent (partitions revoked: their raw records are read again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for record in [*self._full, *self._open.values()]:
            record.delivered.cancel()
        self._full, self._open, self._holding = [], {}, 0


def _settle(future: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    if future.done():
        return
    if done.cancelled():
        future.cancel()
    elif (exc := done.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(done.result())
