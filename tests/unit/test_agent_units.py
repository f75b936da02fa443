"""The three agents as units, without a Faust app: their dependencies are given (a producer's
``send`` that records, a table, a block sink), so one record's outputs, dead letters and table
writes are checked directly. The same code runs in the worker (tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.events import Event
from faust.types import TP, EventT, Message

from agents.counters import Counters
from agents.deadletters import DeadLetters
from agents.normalise import NormaliseAgent
from agents.sink import AHEAD, SinkAgent
from agents.track import TrackAgent
from pipeline.clickhouse.sink import Block
from pipeline.core.codec import ORJSON
from pipeline.core.errors import StoreError
from pipeline.core.models import Envelope
from pipeline.core.normalise import normalise
from pipeline.core.records import pack_raw, pack_snapshots, partition_of, read_changes, read_snapshots
from pipeline.core.transitions import Rules
from tests.support.workload import envelopes

PARTITIONS = 4
AT = "2026-12-03T10:00:00.000Z"
NONE: Any = None  # the in-flight queue and the redelivery guard: only the agents' loops use them


class Producer:
    """A producer's ``send``: keeps every record, each delivered at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []
        self.handed_at: list[tuple[str, int, int]] = []  # (topic, partition, records sent by then)

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: None, headers: None) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        meta = {"topic": topic, "partition": partition or 0, "offset": len(self.sent)}
        done.set_result(type("Meta", (), meta))
        return done

    async def handed(self, topic: str, partition: int) -> None:
        self.handed_at.append((topic, partition, len(self.sent)))

    def on(self, topic: str) -> list[tuple[str, bytes | None, bytes, int | None]]:
        return [r for r in self.sent if r[0] == topic]


class Store(dict[bytes, bytes]):
    """A table's store: its data and the changelog offsets it noted."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: list[tuple[TP, int]] = []

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted.append((tp, offset))


class Table:
    def __init__(self) -> None:
        self.data = Store()

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


def event(topic: str, partition: int, offset: int, key: bytes | None, value: Any) -> EventT[bytes]:
    msg = Message(topic, partition, offset, 0.0, 0, None, key, value, None, tp=TP(topic, partition))
    return cast(EventT[bytes], Event(app=NONE, key=key, value=value, headers={}, message=msg))


def dead(producer: Producer, counters: Counters) -> DeadLetters:
    return DeadLetters(producer.send, "t.dlq", counters)


async def settled(futures: Sequence[Any]) -> list[Any]:
    return list(await asyncio.gather(*futures, return_exceptions=True))


async def test_normalise_sends_each_good_observation_and_dead_letters_the_bad_one() -> None:
    producer, counters = Producer(), Counters()
    agent = NormaliseAgent(producer.send, "t.snapshots", PARTITIONS, ORJSON, 512 * 1024,
                           dead(producer, counters), NONE, NONE, counters)
    page = [Envelope("s", "openai", AT, e.payload, e.batch_id) for e in envelopes(12)[:12]]  # one list page
    [record, *_] = [p for p in pack_raw(page, PARTITIONS) if p.count > 1]
    body = orjson.loads(record.value)
    body["payloads"].append({"id": "bad", "created_at": "x"})  # not a batch object
    futures, then = await agent.one(event("t.raw", record.partition, 5, record.key, orjson.dumps(body)))
    assert producer.on("t.snapshots") == []  # in the open snapshot record until the stream is idle
    await agent.packer.flush()
    await then(await settled(futures))
    snapshots = [s for *_, value, _ in producer.on("t.snapshots") for s in read_snapshots(value)]
    assert len(snapshots) == record.count == counters.normalised
    assert all(partition_of(key or b"", PARTITIONS) == p for _, key, _, p in producer.on("t.snapshots"))
    [(_, _, letter, _)] = producer.on("t.dlq")
    assert orjson.loads(letter)["index"] == record.count
    assert counters.dead_letters == 1


async def test_track_emits_the_events_and_writes_the_states_only_once_they_are_delivered() -> None:
    producer, counters, table = Producer(), Counters(), Table()
    agent = TrackAgent(producer.send, "t.changes", "t.changesets", cast(Any, table), "t.changelog",
                       PARTITIONS,
                       Rules(), ORJSON, 1_000_000, producer.handed, dead(producer, counters), NONE, NONE,
                       counters)
    snap = NormaliseAgent(producer.send, "t.snapshots", PARTITIONS, ORJSON, 512 * 1024,
                          dead(producer, counters), NONE, NONE, counters)
    [record] = pack_raw(envelopes(1)[:1], PARTITIONS)
    _futures, _then = await snap.one(event("t.raw", record.partition, 0, record.key, record.value))
    await snap.packer.flush()
    [(_, key, value, partition)] = producer.on("t.snapshots")
    assert key is not None
    assert partition is not None
    e = event("t.snapshots", partition, 0, key, value)
    out, writes, emitted, _ = await agent.fold_record(e)
    [(_, _, change, _)] = producer.on("t.changes")
    assert [k for _, k, _, _ in producer.on("t.changes")] == [key]
    assert counters.changes == 1
    assert table.data == {}
    assert agent.pending == {key: writes[0][1]}
    assert producer.on("t.changesets") == []  # only once the broker took the events
    sets = await agent.settle(e, out, writes, emitted, read_snapshots(value), await settled(out.futures))
    assert table.data == {key: writes[0][1]}
    # The sink's change set: the record's event, in the snapshot record's partition; the record
    # waits for its delivery.
    [(_, set_key, set_value, set_partition)] = producer.on("t.changesets")
    assert (set_key, set_partition) == (None, partition)
    assert read_changes(set_value) == [orjson.loads(change)]
    assert len(sets) == 1
    assert agent.pending == {}
    [(_, changelog_key, _, changelog_partition)] = producer.on("t.changelog")
    assert (changelog_key, changelog_partition) == (key, partition)
    # Before the record is acknowledged (the in-flight queue's before_ack, once for the records
    # settled together), the changelog record is in the producer's queue.
    assert producer.handed_at == []
    assert agent.unhanded == {partition}
    await agent.all_handed()
    assert producer.handed_at == [("t.changelog", partition, len(producer.sent))]
    assert agent.unhanded == set()
    await asyncio.sleep(0)  # the delivery callback
    assert [tp.partition for tp, _ in table.data.persisted] == [partition]


class Refusing(Producer):
    """Refuses, as the broker does for their size, the change events whose body holds ``marker``."""

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.marker = marker

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: None, headers: None) -> asyncio.Future[Any]:
        done = await super().send(topic, key, value, partition, timestamp, headers)
        if topic != "t.changes" or self.marker not in value:
            return done
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        refused.set_exception(MessageSizeTooLargeError("too large"))
        return refused


async def test_a_change_set_names_only_the_change_events_the_broker_took() -> None:
    producer, counters, table = Refusing(b'"batch_id":"refused'), Counters(), Table()
    agent = TrackAgent(producer.send, "t.changes", "t.changesets", cast(Any, table), "t.changelog",
                       PARTITIONS, Rules(), ORJSON, 1_000_000, producer.handed, dead(producer, counters),
                       NONE, NONE, counters)
    first = normalise(envelopes(1)[0])
    partition = partition_of(first.key.encode(), PARTITIONS)
    others = (replace(first, batch_id=f"refused{i}") for i in range(1000))
    other = next(o for o in others if partition_of(o.key.encode(), PARTITIONS) == partition)  # same record
    key, value = pack_snapshots([(snap.key.encode(), snap.to_json()) for snap in (first, other)])
    e = event("t.snapshots", partition, 0, key, value)
    out, writes, emitted, entries = await agent.fold_record(e)
    assert len(producer.on("t.changes")) == 2  # both handed to the producer
    sets = await agent.settle(e, out, writes, emitted, entries, await settled(out.futures))
    [(_, _, change_set, _)] = producer.on("t.changesets")
    assert [c["batch_id"] for c in read_changes(change_set) if isinstance(c, dict)] == [first.batch_id]
    assert len(sets) == 1
    assert set(table.data) == {first.key.encode()}  # the refused snapshot's state is not written
    [(_, _, letter, _)] = producer.on("t.dlq")
    assert (orjson.loads(letter)["index"], orjson.loads(letter)["key"]) == (1, other.key)


async def test_track_dead_letters_a_snapshot_in_another_partition_and_writes_nothing() -> None:
    producer, counters, table = Producer(), Counters(), Table()
    agent = TrackAgent(producer.send, "t.changes", "t.changesets", cast(Any, table), "t.changelog",
                       PARTITIONS,
                       Rules(), ORJSON, 1_000_000, producer.handed, dead(producer, counters), NONE, NONE,
                       counters)
    snapshot = {"source": "s", "batch_id": "b1"}
    wrong = (partition_of(b"s/b1", PARTITIONS) + 1) % PARTITIONS
    record = event("t.snapshots", wrong, 3, b"s/b1", orjson.dumps(snapshot))
    _out, writes, _, _ = await agent.fold_record(record)
    assert writes == {}
    assert producer.on("t.changes") == []
    [(_, _, letter, _)] = producer.on("t.dlq")
    assert orjson.loads(letter)["stage"] == "track"
    assert counters.dead_letters == 1


class Blocks:
    """A block sink that refuses the blocks of one table's partition."""

    def __init__(self, refuse: int | None = None) -> None:
        self.written: list[Block] = []
        self.refuse = refuse

    async def write_all(self, blocks: Sequence[Block]) -> list[tuple[Block, StoreError]]:
        self.written += blocks
        return [(b, StoreError("no", retriable=False)) for b in blocks if b.partition[1] == self.refuse]

    def forget(self) -> None:
        return None


async def test_the_sink_writes_through_its_block_sink_and_dead_letters_what_it_refused() -> None:
    producer, counters, blocks = Producer(), Counters(), Blocks(refuse=1)
    failures: list[BaseException] = []
    agent = SinkAgent(blocks, 1000, 1.0, "t.changes", dead(producer, counters), counters, failures.append)
    one, two = (normalise(e) for e in envelopes(2)[:2])
    batch = [event("t.snapshots", 0, 7, one.key.encode(), one.to_json()),
             event("t.snapshots", 1, 9, two.key.encode(), two.to_json()),
             event("t.snapshots", 2, 4, b"s/d", {"not": "bytes"})]
    await agent.finish(agent.prepare(batch))
    assert {b.partition[1] for b in blocks.written} == {0, 1}
    letters = [orjson.loads(v) for _, _, v, _ in producer.on("t.dlq")]
    assert sorted((x["partition"], x["offset"]) for x in letters) == [(1, 9), (2, 4)]
    assert counters.dead_letters == 2
    assert failures == []


def test_a_failed_changelog_write_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Faust's commit does not wait on a failed changelog delivery: it must not pass in silence."""
    counters, table = Counters(), Table()
    agent = TrackAgent(Producer().send, "t.changes", "t.changesets", cast(Any, table), "t.changelog",
                       PARTITIONS,
                       Rules(), ORJSON, 1_000_000, Producer().handed, NONE, NONE, NONE, counters)
    loop = asyncio.new_event_loop()
    try:
        failed: asyncio.Future[Any] = loop.create_future()
        failed.set_exception(KafkaTimeoutError())
        agent.persisted(failed)
    finally:
        loop.close()
    assert counters.changelog_failed == 1
    assert counters.metrics()["pipeline_changelog_failed"] == 1.0
    assert table.data.persisted == []
    assert "a track state was not written to t.changelog: KafkaTimeoutError" in caplog.text


class TakeEvents:
    """A stream's ``take_events``: yields the batches, and acknowledges each (``event.ack()``) when
    the agent asks for the next one, in a ``finally`` as Faust does."""

    def __init__(self, batches: list[list[EventT[bytes]]]) -> None:
        self.batches = batches

    def take_events(self, n: int, within: float) -> Any:
        async def batches() -> Any:
            for batch in self.batches:
                try:
                    yield batch
                finally:
                    for e in batch:
                        e.ack()

        return batches()


class GatedBlocks(Blocks):
    """A block sink whose writes wait for ``gate``; it notes how many run at once."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.running = self.most = 0
        self.fail = fail

    async def write_all(self, blocks: Sequence[Block]) -> list[tuple[Block, StoreError]]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
            if self.fail:
                raise RuntimeError("the store broke")
            return await super().write_all(blocks)
        finally:
            self.running -= 1


APP: Any = type("App", (), {"consumer": None})()


def taken(offset: int) -> EventT[bytes]:
    """A snapshot record as a stream hands it over: one reference, the stream's."""
    snap = normalise(envelopes(1)[0])
    msg = Message("t.snapshots", 0, offset, 0.0, 0, None, snap.key.encode(), snap.to_json(), None,
                  tp=TP("t.snapshots", 0))
    msg.incref()
    return cast(EventT[bytes], Event(app=APP, key=msg.key, value=msg.value, headers={}, message=msg))


async def test_the_sink_asks_for_the_next_batch_while_one_is_written_and_acks_only_written_batches() -> None:
    producer, counters, blocks = Producer(), Counters(), GatedBlocks()
    failures: list[BaseException] = []
    agent = SinkAgent(blocks, 1000, 1.0, "t.changes", dead(producer, counters), counters, failures.append)
    first, second = [taken(0), taken(1)], [taken(2)]
    run = agent.run(cast(Any, TakeEvents([first, second])))
    await run.__anext__()  # the first batch is handed to the writer
    # The agent takes the next batch at once, while the first is written: take_events keeps filling
    # its buffer only while the agent is not holding a batch.
    await asyncio.wait_for(run.__anext__(), 1.0)
    await turns(5)
    assert blocks.running == 1
    assert not any(e.message.acked for e in first)  # take_events acked it, but it is held: not written yet
    blocks.gate.set()
    await turns(10)
    assert all(e.message.acked for e in first)
    assert [b.positions[0].offset for b in blocks.written] == [0, 2]
    assert blocks.most == 1  # one write at a time, in order
    with pytest.raises(StopAsyncIteration):
        await run.__anext__()
    assert all(e.message.acked for e in second)  # written, and acked by take_events at the end
    assert counters.sunk == 3
    assert failures == []


async def test_the_sink_waits_once_its_writer_has_ahead_batches_waiting_and_forget_drops_them() -> None:
    producer, counters, blocks = Producer(), Counters(), GatedBlocks()
    failures: list[BaseException] = []
    agent = SinkAgent(blocks, 1000, 1.0, "t.changes", dead(producer, counters), counters, failures.append)
    batches = [[taken(i)] for i in range(AHEAD + 3)]
    run = agent.run(cast(Any, TakeEvents(batches)))
    for _ in range(AHEAD + 2):  # one being written, one cut and waiting for it, AHEAD in the queue
        await asyncio.wait_for(run.__anext__(), 1.0)
        await turns(5)
    blocked = asyncio.ensure_future(run.__anext__())
    await turns(10)
    assert not blocked.done()  # the backpressure: the agent waits, Faust's queue fills
    assert agent.forget() == AHEAD  # revoked: the waiting batches are left to the new owner
    await asyncio.wait_for(blocked, 1.0)  # room again
    await run.aclose()
    assert blocks.written == []
    assert not any(e.message.acked for batch in batches[2:2 + AHEAD] for e in batch)
    assert failures == []


async def test_a_sink_waiting_for_room_ends_when_the_write_fails() -> None:
    producer, counters, blocks = Producer(), Counters(), GatedBlocks(fail=True)
    failures: list[BaseException] = []
    agent = SinkAgent(blocks, 1000, 1.0, "t.changes", dead(producer, counters), counters, failures.append)
    batches = [[taken(i)] for i in range(AHEAD + 3)]
    run = agent.run(cast(Any, TakeEvents(batches)))
    for _ in range(AHEAD + 2):
        await asyncio.wait_for(run.__anext__(), 1.0)
        await turns(5)
    blocked = asyncio.ensure_future(run.__anext__())
    await turns(5)
    blocks.gate.set()  # the first write fails: the writer stops, the agent stops waiting for room
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(blocked, 1.0)
    assert [str(f) for f in failures] == ["the store broke"]
    assert not any(e.message.acked for batch in batches for e in batch)


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_sink_write_that_fails_stops_the_worker_and_acks_nothing() -> None:
    producer, counters, blocks = Producer(), Counters(), GatedBlocks(fail=True)
    failures: list[BaseException] = []
    agent = SinkAgent(blocks, 1000, 1.0, "t.changes", dead(producer, counters), counters, failures.append)
    batch = [taken(0)]
    run = agent.run(cast(Any, TakeEvents([batch, [taken(1)], [taken(2)]])))
    await run.__anext__()
    blocks.gate.set()
    await turns(10)  # the write fails and the writer stops
    assert [str(f) for f in failures] == ["the store broke"]
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(run.__anext__(), 1.0)  # the next batch finds it stopped: the agent ends
    assert not any(e.message.acked for e in batch)
