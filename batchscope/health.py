"""``batchscope health``: the container healthcheck, without curl or wget in the image.

A GET of one URL (default: this process's settings' ``/health`` endpoint on loopback, which the
poller answers 503 while a source is stale and every worker answers 200) that must answer 2xx
within the timeout; anything else is one line (with the endpoint's own reason) and exit status 1.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pipeline.config import PipelineConfig
from pipeline.core.errors import BatchscopeError

MAX_REASON = 300  # characters of an error answer's body shown


def default_url(pipeline: PipelineConfig) -> str:
    """The ``/health`` endpoint the poller and the workers serve (``pipeline.metrics_port``)."""
    return f"http://127.0.0.1:{pipeline.metrics_port}/health"


def check(url: str, timeout: float = 5.0) -> int:
    """GET ``url``; returns the HTTP status when it is 2xx, raises :class:`BatchscopeError` otherwise."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise BatchscopeError(f"health: {url!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise BatchscopeError(f"health: {url} answered HTTP {exc.code}{_reason(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BatchscopeError(f"health: {url} unreachable: {reason}") from None
    return status


def _reason(exc: urllib.error.HTTPError) -> str:
    """``: <the first line of the answer>``, printable and short, or nothing."""
    try:
        text = exc.read(MAX_REASON).decode("utf-8", "replace")
    except OSError:
        return ""
    line = "".join(c if c.isprintable() else "?" for c in text.split("\n", 1)[0]).strip()
    return f": {line}" if line else ""
