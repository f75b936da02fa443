"""Standard Webhooks, pure: verify a signed provider event, read its thin payload, and the hint record.

OpenAI, Azure OpenAI and the Gemini API sign their webhooks with the Standard Webhooks scheme
(https://www.standardwebhooks.com): headers ``webhook-id``, ``webhook-timestamp`` (unix seconds)
and ``webhook-signature``, a space-separated list of ``v1,<base64>`` values, each an HMAC-SHA256
over ``"{id}.{timestamp}.{body}"`` keyed with the base64-decoded secret after its ``whsec_``
prefix. A request is accepted when any listed ``v1`` value matches any of the source's secrets
(two at once during a rotation), compared in constant time, and its timestamp is within the
tolerance of now, before or after. Nothing here logs, and no message carries a secret or a
signature: a refusal names its reason only.

The payload is thin, ``{id, object: "event", created_at, type, data: {id}}``: it says which batch
ended, not how; the poller fetches the batch itself (:class:`Hint` is what goes to
``<prefix>.hints``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.secret import Secret

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0  # seconds a timestamp may be off now, either way
MAX_ID = 256  # characters of a webhook-id (providers send about 30)
MAX_SIGNATURES = 16  # values in one webhook-signature header
MAX_BATCH_ID = 512
# Event types that name a batch which reached a terminal status, per provider.
BATCH_EVENTS: Mapping[str, frozenset[str]] = {
    "openai": frozenset({"batch.completed", "batch.failed", "batch.cancelled", "batch.expired"}),
    "azure_openai": frozenset({"batch.completed", "batch.failed", "batch.cancelled", "batch.expired"}),
    # Gemini's static webhooks: batch.succeeded and batch.failed (its SDK also lists cancelled, expired).
    "gemini": frozenset({"batch.succeeded", "batch.failed", "batch.cancelled", "batch.expired"}),
}
GEMINI_BATCH = "batches/"

# Refusal reasons: each is a counter label of the receiver (batchscope_webhooks_refused_total).
MISSING_HEADERS = "missing_headers"
BAD_TIMESTAMP = "bad_timestamp"
STALE = "stale_timestamp"
BAD_SIGNATURE = "bad_signature"
NOT_JSON = "not_json"
NOT_AN_EVENT = "not_an_event"


class Refused(Exception):
    """A webhook request refused; ``reason`` is one of the reason constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Signed:
    """The three Standard Webhooks headers of a request."""

    msg_id: str
    timestamp: str
    signatures: str

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Signed:
        """From a request's headers (names compared case-insensitively by the caller's mapping)."""
        values = [headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")]
        if not all(values):
            raise Refused(MISSING_HEADERS)
        msg_id, timestamp, signatures = values
        if len(msg_id) > MAX_ID or not msg_id.isprintable():
            raise Refused(MISSING_HEADERS, "webhook-id is not a short printable text")
        return cls(msg_id, timestamp, signatures)


def decode_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional, as the reference
    libraries allow). A ValueError that does not repeat the secret when it is not base64."""
    body = text.strip().removeprefix(PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is not whsec_ followed by base64 (it is not shown)") from None
    if not key:
        raise ValueError("a webhook secret is empty")
    return key


def secret_keys(secret: Secret) -> tuple[bytes, ...]:
    """The keys of a configured secret: one or more ``whsec_`` secrets separated by whitespace
    (two while a rotation is under way: the new one and the old one)."""
    return tuple(decode_secret(part) for part in secret.reveal().split())


def signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a request signed with ``key`` (the simulator's side, and the tests')."""
    ts = str(timestamp)
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": f"v1,{signature(key, msg_id, ts, body)}"}


def verify(keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float,
           tolerance: float = DEFAULT_TOLERANCE) -> Signed:
    """The request's signed headers when a ``v1`` signature matches one of ``keys`` and its
    timestamp is within ``tolerance`` seconds of ``now``; else :class:`Refused`."""
    signed = Signed.of(headers)
    try:
        at = int(signed.timestamp)
    except ValueError:
        raise Refused(BAD_TIMESTAMP) from None
    if abs(now - at) > tolerance:
        raise Refused(STALE)
    given = [value[3:] for value in signed.signatures.split(" ")[:MAX_SIGNATURES] if value.startswith("v1,")]
    matched = False
    for key in keys:
        expected = signature(key, signed.msg_id, signed.timestamp, body).encode("ascii")
        for candidate in given:
            # every pair is compared, in constant time, whatever matched before
            matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise Refused(BAD_SIGNATURE)
    return signed


@dataclass(frozen=True, slots=True)
class Event:
    """A thin batch event: which batch, and what the provider says happened to it."""

    event_id: str
    type: str
    batch_id: str
    created_at: int | None


def read_event(body: bytes, provider: str) -> Event | None:
    """The batch event of a verified body; None for an event of another kind (a provider's
    webhook may carry other event types: answered 2xx, not published). :class:`Refused` when the
    body is not JSON or not an event object."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(NOT_JSON) from None
    if not isinstance(obj, dict):
        raise Refused(NOT_AN_EVENT, "not an object")
    kind, data = obj.get("type"), obj.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise Refused(NOT_AN_EVENT, "no type or data")
    if kind not in BATCH_EVENTS.get(provider, frozenset()):
        return None
    batch_id = _batch_id(data, provider)
    created = obj.get("created_at")
    event_id = obj.get("id")
    return Event(event_id if isinstance(event_id, str) else "", kind, batch_id,
                 created if isinstance(created, int) and not isinstance(created, bool) else None)


def _batch_id(data: dict[str, Any], provider: str) -> str:
    """``data.id`` (Gemini: also ``data.name``), as the poller's adapter names the batch: Gemini's
    batch ids are resource names, ``batches/<id>``, and a bare id is given that prefix."""
    value = data.get("id", data.get("name") if provider == "gemini" else None)
    if not isinstance(value, str) or not value or len(value) > MAX_BATCH_ID or not value.isprintable():
        raise Refused(NOT_AN_EVENT, "data.id is not a batch id")
    if provider == "gemini" and not value.startswith(GEMINI_BATCH):
        value = GEMINI_BATCH + value
    return value


@dataclass(frozen=True, slots=True)
class Hint:
    """A ``<prefix>.hints`` record: a provider said this batch ended; the poller fetches it."""

    source: str
    provider: str
    batch_id: str
    type: str
    webhook_id: str
    received_at: float  # unix seconds, when the receiver accepted it

    @property
    def key(self) -> str:
        return f"{self.source}/{self.batch_id}"

    def to_json(self) -> bytes:
        return orjson.dumps({"v": 1, "source": self.source, "provider": self.provider,
                             "batch_id": self.batch_id, "type": self.type,
                             "webhook_id": self.webhook_id, "received_at": self.received_at})

    @classmethod
    def from_json(cls, data: bytes) -> Hint:
        """A hint record; ValueError when it is not one."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ValueError("a hint record is not JSON") from None
        if not isinstance(obj, dict):
            obj = {}
        texts = [obj.get(k) for k in ("source", "provider", "batch_id", "type", "webhook_id")]
        received = obj.get("received_at")
        if not all(isinstance(t, str) for t in texts) or not isinstance(received, int | float):
            raise ValueError("a hint record lacks a field")
        source, provider, batch_id, kind, webhook_id = (str(t) for t in texts)
        return cls(source, provider, batch_id, kind, webhook_id, float(received))
