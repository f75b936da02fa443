"""The results reader: each ended batch's results file, read once, its usage published.

Opt-in per source (``read_results = true``; Anthropic message batches and Gemini batches,
docs/spend.md). The poller :meth:`offers <ResultsReader.offer>` every object it publishes; an
ended batch whose object says it has results (Anthropic: a ``results_url``; Gemini: an
``output.responsesFile``) and whose results were not read yet is queued. After the cycle's listing
and refreshes the poller lets the reader :meth:`read <ResultsReader.read>` at most
:data:`PER_CYCLE` of them: one streamed GET each through the source's own client (rate limit,
retries, breaker, no redirect followed), summed by :class:`~pipeline.core.results.ResultsTally`
(Gemini: :class:`~pipeline.core.results.GeminiTally`; capped in bytes and lines:
``results_max_mib``, ``results_max_lines``), never held whole.

- **The URL** is built from the source's ``base_url`` (:func:`results_url`), never taken from
  the object: the source's key is sent to the source's own host only.
- **What is published** is the batch's object as last seen plus the sums
  (:attr:`Envelope.results <pipeline.core.models.Envelope.results>`): the normaliser makes it a
  snapshot with ``usage_source = results``, and ClickHouse keeps that usage in ``batch_usage``,
  which a later observation of the object alone does not replace.
- **Once per batch**: a batch is recorded as read (whatever came of it) in the reader's memory
  before its GET; a failure that may pass (a 5xx or a timeout after the retries, or a 200 body
  that is not results: a proxy's error page, a body cut short) puts it back for a later cycle,
  :data:`TRIES` times in all. After a poller restart the memory is empty: the
  first listing republishes the ended batches still listed and each is read once more. That costs
  a GET per batch, never a double count: ``batch_usage`` holds one row per batch.
- **No wrong figure**: a file that cannot be read whole (a line that is not a result, a cap
  passed, a 404, the retries spent) is counted in ``poller_results_total`` by outcome and
  publishes nothing, so the batch keeps ``usage_source = none``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from pipeline.config import SourceConfig
from pipeline.core.errors import SourceError
from pipeline.core.models import TERMINAL, Envelope
from pipeline.core.results import GeminiTally, ResultsTally
from pipeline.core.timeutil import iso_ms, utcnow
from pipeline.core.usage import results_dict
from pipeline.polling import fetch
from pipeline.polling.client import ProviderClient
from pipeline.providers import gemini

log = logging.getLogger("pipeline.polling.poller")

TALLIES: dict[str, type[ResultsTally]] = {"anthropic": ResultsTally, "gemini": GeminiTally}
GEMINI_FILE = re.compile(r"files/[A-Za-z0-9_-]{1,256}")  # a responsesFile name, as Gemini gives them
PER_CYCLE = 20  # results files read per poll cycle at most (the rest wait for the next cycles)
TRIES = 3  # cycles a results file is tried in, when its failures may pass
MAX_READ = 1_000_000  # batch ids remembered as read (beyond: the oldest half is forgotten)


class Sink(Protocol):
    async def publish(self, envelopes: list[Envelope]) -> None: ...


class ResultsReader:
    """One source's results reader (inactive unless ``source.read_results``)."""

    def __init__(self, source: SourceConfig, client: ProviderClient) -> None:
        self.source = source
        self.client = client
        self.on = source.read_results and source.provider in TALLIES
        self.pending: dict[str, tuple[dict[str, Any], int]] = {}  # batch id -> (object, tries so far)
        self.read_ids: dict[str, None] = {}  # batch ids read or being read, oldest first

    def offer(self, published: Iterable[tuple[str | None, dict[str, Any], str]]) -> None:
        """``(batch id, object, canonical status)`` of objects just published: an ended one with
        results, not read yet, is queued (its latest object replaces an older one)."""
        if not self.on:
            return
        for batch_id, obj, status in published:
            if (batch_id is not None and status in TERMINAL and batch_id not in self.read_ids
                    and results_url(self.source, batch_id, obj) is not None):
                tries = self.pending.get(batch_id, (obj, 0))[1]
                self.pending[batch_id] = (obj, tries)

    async def read(self, session: aiohttp.ClientSession, sink: Sink) -> int:
        """Read up to :data:`PER_CYCLE` queued results files; publish the usage of each read whole.
        Returns the files read."""
        done = 0
        for batch_id in list(self.pending)[:PER_CYCLE]:
            obj, tries = self.pending.pop(batch_id)
            self._remember(batch_id)
            tally = await self._tally(session, batch_id, obj, tries)
            if tally is None:
                continue
            usage = tally.usage()
            if usage.usage_source == "none":
                why = f"{tally.unreadable} of {tally.lines} lines unreadable"
                self._again_or_count(batch_id, obj, tries, "unreadable", why)
                continue
            observed_at = iso_ms(utcnow())
            try:
                await sink.publish([Envelope(self.source.name, self.source.provider, observed_at, obj,
                                             batch_id, results=results_dict(usage, tally.model))])
            except BaseException:  # Kafka refused or the poller stops: read again later
                self.read_ids.pop(batch_id, None)
                self.pending[batch_id] = (obj, tries)
                raise
            self.client.metrics.results["read"] += 1
            done += 1
        return done

    async def _tally(self, session: aiohttp.ClientSession, batch_id: str, obj: dict[str, Any],
                     tries: int) -> ResultsTally | None:
        """The whole file summed, or None (counted; put back for a later cycle if it may pass)."""
        url = results_url(self.source, batch_id, obj)
        assert url is not None  # offer() queued it for having one
        max_bytes, max_lines = self.source.results_max_mib * fetch.MIB, self.source.results_max_lines
        tally = TALLIES[self.source.provider]
        try:
            return await self.client.stream(session, url, lambda: tally(max_bytes, max_lines))
        except SourceError as exc:
            if isinstance(exc, fetch.Refused) and exc.kind == "results_too_large":
                self._count("too_large", batch_id, str(exc))
            elif exc.status == 404:
                self._count("gone", batch_id, "404")
            elif exc.retriable:
                self._again_or_count(batch_id, obj, tries, "failed", str(exc))
            else:
                self._count("failed", batch_id, str(exc))
            return None

    def _again_or_count(self, batch_id: str, obj: dict[str, Any], tries: int, outcome: str, why: str) -> None:
        """A failure that may pass (the retries spent on a 5xx or a timeout, or a 200 body that is
        not results, as a proxy's error page): queued for the next cycle, :data:`TRIES` times in all."""
        if tries + 1 >= TRIES:
            self._count(outcome, batch_id, why)
            return
        self.read_ids.pop(batch_id, None)
        self.pending[batch_id] = (obj, tries + 1)
        log.info("source %s: results of batch %s not read (%s): tried again next cycle", self.source.name,
                 batch_id, self.client.masked(why))

    def _count(self, outcome: str, batch_id: str, why: str) -> None:
        self.client.metrics.results[outcome] += 1
        log.warning("source %s: results of batch %s give no usage (%s): %s", self.source.name, batch_id,
                    outcome, self.client.masked(why))

    def _remember(self, batch_id: str) -> None:
        self.read_ids[batch_id] = None
        if len(self.read_ids) > MAX_READ:
            for old in list(self.read_ids)[: MAX_READ // 2]:
                del self.read_ids[old]


def results_url(source: SourceConfig, batch_id: str, obj: dict[str, Any]) -> str | None:
    """Where an ended batch's results are, on the source's own host (never a URL the object
    names), or None when it has none: Anthropic, ``{base_url}/messages/batches/{id}/results`` once
    the object names a ``results_url``; Gemini, its ``output.responsesFile`` through the download
    root (``/download`` before the API version: ``/download/v1beta/files/...:download?alt=media``)."""
    if source.provider == "anthropic":
        return f"{source.base_url}/messages/batches/{quote(batch_id, safe='')}/results" \
            if obj.get("results_url") else None
    if source.provider == "gemini":
        output = gemini.unwrap(obj).get("output")
        name = output.get("responsesFile") if isinstance(output, dict) else None
        if not isinstance(name, str) or GEMINI_FILE.fullmatch(name) is None:
            return None
        root, _, version = source.base_url.rpartition("/")
        return f"{root}/download/{version}/{name}:download?alt=media"
    return None
