"""The webhook receiver: provider pushes in, verified hints out to ``<prefix>.hints``.

One aiohttp server for every source with a webhook secret, each on its own path
(``webhook_path``, default ``/webhooks/<name>``). A request is answered 2xx only once its hint is
in Kafka, acknowledged by every in-sync replica (``acks=all``): the provider redelivers anything
else, so an event is never lost, even while the poller is down (the hint waits in the topic).
Every other request is refused, and counted by reason (``batchscope_webhooks_refused_total``):

- ``method`` (405): not a POST; ``unknown_path`` (404): no source takes webhooks there;
- ``too_large`` (413): a body over ``webhooks.max_body_kib``, refused before it is read whole;
- ``missing_headers``, ``bad_timestamp``, ``stale_timestamp`` (400) and ``bad_signature`` (401):
  :func:`pipeline.core.webhooks.verify` (constant-time, two secrets during a rotation);
- ``not_json``, ``not_an_event`` (400): a verified body that is not a thin event.

A verified event of another type than a batch's end is answered 200 and not published
(``ignored``). A ``webhook-id`` seen before on the source is answered 200 and not published again
(``duplicates``): the receiver remembers the last ``webhooks.recent_ids`` ids per source (100,000
by default: at a few hundred batches an hour, weeks of redeliveries); a redelivery older than that,
or one after a restart, is published again, and costs the poller nothing (a hint for a batch it
knows terminal makes no call). When Kafka does not acknowledge, the answer is 503 and the
provider retries. No log line, answer or record carries a secret or a signature.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.config import Settings, SourceConfig, WebhooksConfig
from pipeline.core import webhooks as wh
from pipeline.core.errors import BatchscopeError
from pipeline.kafka import ensure_topics, start_producer
from pipeline.polling.metrics import MetricsServer, start_metrics

log = logging.getLogger(__name__)

KIB = 1024
CHUNK = 16 * KIB
# Refusals that are not about the signed content.
METHOD, UNKNOWN_PATH, TOO_LARGE = "method", "unknown_path", "too_large"
STATUS = {METHOD: 405, UNKNOWN_PATH: 404, TOO_LARGE: 413, wh.BAD_SIGNATURE: 401}


class RecentIds:
    """The last ``bound`` webhook-ids of one source, oldest forgotten first."""

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, msg_id: str) -> None:
        self._ids[msg_id] = None
        self._ids.move_to_end(msg_id)
        while len(self._ids) > self._bound:
            self._ids.popitem(last=False)


@dataclass
class Route:
    """One source's webhooks: its keys and the ids it has published."""

    source: SourceConfig
    keys: tuple[bytes, ...]
    recent: RecentIds
    in_flight: dict[str, asyncio.Future[None]] = field(default_factory=dict)


class Receiver:
    """``async with Receiver(settings):`` serves every source of ``settings`` that has a webhook
    secret (read with ``Secrets.WEBHOOK_SECRETS``)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 producer: AIOKafkaProducer | None = None) -> None:
        self.settings = settings
        self.config: WebhooksConfig = settings.webhooks
        self._clock = clock
        self._topic = settings.kafka.topic("hints")
        self._producer = producer
        self._owns_producer = producer is None
        self.routes = {s.hook_path: _route(s, self.config.recent_ids) for s in settings.sources if s.webhooks}
        self.refused: Counter[tuple[str, str]] = Counter()  # (source or "", reason)
        self.accepted: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.unavailable: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = self.config.port

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._producer is None:
            self._producer = await start_producer(self.settings.kafka)
        app = web.Application(client_max_size=self.config.max_body_kib * KIB + 1)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        except OSError as exc:
            await self.stop()
            raise BatchscopeError(f"webhooks: cannot listen on {self.config.host}:{self.config.port}: "
                                  f"{exc.strerror or exc} (set webhooks.host and webhooks.port)") from None
        self.port = int(self._runner.addresses[0][1])
        log.info("webhook receiver on %s:%d for %d sources: %s", self.config.host, self.port,
                 len(self.routes), ", ".join(f"{r.source.name} {p}" for p, r in self.routes.items()))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._producer is not None and self._owns_producer:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        route = self.routes.get(request.path)
        if request.method != "POST":
            return self._refuse(route, METHOD)
        if route is None:
            return self._refuse(None, UNKNOWN_PATH)
        body = await _read_capped(request, self.config.max_body_kib * KIB)
        if body is None:
            return self._refuse(route, TOO_LARGE)
        try:
            signed = wh.verify(route.keys, request.headers, body, self._clock(), self.config.tolerance)
            event = wh.read_event(body, route.source.provider)
        except wh.Refused as refusal:
            return self._refuse(route, refusal.reason)
        name = route.source.name
        if event is None:
            self.ignored[name] += 1
            return _answer(200, "ignored: not a batch event")
        hint = wh.Hint(name, route.source.provider, event.batch_id, event.type, signed.msg_id, self._clock())
        return await self._publish_once(route, hint)

    async def _publish_once(self, route: Route, hint: wh.Hint) -> web.Response:
        """Publish ``hint`` unless its webhook-id was published (or is being published) already."""
        name, msg_id = route.source.name, hint.webhook_id
        pending = route.in_flight.get(msg_id)
        if pending is not None:  # the same delivery twice at once: answer as the first does
            await asyncio.shield(pending)
        if msg_id in route.recent:
            self.duplicates[name] += 1
            return _answer(200, "duplicate")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        route.in_flight[msg_id] = done
        try:
            await self._send(hint)
        except KafkaError as exc:
            self.unavailable[name] += 1
            log.warning("webhooks: source %s: the hint for %s was not published (%s): answered 503, "
                        "the provider will retry", name, hint.batch_id, type(exc).__name__)
            return _answer(503, "not stored, retry later")
        finally:
            del route.in_flight[msg_id]
            done.set_result(None)
        route.recent.add(msg_id)
        self.accepted[name] += 1
        return _answer(200, "ok")

    async def _send(self, hint: wh.Hint) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(self._topic, value=hint.to_json(), key=hint.key.encode())

    def _refuse(self, route: Route | None, reason: str) -> web.Response:
        source = route.source.name if route is not None else ""
        self.refused[(source, reason)] += 1
        log.debug("webhooks: refused (%s) for %s", reason, source or "an unknown path")
        return _answer(STATUS.get(reason, 400), f"refused: {reason}")

    def metrics_text(self) -> str:
        """The receiver's counters in the Prometheus text format (appended to ``/metrics``)."""
        lines: list[str] = []

        def family(name: str, help_text: str, samples: list[tuple[str, int]]) -> None:
            lines.extend([f"# HELP batchscope_webhooks_{name} {help_text}",
                          f"# TYPE batchscope_webhooks_{name} counter"])
            lines.extend(f"batchscope_webhooks_{name}{{{labels}}} {value}" for labels, value in samples)

        def per_source(counts: Counter[str]) -> list[tuple[str, int]]:
            return [(f'source="{r.source.name}"', counts[r.source.name]) for r in self.routes.values()]

        family("refused_total", "webhook requests refused, by reason",
               [(f'source="{s}",reason="{r}"', n) for (s, r), n in sorted(self.refused.items())])
        family("accepted_total", "verified batch events published to the hints topic",
               per_source(self.accepted))
        family("duplicates_total", "redelivered webhook-ids answered 2xx, not published again",
               per_source(self.duplicates))
        family("ignored_total", "verified events of other types, answered 2xx", per_source(self.ignored))
        family("unavailable_total", "events answered 503: Kafka did not acknowledge the hint",
               per_source(self.unavailable))
        return "\n".join(lines) + "\n"


def _route(source: SourceConfig, recent_ids: int) -> Route:
    if source.webhook_secret is None:
        raise ValueError(f"source {source.name}: its webhook secret was not read")
    return Route(source, wh.secret_keys(source.webhook_secret), RecentIds(recent_ids))


async def _read_capped(request: web.Request, cap: int) -> bytes | None:
    """The body, or None once it is over ``cap`` bytes (announced or read so far)."""
    if request.content_length is not None and request.content_length > cap:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(CHUNK):
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


async def serve(settings: Settings, on_stop: Callable[[Callable[[], None]], None]) -> None:
    """``batchscope webhooks``: the receiver with ``/metrics`` and ``/health`` on
    ``pipeline.metrics_port``, until the callback ``on_stop`` registers is called."""
    await ensure_topics(settings.kafka, ("hints",))
    stop = asyncio.Event()
    on_stop(stop.set)
    p = settings.pipeline
    async with Receiver(settings) as receiver:
        metrics = MetricsServer(p.metrics_host, p.metrics_port, receiver.metrics_text)
        await start_metrics(metrics)
        try:
            await stop.wait()
        finally:
            await metrics.stop()
