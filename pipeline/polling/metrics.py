"""Per-source poller metrics, rendered in the Prometheus text exposition format, and health.

The server answers ``GET /metrics`` with 200 always (Prometheus must scrape exactly when things go
wrong) and ``GET /health`` with 200, or 503 and one line naming what is wrong: for the poller, a
source that completed no cycle for ``pipeline.stale_intervals`` poll intervals (counted from the
start while it never completed one). ``batchscope health``, the containers' healthcheck, GETs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger(__name__)

REPORT_EVERY = 10.0  # seconds between two progress lines of a long-running command


@dataclass(slots=True)
class SourceMetrics:
    """What one source's poller did; read by the cycle summary and ``/metrics``."""

    source: str
    provider: str
    requests: Counter[str] = field(default_factory=Counter)  # by outcome: ok, retried, failed
    errors: Counter[str] = field(default_factory=Counter)  # by class: http_429, http_5xx, timeout, ...
    retries: int = 0
    cycles: int = 0
    observations: int = 0
    vanished: int = 0  # active batches the provider stopped returning
    purged: int = 0  # terminal batches the provider stopped returning
    list_pages: int = 0  # list requests of finished cycles (discovery and refresh)
    gets: int = 0  # single-batch requests of finished cycles (refreshes)
    hints: int = 0  # webhook hints handled (pipeline/polling/hints.py)
    hint_gets: int = 0  # single-batch requests for hints
    hints_known: int = 0  # hints for a batch known terminal: no request
    # results files (the results reader) by outcome: read, or why no usage came of it
    results: Counter[str] = field(default_factory=Counter)
    tracked: int = 0
    active: int = 0
    breaker_state: str = "closed"
    breaker_opened: int = 0
    last_success: float | None = None  # monotonic time of the last successful cycle
    poll_interval: float = 30.0
    started: float = field(default_factory=time.monotonic)  # when polling started

    def lag(self, now: float) -> float | None:
        return None if self.last_success is None else now - self.last_success

    def stale_for(self, now: float, intervals: int) -> float | None:
        """Seconds without a completed cycle, when that is over ``intervals`` poll intervals."""
        idle = now - (self.started if self.last_success is None else self.last_success)
        return idle if idle > intervals * self.poll_interval else None


MAX_NAMED = 5  # stale sources named in the health line


def stale_reason(all_metrics: list[SourceMetrics], intervals: int,
                 clock: Callable[[], float] = time.monotonic) -> str | None:
    """None when every source completed a cycle within ``intervals`` of its poll intervals;
    otherwise one line naming the stale sources."""
    now = clock()
    stale = [(m.source, idle) for m in all_metrics if (idle := m.stale_for(now, intervals)) is not None]
    if not stale:
        return None
    named = ", ".join(f"{name} ({idle:.0f}s)" for name, idle in stale[:MAX_NAMED])
    more = f" and {len(stale) - MAX_NAMED} more" if len(stale) > MAX_NAMED else ""
    return (f"{len(stale)} source(s) completed no poll cycle for over {intervals} poll intervals: "
            f"{named}{more}")


BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


def family_lines(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    """One metric family in the Prometheus text format: ``samples`` are (labels, value), the
    labels already rendered (:func:`labels`)."""
    return [f"# HELP batchscope_{name} {help_text}", f"# TYPE batchscope_{name} {kind}",
            *(f"batchscope_{name}{{{labels}}} {value:g}" for labels, value in samples)]


def labels(**pairs: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def render(all_metrics: list[SourceMetrics], extra: dict[str, float] | None = None,
           clock: Callable[[], float] = time.monotonic) -> str:
    """The Prometheus text format for every source."""
    now = clock()
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend(family_lines(name, kind, help_text, samples))

    def lab(m: SourceMetrics, **more: str) -> str:
        return labels(source=m.source, provider=m.provider, **more)

    family("poller_requests_total", "counter", "HTTP requests by outcome",
           [(lab(m, outcome=o), n) for m in all_metrics for o, n in sorted(m.requests.items())])
    family("poller_errors_total", "counter", "errors by class (requests, bodies, paging, Kafka, unexpected)",
           [(lab(m, error=c), n) for m in all_metrics for c, n in sorted(m.errors.items())])
    family("poller_retries_total", "counter", "requests retried",
           [(lab(m), m.retries) for m in all_metrics])
    family("poller_cycles_total", "counter", "completed poll cycles",
           [(lab(m), m.cycles) for m in all_metrics])
    family("poller_observations_total", "counter", "batch observations published",
           [(lab(m), m.observations) for m in all_metrics])
    family("poller_vanished_total", "counter", "active batches the provider stopped returning",
           [(lab(m), m.vanished) for m in all_metrics])
    family("poller_purged_total", "counter", "terminal batches the provider stopped returning",
           [(lab(m), m.purged) for m in all_metrics])
    family("poller_list_pages_total", "counter", "list pages requested (calls per cycle: with gets / cycles)",
           [(lab(m), m.list_pages) for m in all_metrics])
    family("poller_batch_gets_total", "counter", "single batches requested by the refresh schedule",
           [(lab(m), m.gets) for m in all_metrics])
    family("poller_hints_total", "counter", "webhook hints handled",
           [(lab(m), m.hints) for m in all_metrics])
    family("poller_hint_gets_total", "counter", "single batches requested for a webhook hint",
           [(lab(m), m.hint_gets) for m in all_metrics])
    family("poller_hints_known_total", "counter", "webhook hints for a batch known terminal (no request)",
           [(lab(m), m.hints_known) for m in all_metrics])
    family("poller_results_total", "counter",
           "results files by outcome: read (usage published), unreadable, too_large, failed, gone",
           [(lab(m, outcome=o), n) for m in all_metrics for o, n in sorted(m.results.items())])
    family("poller_batches_tracked", "gauge", "batches known", [(lab(m), m.tracked) for m in all_metrics])
    family("poller_batches_active", "gauge", "batches not yet terminal",
           [(lab(m), m.active) for m in all_metrics])
    family("poller_breaker_state", "gauge", "circuit breaker: 0 closed, 1 half-open, 2 open",
           [(lab(m), BREAKER_CODES[m.breaker_state]) for m in all_metrics])
    family("poller_breaker_opened_total", "counter", "times the circuit breaker opened",
           [(lab(m), m.breaker_opened) for m in all_metrics])
    family("poller_lag_seconds", "gauge", "seconds since the last successful cycle",
           [(lab(m), lag) for m in all_metrics if (lag := m.lag(now)) is not None])
    for name, value in sorted((extra or {}).items()):
        family(name, "gauge", name.replace("_", " "), [("", value)])
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """Serves ``GET /metrics`` (Prometheus) and ``GET /health`` (``health`` returns None when
    healthy, else the reason; no ``health``: always healthy) on loopback or the configured host."""

    def __init__(self, host: str, port: int, source: Callable[[], str],
                 health: Callable[[], str | None] | None = None) -> None:
        self._host, self._port, self._source = host, port, source
        self._health = health
        self._runner: web.AppRunner | None = None
        self.url = self.health_url = ""

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/health", self._health_check)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/metrics"
        self.health_url = f"http://{host}:{port}/health"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self._source(), content_type="text/plain", charset="utf-8")

    async def _health_check(self, request: web.Request) -> web.Response:
        reason = self._health() if self._health is not None else None
        if reason is None:
            return web.Response(text="ok\n", content_type="text/plain", charset="utf-8")
        return web.Response(status=503, text=reason.replace("\n", " ") + "\n", content_type="text/plain",
                            charset="utf-8")


async def start_metrics(server: MetricsServer) -> None:
    """Metrics are worth having, not worth failing the pipeline for (e.g. the port is taken)."""
    try:
        await server.start()
    except OSError as exc:
        log.warning("metrics endpoint not started: %s (set pipeline.metrics_port)", exc)
        return
    log.info("metrics on %s", server.url)


async def report_every(seconds: float, line: Callable[[], str]) -> None:
    """Log ``line()`` at INFO every ``seconds``, until cancelled (the progress of a long command)."""
    while True:
        await asyncio.sleep(seconds)
        log.info("%s", line())
