"""The alerts service: ``<prefix>.changes`` in its own consumer group -> the rules -> Slack or a
signed webhook, each (rule, event) delivered once.

Per fetched batch of change events: each event is matched against every rule; a match not in
the :class:`~pipeline.alerts.ledger.Ledger` is sent at once, or held for its rule's digest when
it is part of a burst (:class:`~pipeline.alerts.digest.Bursts`). A delivered alert is written to
the ledger; then the offsets are committed, never past an alert held for a digest not yet
delivered (a restart reads it again and holds it again). A change event that is not a JSON
object, and an alert its destination would not take after every retry, go to ``<prefix>.dlq``
with the reason, and the stream goes on. Counters by rule: sent, deduplicated, digested, failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from pipeline.alerts.deliver import Courier, Target
from pipeline.alerts.digest import Bursts
from pipeline.alerts.ledger import Ledger, ledger_key
from pipeline.alerts.messages import (
    Alert,
    Digest,
    signing_key,
    slack_alert,
    slack_digest,
    webhook_alert,
    webhook_digest,
)
from pipeline.alerts.rules import team_of
from pipeline.config import KafkaConfig, Settings
from pipeline.core.dlq import dead_letter, dlq_key, source_of
from pipeline.core.errors import ConfigError
from pipeline.kafka import ALERTS_SENT, ensure_topics
from pipeline.polling.metrics import family_lines, labels
from pipeline.polling.retry import RetryPolicy

log = logging.getLogger(__name__)

STAGE = "alerts"
TICK = 0.5  # seconds between two looks at the digests due, while no record comes


@dataclass(slots=True)
class AlertCounts:
    sent: Counter[str] = field(default_factory=Counter)  # messages delivered, by rule
    deduplicated: Counter[str] = field(default_factory=Counter)  # already delivered before
    digested: Counter[str] = field(default_factory=Counter)  # alerts sent inside a digest
    failed: Counter[str] = field(default_factory=Counter)  # given up: dead-lettered
    malformed: int = 0  # change events that are not JSON objects

    def exposition(self) -> str:
        """The counters by rule in the Prometheus text format (``/metrics``)."""
        def by_rule(counts: Counter[str]) -> list[tuple[str, float]]:
            return [(labels(rule=r), n) for r, n in sorted(counts.items())]

        lines = [*family_lines("alerts_sent_total", "counter", "alert and digest messages delivered",
                               by_rule(self.sent)),
                 *family_lines("alerts_deduplicated_total", "counter",
                               "alerts not sent again: delivered before (read again after a restart)",
                               by_rule(self.deduplicated)),
                 *family_lines("alerts_digested_total", "counter", "alerts delivered inside a digest",
                               by_rule(self.digested)),
                 *family_lines("alerts_failed_total", "counter",
                               "alerts given up after every retry (dead-lettered)", by_rule(self.failed)),
                 *family_lines("alerts_malformed_events_total", "counter",
                               "change events that are not JSON objects (dead-lettered)",
                               [("", self.malformed)])]
        return "\n".join(lines) + "\n"

    def line(self) -> str:
        return (f"alerts: sent {sum(self.sent.values())}, digested {sum(self.digested.values())}, "
                f"deduplicated {sum(self.deduplicated.values())}, failed {sum(self.failed.values())}, "
                f"malformed events {self.malformed}")


def message_of(target: Target, alert: Alert | Digest) -> tuple[str, dict[str, Any]]:
    """(the message id, the message) for ``alert`` at ``target``'s kind of destination."""
    slack = target.rule.destination == "slack"
    if isinstance(alert, Digest):
        return alert.digest_id, slack_digest(alert) if slack else webhook_digest(alert)
    return alert.event_id, slack_alert(alert) if slack else webhook_alert(alert)


class Record(Protocol):
    """What the service reads of a changes record (aiokafka's ``ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a running service talks to: the producer (ledger, dead letters), the ledger, the courier."""

    producer: AIOKafkaProducer
    ledger: Ledger
    courier: Courier


class AlertService:
    """One consumer of the changes topic, its targets, the ledger and the bursts."""

    def __init__(self, config: KafkaConfig, targets: list[Target],
                 source_tags: Mapping[str, Mapping[str, str]], team_key: str, *, group: str | None = None,
                 from_start: bool = False, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._targets = {t.rule.name: t for t in targets}
        self._rules = tuple(t.rule for t in targets)
        self._tags = source_tags
        self._team_key = team_key
        self._group = group or f"{config.app_id}-alerts"
        self._from_start = from_start
        self._policy = policy
        self._clock = clock
        self._bursts = Bursts(self._rules)
        self._held: dict[TopicPartition, list[int]] = defaultdict(list)  # offsets of held alerts
        self._read: dict[TopicPartition, int] = {}  # the next offset to commit when nothing is held
        self._committed: dict[TopicPartition, int] = {}
        # (rule, event id) -> where the change event of an alert held for a digest is
        self._holding: dict[tuple[str, str], tuple[TopicPartition, Record]] = {}
        self.counts = AlertCounts()

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self._config, ("changes", "dlq", ALERTS_SENT))
        producer = AIOKafkaProducer(bootstrap_servers=self._config.bootstrap, acks="all",
                                    enable_idempotence=True)
        consumer = AIOKafkaConsumer(self._config.topic("changes"), bootstrap_servers=self._config.bootstrap,
                                    group_id=self._group, enable_auto_commit=False,
                                    auto_offset_reset="earliest" if self._from_start else "latest")
        await producer.start()
        try:
            ledger = Ledger(self._config, producer)
            await ledger.load()
            await consumer.start()
            async with aiohttp.ClientSession() as session:
                courier = Courier(session, self._policy)
                try:
                    await self._loop(consumer, Wiring(producer, ledger, courier), stop)
                finally:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
        finally:
            await producer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer, wired: Wiring, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=int(TICK * 1000), max_records=500)
            for tp, records in fetched.items():
                for record in records:
                    await self._handle(record, tp, wired)
                    self._read[tp] = record.offset + 1
            for digest in self._bursts.due(self._clock()):
                await self._send_digest(digest, wired)
            await self._commit(consumer)

    async def _handle(self, record: Record, tp: TopicPartition, wired: Wiring) -> None:
        try:
            event = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            self.counts.malformed += 1
            mark = f"dead/{record.partition}/{record.offset}"  # read again behind a held alert: once
            if mark not in wired.ledger:
                await self._dead(wired, record, "the change event is not a JSON object")
                await wired.ledger.record([mark], "dead letter")
            return
        team = team_of(event, self._tags, self._team_key)
        for rule in self._rules:
            if not rule.matches(event, team):
                continue
            alert = Alert(rule.name, event, team)
            if ledger_key(rule.name, alert.event_id) in wired.ledger:
                self.counts.deduplicated[rule.name] += 1
            elif self._bursts.admit(alert, self._clock()):
                await self._send(alert, wired, record)
            else:
                self._held[tp].append(record.offset)
                self._holding[(rule.name, alert.event_id)] = (tp, record)

    async def _send(self, alert: Alert, wired: Wiring, record: Record) -> None:
        target = self._targets[alert.rule]
        msg_id, message = message_of(target, alert)
        failure = await wired.courier.deliver(target, msg_id, message)
        if failure is None:
            self.counts.sent[alert.rule] += 1
        else:
            self.counts.failed[alert.rule] += 1
            log.warning("alerts: rule %s: event %s not delivered: %s", alert.rule, alert.event_id, failure)
            await self._dead(wired, record, f"alert of rule {alert.rule} not delivered: {failure}")
        await wired.ledger.record([ledger_key(alert.rule, alert.event_id)], msg_id)

    async def _send_digest(self, digest: Digest, wired: Wiring) -> None:
        target = self._targets[digest.rule]
        msg_id, message = message_of(target, digest)
        failure = await wired.courier.deliver(target, msg_id, message)
        members = [(digest.rule, a.event_id) for a in digest.alerts]
        if failure is None:
            self.counts.sent[digest.rule] += 1
            self.counts.digested[digest.rule] += len(digest.alerts)
        else:
            self.counts.failed[digest.rule] += len(digest.alerts)
            log.warning("alerts: rule %s: a digest of %d alerts not delivered: %s", digest.rule,
                        len(digest.alerts), failure)
            for member in members:
                _, record = self._holding[member]
                await self._dead(wired, record, f"digest of rule {digest.rule} not delivered: {failure}")
        await wired.ledger.record([ledger_key(*m) for m in members], msg_id)
        for member in members:
            tp, record = self._holding.pop(member)
            self._held[tp].remove(record.offset)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit what was read, never past an alert held for a digest."""
        offsets = {tp: min([offset, *self._held.get(tp, ())]) for tp, offset in self._read.items()}
        moved = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        if moved:
            await consumer.commit(moved)
            self._committed.update(moved)

    async def _dead(self, wired: Wiring, record: Record, reason: str) -> None:
        value = dead_letter(reason=reason, stage=STAGE, topic=record.topic, partition=record.partition,
                            offset=record.offset, original=record.value, key=record.key,
                            source=source_of(record.key))
        await (await wired.producer.send(self._config.topic("dlq"), value=value, key=dlq_key(record.key)))


def targets_of(settings: Settings) -> list[Target]:
    """Each rule with its destination's secrets (loaded with ``Secrets.ALERT_SECRETS``)."""
    out = []
    for rule in settings.alerts:
        url, key = settings.alert_secrets[rule.name]
        try:
            signing = signing_key(key.reveal()) if key is not None else None
        except ConfigError as exc:
            raise ConfigError(f"alerts rule {rule.name!r}: {exc}") from None
        out.append(Target(rule, url, signing))
    return out


def service_of(settings: Settings) -> AlertService:
    """The service of the settings' rules (``batchscope alerts``, and ``run`` when rules exist)."""
    if not settings.alerts:
        raise ConfigError("alerts: no rule configured; add an [[alerts]] table (docs/alerts.md)")
    tags = {s.name: dict(s.tags) for s in settings.sources}
    a = settings.alerting
    return AlertService(settings.kafka, targets_of(settings), tags, settings.spend.team_key,
                        from_start=a.from_start, policy=RetryPolicy(max_attempts=a.max_attempts))


SAMPLE = {"event_id": "00000000-0000-5000-8000-000000000000", "kind": "status_changed",
          "from_status": "in_progress", "to_status": "failed", "source": "batchscope-test",
          "provider": "openai", "batch_id": "batch_test", "at": "2026-01-01T00:00:00.000Z",
          "observed_at": "2026-01-01T00:00:00.000Z",
          "snapshot": {"model": "gpt-4o-mini", "requests_total": 100, "requests_completed": 60,
                       "requests_failed": 40, "metadata": {}}, "schema_version": 1}


async def send_test(settings: Settings, rule_name: str) -> str | None:
    """Send a sample alert to ``rule_name``'s destination (its rule's criteria are not applied);
    None once delivered, else why not."""
    target = next((t for t in targets_of(settings) if t.rule.name == rule_name), None)
    if target is None:
        known = ", ".join(r.name for r in settings.alerts) or "none"
        raise ConfigError(f"alerts: no rule named {rule_name!r} (configured: {known})")
    alert = Alert(rule_name, SAMPLE, "batchscope-test")
    _, message = message_of(target, alert)
    async with aiohttp.ClientSession() as session:
        courier = Courier(session, RetryPolicy(max_attempts=settings.alerting.max_attempts))
        return await courier.deliver(target, f"test-{int(time.time())}", message)
