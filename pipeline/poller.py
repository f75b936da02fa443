"""The poller: lists every configured source with aiohttp and publishes raw envelopes.

Simple polling for now: every ``poll_interval`` seconds a source's list endpoint is read page by
page (cursor ``after``) and every batch on it is published. A failed cycle is logged and retried
on the next tick; nothing is published for a page that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiohttp
import orjson

from pipeline.config import SourceConfig
from pipeline.errors import BatchscopeError, SourceError
from pipeline.models import Envelope
from pipeline.timeutil import iso_ms, utcnow

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10, sock_read=30)
MAX_PAGES = 10_000


class Sink(Protocol):
    async def publish(self, envelopes: list[Envelope]) -> None: ...


class SourcePoller:
    """Polls one source with its own aiohttp session."""

    def __init__(self, source: SourceConfig, sink: Sink) -> None:
        self.source = source
        self._sink = sink
        self.cycles = 0
        self.observed = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "batchscope/0.1"}
        if self.source.api_key is not None:
            headers["Authorization"] = f"Bearer {self.source.api_key.reveal()}"
        return headers

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(headers=self._headers(), timeout=TIMEOUT) as session:
            while not stop.is_set():
                await self._cycle(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.source.poll_interval)

    async def _cycle(self, session: aiohttp.ClientSession) -> None:
        try:
            count = await self.poll_once(session)
        except BatchscopeError as exc:
            log.warning("source %s: cycle failed: %s", self.source.name, exc)
            return
        self.cycles += 1
        self.observed += count
        log.debug("source %s: cycle %d published %d observations", self.source.name, self.cycles, count)

    async def poll_once(self, session: aiohttp.ClientSession) -> int:
        """List every page once, publishing each page as it arrives; returns the batches seen."""
        after: str | None = None
        seen = 0
        for _ in range(MAX_PAGES):
            page = await self._fetch_page(session, after)
            data = page.get("data")
            if not isinstance(data, list):
                raise SourceError(f"source {self.source.name}: list response has no 'data' array")
            observed_at = iso_ms(utcnow())
            envelopes = [Envelope(self.source.name, self.source.provider, observed_at, obj)
                         for obj in data if isinstance(obj, dict)]
            await self._sink.publish(envelopes)
            seen += len(envelopes)
            last = page.get("last_id") or (envelopes[-1].payload.get("id") if envelopes else None)
            if not page.get("has_more") or not isinstance(last, str):
                return seen
            after = last
        raise SourceError(f"source {self.source.name}: more than {MAX_PAGES} pages")

    async def _fetch_page(self, session: aiohttp.ClientSession, after: str | None) -> dict[str, Any]:
        params = {"limit": str(self.source.page_limit)}
        if after:
            params["after"] = after
        url = f"{self.source.base_url}/batches"
        try:
            async with session.get(url, params=params) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"source {self.source.name}: {type(exc).__name__} calling {url}",
                              retriable=True) from exc
        if status != 200:
            raise SourceError(f"source {self.source.name}: HTTP {status}: {error_message(body)}",
                              status=status, retriable=status in (408, 409, 429) or status >= 500)
        try:
            page = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise SourceError(f"source {self.source.name}: list response is not JSON",
                              retriable=True) from exc
        if not isinstance(page, dict):
            raise SourceError(f"source {self.source.name}: list response is not an object")
        return page


def error_message(body: bytes) -> str:
    """The message of an OpenAI-style error body, or a short excerpt of the body."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:200]
    return body[:200].decode("utf-8", "replace")


class Poller:
    """All sources, each on its own task, until :meth:`stop`."""

    def __init__(self, sources: tuple[SourceConfig, ...], sink: Sink) -> None:
        self.pollers = [SourcePoller(s, sink) for s in sources]
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self._stop.clear()
        log.info("polling %d sources: %s", len(self.pollers), ", ".join(p.source.name for p in self.pollers))
        await asyncio.gather(*(p.run(self._stop) for p in self.pollers))

    def stop(self) -> None:
        self._stop.set()
