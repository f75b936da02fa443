"""AWS Signature Version 4 for the poller's Bedrock requests, in the standard library alone.

Credentials come from the source's secret as ``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` (or
``ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN`` for temporary credentials); the region is read
from a ``bedrock.<region>.amazonaws.com`` base URL, else ``us-east-1``. A request is signed over
its method, its URL exactly as sent (already percent-encoded: the canonical path encodes it once
more, as AWS does for every service but S3), its sorted query, the ``host`` and ``x-amz-date``
headers (and ``x-amz-security-token``) and the SHA-256 of its body. Nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

from pipeline.core.errors import ConfigError
from pipeline.core.secret import Secret

ALGORITHM = "AWS4-HMAC-SHA256"
DEFAULT_REGION = "us-east-1"
REGION_HOST = re.compile(r"(?:^|\.)bedrock(?:-runtime)?\.([a-z0-9-]+)\.amazonaws\.com$")


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: Secret
    session_token: Secret | None = None


def credentials(secret: Secret, where: str = "api key") -> Credentials:
    """``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`` from one secret; the error never shows it."""
    parts = secret.reveal().split(":", 2)
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"{where}: AWS credentials must be ACCESS_KEY_ID:SECRET_ACCESS_KEY"
                          "[:SESSION_TOKEN] (the value given is not shown)")
    token = Secret(parts[2]) if len(parts) == 3 else None
    return Credentials(parts[0], Secret(parts[1]), token)


def region_of(base_url: str) -> str:
    host = urlsplit(base_url).hostname or ""
    found = REGION_HOST.search(host)
    return found.group(1) if found else DEFAULT_REGION


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def canonical_query(query: str) -> str:
    """The query's ``name=value`` pairs, each encoded (RFC 3986), sorted by name then value."""
    pairs = []
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        pairs.append((_encode(name), _encode(value)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _encode(text: str) -> str:
    """RFC 3986 encoding of text that may already be percent-encoded (decoded first)."""
    return quote(unquote(text), safe="-_.~")


def canonical_request(method: str, url: str, headers: dict[str, str], payload: bytes) -> tuple[str, str]:
    """(canonical request, signed header names) of a request whose URL is as sent on the wire."""
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe="/-_.~")  # non-S3 services: the sent path, encoded again
    names = sorted(k.lower() for k in headers)
    canonical_headers = "".join(f"{n}:{' '.join(_header(headers, n).split())}\n" for n in names)
    signed = ";".join(names)
    body_hash = hashlib.sha256(payload).hexdigest()
    lines = (method.upper(), path, canonical_query(parts.query), canonical_headers, signed, body_hash)
    return "\n".join(lines), signed


def _header(headers: dict[str, str], lower: str) -> str:
    return next(v for k, v in headers.items() if k.lower() == lower).strip()


def signature(creds: Credentials, method: str, url: str, headers: dict[str, str], payload: bytes,
              region: str, service: str) -> tuple[str, str]:
    """(hex signature, signed header names); ``headers`` must hold ``host`` and ``x-amz-date``."""
    amz_date = _header(headers, "x-amz-date")
    day = amz_date[:8]
    request, signed = canonical_request(method, url, headers, payload)
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()))
    key = signing_key(creds.secret_key.reveal(), day, region, service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signed


def sign(creds: Credentials, method: str, url: str, *, region: str, service: str = "bedrock",
         now: datetime, payload: bytes = b"") -> dict[str, str]:
    """The headers that authenticate one request: ``x-amz-date``, ``Authorization`` (and the
    session token). ``now`` must be aware UTC; ``url`` is the URL exactly as it will be sent."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": urlsplit(url).netloc, "x-amz-date": amz_date}
    if creds.session_token is not None:
        headers["x-amz-security-token"] = creds.session_token.reveal()
    sig, signed = signature(creds, method, url, headers, payload, region, service)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    auth = f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    return {k: v for k, v in headers.items() if k != "host"} | {"Authorization": auth}


AUTH_HEADER = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def verify(creds: Credentials, method: str, url: str, headers: dict[str, str], payload: bytes = b"") -> bool:
    """Does a received request carry a valid signature by ``creds`` (the simulator's check)?"""
    found = AUTH_HEADER.match(headers.get("Authorization", ""))
    if found is None or found.group(1) != creds.access_key:
        return False
    _, day, region, service, signed, sig = found.groups()
    lower = {k.lower(): v for k, v in headers.items()}
    names = signed.split(";")
    if not {"host", "x-amz-date"} <= set(names) or not lower.get("x-amz-date", "").startswith(day):
        return False
    if any(n not in lower for n in names):
        return False
    chosen = {n: lower[n] for n in names}
    expected, _ = signature(creds, method, url, chosen, payload, region, service)
    return hmac.compare_digest(expected, sig)
