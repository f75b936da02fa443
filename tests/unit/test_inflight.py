"""InFlight: records acknowledged in the order they were added, only after all their outputs landed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agents.inflight import InFlight
from agents.inflight import settle as stop_settle


class Acks:
    def __init__(self) -> None:
        self.acked: list[str] = []

    async def __call__(self, event: str) -> None:
        self.acked.append(event)


def future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acks_wait_for_every_output_and_keep_the_order() -> None:
    errors: list[BaseException] = []
    acks, queue = Acks(), InFlight[str](errors.append)
    queue.bind(acks)
    first, second = [future(), future()], [future()]
    ran: list[tuple[str, list[Any]]] = []

    def then(name: str) -> Any:
        async def settle(results: list[Any]) -> None:
            ran.append((name, results))
        return settle

    await queue.add("e1", first, then("e1"))
    await queue.add("e2", second, then("e2"))
    await queue.add("e3", [])
    second[0].set_result("c")  # a later record landing first is not acknowledged before e1
    await settle()
    assert acks.acked == []
    first[0].set_result("a")
    await settle()
    assert acks.acked == []
    first[1].set_result("b")
    await settle()
    assert acks.acked == ["e1", "e2", "e3"]
    assert ran == [("e1", ["a", "b"]), ("e2", ["c"])]
    assert errors == []
    await queue.stop()


async def test_a_failed_delivery_stops_without_acknowledging() -> None:
    errors: list[BaseException] = []
    acks, queue = Acks(), InFlight[str](errors.append)
    queue.bind(acks)
    bad, later = future(), future()
    await queue.add("e1", [bad])  # no ``then``: a failed delivery stops the worker
    await queue.add("e2", [later])
    later.set_result(None)
    bad.set_exception(RuntimeError("broker gone"))
    await settle()
    assert acks.acked == []
    assert [str(e) for e in errors] == ["broker gone"]
    assert len(queue) == 0
    await queue.stop()


async def test_then_sees_a_failure_and_decides() -> None:
    errors: list[BaseException] = []
    acks, queue = Acks(), InFlight[str](errors.append)
    queue.bind(acks)
    bad = future()
    seen: list[Any] = []

    async def then(results: list[Any]) -> None:
        seen.extend(results)

    await queue.add("e1", [bad], then)
    bad.set_exception(RuntimeError("refused"))
    await settle()
    assert [str(r) for r in seen] == ["refused"]
    assert acks.acked == ["e1"]
    assert errors == []
    await queue.stop()


async def test_a_full_queue_makes_the_agent_wait() -> None:
    acks, queue = Acks(), InFlight[str](lambda exc: None, limit=2)
    queue.bind(acks)
    outputs = [future() for _ in range(3)]
    await queue.add("e1", [outputs[0]])
    await queue.add("e2", [outputs[1]])
    third = asyncio.ensure_future(queue.add("e3", [outputs[2]]))
    await settle()
    assert not third.done()
    outputs[0].set_result(None)
    await settle()
    assert third.done()
    assert acks.acked == ["e1"]
    await queue.stop()


async def test_drop_forgets_what_is_queued() -> None:
    acks, queue = Acks(), InFlight[str](lambda exc: None)
    queue.bind(acks)
    pending = future()
    await queue.add("e1", [pending])
    assert queue.drop() == 1
    pending.set_exception(RuntimeError("late"))  # retrieved: no "never retrieved" warning
    await settle()
    assert acks.acked == []
    await queue.stop()


async def test_records_ready_together_run_their_follow_ups_then_one_before_ack_then_their_acks() -> None:
    """The track agent's wait for its states to reach the producer's queue runs once for the
    records released together, after their follow-ups and before any of their acknowledgements."""
    errors: list[BaseException] = []
    order: list[str] = []
    gate = asyncio.Event()

    async def ack(event: str) -> None:
        order.append(f"ack {event}")

    async def before_ack() -> None:
        order.append("before_ack")
        await gate.wait()

    def then(name: str) -> Any:
        async def follow_up(results: list[Any]) -> None:
            order.append(f"then {name}")
        return follow_up

    queue = InFlight[str](errors.append)
    queue.bind(ack, before_ack)
    outputs = [future(), future(), future()]
    for name, out in zip(("e1", "e2", "e3"), outputs, strict=True):
        await queue.add(name, [out], then(name))
    outputs[1].set_result("b")
    outputs[0].set_result("a")  # e1 and e2 are ready together, e3 is not
    await settle()
    assert order == ["then e1", "then e2", "before_ack"]  # no ack while before_ack waits
    gate.set()
    await settle()
    assert order == ["then e1", "then e2", "before_ack", "ack e1", "ack e2"]
    outputs[2].set_result("c")
    await settle()
    assert order[5:] == ["then e3", "before_ack", "ack e3"]
    assert errors == []
    await queue.stop()


async def test_a_follow_up_s_outputs_hold_the_ack_not_the_next_follow_ups() -> None:
    """The track agent's change sets: sent by the follow-up, delivered before the record is
    acknowledged; meanwhile the records behind it run their follow-ups, and wait for the ack."""
    errors: list[BaseException] = []
    acked: list[str] = []
    followed: list[str] = []
    sets = {"e1": future(), "e2": future()}

    async def ack(event: str) -> None:
        acked.append(event)

    def then(name: str) -> Any:
        async def follow_up(results: list[Any]) -> list[asyncio.Future[Any]]:
            followed.append(name)
            return [sets[name]]
        return follow_up

    queue = InFlight[str](errors.append)
    queue.bind(ack)
    outputs = [future(), future()]
    for name, out in zip(("e1", "e2"), outputs, strict=True):
        await queue.add(name, [out], then(name))
    outputs[0].set_result("a")
    outputs[1].set_result("b")
    await settle()
    assert followed == ["e1", "e2"]
    assert acked == []  # both wait for their change sets
    sets["e2"].set_result("set 2")
    await settle()
    assert acked == []  # e2's set is delivered, but e1 is before it
    sets["e1"].set_result("set 1")
    await settle()
    assert acked == ["e1", "e2"]
    assert followed == ["e1", "e2"]  # a follow-up runs once
    assert errors == []
    await queue.stop()


async def test_a_follow_up_s_failed_output_stops_without_acknowledging() -> None:
    errors: list[BaseException] = []
    acked: list[str] = []
    later = future()

    async def ack(event: str) -> None:
        acked.append(event)

    async def follow_up(results: list[Any]) -> list[asyncio.Future[Any]]:
        return [later]

    queue = InFlight[str](errors.append)
    queue.bind(ack)
    out = future()
    await queue.add("e1", [out], follow_up)
    out.set_result("a")
    await settle()
    later.set_exception(RuntimeError("broker gone"))
    await settle()
    assert acked == []
    assert [str(e) for e in errors] == ["broker gone"]
    assert len(queue) == 0  # dropped: read again by the next owner
    await queue.stop()


async def test_a_clean_stop_waits_until_the_records_in_flight_are_acknowledged(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before the consumer's last commit: a record whose outputs land during the stop is
    acknowledged (committed, not processed again by the next worker), its ack included."""
    caplog.set_level(logging.INFO, "agents.inflight")
    slow = SlowAcks()
    queue = InFlight[str](lambda exc: None)
    queue.bind(slow)
    pending = future()
    await queue.add("e1", [pending])
    stopping = asyncio.ensure_future(stop_settle([queue], within=5.0))
    await settle()
    assert not stopping.done()
    pending.set_result("delivered")
    await stopping
    assert slow.acked == ["e1"]  # the ack itself finished, not only the queue emptied
    assert "stopping: 1 records in flight acknowledged" in caplog.text
    await queue.stop()


async def test_a_clean_stop_waits_for_an_acknowledgement_already_under_way() -> None:
    """The queue is empty while its last records are being acknowledged: the stop waits."""
    slow = SlowAcks()
    queue = InFlight[str](lambda exc: None)
    queue.bind(slow)
    delivered = future()
    await queue.add("e1", [delivered])
    delivered.set_result("delivered")
    for _ in range(20):  # until the releasing task popped e1 and is in its (slow) ack
        if not len(queue):
            break
        await asyncio.sleep(0)
    assert len(queue) == 0
    assert queue.busy()
    await stop_settle([queue], within=5.0)
    assert slow.acked == ["e1"]
    await queue.stop()


async def test_a_clean_stop_waits_no_longer_than_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    acks, queue = Acks(), InFlight[str](lambda exc: None)
    queue.bind(acks)
    await queue.add("e1", [future()])  # never delivered
    await stop_settle([queue], within=0.05)
    assert acks.acked == []
    assert "stopping: 1 of 1 records in flight not acknowledged within 0 s" in caplog.text
    await stop_settle([InFlight[str](lambda exc: None)])  # nothing in flight: returns at once
    queue.drop()
    await queue.stop()


class SlowAcks(Acks):
    async def __call__(self, event: str) -> None:
        await asyncio.sleep(0.01)
        self.acked.append(event)
