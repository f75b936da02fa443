"""The redelivery guards: the hole test and the commit limit (pure), then admit, repair and the
ack and commit guards against a fake of Faust's consumer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP

from agents.faustcore import ConsumerView
from agents.redelivery import (
    PATIENCE,
    STUCK_CHECKS,
    TAIL_PATIENCE,
    PartitionView,
    Redelivery,
    Verdict,
    commit_limit,
    hole,
    tail_hole,
)
from tests.fakeconsumer import FakeApp, FakeConsumer, message
from tests.support.faults import drop_once


def view(committed: int | None, acked: tuple[int, ...] = (),
         in_flight: tuple[int, ...] = ()) -> PartitionView:
    return PartitionView(committed, acked, in_flight)


def test_a_record_dropped_before_later_ones_were_processed_is_a_hole() -> None:
    assert hole(view(196, acked=(200, 201, 202))) == 196


def test_a_record_being_processed_or_done_is_not_a_hole() -> None:
    assert hole(view(196, acked=(197,), in_flight=(196,))) is None
    assert hole(view(196, acked=(196, 197))) is None


def test_records_queued_for_a_blocked_agent_are_not_a_hole() -> None:
    """During a broker outage the agent waits on a send and the fetched records queue up; none
    later than the committed one is processed, so nothing is read again (it would be doubled)."""
    assert hole(view(196)) is None
    assert hole(view(196, acked=(150,))) is None


def test_a_lost_last_record_of_an_idle_topic_is_a_tail_hole() -> None:
    """No later record is processed to prove it (the fleet went quiet): the topic being idle
    while the partition ends past the committed offset does."""
    assert tail_hole(PartitionView(196, (), (), end=197, topic_idle=True)) == 196


def test_records_queued_or_not_written_are_not_a_tail_hole() -> None:
    """An agent blocked on a send holds a record in flight (its topic is not idle) and the
    records behind it are queued; a partition that ends at the committed offset holds nothing."""
    assert tail_hole(PartitionView(196, (), (), end=200, topic_idle=False)) is None
    assert tail_hole(PartitionView(196, (), (), end=196, topic_idle=True)) is None
    assert tail_hole(PartitionView(196, (), (), end=None, topic_idle=True)) is None
    assert tail_hole(PartitionView(196, (196,), (), end=197, topic_idle=True)) is None
    assert tail_hole(PartitionView(None, (), (), end=197, topic_idle=True)) is None


def test_a_partition_never_committed_is_not_a_hole() -> None:
    assert hole(view(None, acked=(5,))) is None


def test_the_commit_stops_at_the_first_record_no_agent_finished() -> None:
    assert commit_limit(10, {10, 11, 12, 14}) == 13
    assert commit_limit(10, set(range(10, 20))) == 20


def test_nothing_commits_while_the_committed_record_is_unfinished() -> None:
    """Faust commits past a one-record hole at the head (it tests ``> 1``) and past any offset
    its read position jumped over; the limit counts only what the agents acknowledged."""
    assert commit_limit(10, {11, 12}) is None
    assert commit_limit(10, set()) is None


def test_nothing_commits_before_the_start_is_known() -> None:
    assert commit_limit(None, {0, 1, 2}) is None


# Redelivery against a fake consumer view (tests/fakeconsumer.py): Faust's books as a rebalance
# or a start-up leaves them, the guards' answers, and the seeks they make.

RAW = TP("p.raw", 0)
OTHER = TP("p.raw", 1)


@dataclass
class Tally:
    stale_acks: int = 0
    rewinds: int = 0


def guarded(committed: int | None = 10, earliest: int = 0,
            assigned: tuple[TP, ...] = (RAW,)) -> tuple[FakeConsumer, FakeApp, Redelivery, Tally]:
    consumer = FakeConsumer(assigned, earliest={tp: earliest for tp in assigned})
    for tp in assigned:
        consumer._committed_offset[tp] = committed
    app = FakeApp(consumer)
    tally = Tally()
    redelivery = Redelivery(ConsumerView(app), {RAW.topic}, tally)
    redelivery.install()
    return consumer, app, redelivery, tally


async def test_a_rewind_pauses_the_partition_while_it_seeks_then_resumes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Records fetched before the seek must not be handed over after it (each would move Faust's
    read offset past the hole, and the hole read again would be dropped): paused, then sought."""
    consumer, _, redelivery, _ = guarded(committed=10)
    paused_at_seek: list[bool] = []
    seek = consumer.seek

    async def seek_noting(tp: TP, offset: int) -> None:
        paused_at_seek.append(tp in consumer._paused_partitions)
        # Faust's fetcher asserts its own TP type in the paused set (it crashed on aiokafka's).
        assert all(type(t) is TP for t in consumer._paused_partitions)
        await seek(tp, offset)

    monkeypatch.setattr(consumer, "seek", seek_noting)
    record = message(RAW, 12)
    record.tp = TopicPartition(RAW.topic, RAW.partition)  # as the aiokafka driver hands them over
    assert await redelivery.admit("normalise", record) is Verdict.HOLD
    assert paused_at_seek == [True]
    assert RAW not in consumer._paused_partitions  # resumed after the seek
    consumer._paused_partitions.add(RAW)  # the sink's backpressure: ClickHouse is down
    await redelivery.repair()  # nothing to do yet; then a stuck hold seeks without resuming
    redelivery._holding[RAW] = (10, 0.0)
    await redelivery.repair()
    assert RAW in consumer._paused_partitions, "the sink's pause was undone"


async def test_records_in_offset_order_are_processed() -> None:
    consumer, _, redelivery, _ = guarded(committed=10)
    assert await redelivery.admit("normalise", message(RAW, 10)) is Verdict.PROCESS
    assert await redelivery.admit("normalise", message(RAW, 11)) is Verdict.PROCESS
    assert consumer.seeks == []


async def test_a_record_after_a_hole_is_held_and_the_partition_read_again_from_the_hole() -> None:
    consumer, _, redelivery, tally = guarded(committed=10)
    assert await redelivery.admit("normalise", message(RAW, 12)) is Verdict.HOLD  # 10 and 11 dropped
    assert consumer.seeks == [(RAW, 10)]
    assert tally.rewinds == 1
    assert await redelivery.admit("normalise", message(RAW, 13)) is Verdict.HOLD  # fetched before the seek
    assert consumer.seeks == [(RAW, 10)]  # one seek per RESEEK_SECONDS, not one per held record
    for offset in (10, 11, 12, 13):  # read again, in order
        assert await redelivery.admit("normalise", message(RAW, offset)) is Verdict.PROCESS


async def test_each_agent_keeps_its_own_order() -> None:
    _, _, redelivery, _ = guarded(committed=10)
    assert await redelivery.admit("normalise", message(RAW, 10)) is Verdict.PROCESS
    assert await redelivery.admit("track", message(RAW, 11)) is Verdict.HOLD  # track has not seen 10


async def test_a_record_every_agent_finished_is_done_when_read_again() -> None:
    consumer, _, redelivery, _ = guarded(committed=10)
    assert await redelivery.admit("normalise", message(RAW, 9)) is Verdict.DONE  # below the commit
    first = message(RAW, 10)
    assert await redelivery.admit("normalise", first) is Verdict.PROCESS
    assert consumer.ack(first)
    assert await redelivery.admit("normalise", message(RAW, 10)) is Verdict.DONE  # acked, not committed


async def test_a_record_delivered_again_while_it_is_processed_is_not_processed_twice() -> None:
    """Scenario 1's clean restart: Faust handed the restarted worker records before its seek to
    the committed offsets (the start still unknown) and again after it; the copies were
    processed too, and a raw record's observations were stored twice, one snapshot record after
    the other. A copy of a record in flight is dropped (its first copy is acknowledged), and not
    counted as a record an agent works on."""
    consumer, _, redelivery, _ = guarded(committed=None, earliest=0)
    first = message(RAW, 5)
    assert await redelivery.admit("normalise", first) is Verdict.PROCESS  # the start unknown
    await redelivery.repair()  # the start looked up: the group committed nothing, earliest 0 ...
    consumer._committed_offset[RAW] = 5  # ... and Faust's seek restores the group's offset 5
    copy = message(RAW, 5)
    consumer._unacked_messages.add(copy)
    assert await redelivery.admit("normalise", copy) is Verdict.AGAIN
    assert 5 not in redelivery.views()[RAW].in_flight
    assert await redelivery.admit("track", message(RAW, 5)) is Verdict.PROCESS  # each agent its own
    assert consumer.ack(first)
    assert await redelivery.admit("normalise", message(RAW, 5)) is Verdict.DONE
    consumer.commit(RAW)
    redelivery.assigned()  # a rebalance drops what was in flight: read again, processed again
    assert await redelivery.admit("normalise", message(RAW, 6)) is Verdict.PROCESS


async def test_a_copy_of_a_stale_or_lost_first_copy_is_processed(caplog: pytest.LogCaptureFixture) -> None:
    """A record of an older generation handed over after the rebalance is processed, but its
    acknowledgement is refused: its copy of the new generation must be processed, not dropped as
    a copy (scenario 1 stalled on that: the repair read the record again for minutes, each copy
    dropped). And a record the repair reads again is processed again whatever came before."""
    consumer, app, redelivery, _ = guarded(committed=10)
    app.consumer_generation_id = 2
    assert await redelivery.admit("track", message(RAW, 10, generation=1)) is Verdict.PROCESS
    assert await redelivery.admit("track", message(RAW, 10, generation=2)) is Verdict.PROCESS
    assert await redelivery.admit("track", message(RAW, 10, generation=2)) is Verdict.AGAIN
    consumer.ends[RAW] = 12
    consumer.ack(message(RAW, 11, generation=2))  # a later record done: 10 is a hole
    for _ in range(PATIENCE):
        await redelivery.repair()
    assert "the record at offset 10 was dropped by the consumer" in caplog.text
    assert await redelivery.admit("track", message(RAW, 10, generation=2)) is Verdict.PROCESS


async def test_a_finished_record_does_not_count_as_a_hole() -> None:
    """Another agent of the topic finished 10: the next agent's expected record moves past it."""
    consumer, _, redelivery, _ = guarded(committed=10)
    consumer.ack(message(RAW, 10))
    assert await redelivery.admit("track", message(RAW, 11)) is Verdict.PROCESS
    assert consumer.seeks == []


async def test_with_the_start_unknown_records_are_processed_as_they_come() -> None:
    _, _, redelivery, _ = guarded(committed=None)
    assert await redelivery.admit("normalise", message(RAW, 7)) is Verdict.PROCESS


async def test_a_partition_never_committed_starts_at_its_earliest_offset() -> None:
    """A restarted worker's Faust knows no committed offset: the group's (from the broker through
    the consumer thread) or, never committed, the earliest offset is the start."""
    consumer, _, redelivery, _ = guarded(committed=None, earliest=3)
    await redelivery.repair()  # looks the starts up
    assert await redelivery.admit("normalise", message(RAW, 4)) is Verdict.HOLD
    assert consumer.seeks == [(RAW, 3)]


async def test_the_groups_committed_offset_is_the_start_of_a_restarted_worker() -> None:
    consumer, _, redelivery, _ = guarded(committed=None, earliest=0)
    consumer._thread.client.group[TopicPartition(RAW.topic, RAW.partition)] = 7
    await redelivery.repair()
    assert await redelivery.admit("normalise", message(RAW, 5)) is Verdict.DONE
    assert await redelivery.admit("normalise", message(RAW, 7)) is Verdict.PROCESS


async def test_a_start_looked_up_before_a_rebalance_is_not_used_after_it() -> None:
    """Scenario 1 (the broker killed, the group rejoined): a partition never committed at start-up
    started at 0; 34 records later Faust revoked it (dropping its committed offset) and assigned it
    again, and record 34 arrived before Faust's seek restored the offset. The start of before the
    rebalance made it look like 0-33 had been dropped: all 34 were read again, every observation
    of them stored twice. After a rebalance the start is looked up again."""
    consumer, _, redelivery, _ = guarded(committed=None, earliest=0)
    await redelivery.repair()  # the start-up's lookup: never committed, starts at 0
    for offset in range(34):
        record = message(RAW, offset)
        assert await redelivery.admit("normalise", record) is Verdict.PROCESS
        consumer.ack(record)
    assert consumer.commit(RAW) == 34
    assert consumer.commit(RAW) is None  # the next commit's round forgets what is committed
    consumer._thread.client.group[TopicPartition(RAW.topic, RAW.partition)] = 34
    consumer._committed_offset.pop(RAW)  # Faust's on_partitions_revoked
    redelivery.assigned()
    assert await redelivery.admit("normalise", message(RAW, 34)) is Verdict.PROCESS
    assert consumer.seeks == []
    await redelivery.repair()  # the lookup again: the group's committed offset is the start
    assert await redelivery.admit("normalise", message(RAW, 33)) is Verdict.DONE


async def test_a_failed_lookup_after_an_assignment_is_logged_and_looked_up_again(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The lookup after an assignment runs in a task nothing awaits: a failure there (the broker
    just back) is logged, not lost, and the next hole check looks again."""
    consumer, _, redelivery, _ = guarded(committed=None, earliest=0)
    consumer._thread.client.group[TopicPartition(RAW.topic, RAW.partition)] = 7
    view = ConsumerView(FakeApp(consumer))
    calls: list[int] = []

    async def unavailable(self: ConsumerView, tps: object) -> dict[TP, int | None]:
        calls.append(1)
        raise ConnectionError("the coordinator is not available")

    real = ConsumerView.group_committed
    monkeypatch.setattr(ConsumerView, "group_committed", unavailable)
    redelivery.assigned()
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [1]
    assert "looking up where the assigned partitions start failed: ConnectionError(" in caplog.text
    assert await redelivery.admit("normalise", message(RAW, 5)) is Verdict.PROCESS  # start unknown
    monkeypatch.setattr(ConsumerView, "group_committed", real)
    await redelivery.repair()
    assert await redelivery.admit("normalise", message(RAW, 5)) is Verdict.DONE
    assert view.committed(RAW) is None  # Faust's own books untouched


async def test_a_commit_that_failed_at_a_rebalance_does_not_count_as_committed() -> None:
    """Scenario 1 again: the broker down, records 34-39 processed and their commit (to 40)
    hanging; the group rejoined meanwhile, and the commit failed after the revocation. Faust
    still wrote 40 as committed: records 34-39, read again from the group's 34, were taken for
    new ones (their processed marks pruned below 40) and processed twice, or the commit stood
    below the partition's end. The failed commit is forgotten and the start looked up again."""
    consumer, _, redelivery, _ = guarded(committed=34)
    for offset in range(34, 40):
        record = message(RAW, offset)
        assert await redelivery.admit("normalise", record) is Verdict.PROCESS
        consumer.ack(record)
    consumer._committed_offset.pop(RAW)  # Faust's on_partitions_revoked, while the commit hangs
    consumer.commits_fail = True
    assert await consumer._commit_offsets({RAW: 40}) is False
    assert consumer._committed_offset.get(RAW) is None  # Faust alone: 40
    consumer.commits_fail = False
    consumer._thread.client.group[TopicPartition(RAW.topic, RAW.partition)] = 34
    redelivery.assigned()
    await redelivery.repair()  # the start: the group's committed offset
    first = message(RAW, 40, generation=1)
    assert await redelivery.admit("normalise", first) is Verdict.PROCESS
    consumer.ack(first)
    assert consumer.commit(RAW) == 41
    for offset in range(34, 40):  # Faust's seek to the committed offset reads them again
        assert await redelivery.admit("normalise", message(RAW, offset)) is Verdict.DONE


async def test_a_commit_that_failed_after_the_new_assignment_keeps_what_the_group_committed() -> None:
    """Scenario 1 with the change sets: the commit hanging through the outage failed only after
    the group's new assignment had written the group's committed offset (34) in Faust's books.
    Forgotten, the partition committed nothing until the next hole check's lookup: the worker was
    stopped before it, committed none of what it processed since, and its successor read 120
    observations again. Put back, the commit goes on at once."""
    consumer, _, redelivery, _ = guarded(committed=34)
    for offset in range(34, 40):
        record = message(RAW, offset)
        assert await redelivery.admit("normalise", record) is Verdict.PROCESS
        consumer.ack(record)

    def rebalanced() -> None:  # while the commit hangs: revoked, assigned again, sought to 34
        consumer._committed_offset[RAW] = 34
        redelivery.assigned()

    consumer.on_commit, consumer.commits_fail = rebalanced, True
    assert await consumer._commit_offsets({RAW: 40}) is False
    assert consumer._committed_offset.get(RAW) == 34  # not Faust's 40, not forgotten
    assert consumer.commit(RAW) == 40  # no lookup needed


async def test_a_rewind_cut_by_a_rebalance_leaves_no_partition_paused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewind that paused its partition while the group rebalanced cannot resume it (not
    assigned at that moment); Faust keeps the pause of a partition assigned again, and nothing
    would ever fetch it. The assignment resumes it."""
    consumer, _, redelivery, _ = guarded(committed=10)
    seek = consumer.seek

    async def seek_while_revoked(tp: TP, offset: int) -> None:
        consumer.assigned = set()  # revoked; the rewind's seek lands in the rebalance
        await seek(tp, offset)

    monkeypatch.setattr(consumer, "seek", seek_while_revoked)
    assert await redelivery.admit("normalise", message(RAW, 12)) is Verdict.HOLD
    assert RAW in consumer._paused_partitions
    consumer.assigned = {RAW}
    redelivery.assigned()
    assert RAW not in consumer._paused_partitions


async def test_a_start_lookup_that_hangs_does_not_hold_the_hole_checks(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _, _, redelivery, _ = guarded(committed=None)

    async def hangs(self: ConsumerView, tps: object) -> dict[TP, int | None]:
        await asyncio.Event().wait()
        return {}

    monkeypatch.setattr(ConsumerView, "group_committed", hangs)
    monkeypatch.setattr("agents.redelivery.LOOKUP_SECONDS", 0.01)
    await asyncio.wait_for(redelivery.repair(), 5)
    assert "looking up where the assigned partitions start failed: TimeoutError(" in caplog.text


async def test_a_partition_whose_start_stays_unknown_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    consumer, _, redelivery, _ = guarded(committed=None)
    consumer.ends[RAW] = 5
    redelivery._find_starts = _never  # type: ignore[method-assign]
    for _ in range(STUCK_CHECKS):
        await redelivery.repair()
    assert "p.raw[0]: the commit has stood at None (end 5) for 6 checks" in caplog.text


async def _never() -> None:
    return None


async def test_a_commit_that_succeeded_stays_committed() -> None:
    consumer, _, _, _ = guarded(committed=34)
    assert await consumer._commit_offsets({RAW: 40}) is True
    assert consumer._committed_offset[RAW] == 40


async def test_an_older_generations_acknowledgement_is_refused() -> None:
    consumer, app, _, tally = guarded(committed=10)
    app.consumer_generation_id = 2
    assert consumer.ack(message(RAW, 10, generation=1)) is False
    assert tally.stale_acks == 1
    assert 10 not in consumer._acked_index[RAW]
    assert consumer.ack(message(RAW, 10, generation=2)) is True


async def test_the_commit_stops_below_a_hole_faust_would_commit_past() -> None:
    consumer, _, _, _ = guarded(committed=10)
    for offset in (11, 12):
        consumer.ack(message(RAW, offset))
    assert consumer.commit(RAW) is None  # Faust alone: 13, and the record at 10 is lost
    assert consumer._committed_offset[RAW] == 10
    consumer.ack(message(RAW, 10))
    assert consumer.commit(RAW) == 13


async def test_topics_not_guarded_commit_as_faust_does() -> None:
    other = TP("p.elsewhere", 0)
    consumer, _, _, _ = guarded(committed=10, assigned=(RAW, other))
    consumer.ack(message(other, 11))
    assert consumer.commit(other) == 12


async def test_repair_reads_a_persistent_hole_again_after_patience_checks() -> None:
    consumer, _, redelivery, tally = guarded(committed=5)
    consumer.ack(message(RAW, 6))  # a later record was processed: 5 is lost to the consumer
    await redelivery.repair()
    assert consumer.seeks == []  # seen once: it may still be on its way
    await redelivery.repair()
    assert consumer.seeks == [(RAW, 5)]
    assert tally.rewinds == 1


async def test_repair_reads_a_lost_last_record_again_once_the_topic_stays_idle() -> None:
    consumer, _, redelivery, tally = guarded(committed=5)
    consumer.ends[RAW] = 6  # record 5 is the partition's last, and no agent has it
    for _ in range(TAIL_PATIENCE - 1):
        await redelivery.repair()
    assert consumer.seeks == []
    await redelivery.repair()
    assert consumer.seeks == [(RAW, 5)]
    assert tally.rewinds == 1


async def test_repair_leaves_a_partition_end_alone_while_its_topic_is_busy() -> None:
    consumer, _, redelivery, _ = guarded(committed=5, assigned=(RAW, OTHER))
    consumer.ends[RAW] = 6
    consumer.hand(message(OTHER, 9))  # a record of the same topic is being processed
    for _ in range(TAIL_PATIENCE + 1):
        await redelivery.repair()
    assert consumer.seeks == []


async def test_a_held_record_left_in_fausts_books_does_not_keep_its_topic_busy() -> None:
    """A held record is never acknowledged, and stays in Faust's records in flight until freed;
    its copy read again is the one processed. Counted as in flight, it kept its topic busy, so a
    partition of that topic whose last records the consumer lost was never read again, and its
    commit stood below its end for good."""
    consumer, _, redelivery, _ = guarded(committed=5, assigned=(RAW, OTHER))
    consumer._committed_offset[OTHER] = 3
    consumer.ends[OTHER] = 4  # OTHER's last record (3) was lost to the consumer
    early = message(RAW, 6)
    consumer.hand(early)  # fetched before 5: held, the partition read again from 5
    assert await redelivery.admit("normalise", early) is Verdict.HOLD
    for offset in (5, 6):  # read again, processed, acknowledged
        again = message(RAW, offset)
        consumer.hand(again)
        assert await redelivery.admit("normalise", again) is Verdict.PROCESS
        consumer.ack(again)
    consumer._committed_offset[RAW] = 7
    assert early in consumer._unacked_messages  # the held copy is still in Faust's books
    for _ in range(TAIL_PATIENCE):
        await redelivery.repair()
    assert consumer.seeks[-1] == (OTHER, 3)


async def test_repair_leaves_records_being_processed_and_paused_partitions_alone() -> None:
    consumer, _, redelivery, _ = guarded(committed=5, assigned=(RAW, OTHER))
    consumer.hand(message(RAW, 5))  # in a stream, not acknowledged yet
    consumer.ack(message(RAW, 6))
    consumer._committed_offset[OTHER] = 5
    consumer.ack(message(OTHER, 6))
    consumer.pause_partitions([OTHER])  # the sink's backpressure
    for _ in range(3):
        await redelivery.repair()
    assert consumer.seeks == []


async def test_repair_waits_while_a_rebalance_holds_the_streams() -> None:
    consumer, app, redelivery, _ = guarded(committed=5)
    consumer.ack(message(RAW, 6))
    app.flow_control.active = False
    for _ in range(3):
        await redelivery.repair()
    assert consumer.seeks == []


async def test_records_retention_deleted_are_passed_over_not_read_again() -> None:
    consumer, _, redelivery, _ = guarded(committed=5, earliest=8)
    consumer.ack(message(RAW, 8))
    for _ in range(2):
        await redelivery.repair()
    assert consumer.seeks == []
    assert consumer.commit(RAW) == 9  # 5-7 are gone; the commit moves on


def test_a_fault_drops_the_first_delivery_and_can_count_the_records_done() -> None:
    consumer = FakeConsumer([RAW])
    drop_once(ConsumerView(FakeApp(consumer)), f"{RAW.topic}:0:3-4:jump")

    async def deliver() -> None:
        for offset in (2, 3, 4, 3):
            await consumer.callback(message(RAW, offset))

    asyncio.run(deliver())
    assert [m.offset for m in consumer.delivered] == [2, 3]  # 3 and 4 dropped once
    assert consumer._gaps == [(RAW, 3, 4)]
