"""Checks of setting values that need nothing but the value: numeric bounds, URLs without
credentials. Each failure is a :class:`ConfigError` whose one line names the key and never shows
a value that could hold a secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pipeline.core.errors import ConfigError

# Query parameters of a ClickHouse DSN that would carry a credential (clickhouse-connect passes
# every DSN parameter to the client; a password belongs in clickhouse.password_env).
SECRET_PARAM = re.compile(r"password|secret|token", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

T = TypeVar("T")


def require(ok: bool, key: str, problem: str) -> None:
    """Raise the one-line :class:`ConfigError` ``key: problem`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def finite(key: str, value: T) -> T:
    """``value`` itself, unless it is an infinite or NaN float."""
    ok = not isinstance(value, float) or math.isfinite(value)
    require(ok, key, f"must be a finite number, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Bounds:
    """The range of a numeric setting: ``low`` (excluded when ``above``) to ``high``, finite;
    ``also`` is one value allowed outside it (``-1``: keep forever)."""

    low: float
    high: float
    above: bool = False
    also: int | None = None

    def check(self, key: str, value: float) -> None:
        if self.also is not None and value == self.also:
            return
        finite(key, value)
        ok = (value > self.low if self.above else value >= self.low) and value <= self.high
        require(ok, key, f"must be {self.describe()}")

    def describe(self) -> str:
        low, high = _number(self.low), _number(self.high)
        text = f"greater than {low} and at most {high}" if self.above else f"between {low} and {high}"
        return text if self.also is None else f"{self.also} (forever) or {text}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def bounded(default: Any, low: float, high: float, *, above: bool = False, also: int | None = None) -> Any:
    """A dataclass field whose value :func:`check_bounds` keeps within ``Bounds(low, high, ...)``."""
    return field(default=default, metadata={"bounds": Bounds(low, high, above, also)})


def check_bounds(section: Any, where: str) -> None:
    """Every bounded field of a settings dataclass within its bounds; errors name ``where.key``."""
    for spec in fields(section):
        bounds, value = spec.metadata.get("bounds"), getattr(section, spec.name)
        if bounds is not None and value is not None:
            bounds.check(f"{where}.{spec.name}", value)


def check_base_url(key: str, url: str) -> None:
    """An http(s) API root with a host, no credentials, no query: the one line never shows it."""
    hidden = "(the URL is not shown)"
    require(url.startswith(("http://", "https://")), key, "must be an http(s) URL")
    require(SPACE_OR_CONTROL.search(url) is None, key,
            f"must not contain spaces or control characters {hidden}")
    parts = urlsplit(url)
    require("@" not in parts.netloc, key, "must not carry user info (user:password@host): give the key "
            f"with api_key_env or api_key_file {hidden}")
    require("?" not in url and "#" not in url, key,
            f"must not carry a query or a fragment: a key belongs in api_key_env or api_key_file {hidden}")
    _valid_host_port(key, url, hidden)


def check_dsn(dsn: str) -> None:
    """A ClickHouse DSN may name a user (``http://batchscope_sink@clickhouse:8123``), never a
    password: that comes from the variable ``clickhouse.password_env`` names."""
    key, hidden = "clickhouse.dsn", "(the DSN is not shown)"
    embedded = dsn.startswith("chdb:")  # a path, which may hold spaces
    require((CONTROL if embedded else SPACE_OR_CONTROL).search(dsn) is None, key,
            f"must not contain control characters{'' if embedded else ' or spaces'} {hidden}")
    parts = urlsplit(dsn)
    params = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    carries = parts.password is not None or any(SECRET_PARAM.search(name) for name in params)
    require(not carries, key, "must not carry a password (user:password@ or ?password=): put it in an "
            f"environment variable and name that in clickhouse.password_env {hidden}")
    if not embedded:
        _valid_host_port(key, dsn, hidden)


def _valid_host_port(key: str, url: str, hidden: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or outside 0-65535
        port = -1
    require(port is None or 0 < port <= 65_535, key, f"has an invalid port {hidden}")
    require(bool(parts.hostname), key, f"must name a host {hidden}")


def secret_refs(where: str, table: Mapping[str, Any], kind: str) -> tuple[str, str]:
    """Where a secret of ``kind`` is (``<kind>_env``: a variable's NAME, ``<kind>_file``: a file's
    path), checked without reading it: a source's key or webhook secret, an alert's URL or key."""
    env_name, file_name = table.get(f"{kind}_env", ""), table.get(f"{kind}_file", "")
    require(not (env_name and file_name), where, f"set {kind}_env or {kind}_file, not both")
    ok = env_name == "" or (isinstance(env_name, str) and ENV_NAME.fullmatch(env_name) is not None)
    require(ok, f"{where}.{kind}_env",
            "must be the NAME of an environment variable (the value given is not shown)")
    require(isinstance(file_name, str), f"{where}.{kind}_file", "must be a string")
    return env_name, file_name
