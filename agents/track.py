"""The track agent: fold the snapshots of each record into the table (the last state per batch)
and emit their change events.

A record's change events go to ``<prefix>.changes`` one a record (the subscribers' contract),
and again packed for the sink into change-set records (:func:`~pipeline.core.records.pack_changes`),
sent once the broker took the events (a change set names only delivered events) and delivered
before the record is acknowledged. A record's change events reach the broker before the states
that made them are written (:mod:`agents.inflight`): a crash between the two replays the
snapshots from the older states and emits the same events (same ids, same content) again,
instead of losing them. Until written, a state is read from ``pending``. Acknowledged by hand: a
record held behind a dropped one (:meth:`Redelivery.admit`) is not acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from faust.streams import Stream
from faust.types import TP, EventT, StoreT, StreamT, TableT

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.faustcore import handling
from agents.inflight import InFlight
from agents.outputs import Outputs, Send
from agents.outputs import refusal as refused_reason
from agents.parsed import MadeRecords, ParsedRecords
from agents.redelivery import Redelivery, Verdict
from pipeline.core.codec import Codec
from pipeline.core.dlq import reason_of
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot
from pipeline.core.records import (
    Rejected,
    is_vanish,
    pack_changes,
    partition_of,
    read_counted,
    snapshot_key,
)
from pipeline.core.track import fold_bytes, vanish_bytes, vanished_snapshot
from pipeline.core.transitions import Rules

log = logging.getLogger(__name__)

STAGE = "track"
# What a record costs the producer's max_request_size beyond its key and value (aiokafka's
# estimate for one record in its own batch is 61 bytes of batch header plus a few of varints).
RECORD_OVERHEAD = 128
Entries = Sequence[dict[str, Any] | Snapshot | Rejected]  # a snapshot record's entries, read or made
Writes = dict[int, tuple[bytes, bytes]]  # the states to write, by the index of their snapshot
Emitted = dict[int, list[bytes]]  # the change events handed to the producer, by the index of their snapshot
Handed = Callable[[str, int], Awaitable[None]]  # once a partition's records are in the producer's queue


@dataclass(slots=True)
class TrackAgent:
    """What the agent needs, given: the producer's ``send``, the changes and change-set topics,
    the track table, its changelog topic and partition count, the rules and codec, the
    producer's largest request (bytes), what waits for a partition's records to be in the
    producer's queue (:meth:`Batches.handed <agents.batches.Batches.handed>`), the dead letters,
    the in-flight queue, the redelivery guard and the worker's counters."""

    send: Send
    topic: str
    changesets: str
    table: TableT[bytes, bytes]
    changelog: str  # the table's changelog topic
    partitions: int
    rules: Rules
    codec: Codec
    max_request: int
    handed: Handed
    dead: DeadLetters
    in_flight: InFlight[EventT[bytes]]
    redelivery: Redelivery
    counters: Counters
    parsed: ParsedRecords | None = None  # kept for the sink of the same worker, when there is one
    made: MadeRecords | None = None  # the records this worker's normalise agent made (not read again)
    pending: dict[bytes, bytes] = field(default_factory=dict)  # states whose events are on their way
    unhanded: set[int] = field(default_factory=set)  # partitions with states not yet in the producer's queue

    def forget(self) -> None:
        """Partitions were revoked: their records (and so their pending states) go to a new owner."""
        self.pending.clear()

    async def run(self, stream: StreamT[bytes]) -> None:
        """The agent (a coroutine: see :meth:`agents.normalise.NormaliseAgent.run`)."""
        manual = cast(Stream[bytes], stream).noack()
        self.in_flight.bind(manual.ack, self.all_handed)
        async for event in manual.events():
            verdict = await self.redelivery.admit(STAGE, event.message)
            if verdict is Verdict.DONE:
                await manual.ack(event)
            elif verdict is Verdict.PROCESS:
                out, writes, emitted, entries = await self.fold_record(event)
                then = partial(self.settle, event, out, writes, emitted, entries)
                await self.in_flight.add(event, out.futures, then)

    async def fold_record(self, event: EventT[bytes]) -> tuple[Outputs, Writes, Emitted, Entries]:
        """Send the change events and dead letters of one snapshot record; the states to write,
        the change events sent, and the record's entries (read once)."""
        msg = event.message
        entries = self.entries(event)
        out = Outputs(self.send)
        writes: Writes = {}
        emitted: Emitted = {}
        bad: list[Rejected] = []
        for index, entry in enumerate(entries):
            if isinstance(entry, Rejected):
                bad.append(entry)
                continue
            try:
                key, state_value, values = self.fold(entry, msg.partition)
            except Exception as exc:  # noqa: BLE001 - the agent never dies on data
                bad.append(Rejected(reason_of(exc), index, self.codec.dumps(entry), snapshot_key(entry)))
                continue
            refused = await self.send_changes(out, key, values, index, msg.partition)
            if refused is not None:
                bad.append(Rejected(refused, index, self.codec.dumps(entry), key))
                continue
            self.counters.changes += len(values)
            if values:
                emitted[index] = values
            if state_value is not None:
                self.pending[key] = state_value
                writes[index] = (key, state_value)
        await self.dead.hand(msg, STAGE, bad, len(entries), out)
        return out, writes, emitted, entries

    def entries(self, event: EventT[bytes]) -> Entries:
        """The entries of a snapshot record: as this worker's normalise agent made it, when it
        did (the sink takes them there too), else read (and kept for the sink)."""
        msg = event.message
        value = event.value if isinstance(event.value, bytes) else b""
        made = self.made.get(value) if self.made is not None and value else None
        if made is not None:
            return made.objects
        entries, count = read_counted(value, msg.key, self.codec.loads, "snapshot")
        if self.parsed is not None:  # the sink of this worker reads the same record
            self.parsed.keep(msg, (entries, count))
        return entries

    async def send_changes(self, out: Outputs, key: bytes, values: list[bytes], index: int,
                           partition: int) -> str | None:
        """Hand one snapshot's change events to the producer; the reason if it refused one at once."""
        for change in values:  # Kafka unreachable raises: the worker stops, nothing is lost
            # The key's own partition (fold checked it), given: the producer's murmur2 is pure Python.
            refused = await out.send(self.topic, key, change, partition, index)
            if refused is not None:
                return refused_reason(refused, "change event", len(key) + len(change))
        return None

    def fold(self, entry: dict[str, Any] | Snapshot,
             partition: int) -> tuple[bytes, bytes | None, list[bytes]]:
        """(key, new state or None when unchanged, change events) of one snapshot (read, or as
        made), or of a vanish marker (``purged`` or ``vanished``,
        :func:`~pipeline.core.track.vanish_bytes`)."""
        if isinstance(entry, Snapshot):
            vanished, snap = False, entry
        else:
            vanished = is_vanish(entry)
            snap = vanished_snapshot(entry) if vanished else Snapshot.from_dict(entry)
        key = snap.key.encode()
        if (owner := partition_of(key, self.partitions)) != partition:  # its state lives elsewhere
            raise InvalidRecord(f"snapshot of {snap.key!r} in partition {partition}, but its key belongs "
                                f"to partition {owner}")
        # The store, as the writes (settle): Table.get adds a sensor call and a second key encoding.
        previous = self.pending.get(key) or self.table.data.get(key)
        if vanished:
            changed, values = vanish_bytes(previous, snap, self.codec)
        else:
            changed, values = fold_bytes(previous, snap, self.rules, self.codec)
        self.check_sizes(key, values)
        return key, changed, values

    def check_sizes(self, key: bytes, values: Sequence[bytes]) -> None:
        """:class:`InvalidRecord` when the producer would refuse one of ``values`` for its size."""
        limit = self.max_request - RECORD_OVERHEAD - len(key)
        size = next((len(v) for v in values if len(v) > limit), None)
        if size is not None:
            raise InvalidRecord(f"change event of {len(key) + size} bytes is over Kafka's "
                                f"{self.max_request}-byte record limit")

    async def settle(self, event: EventT[bytes], out: Outputs, writes: Writes, emitted: Emitted,
                     entries: Entries, results: list[Any]) -> list[Awaitable[Any]]:
        """Once a snapshot record's outputs are settled: a snapshot whose change event the broker
        refused is a dead letter and its state is not written; then the table writes, the store
        and the changelog (the same partition: the table is co-partitioned with the snapshots);
        then the change sets of the events the broker took, whose deliveries are returned (the
        record waits for them before it is acknowledged)."""
        refused = await out.refused(results, "change event")
        if refused:  # an owner >= 0 is a snapshot that was folded: an object, not a Rejected
            bad = [Rejected(reason, owner, self.codec.dumps(entries[owner]), snapshot_key(entries[owner]))
                   for owner, reason in refused.items() if owner >= 0]
            await self.dead.deliver(event.message, STAGE, bad, len(entries))
        partition = event.message.partition
        noted: Awaitable[Any] | None = None
        with handling(event):  # the store of the record's partition
            for index, (key, value) in writes.items():
                if index in refused:
                    continue
                self.table.data[key] = value  # what ``table[key] = value`` does, less Faust's per-write send
                sent = await self.send(self.changelog, key, value, partition, None, None)
                if sent is not noted:  # records of one batch share its future
                    cast(asyncio.Future[Any], sent).add_done_callback(self.persisted)
                    noted = sent
                if self.pending.get(key) is value:
                    del self.pending[key]
        if noted is not None:  # handed before the acknowledgement (all_handed)
            self.unhanded.add(partition)
        taken = [value for index, values in emitted.items() if index not in refused for value in values]
        # No key: the partition is the snapshot record's, and a key would only take room that a
        # change event as large as the changes topic allows (check_sizes) must have.
        return [await self.send(self.changesets, None, value, partition, None, None)
                for value in pack_changes(taken)]

    async def all_handed(self) -> None:
        """Before the records settled together are acknowledged: until their states are in the
        producer's queue, where Faust's flush before a commit covers them (a commit never passes
        a state that is not on its way to the changelog)."""
        while self.unhanded:
            await self.handed(self.changelog, self.unhanded.pop())

    def persisted(self, fut: asyncio.Future[Any]) -> None:
        """A changelog record delivered: the store notes its offset (RocksDB reads the changelog
        from there at start-up), as Faust's own table write does. Faust flushes the producer
        before every commit, so no offset is committed past a state not yet in the changelog;
        but a delivery that *failed* does not stop the commit, so it is counted and logged, never
        passed over in silence (after a restart the batch's next observation would fold against
        the older state and emit again events with the same ids)."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.counters.changelog_failed += 1
            log.error("a track state was not written to %s: %r (pipeline_changelog_failed counts them)",
                      self.changelog, exc)
            return
        meta = fut.result()
        store = cast(StoreT[bytes, bytes], self.table.data)  # a Faust table's data is its store
        store.set_persisted_offset(TP(meta.topic, meta.partition), meta.offset)
