"""agents.faustcore: the start-up check of Faust's private attributes, the sink's partition pause,
the fetch wait, and the table's event context, against a fake consumer and a real app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import aiokafka
import faust
import faust.streams
import faust.transport.consumer
import pytest
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from agents import faustcore
from agents.faustcore import (
    CONSUMER_ATTRS,
    THREAD_ATTRS,
    ConsumerView,
    FaustCompatError,
    PartitionPause,
    check,
    hold_acks,
    release_acks,
)
from batchscope import cli
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.config import KafkaConfig, PipelineConfig, Settings
from pipeline.core.errors import BatchscopeError
from tests.fakeconsumer import FakeApp, FakeConsumer, FakeFetcher, message

SNAPS, CHANGES, RAW = TP("p.snapshots", 0), TP("p.changes", 0), TP("p.raw", 0)


def test_the_fake_has_everything_the_check_asks_for() -> None:
    check(FakeApp(FakeConsumer([])))


def without(attr: str) -> FakeConsumer:
    """A fake consumer of a Faust that renamed ``attr`` (an attribute or a method)."""

    def hide(self: FakeConsumer, name: str) -> object:
        if name == attr:
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    return type("Consumer", (FakeConsumer,), {"__getattribute__": hide})([])  # type: ignore[no-any-return]


@pytest.mark.parametrize("attr", CONSUMER_ATTRS)
def test_a_missing_consumer_attribute_is_one_line_naming_it(attr: str) -> None:
    with pytest.raises(FaustCompatError) as caught:
        check(FakeApp(without(attr)))
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"Faust consumer Consumer has no attribute {attr!r}: ")
    assert "faust-streaming==0.15.3, mode-streaming==0.7.1, aiokafka==0.14.0" in text


def test_every_private_attribute_the_boundary_uses_is_checked() -> None:
    """Read from the module's own code, so a new use cannot skip the start-up check."""
    text = Path(faustcore.__file__).read_text()
    used = {
        "consumer": set(re.findall(r"(?:\bconsumer|self\._consumer)\.(_[a-z]\w*)", text)),
        "thread": set(re.findall(r"\bthread\.(_[a-z]\w*)", text)),
        "client": set(re.findall(r"\bclient\.(_[a-z]\w*)", text)),
        "fetcher": set(re.findall(r"\bfetcher\.(_[a-z]\w*)", text)),
        "producer": set(re.findall(r"\bproducer\.(_[a-z]\w*)", text)),
    }
    assert used["consumer"] == set(CONSUMER_ATTRS) - {"ack", "callback", "wait_first", "on_buffer_drop",
                                                      "resume_partitions", "on_stop"}  # those are public
    assert used["thread"] == set(THREAD_ATTRS) - {"call_thread", "thread_loop"}
    assert used["client"] == set(faustcore.AIOKAFKA_START_READS)
    assert used["fetcher"] == set(faustcore.FETCHER_INIT_SETS)
    assert used["producer"] == set(faustcore.PRODUCER_ATTRS)
    assert set(re.findall(r"faust\.streams\.(_[a-z]\w*)", text)) == set(faustcore.STREAMS_ATTRS)


@pytest.mark.parametrize("attr", THREAD_ATTRS)
def test_a_missing_consumer_thread_attribute_is_named(attr: str) -> None:
    consumer = FakeConsumer([])
    consumer._thread = type("OldThread", (), {a: (lambda self: None) for a in THREAD_ATTRS if a != attr})()
    with pytest.raises(FaustCompatError, match=f"OldThread has no attribute '{attr}'"):
        check(FakeApp(consumer))


def test_aiokafka_no_longer_reading_the_fetch_wait_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    async def start(self: object) -> None:
        return None

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "start", start)
    with pytest.raises(FaustCompatError, match="'_fetch_max_wait_ms'"):
        check(FakeApp(FakeConsumer([])))


def settings_in(tmp_path: Path) -> Settings:
    return Settings(kafka=KafkaConfig(app_id="fc", topic_prefix="fc", fetch_wait_ms=25, linger_ms=5),
                    pipeline=PipelineConfig(data_dir=str(tmp_path)))


async def test_the_real_app_passes_the_check_and_is_tuned(tmp_path: Path) -> None:
    from agents.app import PRODUCER_BUFFER, create_app

    store = AsyncStore(Store("chdb:///unused", "batchscope"))  # never connected
    try:
        app, _ = create_app(settings_in(tmp_path), store)
        assert app.producer.buffer.max_messages == PRODUCER_BUFFER
        assert app.conf.topic_disable_leader is True
        assert app.conf.producer_linger == 0.0  # kafka.linger_ms lingers the dead letters' batches
    finally:
        store.close_now()


@pytest.mark.parametrize(("agents", "group", "has_table"), [
    (("normalise", "track", "sink"), "fc", True),
    (("normalise", "track"), "fc", True),
    (("sink",), "fc-sink", False),  # beside a normalise,track worker: its own group
    (("normalise", "sink"), "fc-sink", False),
    (("track", "sink"), "fc", True),
    (("normalise",), "fc", False),
])
async def test_a_sink_without_the_track_agent_reads_in_its_own_group(
        tmp_path: Path, agents: tuple[str, ...], group: str, has_table: bool) -> None:
    from agents.app import create_app

    store = AsyncStore(Store("chdb:///unused", "batchscope"))
    try:
        app, _ = create_app(settings_in(tmp_path), store, agents=agents)
        assert app.conf.id == group
        assert sorted(app.agents) == sorted(agents)
        assert [t.name for t in app.tables.values()] == (["batch_state"] if has_table else [])
        if has_table:  # the changelog keeps the name the topics are made with (pipeline.kafka)
            (table,) = app.tables.values()
            assert table.changelog_topic.get_topic_name() == "fc-batch_state-changelog"
    finally:
        store.close_now()


async def test_the_worker_producer_is_idempotent(tmp_path: Path) -> None:
    """A produce request retried after a broker kill must not land twice: the aiokafka producer
    Faust builds for the worker has idempotence on (Faust turns it on only for exactly-once)."""
    from agents.app import create_app

    store = AsyncStore(Store("chdb:///unused", "batchscope"))
    try:
        app, _ = create_app(settings_in(tmp_path), store)
        client = cast(Any, app.producer)._new_producer()
        try:
            assert client._txn_manager is not None  # what aiokafka builds for enable_idempotence
            assert client._txn_manager.transactional_id is None  # idempotent, not transactional
        finally:
            await client.stop()
    finally:
        store.close_now()


def test_a_faust_producer_without_its_settings_step_fails_the_check() -> None:
    app = cast(Any, type("App", (), {"producer": type("Producer", (), {"buffer": object()})()})())
    with pytest.raises(FaustCompatError, match="Faust producer Producer has no attribute '_settings_extra'"):
        faustcore.idempotent_producer(app)


async def test_the_worker_consumer_is_built_with_the_configured_fetch_wait(tmp_path: Path) -> None:
    """Faust passes fetch_max_wait_ms=1500; the client the consumer thread builds gets ours (its
    ``start`` hands it to the Fetcher: the check above)."""
    from agents.app import create_app

    store = AsyncStore(Store("chdb:///unused", "batchscope"))
    try:
        app, _ = create_app(settings_in(tmp_path), store)
        client = cast(Any, app.consumer)._thread._create_worker_consumer(app.transport)
        try:
            assert client._fetch_max_wait_ms == 25
        finally:
            await client.stop()
    finally:
        store.close_now()


def test_an_incompatible_faust_stops_the_cli_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = FakeApp(without("_read_offset"))
    monkeypatch.setitem(cli.COMMANDS, "worker", lambda settings, args: check(old))
    assert cli.main(["worker"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("batchscope: error: Faust consumer Consumer has no attribute '_read_offset': ")
    assert issubclass(FaustCompatError, BatchscopeError)


@contextlib.contextmanager
def real_consumer(name: str) -> Iterator[tuple[faust.App, Any]]:
    """A Faust app and its own consumer, never started (Faust's books, mode's ``wait_first``);
    the loop built with the consumer is closed afterwards."""
    app = faust.App(name, broker="kafka://127.0.0.1:9", autodiscover=False, web_enabled=False)
    consumer: Any = app.consumer
    try:
        yield app, consumer
    finally:
        consumer._thread.thread_loop.close()


async def test_a_real_faust_app_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with real_consumer("fc-check") as (app, _):
        check(app)
        monkeypatch.delattr(faust.transport.consumer.Consumer, "_add_gap")
        with pytest.raises(FaustCompatError, match=r"^Faust consumer Consumer has no attribute '_add_gap': "):
            check(app)


async def test_faust_counts_a_failed_commit_as_committed_and_the_boundary_puts_its_books_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On Faust's own consumer: ``_commit_offsets`` writes the offsets of a commit its driver
    refused (the group rebalanced) as committed. If a Faust upgrade stops doing so, the first
    assertion says the boundary's repair is no longer needed."""
    with real_consumer("fc-commit") as (app, consumer):
        accepted: list[bool] = []

        async def commit(offsets: Any) -> bool:
            return accepted.pop()

        async def flush() -> None:
            return None

        monkeypatch.setattr(consumer, "_commit", commit)
        monkeypatch.setattr(consumer, "assignment", lambda: {RAW, SNAPS})
        monkeypatch.setattr(app.producer, "flush", flush)
        accepted.append(False)
        assert await consumer._commit_offsets({RAW: 40}) is False
        assert consumer._committed_offset[RAW] == 40  # Faust's flaw
        consumer._committed_offset.pop(RAW)
        failed: list[TP] = []
        ConsumerView(cast(Any, app)).forget_failed_commits(failed.extend)
        consumer._committed_offset[SNAPS] = 7
        accepted.append(False)
        assert await consumer._commit_offsets({RAW: 40, SNAPS: 9}) is False
        assert consumer._committed_offset.get(RAW) is None  # Faust knew none: looked up again
        assert consumer._committed_offset.get(SNAPS) == 7  # what Faust knew is put back
        assert failed == [RAW]
        accepted.append(True)
        assert await consumer._commit_offsets({RAW: 41}) is True
        assert consumer._committed_offset[RAW] == 41
        assert failed == [RAW]


async def test_the_records_in_flight_settle_before_the_consumers_last_commit() -> None:
    consumer = FakeConsumer([RAW])

    async def settle() -> None:
        consumer.stops.append("settled")

    ConsumerView(FakeApp(consumer)).before_last_commit(settle)
    await consumer.on_stop()
    assert consumer.stops == ["settled", "last commit"]


def test_pause_holds_only_the_sinks_partitions() -> None:
    consumer = FakeConsumer([SNAPS, CHANGES, RAW])
    PartitionPause(ConsumerView(FakeApp(consumer)), {SNAPS.topic, CHANGES.topic}).pause()
    assert consumer._paused_partitions == {SNAPS, CHANGES}


async def test_resume_rewinds_to_the_last_record_delivered_then_resumes() -> None:
    """Faust drops what it fetched for a partition paused meanwhile and later counts the jump as
    done: resuming without the seek would commit those records unread."""
    consumer = FakeConsumer([SNAPS, CHANGES, RAW])
    pause = PartitionPause(ConsumerView(FakeApp(consumer)), {SNAPS.topic, CHANGES.topic})
    consumer.hand(message(SNAPS, 41))  # read offset 41
    consumer._committed_offset[CHANGES] = 7  # nothing read since: the committed offset
    pause.pause()
    await pause.resume()
    assert sorted(consumer.seeks) == sorted([(SNAPS, 41), (CHANGES, 7)])
    assert consumer._paused_partitions == set()


async def test_resume_without_a_known_position_does_not_seek() -> None:
    consumer = FakeConsumer([SNAPS])
    pause = PartitionPause(ConsumerView(FakeApp(consumer)), {SNAPS.topic})
    pause.pause()
    await pause.resume()
    assert consumer.seeks == []
    assert consumer._paused_partitions == set()


def test_set_fetch_wait_reaches_the_client_the_thread_builds() -> None:
    consumer = FakeConsumer([])
    ConsumerView(FakeApp(consumer)).set_fetch_wait(10)
    assert consumer._thread._create_worker_consumer(None)._fetch_max_wait_ms == 10


class Counting:
    """Counts the tasks the loop creates meanwhile."""

    def __init__(self) -> None:
        self.tasks = 0
        loop = asyncio.get_running_loop()
        self._loop, self._before = loop, loop.get_task_factory()
        loop.set_task_factory(self._factory)

    def _factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        self.tasks += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    def __enter__(self) -> Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.set_task_factory(self._before)


async def test_a_delivery_that_need_not_wait_takes_no_task(recwarn: pytest.WarningsRecorder) -> None:
    with real_consumer("fc-eager") as (app, consumer):
        delivered: list[int] = []

        async def deliver(n: int) -> int:
            delivered.append(n)
            return n * 2

        with Counting() as before:
            await consumer.wait_first(deliver(1), consumer.suspend_flow.wait())
        assert before.tasks == 4  # mode's: the delivery, the flow, stopped and crashed
        ConsumerView(cast(Any, app)).deliver_eagerly()
        with Counting() as after:
            result = await consumer.wait_first(deliver(2), consumer.suspend_flow.wait())
        assert after.tasks == 0
        assert delivered == [1, 2]
        assert result.results == [4]
        assert not result.stopped
        gc.collect()
        assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_a_delivery_that_waits_is_raced_against_the_flow_from_where_it_stopped() -> None:
    with real_consumer("fc-eager-wait") as (app, consumer):
        ConsumerView(cast(Any, app)).deliver_eagerly()
        room = asyncio.Event()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("tried")
            await room.wait()  # a full queue
            steps.append("delivered")
            return "done"

        waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert steps == ["tried"]
        assert not waiting.done()
        room.set()
        result = await asyncio.wait_for(waiting, 1.0)
        assert steps == ["tried", "delivered"]  # run once, continued, not started again
        assert result.results == ["done"]

        cancelled: list[bool] = []
        room.clear()

        async def stuck() -> None:
            try:
                await room.wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        waiting = asyncio.ensure_future(consumer.wait_first(stuck(), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # a rebalance: the fetch loop stops waiting on the delivery
        await asyncio.wait_for(waiting, 1.0)
        assert cancelled == [True]


async def test_an_eager_delivery_that_fails_raises_and_other_calls_are_modes() -> None:
    with real_consumer("fc-eager-fail") as (app, consumer):
        ConsumerView(cast(Any, app)).deliver_eagerly()

        async def broken() -> None:
            raise ValueError("bad record")

        with pytest.raises(ValueError, match="bad record"):
            await consumer.wait_first(broken(), consumer.suspend_flow.wait())
        with Counting() as timed:  # with a timeout: mode's own, tasks and all
            await consumer.wait_first(asyncio.sleep(0), timeout=1.0)
        assert timed.tasks == 3
        consumer._crashed.set()
        with Counting() as crashed:
            result = await consumer.wait_first(asyncio.sleep(0))
        assert crashed.tasks == 3
        assert result.stopped


def test_the_lean_monitor_keeps_the_statistics_faust_keeps() -> None:
    from faust.sensors import Monitor

    class Stream:
        def __init__(self, name: str, owner: object) -> None:
            self.name, self.task_owner = name, owner

        def __str__(self) -> str:
            return f"stream {self.name}"

    class Owner:
        def __init__(self, name: str) -> None:
            self.name = name

        def __str__(self) -> str:
            return f"task {self.name}"

    one, two = Owner("one"), Owner("two")
    a, b = Stream("a", one), Stream("b", two)
    seen = [(SNAPS, a), (SNAPS, a), (CHANGES, b), (SNAPS, a), (CHANGES, b), (CHANGES, b)]
    monitors = Monitor(), faustcore.LeanMonitor()
    for mon in monitors:
        for offset, (tp, stream) in enumerate(seen):
            state = mon.on_stream_event_in(tp, offset, cast(Any, stream), cast(Any, None))
            assert state is not None
            assert set(state) == {"time_in", "time_out", "time_total"}
        b.task_owner = one  # an agent restarted: its stream has a new task
        mon.on_stream_event_in(CHANGES, 9, cast(Any, b), cast(Any, None))
        b.task_owner = two
    faust_own, lean = monitors
    assert lean.events_total == faust_own.events_total == 7
    assert lean.events_active == faust_own.events_active == 7
    assert dict(lean.events_by_stream) == dict(faust_own.events_by_stream) == {"stream a": 3, "stream b": 4}
    assert dict(lean.events_by_task) == dict(faust_own.events_by_task) == {"task one": 4, "task two": 3}
    assert set(lean.stream_inbound_time) == {SNAPS, CHANGES}


def test_the_app_uses_the_lean_monitor(tmp_path: Path) -> None:
    from agents.app import new_app

    app = new_app(settings_in(tmp_path))
    assert type(app.monitor) is faustcore.LeanMonitor


def event_on(tp: TP, offset: int) -> Event:
    return Event(app=None, key=b"k", value=b"v", headers={}, message=message(tp, offset))  # type: ignore[arg-type]


def test_held_events_are_acknowledged_only_once_released() -> None:
    """take_events' own ack (``event.ack()``) of a held batch leaves it unacknowledged; the
    release acknowledges it to the consumer, whichever of the two comes first."""
    consumer = FakeConsumer([SNAPS])
    app = cast(Any, type("App", (), {"consumer": consumer})())
    events = [Event(app=app, key=b"k", value=b"v", headers={},
                    message=ConsumerMessage(SNAPS.topic, SNAPS.partition, offset, 0.0, 0, None, b"k", b"v",
                                            None, tp=SNAPS))
              for offset in (1, 2)]
    for e in events:
        e.message.incref()  # the stream that took it (Faust's conductor)
        consumer.hand(e.message)
    hold_acks(events)
    events[0].ack()  # take_events, asking for the next batch
    assert consumer._acked_index[SNAPS] == set()
    release_acks(events)  # the batch is written
    assert consumer._acked_index[SNAPS] == {1}  # the other still has its stream's reference
    events[1].ack()
    assert consumer._acked_index[SNAPS] == {1, 2}


def test_versions_names_every_pinned_package() -> None:
    assert [part.split()[0] for part in faustcore.versions().split(", ")] == list(faustcore.VALIDATED)


def test_a_table_write_after_the_stream_moved_on_sees_its_event() -> None:
    """RocksDB's store reads a write's partition from Faust's current event."""
    event = event_on(SNAPS, 7)
    assert faust.streams.current_event() is None
    with faustcore.handling(event):
        assert faust.streams.current_event() is event
    assert faust.streams.current_event() is None


def test_faust_without_its_current_event_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(faust.streams, "_current_event")
    with pytest.raises(FaustCompatError, match=r"faust\.streams has no attribute '_current_event'"):
        check(FakeApp(FakeConsumer([])))


async def test_a_partition_put_back_wakes_the_fetch_loops_wait() -> None:
    """Faust puts a partition back (its stream's queue drained, or resumed) while the consumer
    thread's getmany waits for new records: the wait ends, so records already fetched for that
    partition are handed over now, not when the getmany's second is up."""
    consumer = FakeConsumer([TP("t", 0)])
    view = ConsumerView(FakeApp(consumer))
    view.wake_fetch_on_resume()
    consumer.on_buffer_drop(TP("t", 0))  # before the consumer thread started: nothing to wake
    assert consumer.put_back == [TP("t", 0)]
    loop = asyncio.get_running_loop()
    consumer._thread.thread_loop = loop  # the consumer thread's loop (here the test's own)
    fetcher = consumer._thread.client._fetcher = FakeFetcher()
    def drained() -> None:
        consumer.on_buffer_drop(TP("t", 0))

    def resumed() -> None:
        view.resume({TP("t", 0)})

    for put_back in (drained, resumed):
        waiter: asyncio.Future[None] = loop.create_future()
        fetcher._fetch_waiters.add(waiter)
        put_back()
        await asyncio.sleep(0)  # call_soon_threadsafe: on the thread's next turn
        assert waiter.done()
        fetcher._fetch_waiters.clear()
    assert consumer.put_back == [TP("t", 0)] * 2  # Faust's own step still runs
    closed = asyncio.new_event_loop()
    closed.close()
    consumer._thread.thread_loop = closed  # the worker is stopping: nothing to wake, no error
    drained()


async def test_faust_puts_a_partition_back_through_the_wrapped_step() -> None:
    """On Faust's own consumer (never started): the wrapped ``on_buffer_drop`` still puts the
    partition back in the fetch loop's active set, and waking before the start is a no-op."""
    with real_consumer("fc-wake") as (app, consumer):
        ConsumerView(app).wake_fetch_on_resume()
        tp = TP("t", 0)
        consumer._set_active_tps({tp})
        consumer.on_buffer_full(tp)
        assert tp not in consumer._get_active_partitions()
        consumer.on_buffer_drop(tp)
        assert tp in consumer._get_active_partitions()
        consumer.resume_partitions({tp})
        assert tp in consumer._get_active_partitions()
