"""The simulator's signed webhooks: what OpenAI, Azure OpenAI and the Gemini API push when a batch ends.

For each batch of such a source that reaches a terminal status while the simulator runs, one
thin event ``{id, object: "event", created_at, type, data: {id}}`` is POSTed to
``<simulator.webhook_url>/<source>``, signed with the Standard Webhooks scheme
(:func:`pipeline.core.webhooks.sign`, the secret named by ``simulator.webhook_secret_env``),
at-least-once: a delivery that fails (no connection, 429, 5xx) is retried with backoff, as the
providers do for hours. The knobs, each a share of the events chosen by the seed:

- ``webhook_duplicate``: delivered twice, with the same ``webhook-id``;
- ``webhook_delayed``: held back up to ``webhook_delay`` real seconds, so later events overtake it;
- ``webhook_forged``: preceded by a forged copy, a wrong signature or a replay with a stale
  timestamp, which a receiver must refuse;
- ``webhook_lost``: never sent (polling must find the batch).

The ground truth (``/_sim/truth``, ``webhooks``) counts what was sent by kind and lists every
event with its deliveries and the answers they got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from pipeline.config import SimulatorConfig
from pipeline.core import webhooks as wh
from pipeline.core.models import TERMINAL

log = logging.getLogger(__name__)

# What each pushing provider calls a batch's end.
EVENT_TYPES: Mapping[str, Mapping[str, str]] = {
    "openai": {s: f"batch.{s}" for s in ("completed", "failed", "cancelled", "expired")},
    "azure_openai": {s: f"batch.{s}" for s in ("completed", "failed", "cancelled", "expired")},
    "gemini": {"completed": "batch.succeeded", "failed": "batch.failed", "cancelled": "batch.cancelled",
               "expired": "batch.expired"},
}
TICK = 0.05  # real seconds between two looks at the fleet
FORGED_KEY = b"not-the-secret"
STALE_BY = 3600  # seconds a replayed timestamp is behind
ATTEMPTS = 50  # deliveries of one event before it is given up (the providers try for 24-72 h)
BACKOFF = (0.2, 2.0)  # first and longest wait between two attempts, real seconds


class Fleet(Protocol):
    """What the sender reads of a simulated source (:class:`simulator.server.SimSource`)."""

    name: str
    provider: str
    fleet: list[Any]

    def snapshot_id(self, batch: Any) -> str: ...


@dataclass
class Event:
    """One batch's end, as pushed, and what became of its deliveries."""

    source: str
    batch_id: str
    type: str
    webhook_id: str
    at: float  # simulated seconds: when the batch ended
    plan: list[str] = field(default_factory=list)  # the deliveries planned, in order: kinds
    answers: list[int] = field(default_factory=list)  # HTTP status of each attempt (0: no answer)

    def report(self) -> dict[str, Any]:
        return {"source": self.source, "batch_id": self.batch_id, "type": self.type,
                "webhook_id": self.webhook_id, "plan": self.plan, "answers": self.answers}


class WebhookSender:
    """Watches the fleet's simulated clock and delivers each pushing source's batch ends."""

    def __init__(self, config: SimulatorConfig, secret: str, sources: Mapping[str, Fleet],
                 now: Callable[[], float], *, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self._key = wh.decode_secret(secret)
        self._sources = [s for s in sources.values() if s.provider in EVENT_TYPES]
        self._now, self._wall = now, wall
        self._rng = random.Random(f"{config.seed}/webhooks")  # simulation, not security
        self.events: list[Event] = []
        self.sent: Counter[str] = Counter()  # by kind: genuine, duplicate, bad_signature, stale, lost
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.to_come = -1  # batch ends not pushed yet (-1: not started)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._main = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        tasks = [t for t in [self._main, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def report(self) -> dict[str, Any]:
        return {"sent": dict(self.sent), "events": [e.report() for e in self.events], "to_come": self.to_come}

    async def _watch(self) -> None:
        ends = sorted((b.timeline[-1][1], s.name, i) for s in self._sources for i, b in enumerate(s.fleet)
                      if b.timeline[-1][0] in TERMINAL)
        by_name = {s.name: s for s in self._sources}
        start = self._now()
        pending = [e for e in ends if e[0] > start]  # ends before the simulator started were not seen
        self.to_come = len(pending)
        while pending:
            now = self._now()
            while pending and pending[0][0] <= now:
                at, name, index = pending.pop(0)
                self._push(by_name[name], index, at)
            self.to_come = len(pending)
            await asyncio.sleep(TICK)

    def _push(self, source: Fleet, index: int, at: float) -> None:
        batch = source.fleet[index]
        kind = EVENT_TYPES[source.provider][batch.timeline[-1][0]]
        event = Event(source.name, source.snapshot_id(batch), kind, f"msg_{source.name}_{index:06d}", at)
        self.events.append(event)
        c, rng = self.config, self._rng
        if rng.random() < c.webhook_lost:
            event.plan.append("lost")
            self.sent["lost"] += 1
            return
        delay = rng.uniform(0, c.webhook_delay) if rng.random() < c.webhook_delayed else 0.0
        if rng.random() < c.webhook_forged:
            event.plan.append(rng.choice(("bad_signature", "stale")))
        event.plan.append("genuine")
        if rng.random() < c.webhook_duplicate:
            event.plan.append("duplicate")
        task = asyncio.create_task(self._deliver(source.name, event, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, source: str, event: Event, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        url = f"{self.config.webhook_url.rstrip('/')}/{source}"
        for kind in event.plan:
            self.sent[kind] += 1
            await self._post(url, event, kind)

    async def _post(self, url: str, event: Event, kind: str) -> None:
        """One delivery: retried until answered 2xx or 4xx (a forged one is sent once)."""
        wait = BACKOFF[0]
        for _ in range(ATTEMPTS):
            body, headers = self._signed(event, kind)
            status = await self._send(url, body, headers)
            event.answers.append(status)
            if kind in ("bad_signature", "stale") or 200 <= status < 300 or status in range(400, 429):
                return
            await asyncio.sleep(wait)
            wait = min(wait * 2, BACKOFF[1])
        log.warning("simulator: webhook %s for %s given up after %d attempts", event.webhook_id,
                    event.batch_id, ATTEMPTS)

    def _signed(self, event: Event, kind: str) -> tuple[bytes, dict[str, str]]:
        now = int(self._wall())
        body = orjson.dumps({"id": f"evt_{event.webhook_id}", "object": "event", "created_at": now,
                             "type": event.type, "data": {"id": event.batch_id}})
        key = FORGED_KEY if kind == "bad_signature" else self._key
        stamp = now - STALE_BY if kind == "stale" else now
        headers = wh.sign(key, event.webhook_id, stamp, body)
        return body, {**headers, "Content-Type": "application/json"}

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        assert self._session is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                return resp.status
        return 0

