"""Fault injection for the simulator: each injected answer is one of the faults real providers give.

``FAULTS`` is the mix: 429 with ``Retry-After`` in seconds or as an HTTP date, 500, 502, 503, 529
(Anthropic's overload), a hung request (the server stalls, then drops the connection), a truncated
body and a malformed body. The injector also keeps, per source, the instant before which a client
that was told ``Retry-After`` must not come back, and counts every request that came back early.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate

from aiohttp import web

FAULTS = ("429_seconds", "429_date", "500", "502", "503", "529", "hang", "truncated", "malformed")
ERROR_BODY = b'{"error": {"message": "injected fault", "type": "server_error", "param": null, "code": null}}'
# A client's clock and ours are the same here; this slack absorbs scheduling jitter only.
EARLY_SLACK = 0.01


class FaultInjector:
    def __init__(self, rate: float, retry_after: float, hang_seconds: float, seed: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.rate = rate
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self._rng = random.Random(f"faults/{seed}")  # simulation, not security
        self._clock = clock
        self.not_before: dict[str, float] = {}
        self.injected: Counter[str] = Counter()
        self.early: Counter[str] = Counter()  # requests sent before their Retry-After had passed

    def check_early(self, source: str) -> None:
        if self._clock() + EARLY_SLACK < self.not_before.get(source, 0.0):
            self.early[source] += 1

    def pick(self) -> str | None:
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return None
        return self._rng.choice(FAULTS)

    async def answer(self, fault: str, source: str, request: web.Request) -> web.StreamResponse:
        self.injected[fault] += 1
        if fault.startswith("429"):
            return self._too_many(fault, source)
        if fault == "hang":
            await asyncio.sleep(self.hang_seconds)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=504, body=ERROR_BODY, content_type="application/json")
        if fault == "truncated":
            return web.json_response(status=200, body=b'{"object": "list", "data": [{"id": "batch_')
        if fault == "malformed":
            return web.json_response(status=200, body=b"<html>upstream error</html>")
        return web.Response(status=int(fault), body=ERROR_BODY, content_type="application/json")

    def _too_many(self, fault: str, source: str) -> web.Response:
        now = self._clock()
        if fault == "429_date":
            until = float(math.ceil(now) + max(1, math.ceil(self.retry_after)))
            header = formatdate(until, usegmt=True)
        else:
            until = now + self.retry_after
            header = f"{self.retry_after:g}"
        self.not_before[source] = max(self.not_before.get(source, 0.0), until)
        body = b'{"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": null}}'
        return web.Response(status=429, body=body, content_type="application/json",
                            headers={"Retry-After": header})

    def report(self) -> dict[str, object]:
        return {"injected": dict(self.injected), "early_requests": dict(self.early)}
