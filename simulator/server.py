"""A synthetic fleet behind every provider's batch API, in accelerated time.

Each simulated source has a provider (``simulator.providers``, assigned round-robin) and serves
that provider's API under its own prefix, ``/{source}`` + the provider's API root
(:data:`simulator.wire.BASE_PATHS`) + the adapter's list and get paths: the same envelopes,
pagination (cursors, page numbers, page tokens, bare arrays), status words, timestamp formats
and auth headers as the real API (rendering: :mod:`simulator.wire`). ``/_sim/truth`` returns
the ground truth in the canonical vocabulary: every batch's transitions with times, its final
status, the statuses it has served, the malformed objects and the batches that vanish. The
fleet is a pure function of the seed, so two runs with the same seed see the same batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from pipeline.config import SimulatorConfig
from pipeline.core.models import TERMINAL
from pipeline.core.secret import Secret
from pipeline.polling import sigv4
from pipeline.providers import adapter as adapter_of
from pipeline.providers.base import Adapter
from simulator import hostile
from simulator import results as simresults
from simulator import usage as simusage
from simulator import wire as simwire
from simulator.faults import FaultInjector
from simulator.fleet import SimBatch, build_fleet
from simulator.paging import BadParam, list_page
from simulator.webhooks import WebhookSender

log = logging.getLogger(__name__)

SIM_ACCESS_KEY = "AKIDBATCHSCOPESIM"  # a Bedrock source's access key id when api_key has none
HOSTILE_SHARE = 0.3  # of the answers, while hostile payloads are left
RESULTS_TAIL = "/results"  # an Anthropic batch's results: the batch path + this
GEMINI_TAIL = ":download"  # a Gemini responses file: /download + the API root + its name + this


class SimSource:
    """The fleet of one simulated source, rendered in its provider's API, and what it served."""

    def __init__(self, name: str, fleet: list[SimBatch], provider: str = "openai", *,
                 malformed: frozenset[int] = frozenset(), vanish: dict[int, float] | None = None) -> None:
        self.name = name
        self.provider = provider
        self.adapter: Adapter = adapter_of(provider)
        self.fleet = fleet
        self.by_id = {b.id: b for b in fleet}
        self.wire_ids = {b.id: simwire.wire_id(provider, b, name) for b in fleet}
        self.by_path_id = {simwire.snapshot_id(provider, w): self.by_id[i] for i, w in self.wire_ids.items()}
        self.newest_first = sorted(fleet, key=lambda b: (b.created, b.id), reverse=True)
        self.malformed = malformed  # batch indexes served as objects the normaliser rejects
        self.vanish = vanish or {}  # batch index -> simulated time it starts answering 404
        self.served: dict[str, list[str]] = {}
        self.ended: dict[str, dict[str, Any]] = {}  # batch id -> its object once terminal (final)

    def visible(self, t: float) -> list[SimBatch]:
        return [b for b in self.newest_first if b.created <= t and self.vanish.get(b.index, t + 1) > t]

    def snapshot_id(self, batch: SimBatch) -> str:
        return simwire.snapshot_id(self.provider, self.wire_ids[batch.id])

    def serve(self, batch: SimBatch, t: float, epoch: float) -> dict[str, Any]:
        if batch.index in self.malformed:  # the same bytes every time: rejected once, not re-sent
            return simwire.malformed(self.provider, self.render(batch, batch.created, epoch))
        obj = self.render(batch, t, epoch)
        status = simwire.project(self.provider, batch, batch.status_at(t) or "validating")
        seen = self.served.setdefault(batch.id, [])
        if not seen or seen[-1] != status:
            seen.append(status)
        return obj

    def render(self, batch: SimBatch, t: float, epoch: float) -> dict[str, Any]:
        """The batch's object at ``t``; a terminal batch's is rendered once (the callers only
        serialise it)."""
        if (done := self.ended.get(batch.id)) is not None:
            return done
        obj = simwire.render(self.provider, batch, t, epoch, self.wire_ids[batch.id])
        if batch.status_at(t) in TERMINAL:
            self.ended[batch.id] = obj
        return obj


def openai_object(batch: SimBatch, t: float, epoch: float) -> dict[str, Any]:
    """The batch as OpenAI's ``GET /v1/batches/{id}`` would return it at simulated time ``t``."""
    return simwire.render("openai", batch, t, epoch, batch.id)


def simulator_secret(provider: str, api_key: str) -> str:
    """The credential a client of a simulated source sends when the simulator has ``api_key``:
    the key itself, or for Bedrock ``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` with the key as the secret."""
    if provider == "bedrock" and ":" not in api_key:
        return f"{SIM_ACCESS_KEY}:{api_key}"
    return api_key


def _vanish_times(config: SimulatorConfig, name: str, fleet: list[SimBatch]) -> dict[int, float]:
    """When each vanishing batch starts answering 404: ``vanish_after`` past its end, or (a
    ``vanish_active`` share of them, drawn apart so the seed picks the same batches) half-way
    between its creation and its end."""
    if config.vanish_share <= 0:
        return {}
    rng = random.Random(f"{config.seed}/{name}/vanish")  # simulation, not security
    early = random.Random(f"{config.seed}/{name}/vanish-active")  # simulation, not security
    chosen = [b for b in fleet if rng.random() < config.vanish_share]
    return {b.index: (b.created + b.timeline[-1][1]) / 2 if early.random() < config.vanish_active
            else b.timeline[-1][1] + config.vanish_after for b in chosen}


def _malformed(config: SimulatorConfig, names: list[str]) -> dict[str, frozenset[int]]:
    """``config.malformed`` batches, chosen fleet-wide by the seed."""
    everyone = [(n, i) for n in names for i in range(config.batches)]
    picked = random.Random(f"{config.seed}/malformed").sample(everyone, min(config.malformed, len(everyone)))
    return {n: frozenset(i for m, i in picked if m == n) for n in names}


class HostileFeed:
    """``simulator.hostile`` payloads, served one at a time until they run out: an object kind
    inside a list page that holds batches, a whole-body kind as a list or GET answer (status 200).

    A request takes one with probability :data:`HOSTILE_SHARE` (seeded), so the client's retry
    gets a valid answer most of the time."""

    def __init__(self, count: int, seed: int) -> None:
        items = hostile.served(count)
        random.Random(f"{seed}/hostile").shuffle(items)  # simulation, not security
        self.objects = [i for i in items if i[0] in hostile.OBJECT_KINDS]
        self.bodies = [i for i in items if i[0] not in hostile.OBJECT_KINDS]
        self._rng = random.Random(f"{seed}/hostile/serve")  # simulation, not security
        self.served: Counter[str] = Counter()  # "object"/"body" -> served so far
        self.kinds: Counter[str] = Counter()

    def take(self, page: bool) -> tuple[str, bytes] | None:
        """The next payload for this answer (``page``: a list page that holds a batch), or None."""
        pools = [(self.bodies, "body")] + ([(self.objects, "object")] if page else [])
        pools = [(pool, what) for pool, what in pools if pool]
        if not pools or self._rng.random() >= HOSTILE_SHARE:
            return None
        pool, what = pools[self._rng.randrange(len(pools))]
        kind, body = pool.pop()
        self.served[what] += 1
        self.kinds[kind] += 1
        return kind, body

    def report(self) -> dict[str, Any]:
        return {"objects": self.served["object"], "bodies": self.served["body"], "kinds": dict(self.kinds),
                "left": len(self.objects) + len(self.bodies)}


class Simulator:
    """The aiohttp server. ``async with Simulator(cfg) as sim:`` then poll ``sim.source_url(name)``."""

    def __init__(self, config: SimulatorConfig, *, api_key: str | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 webhook_secret: str | None = None) -> None:
        """``webhook_secret``: the ``whsec_`` secret its webhooks are signed with (none are sent
        without it, or without ``config.webhook_url``)."""
        self.config = config
        self._api_key = api_key
        self._clock = clock
        self._start = clock()
        self.epoch = float(int(wall()))
        names = [f"sim-{i + 1}" for i in range(config.sources)]
        bad = _malformed(config, names)
        self.sources: dict[str, SimSource] = {}
        for i, n in enumerate(names):
            fleet = build_fleet(config.seed, config.batches, n, history=min(config.history, config.batches),
                                span=config.creation_span * 3600.0)
            provider = config.providers[i % len(config.providers)]
            self.sources[n] = SimSource(n, fleet, provider, malformed=bad[n],
                                        vanish=_vanish_times(config, n, fleet))
        self._runner: web.AppRunner | None = None
        self.port = config.port
        self.faults = FaultInjector(config.fault_rate, config.retry_after, config.hang_seconds, config.seed)
        self.hostile = HostileFeed(config.hostile, config.seed)
        self.webhooks = None
        if config.webhook_url and webhook_secret:
            self.webhooks = WebhookSender(config, webhook_secret, self.sources, self.now)

    def now(self) -> float:
        """Simulated seconds since the epoch."""
        return (self._clock() - self._start) * self.config.speed

    def source_url(self, name: str) -> str:
        """The base URL of a simulated source (its provider's API root, as a source's ``base_url``)."""
        provider = self.sources[name].provider if name in self.sources else "openai"
        return f"http://{self.config.host}:{self.port}/{name}{simwire.BASE_PATHS[provider]}"

    def provider(self, name: str) -> str:
        return self.sources[name].provider

    async def start(self) -> None:
        """Serve; the simulated clock starts now."""
        if self._runner is not None:
            return
        self._start = self._clock()
        app = web.Application(middlewares=[self._auth, self._faults])
        app.add_routes([
            web.get("/_sim/truth", self._truth),
            web.get("/{source}{tail:/.*}", self._api),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        if self.webhooks is not None:
            self.webhooks.start()
        providers = sorted({s.provider for s in self.sources.values()})
        log.info("simulator serving %d sources x %d batches (%s) on port %d (speed x%g)",
                 len(self.sources), self.config.batches, ", ".join(providers), self.port, self.config.speed)

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        source = self.sources.get(request.match_info.get("source", ""))
        if self._api_key and source is not None and not self._authorised(source, request):
            status = 403 if source.provider == "bedrock" else 401
            message = ("The request signature we calculated does not match the signature you provided."
                       if status == 403 else "Incorrect API key provided.")
            return _error(source.provider, status, "invalid_api_key", message)
        response: web.StreamResponse = await handler(request)
        return response

    def _authorised(self, source: SimSource, request: web.Request) -> bool:
        assert self._api_key is not None
        secret = Secret(simulator_secret(source.provider, self._api_key))
        if source.adapter.signing == "sigv4":
            url = f"http://{request.host}{request.raw_path}"
            return sigv4.verify(sigv4.credentials(secret), request.method, url, dict(request.headers))
        expected = source.adapter.auth(secret)
        return all(request.headers.get(k) == v for k, v in expected.items())

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        source = request.match_info.get("source")
        if source is not None and not request.path.startswith("/_sim/"):
            if self.config.latency > 0:
                await asyncio.sleep(self.config.latency)
            self.faults.check_early(source)
            fault = self.faults.pick()
            if fault is not None:
                return await self.faults.answer(fault, source, request)
        response: web.StreamResponse = await handler(request)
        return response

    async def _api(self, request: web.Request) -> web.StreamResponse:
        source = self.sources.get(request.match_info["source"])
        if source is None:
            raise web.HTTPNotFound(text=f"no simulated source {request.match_info['source']!r}")
        raw = request.rel_url.raw_path[len(request.match_info["source"]) + 1:]
        base = simwire.BASE_PATHS[source.provider]
        rest = raw[len(base):] if raw.startswith(base) else None
        a = source.adapter
        missing = [k for k, v in a.fixed_params if request.query.get(k) != v]
        if rest is not None and missing:
            return _error(source.provider, 400, "invalid_request", f"missing or wrong {missing[0]}")
        if rest == a.list_path:
            return self._list(source, request)
        if (results := self._results_route(source, request, raw)) is not None:
            return await results
        before, _, after = a.get_path.partition("{id}")
        if rest is not None and rest.startswith(before) and rest.endswith(after) and len(rest) > len(before):
            return self._get(source, unquote(rest[len(before):len(rest) - len(after)]))
        return _error(source.provider, 404, "not_found", f"No route {request.path}")

    def _list(self, source: SimSource, request: web.Request) -> web.Response:
        t = self.now()
        try:
            page, envelope = list_page(source.adapter, source.visible(t), source.wire_ids,
                                       dict(request.query))
        except BadParam as exc:
            return _error(source.provider, 400, f"invalid_{exc.param}", str(exc))
        bad = self.hostile.take(bool(page))
        if bad is not None and bad[0] not in hostile.OBJECT_KINDS:
            return _raw(bad[1])  # before serve(): the ground truth holds what a client was shown
        objects: list[Any] = [source.serve(b, t, self.epoch) for b in page]
        key = source.adapter.items_key
        if bad is not None:  # first, so that the paging cursor (the last id) stays a batch's
            objects.insert(0, orjson.Fragment(bad[1]))
        if key is None:  # Together: a bare array
            return _json(objects)
        if key == "data" and source.provider != "anthropic":  # OpenAI family, Mistral
            return _json({"object": "list", "data": objects, **envelope})
        return _json({key: objects, **envelope})

    def _get(self, source: SimSource, batch_id: str) -> web.Response:
        t = self.now()
        batch = source.by_path_id.get(batch_id)
        vanished = batch is not None and source.vanish.get(batch.index, t + 1) <= t
        if batch is None or batch.created > t or vanished:
            return _error(source.provider, 404, None, f"No batch found with id '{batch_id}'.")
        bad = self.hostile.take(False)
        if bad is not None:
            return _raw(bad[1])
        return web.json_response(source.serve(batch, t, self.epoch))

    def _results_route(self, source: SimSource, request: web.Request,
                       raw: str) -> Awaitable[web.StreamResponse] | None:
        """The answer to a results file's path (:mod:`simulator.results`), or None for another path."""
        base = simwire.BASE_PATHS[source.provider]
        if source.provider == "gemini":
            head = f"/download{base}/"
            if raw.startswith(f"{head}files/") and raw.endswith(GEMINI_TAIL):
                return self._gemini_results(source, request, raw[len(head):-len(GEMINI_TAIL)])
        if source.provider == "anthropic":
            head = f"{base}{source.adapter.list_path}/"
            if raw.startswith(head) and raw.endswith(RESULTS_TAIL):
                return self._results(source, request, unquote(raw[len(head):-len(RESULTS_TAIL)]))
        return None

    async def _results(self, source: SimSource, request: web.Request, batch_id: str) -> web.StreamResponse:
        """An ended Anthropic batch's results file (:mod:`simulator.results`), streamed."""
        t = self.now()
        batch = source.by_path_id.get(batch_id)
        if batch is None or batch.status_at(t) not in TERMINAL or source.vanish.get(batch.index, t + 1) <= t:
            return _error(source.provider, 404, None, f"No results for batch '{batch_id}'.")
        counts = source.render(batch, t, self.epoch)["request_counts"]
        return await _stream(request, simresults.lines(batch, counts))

    async def _gemini_results(self, source: SimSource, request: web.Request, name: str) -> web.StreamResponse:
        """An ended Gemini batch's responses file (``files/out-NNNNNN``), streamed."""
        t = self.now()
        index = name.removeprefix("files/out-")
        batch = source.fleet[int(index)] if index.isdigit() and int(index) < len(source.fleet) else None
        output = (source.render(batch, t, self.epoch)["metadata"].get("output")
                  if batch is not None and batch.status_at(t) in TERMINAL else None)
        if batch is None or output is None or request.query.get("alt") != "media":
            return _error(source.provider, 404, None, f"File {name} not found.")
        stats = source.render(batch, t, self.epoch)["metadata"]["batchStats"]
        return await _stream(request, simresults.gemini_lines(batch, int(stats["successfulRequestCount"]),
                                                              int(stats["failedRequestCount"])))

    async def _truth(self, request: web.Request) -> web.Response:
        return web.json_response(self.truth())

    def truth(self) -> dict[str, Any]:
        """Ground truth at this instant, for tests and benchmarks (canonical statuses)."""
        t = self.now()
        batches = [self._batch_truth(source, b, t) for source in self.sources.values() for b in source.fleet]
        all_terminal = all(b["status"] in TERMINAL for b in batches)
        malformed = [f"{b['source']}/{b['batch_id']}" for b in batches if b["malformed"]]
        sources = [{"name": s.name, "provider": s.provider, "base_url": self.source_url(s.name)}
                   for s in self.sources.values()]
        return {"now": int(self.epoch + t), "all_terminal": all_terminal, "batches": batches,
                "sources": sources, "malformed": malformed, "faults": self.faults.report(),
                "hostile": self.hostile.report(),
                "webhooks": self.webhooks.report() if self.webhooks is not None else None}

    def _batch_truth(self, source: SimSource, b: SimBatch, t: float) -> dict[str, Any]:
        timeline = simwire.projected_timeline(source.provider, b)
        now = b.status_at(t)
        vanishes = source.vanish.get(b.index)
        return {
            "source": source.name, "provider": source.provider, "batch_id": source.snapshot_id(b),
            "final_status": timeline[-1][0],
            "status": simwire.project(source.provider, b, now) if now is not None else None,
            "created_at": int(self.epoch + b.created),
            "transitions": [{"status": s, "at": int(self.epoch + at)} for s, at in timeline],
            "served": list(source.served.get(b.id, [])),
            "malformed": b.index in source.malformed,
            "vanishes_at": None if vanishes is None else int(self.epoch + vanishes),
            **self._usage_truth(source, b, t),
        }

    def _usage_truth(self, source: SimSource, b: SimBatch, t: float) -> dict[str, Any]:
        """The batch's model, team and final usage: an Anthropic or Gemini batch's from its
        results file once it ended (its object carries none; an Anthropic object no model), and
        no team (their objects have no metadata)."""
        found = simusage.truth(source.provider, b)
        if source.provider not in ("anthropic", "gemini") or b.status_at(t) not in TERMINAL:
            return found
        obj = source.render(b, t, self.epoch)
        if source.provider == "anthropic":
            return {**found, **simresults.truth(b, obj["request_counts"]), "team": None}
        if "output" not in obj["metadata"]:
            return {**found, "model": obj["metadata"]["model"], "team": None}  # no responses file
        succeeded = int(obj["metadata"]["batchStats"]["successfulRequestCount"])
        return {**found, **simresults.gemini_truth(b, succeeded), "model": obj["metadata"]["model"],
                "team": None}


async def _stream(request: web.Request, chunks: Iterable[bytes]) -> web.StreamResponse:
    """A results file written as it is rendered, chunk by chunk."""
    response = web.StreamResponse(headers={"Content-Type": "application/binary"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _raw(body: bytes) -> web.Response:
    """A hostile body as a 200 answer, byte for byte."""
    return web.Response(body=body, status=200, content_type="application/json")


def _error(provider: str, status: int, code: str | None, message: str) -> web.Response:
    body, headers = simwire.error_body(provider, status, code, message)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)
