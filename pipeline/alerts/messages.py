"""What an alert says: a Slack Block Kit message, or a JSON body signed with the Standard Webhooks
scheme, for one change event or for a digest of many.

Standard Webhooks (https://www.standardwebhooks.com/): headers ``webhook-id`` (the idempotency
key: the event id, or the digest's id), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
base64-decoded secret after its ``whsec_`` prefix, so any Standard Webhooks library verifies it.
Pure: the secret is handed in, the time too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.errors import ConfigError
from pipeline.core.webhooks import decode_secret, sign

# Where a provider's console shows one batch (only where the page is known to exist).
CONSOLE = {"openai": "https://platform.openai.com/batches/{batch_id}"}
EMOJI = {"failed": ":x:", "expired": ":hourglass:", "cancelled": ":no_entry_sign:",
         "completed": ":warning:", "expiry_risk": ":alarm_clock:", "stalled": ":zzz:"}


@dataclass(frozen=True, slots=True)
class Alert:
    """One change event a rule matched, with its team."""

    rule: str
    event: Mapping[str, Any]
    team: str

    @property
    def event_id(self) -> str:
        return str(self.event.get("event_id"))

    @property
    def status(self) -> str:
        """What the alert is about: the new status, or the event's kind."""
        return str(self.event.get("to_status") or self.event.get("kind"))


@dataclass(frozen=True, slots=True)
class Digest:
    """A burst of one rule's alerts, as one message: the first ``listed``, the total, and the
    breakdown by source and status. Its id names the rule and its first and last event."""

    rule: str
    alerts: tuple[Alert, ...]
    listed: int

    @property
    def digest_id(self) -> str:
        first, last = self.alerts[0].event_id, self.alerts[-1].event_id
        return f"digest:{self.rule}:{len(self.alerts)}:{first}:{last}"

    def breakdown(self) -> list[tuple[str, str, int]]:
        """(source, status, count), most first."""
        counts = Counter((str(a.event.get("source")), a.status) for a in self.alerts)
        return [(s, st, n) for (s, st), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def console_url(event: Mapping[str, Any]) -> str | None:
    template = CONSOLE.get(str(event.get("provider")))
    return template.format(batch_id=event.get("batch_id")) if template else None


def summary(alert: Alert) -> str:
    """One line: what happened to which batch."""
    e = alert.event
    snap = e.get("snapshot") or {}
    counts = (f"{snap.get('requests_completed') or 0}/{snap.get('requests_total') or 0} done, "
              f"{snap.get('requests_failed') or 0} failed")
    risk = (f"will likely expire before it finishes (projected {e.get('projected_finish_at')}, "
            f"expires {snap.get('expires_at')})")
    stalled = f"has not moved for {e.get('stalled_seconds')} s"
    what = {"expiry_risk": risk, "stalled": stalled}.get(str(e.get("kind")), f"is {alert.status}")
    return f"batch {e.get('batch_id')} on {e.get('source')} ({e.get('provider')}) {what}: {counts}"


def slack_alert(alert: Alert) -> dict[str, Any]:
    """A Block Kit message for one alert: the batch, source, team, status, counts, and a link to
    the provider console where there is one."""
    e = alert.event
    snap = e.get("snapshot") or {}
    icon = EMOJI.get(str(e.get("kind")), EMOJI.get(alert.status, ":bell:"))
    fields = [("Batch", f"`{e.get('batch_id')}`"), ("Source", f"{e.get('source')} ({e.get('provider')})"),
              ("Team", alert.team), ("Status", alert.status), ("Model", str(snap.get("model") or "-")),
              ("Requests", f"{snap.get('requests_completed') or 0} done, {snap.get('requests_failed') or 0} "
                           f"failed of {snap.get('requests_total') or 0}")]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{_escape(summary(alert))}*"}},
        {"type": "section",
         "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_escape(v)}"} for k, v in fields]},
    ]
    link = console_url(e)
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in console"}, "url": link}]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn",
         "text": f"rule `{_escape(alert.rule)}` · event `{alert.event_id}` · at {e.get('at')}"}]})
    return {"text": summary(alert), "blocks": blocks}


def slack_digest(digest: Digest) -> dict[str, Any]:
    """One Block Kit message for a burst: the first batches, the total, the breakdown."""
    total = len(digest.alerts)
    head = f":rotating_light: *{total} alerts of rule `{_escape(digest.rule)}` in one burst*"
    lines = [f"• `{a.event.get('batch_id')}` {a.event.get('source')}: {a.status}"
             for a in digest.alerts[:digest.listed]]
    if total > digest.listed:
        lines.append(f"… and {total - digest.listed} more")
    table = "\n".join(f"{src}: {status}: {n}" for src, status, n in digest.breakdown())
    return {"text": f"{total} alerts of rule {digest.rule} in one burst", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape("\n".join(lines))}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*By source and status*\n" + _escape(table)}},
    ]}


def webhook_alert(alert: Alert) -> dict[str, Any]:
    """The generic webhook's JSON for one alert: the change event itself, with the rule and team."""
    return {"type": "batchscope.alert", "rule": alert.rule, "team": alert.team,
            "event_id": alert.event_id, "summary": summary(alert), "event": dict(alert.event)}


def webhook_digest(digest: Digest) -> dict[str, Any]:
    return {"type": "batchscope.digest", "rule": digest.rule, "digest_id": digest.digest_id,
            "total": len(digest.alerts),
            "event_ids": [a.event_id for a in digest.alerts[:digest.listed]],
            "batches": [{"source": a.event.get("source"), "batch_id": a.event.get("batch_id"),
                         "status": a.status, "team": a.team} for a in digest.alerts[:digest.listed]],
            "breakdown": [{"source": s, "status": st, "count": n} for s, st, n in digest.breakdown()]}


def body(message: Mapping[str, Any]) -> bytes:
    return orjson.dumps(message)


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64, :mod:`pipeline.core.webhooks`);
    a :class:`ConfigError` that does not show the secret when it is malformed or too short."""
    try:
        key = decode_secret(secret)
    except ValueError as exc:
        raise ConfigError(f"the signing key: {exc}") from None
    if len(key) < 16:
        raise ConfigError("the signing key is shorter than 16 bytes (not shown)")
    return key


def signed_headers(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of ``payload`` (:func:`pipeline.core.webhooks.sign`), as JSON."""
    return {**sign(key, msg_id, timestamp, payload), "content-type": "application/json"}


def _escape(text: str) -> str:
    """Slack mrkdwn's three control characters (a batch id or a model name is provider data)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
