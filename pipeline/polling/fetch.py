"""The poller's HTTP client: one GET that follows no redirect and reads a capped body.

- **Redirects are never followed** (``allow_redirects=False``). aiohttp strips only
  ``Authorization`` on a cross-origin redirect, so following one would send the other auth headers
  (``x-api-key``, ``api-key``, ``x-goog-api-key``, ``x-amz-security-token``) to whatever host a
  3xx names. No provider's batch API redirects in normal operation: a 3xx means a wrong
  ``base_url`` (``http://`` for ``https://``, an old host) or something in between rewriting
  traffic, and the operator fixes the setting. A 3xx is a :class:`Refused` error of kind
  ``redirect`` naming only the target's origin (scheme, host, port: never userinfo, path or query).
- **Bodies are capped**: a 200 body over ``max_body`` bytes, counted after decompression, is a
  :class:`Refused` error of kind ``body_too_large``. A ``Content-Length`` over the cap is refused
  before reading; otherwise the body is read in chunks and the read stops as soon as the cap is
  passed. aiohttp (3.13.3 on, GHSA-6mq8-rvhq-8wgg) inflates a compressed body a bounded piece at a
  time as it is read, so the cap bounds memory for gzip, deflate and zstd bodies alike. An error
  body is cut at :data:`ERROR_BODY` bytes (only its first 200 characters are used). Parsed, a
  body can take 30 times its size (32 MiB of ``{},`` is 11 million dicts, 940 MB), so a body
  holding over :data:`MAX_VALUES` JSON values (counted by its commas, before parsing) is refused too.
- **Echoed secrets are masked**: :func:`mask` replaces every run of a secret's characters that a
  provider's text repeats (the whole key or a part of it) before it is logged or put in an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from pipeline.core.errors import SourceError

MIB = 1024 * 1024
ERROR_BODY = 64 * 1024  # bytes of a non-200 body read
CHUNK = 64 * 1024
MAX_VALUES = 1_000_000  # JSON values in one body: about 100 MB once parsed, at worst
MASK = "***"
MIN_ECHO = 4  # the shortest run of a secret's characters masked in a provider's text
_NOT_HOST = re.compile(r"[^A-Za-z0-9.\-:\[\]]")


class Refused(SourceError):
    """A response the poller does not accept: a redirect, or a body over the cap. ``kind`` is the
    error class it is counted under."""

    def __init__(self, message: str, *, status: int, kind: str) -> None:
        super().__init__(message, status=status, retriable=False)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes | bytearray


async def get(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], *,
              max_body: int, where: str) -> Response:
    """GET ``url`` exactly as given; ``where`` starts every error message (the source's name)."""
    async with session.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as resp:
        if (refused := await _not_200(resp, url, where)) is not None:
            return refused
        body = await read_capped(resp, max_body, where)
        return Response(resp.status, dict(resp.headers), body)


async def stream(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                 feed: Callable[[bytes], None], *, where: str) -> Response:
    """GET ``url`` as :func:`get` does, but hand a 200 body to ``feed`` chunk by chunk as it
    arrives, never held whole (the caller caps it: ``feed`` raises); the Response's body is empty."""
    async with session.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as resp:
        if (refused := await _not_200(resp, url, where)) is not None:
            return refused
        async for chunk in resp.content.iter_chunked(CHUNK):
            feed(chunk)
        return Response(resp.status, dict(resp.headers), b"")


async def _not_200(resp: aiohttp.ClientResponse, url: str, where: str) -> Response | None:
    """A redirect refused (raised), another non-200 answer with its error body cut, or None for a 200."""
    if 300 <= resp.status < 400:
        target = origin(resp.headers.get("Location"), url)
        raise Refused(f"{where}: HTTP {resp.status}: redirect to {target} not followed "
                      "(fix base_url)", status=resp.status, kind="redirect")
    if resp.status != 200:
        return Response(resp.status, dict(resp.headers), await read_upto(resp.content, ERROR_BODY))
    return None


async def read_capped(resp: aiohttp.ClientResponse, limit: int, where: str) -> bytearray:
    """The whole (decompressed) body, or :class:`Refused` as soon as it passes ``limit`` bytes."""
    length = resp.content_length
    if length is not None and length > limit:
        raise _too_large(where, resp.status, limit, f"Content-Length {length}")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > limit:
            raise _too_large(where, resp.status, limit, "the decompressed body")
    return body


async def read_upto(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes of a body; the rest is not read."""
    body = bytearray()
    async for chunk in content.iter_chunked(CHUNK):
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


def check_values(body: bytes | bytearray, where: str) -> None:
    """Refuse a body that would parse into more than :data:`MAX_VALUES` JSON values (a comma
    separates every two; commas inside strings only make the count safer)."""
    if body.count(b",") >= MAX_VALUES:
        raise Refused(f"{where}: response body refused: over {MAX_VALUES} JSON values", status=200,
                      kind="body_too_large")


def _too_large(where: str, status: int, limit: int, what: str) -> Refused:
    return Refused(f"{where}: response body refused: {what} is over max_body_mib ({limit // MIB} MiB)",
                   status=status, kind="body_too_large")


def origin(location: str | None, base: str) -> str:
    """``scheme://host[:port]`` of a redirect target (relative to ``base``), never its userinfo,
    path or query; printable, short, whatever the header held."""
    if not location:
        return "(no Location)"
    try:
        parts = urlsplit(urljoin(base, location.strip()))
    except ValueError:
        return "(an invalid URL)"
    host = parts.netloc.rpartition("@")[2]
    scheme = _NOT_HOST.sub("?", parts.scheme)[:10]
    return f"{scheme}://{_NOT_HOST.sub('?', host)[:100]}" if host else "(an invalid URL)"


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every run of at least :data:`MIN_ECHO` characters of a secret (a shorter
    secret: every occurrence of it) replaced by :data:`MASK`."""
    for secret in secrets:
        text = _mask_one(text, secret)
    return text


def _mask_one(text: str, secret: str) -> str:
    if not secret:
        return text
    if len(secret) < MIN_ECHO:
        return text.replace(secret, MASK)
    out: list[str] = []
    i = 0
    while i < len(text):
        end = _echo_end(text, i, secret)
        if end is None:
            out.append(text[i])
            i += 1
        else:
            out.append(MASK)
            i = end
    return "".join(out)


def _echo_end(text: str, start: int, secret: str) -> int | None:
    """The end of the longest run of ``secret``'s characters in ``text`` from ``start``, if it
    is at least :data:`MIN_ECHO` long."""
    end = start + MIN_ECHO
    if end > len(text) or text[start:end] not in secret:
        return None
    while end < len(text) and text[start:end + 1] in secret:
        end += 1
    return end


def url_secrets(url: str) -> list[str]:
    """The userinfo of ``url`` (and its password alone), to be masked like a key."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    return [s for s in (userinfo, parts.password) if s]
