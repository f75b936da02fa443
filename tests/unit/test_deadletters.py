"""The normalise agent's dead-letter bursts: held until full or flushed, produced before acked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from faust.types import EventT

from agents.deadletters import DeadLetterBurst


@dataclass
class Msg:
    key: bytes


@dataclass
class Ev:
    message: Msg


class Out:
    """Records the order of produced values and acknowledged events."""

    def __init__(self, fail: bool = False) -> None:
        self.log: list[tuple[str, bytes]] = []
        self.errors: list[BaseException] = []
        self.fail = fail

    async def send(self, topic: str, key: bytes, value: bytes, *rest: Any) -> asyncio.Future[None]:
        assert topic == "p.dlq"
        assert rest == (None, None, None)
        self.log.append(("sent", value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(RuntimeError("broker said no"))
        else:
            fut.set_result(None)
        return fut

    async def ack(self, event: EventT[bytes]) -> bool:
        self.log.append(("acked", cast(Any, event).message.key))
        return True


def event(i: int) -> EventT[bytes]:
    return cast(EventT[bytes], Ev(Msg(b"k%d" % i)))


def test_held_until_the_burst_is_full_then_produced_before_acked() -> None:
    async def run() -> list[tuple[str, bytes]]:
        out = Out()
        burst = DeadLetterBurst("p.dlq", out.send, out.errors.append, limit=3)
        burst.bind(out.ack)
        for i in range(2):
            await burst.add(event(i), b"v%d" % i)
        assert out.log == []
        assert len(burst) == 2
        await burst.add(event(2), b"v2")
        assert len(burst) == 0
        return out.log

    log = asyncio.run(run())
    assert log == [("sent", b"v0"), ("sent", b"v1"), ("sent", b"v2"),
                   ("acked", b"k0"), ("acked", b"k1"), ("acked", b"k2")]


def test_flush_produces_what_is_held_and_a_failed_delivery_is_reported() -> None:
    async def run() -> Out:
        out = Out(fail=True)
        burst = DeadLetterBurst("p.dlq", out.send, out.errors.append)
        burst.bind(out.ack)
        await burst.flush()  # nothing held: nothing sent
        await burst.add(event(7), b"v7")
        await burst.flush()
        await asyncio.sleep(0)  # delivery callbacks run
        return out

    out = asyncio.run(run())
    assert out.log == [("sent", b"v7"), ("acked", b"k7")]
    assert [str(e) for e in out.errors] == ["broker said no"]
