"""``batchscope health``: the container healthcheck, without curl or wget in the image.

A GET of one URL (default: this process's settings' ``/metrics`` endpoint on loopback) that must
answer 2xx within the timeout; anything else is one line and exit status 1.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pipeline.config import PipelineConfig
from pipeline.errors import BatchscopeError


def default_url(pipeline: PipelineConfig) -> str:
    """The ``/metrics`` endpoint the poller and the workers serve (``pipeline.metrics_port``)."""
    return f"http://127.0.0.1:{pipeline.metrics_port}/metrics"


def check(url: str, timeout: float = 5.0) -> int:
    """GET ``url``; returns the HTTP status when it is 2xx, raises :class:`BatchscopeError` otherwise."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise BatchscopeError(f"health: {url!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise BatchscopeError(f"health: {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BatchscopeError(f"health: {url} unreachable: {reason}") from None
    return status
