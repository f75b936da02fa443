"""A synthetic fleet behind OpenAI-compatible batch endpoints, in accelerated time.

Each simulated source lives under its own prefix: ``/{source}/v1/batches`` (cursor pagination,
newest first) and ``/{source}/v1/batches/{id}``. ``/_sim/truth`` returns the ground truth: every
batch's true transitions with times, its eventual final status, and the statuses it has served.
The fleet is a pure function of the seed, so two runs with the same seed see the same batches.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pipeline.config import SimulatorConfig
from pipeline.faults import FaultInjector
from pipeline.models import TERMINAL

log = logging.getLogger(__name__)

MINUTE = 60.0
WINDOW = 24 * 3600.0
CREATION_SPAN = 4 * 3600.0  # batches are created over 4 simulated hours, half before start
MODELS = ("gpt-4o-mini", "gpt-4.1", "o4-mini", "text-embedding-3-small")
ENDPOINTS = ("/v1/chat/completions", "/v1/chat/completions", "/v1/responses", "/v1/embeddings")
OUTCOMES = (("completed", 70), ("completed_all_failed", 4), ("failed", 8),
            ("expired", 6), ("cancelled", 12))
VALIDATION_ERRORS = ("invalid_json_line", "duplicate_custom_id", "model_mismatch", "empty_file")


@dataclass(frozen=True, slots=True)
class SimBatch:
    """One batch's whole life, as offsets in simulated seconds from the simulator's epoch."""

    id: str
    index: int
    created: float
    timeline: tuple[tuple[str, float], ...]
    total: int
    failed: int
    model: str
    endpoint: str
    error_code: str | None

    @property
    def final_status(self) -> str:
        return self.timeline[-1][0]

    def status_at(self, t: float) -> str | None:
        current = None
        for status, at in self.timeline:
            if at > t:
                break
            current = status
        return current

    def progress_at(self, t: float) -> tuple[int, int]:
        """(completed, failed) request counts at simulated time ``t``."""
        times = dict(self.timeline)
        start, end = times.get("in_progress"), _first(times, "finalizing", "expired", "cancelling")
        if start is None or t < start:
            return 0, 0
        done_total = self.total if self.final_status == "completed" else int(self.total * 0.6)
        frac = 1.0 if end is None or t >= end else (t - start) / max(end - start, 1.0)
        failed = int(self.failed * frac)
        return int(done_total * frac) - failed, failed


def _first(times: dict[str, float], *names: str) -> float | None:
    return next((times[n] for n in names if n in times), None)


def build_fleet(seed: int, count: int, source: str) -> list[SimBatch]:
    rng = random.Random(f"{seed}/{source}")  # simulation, not security
    return [_batch(rng, i, source) for i in range(count)]


def _batch(rng: random.Random, index: int, source: str) -> SimBatch:
    created = rng.uniform(-CREATION_SPAN / 2, CREATION_SPAN / 2)
    outcome = rng.choices([o for o, _ in OUTCOMES], weights=[w for _, w in OUTCOMES])[0]
    total = rng.randint(10, 50_000)
    validated = created + rng.uniform(1, 10) * MINUTE
    timeline: list[tuple[str, float]] = [("validating", created)]
    failed = 0
    if outcome == "failed":
        timeline.append(("failed", validated))
    elif outcome == "expired":
        timeline += [("in_progress", validated), ("expired", created + WINDOW)]
    elif outcome == "cancelled":
        cancel_at = validated + rng.uniform(0, 60) * MINUTE
        timeline += [("in_progress", validated), ("cancelling", cancel_at),
                     ("cancelled", cancel_at + rng.uniform(1, 10) * MINUTE)]
    else:
        finalizing = validated + rng.uniform(10, 120) * MINUTE
        failed = total if outcome == "completed_all_failed" else int(total * rng.choice((0, 0, 0.01, 0.1)))
        timeline += [("in_progress", validated), ("finalizing", finalizing),
                     ("completed", finalizing + rng.uniform(1, 10) * MINUTE)]
    return SimBatch(
        id=f"batch_{source}_{index:06d}", index=index, created=created, timeline=tuple(timeline),
        total=total, failed=failed, model=rng.choice(MODELS), endpoint=rng.choice(ENDPOINTS),
        error_code=rng.choice(VALIDATION_ERRORS) if outcome == "failed" else None,
    )


class SimSource:
    """The fleet of one simulated source and the statuses it has served."""

    def __init__(self, name: str, fleet: list[SimBatch]) -> None:
        self.name = name
        self.fleet = fleet
        self.by_id = {b.id: b for b in fleet}
        self.newest_first = sorted(fleet, key=lambda b: (b.created, b.id), reverse=True)
        self.served: dict[str, list[str]] = {}

    def visible(self, t: float) -> list[SimBatch]:
        return [b for b in self.newest_first if b.created <= t]

    def serve(self, batch: SimBatch, t: float, epoch: float) -> dict[str, Any]:
        obj = openai_object(batch, t, epoch)
        seen = self.served.setdefault(batch.id, [])
        if not seen or seen[-1] != obj["status"]:
            seen.append(obj["status"])
        return obj


def openai_object(batch: SimBatch, t: float, epoch: float) -> dict[str, Any]:
    """The batch as OpenAI's ``GET /v1/batches/{id}`` would return it at simulated time ``t``."""
    status = batch.status_at(t) or "validating"
    passed = {s: int(epoch + at) for s, at in batch.timeline if at <= t}
    completed, failed = batch.progress_at(t)
    done = status in TERMINAL
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": _errors(batch) if status == "failed" else None,
        "input_file_id": f"file-in-{batch.index:06d}",
        "completion_window": "24h",
        "status": status,
        "output_file_id": f"file-out-{batch.index:06d}" if done and completed else None,
        "error_file_id": f"file-err-{batch.index:06d}" if done and failed else None,
        "created_at": int(epoch + batch.created),
        "in_progress_at": passed.get("in_progress"),
        "expires_at": int(epoch + batch.created + WINDOW),
        "finalizing_at": passed.get("finalizing"),
        "completed_at": passed.get("completed"),
        "failed_at": passed.get("failed"),
        "expired_at": passed.get("expired"),
        "cancelling_at": passed.get("cancelling"),
        "cancelled_at": passed.get("cancelled"),
        "request_counts": {"total": batch.total if status != "validating" else 0,
                           "completed": completed, "failed": failed},
        "metadata": {"team": ("search", "ads", "eval")[batch.index % 3], "job": f"job-{batch.index}"},
        "model": batch.model,
    }


def _errors(batch: SimBatch) -> dict[str, Any]:
    return {"object": "list", "data": [
        {"code": batch.error_code, "message": f"Simulated validation error: {batch.error_code}",
         "param": None, "line": 1},
    ]}


class Simulator:
    """The aiohttp server. ``async with Simulator(cfg) as sim:`` then poll ``sim.source_url(name)``."""

    def __init__(self, config: SimulatorConfig, *, api_key: str | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self._api_key = api_key
        self._clock = clock
        self._start = clock()
        self.epoch = float(int(wall()))
        names = [f"sim-{i + 1}" for i in range(config.sources)]
        self.sources = {n: SimSource(n, build_fleet(config.seed, config.batches, n)) for n in names}
        self._runner: web.AppRunner | None = None
        self.port = config.port
        self.faults = FaultInjector(config.fault_rate, config.retry_after, config.hang_seconds, config.seed)

    def now(self) -> float:
        """Simulated seconds since the epoch."""
        return (self._clock() - self._start) * self.config.speed

    def source_url(self, name: str) -> str:
        return f"http://{self.config.host}:{self.port}/{name}/v1"

    async def start(self) -> None:
        """Serve; the simulated clock starts now."""
        if self._runner is not None:
            return
        self._start = self._clock()
        app = web.Application(middlewares=[self._auth, self._faults])
        app.add_routes([
            web.get("/{source}/v1/batches", self._list),
            web.get("/{source}/v1/batches/{batch_id}", self._get),
            web.get("/_sim/truth", self._truth),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        log.info("simulator serving %d sources x %d batches on port %d (speed x%g)",
                 len(self.sources), self.config.batches, self.port, self.config.speed)

    async def stop(self) -> None:
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
        guarded = self._api_key and not request.path.startswith("/_sim/")
        if guarded and request.headers.get("Authorization") != f"Bearer {self._api_key}":
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        source = request.match_info.get("source")
        if source is not None and not request.path.startswith("/_sim/"):
            self.faults.check_early(source)
            fault = self.faults.pick()
            if fault is not None:
                return await self.faults.answer(fault, source, request)
        response: web.StreamResponse = await handler(request)
        return response

    def _source(self, request: web.Request) -> SimSource:
        source = self.sources.get(request.match_info["source"])
        if source is None:
            raise web.HTTPNotFound(text=f"no simulated source {request.match_info['source']!r}")
        return source

    async def _list(self, request: web.Request) -> web.Response:
        source, t = self._source(request), self.now()
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _error(400, "invalid_limit", "limit must be an integer")
        if not 1 <= limit <= 100:
            return _error(400, "invalid_limit", "limit must be between 1 and 100")
        visible = source.visible(t)
        start = 0
        after = request.query.get("after")
        if after:
            ids = [b.id for b in visible]
            if after not in ids:
                return _error(400, "invalid_after", f"No batch found with id '{after}'.")
            start = ids.index(after) + 1
        page = [source.serve(b, t, self.epoch) for b in visible[start:start + limit]]
        return web.json_response({
            "object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(visible),
        })

    async def _get(self, request: web.Request) -> web.Response:
        source, t = self._source(request), self.now()
        batch = source.by_id.get(request.match_info["batch_id"])
        if batch is None or batch.created > t:
            return _error(404, None, f"No batch found with id '{request.match_info['batch_id']}'.")
        return web.json_response(source.serve(batch, t, self.epoch))

    async def _truth(self, request: web.Request) -> web.Response:
        return web.json_response(self.truth())

    def truth(self) -> dict[str, Any]:
        """Ground truth at this instant, for tests and benchmarks."""
        t = self.now()
        batches = []
        for source in self.sources.values():
            for b in source.fleet:
                batches.append({
                    "source": source.name, "batch_id": b.id, "final_status": b.final_status,
                    "status": b.status_at(t), "created_at": int(self.epoch + b.created),
                    "transitions": [{"status": s, "at": int(self.epoch + at)} for s, at in b.timeline],
                    "served": list(source.served.get(b.id, [])),
                })
        all_terminal = all(b["status"] in TERMINAL for b in batches)
        return {"now": int(self.epoch + t), "all_terminal": all_terminal, "batches": batches,
                "faults": self.faults.report()}


def _error(status: int, code: str | None, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.json_response(body, status=status)
