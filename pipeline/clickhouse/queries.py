"""Saved fleet queries (``sql/queries/*.sql``) and running SQL wherever the database is.

A saved query is a file whose leading ``--`` comment says what it answers; a ``-- default:
name=value`` line gives a query parameter (``{name:Type}``) its default. While ``batchscope
run`` holds the embedded database, SQL goes through the running pipeline's endpoint
(:mod:`pipeline.clickhouse.queryserver`), with the token that only the pipeline's user can read; otherwise
the database is opened directly.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from pipeline.clickhouse.store import Params, QueryResult, Store, first_line
from pipeline.config import Settings
from pipeline.core.errors import BatchscopeError, ConfigError

INFO_FILE = "pipeline.json"  # the running pipeline's pid and endpoint URL
TOKEN_FILE = "pipeline.token"  # noqa: S105 - the file's name; the endpoint's per-run token is in it
QUERY_FILE = re.compile(r"^([a-z0-9_]+)\.sql$")
DEFAULT_LINE = re.compile(r"^--\s*default:\s*([a-z_][a-z0-9_]*)=(.*)$")


@dataclass(frozen=True, slots=True)
class SavedQuery:
    name: str
    sql: str
    description: str
    defaults: Params = field(default_factory=dict)


def parse_saved(name: str, sql: str) -> SavedQuery:
    comment: list[str] = []
    defaults: Params = {}
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        match = DEFAULT_LINE.match(line)
        if match:
            defaults[match.group(1)] = match.group(2).strip()
        else:
            comment.append(line[2:].strip())
    return SavedQuery(name, sql, " ".join(comment), defaults)


def saved_queries() -> dict[str, SavedQuery]:
    """Every saved query shipped with the package, by name."""
    found = {}
    for entry in resources.files("sql").joinpath("queries").iterdir():
        match = QUERY_FILE.match(entry.name)
        if match:
            found[match.group(1)] = parse_saved(match.group(1), entry.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def saved(name: str) -> SavedQuery:
    queries = saved_queries()
    if name not in queries:
        raise ConfigError(f"--saved: no saved query {name!r} (known: {', '.join(queries)})")
    return queries[name]


def parse_params(items: list[str] | None) -> Params:
    """``--param name=value`` arguments as a dict."""
    params: Params = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"--param: expected NAME=VALUE, got {item!r}")
        params[name] = value
    return params


def run_sql(settings: Settings, sql: str, *, params: Params | None = None,
            write: bool = False) -> QueryResult:
    """Run SQL through a running pipeline's endpoint if one holds the database, else directly."""
    endpoint = running_endpoint(settings.pipeline.data_path) if not settings.clickhouse.dsn else None
    if endpoint:
        return remote_query(endpoint, sql, write=write, params=params,
                            timeout=settings.pipeline.query_timeout + 30)
    store = Store.from_settings(settings)
    try:
        return store.query(sql, readonly=not write, params=params)
    finally:
        store.close()


def run_saved(settings: Settings, name: str, params: Params | None = None) -> QueryResult:
    query = saved(name)
    merged = {**query.defaults, **(params or {})}
    try:
        return run_sql(settings, query.sql, params=merged)
    except BatchscopeError as exc:
        raise BatchscopeError(f"saved query {name}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str = field(repr=False)


def running_endpoint(data_dir: Path) -> Endpoint | None:
    """The endpoint of the live pipeline that holds ``data_dir``, if one does."""
    try:
        info = json.loads((data_dir / INFO_FILE).read_text(encoding="utf-8"))
        pid, url = int(info["pid"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    try:
        token = (data_dir / TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BatchscopeError(f"the pipeline running on {data_dir} (pid {pid}) has a token file that cannot "
                              f"be read ({reason}): run this as the user that runs the pipeline") from None
    if not _loopback_url(url):
        raise BatchscopeError(f"{data_dir / INFO_FILE} names {url[:100]!r}, not a loopback http URL")
    return Endpoint(url, token)


def _loopback_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme == "http" and ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process
    except (OSError, OverflowError, ValueError):
        return False
    return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The endpoint never redirects; a redirect would carry the token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxy (HTTP_PROXY would get the token) and no redirect.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def remote_query(endpoint: Endpoint, sql: str, *, write: bool, params: Params | None = None,
                 timeout: float = 120.0) -> QueryResult:
    """Run SQL through a running pipeline's endpoint; every failure is one line."""
    data = orjson.dumps({"sql": sql, "write": write, "params": params or {}})
    request = urllib.request.Request(f"{endpoint.url}/query", data=data, method="POST", headers={  # noqa: S310 - loopback http, checked
        "Content-Type": "application/json", "Authorization": f"Bearer {endpoint.token}"})
    try:
        with _OPENER.open(request, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise BatchscopeError(_error_text(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise BatchscopeError(f"the running pipeline's query endpoint {endpoint.url} did not answer: "
                              f"{first_line(str(exc) or type(exc).__name__)}") from None
    return _result(body)


def query_running(data_dir: Path, sql: str, *, write: bool = False,
                  params: Params | None = None) -> QueryResult:
    """Run SQL through the endpoint of the pipeline that holds ``data_dir`` (scripts and tests)."""
    endpoint = running_endpoint(data_dir)
    if endpoint is None:
        raise BatchscopeError(f"no running pipeline holds {data_dir}")
    return remote_query(endpoint, sql, write=write, params=params)


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The endpoint's JSON error line, or the first line of whatever else answered."""
    try:
        body = exc.read()
    except (OSError, http.client.HTTPException):
        body = b""
    try:
        message = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return first_line(message)
    text = first_line(body.decode("utf-8", "replace")) if body.strip() else exc.reason
    return f"the query endpoint answered HTTP {exc.code}: {text}"


def _result(body: bytes) -> QueryResult:
    try:
        payload = orjson.loads(body)
        columns, rows = payload["columns"], payload["rows"]
        return QueryResult(tuple(str(c) for c in columns), [tuple(r) for r in rows])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BatchscopeError(f"the query endpoint's answer is not a result ({type(exc).__name__})") from None
