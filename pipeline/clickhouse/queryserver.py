"""The query endpoint a running pipeline serves, so ``batchscope query`` works while it holds chDB.

chDB allows one process per data directory, so while ``batchscope run`` holds it, ``batchscope
query`` sends its SQL here. Whatever a web page in the operator's browser could send is refused:
a Host other than this loopback address and port, any ``Origin`` header, a body that is not
JSON, and every request without the per-run token that the server writes, mode 0600 from its
first byte, to ``<data_dir>/pipeline.token`` (``pipeline.json`` beside it gives the pid and URL;
both go on stop). Statements are checked by :mod:`pipeline.clickhouse.querypolicy` and run in the endpoint's
own ClickHouse sessions, on its own thread, under the ``pipeline.query_*`` limits: nothing sent
here can change the sink's session or hold the sink's thread.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import web

from pipeline.clickhouse.queries import INFO_FILE, TOKEN_FILE
from pipeline.clickhouse.querypolicy import ALLOWED, Refused, check_read, check_write, denied_functions
from pipeline.clickhouse.store import AsyncStore, Params, QueryResult, Store, error_code, first_line
from pipeline.config import PipelineConfig, Settings
from pipeline.core.errors import BatchscopeError, StoreError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes of one request
PARSE_SCOPE = re.compile(r":? In scope SELECT parseQueryToJSON\(.*", re.DOTALL)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def limits(p: PipelineConfig) -> dict[str, str | int | float]:
    """The endpoint's limits, as session settings (set before ``readonly``, which freezes them)."""
    return {"max_execution_time": p.query_timeout, "max_result_rows": p.query_max_rows,
            "result_overflow_mode": "throw", "max_memory_usage": p.query_max_memory_mib << 20}


def limit_message(code: int | None, p: PipelineConfig) -> str | None:
    """One line naming the setting when a query hit one of the endpoint's limits."""
    return {
        159: f"the query ran longer than pipeline.query_timeout ({p.query_timeout:g} s) and was stopped",
        396: f"the result has more than pipeline.query_max_rows ({p.query_max_rows}) rows: "
             "add a LIMIT or aggregate",
        241: "the query needed more memory than pipeline.query_max_memory_mib "
             f"({p.query_max_memory_mib} MiB)",
    }.get(code or 0)


class EndpointSessions:
    """The endpoint's own ClickHouse sessions: a read-only one for every query, and one for the
    acknowledgement insert whose VALUES data may hold literals only. Called on one thread."""

    def __init__(self, settings: Settings) -> None:
        self._pipeline = settings.pipeline
        self._database = settings.clickhouse.database
        self.reader = Store.from_settings(settings, {**limits(settings.pipeline), "readonly": 1})
        self.writer = Store.from_settings(settings, {
            **limits(settings.pipeline), "allow_ddl": 0, "input_format_values_interpret_expressions": 0,
            "input_format_values_deduce_templates_of_expressions": 0})
        self._denied: frozenset[str] | None = None

    def run(self, sql: str, params: Params, *, write: bool) -> QueryResult:
        try:
            if check_write(sql, self._database, write=write):
                return self.writer.session_query(sql)
            check_read(self._parse(sql), self._denied_functions(), params=bool(params))
            return self.reader.session_query(sql, params)
        except StoreError as exc:
            message = limit_message(error_code(str(exc)), self._pipeline)
            raise StoreError(message or str(exc)) from exc

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    def _parse(self, sql: str) -> str:
        """ClickHouse's own parse of ``sql`` as JSON; the SQL is a parameter, never spliced in."""
        try:
            rows = self.reader.session_query("SELECT parseQueryToJSON({sql:String})", {"sql": sql}).rows
        except StoreError as exc:
            message = PARSE_SCOPE.sub("", str(exc))  # the error is about the user's SQL, not the wrapper
            # BAD_ARGUMENTS: a kind of statement it cannot show; UNKNOWN_FUNCTION: an engine before 26.8
            if error_code(message) in (36, 46):
                raise Refused(f"refused: the endpoint cannot check this statement ({message}); "
                              f"{ALLOWED}") from exc
            raise StoreError(message) from exc
        return str(rows[0][0])

    def _denied_functions(self) -> frozenset[str]:
        if self._denied is None:
            # One row, whatever pipeline.query_max_rows is
            rows = self.reader.session_query("SELECT groupArray(name) FROM system.table_functions").rows
            self._denied = denied_functions(str(n) for n in rows[0][0])
        return self._denied


class QueryServer:
    """``POST /query`` on a loopback address, for the holder of this run's token only."""

    def __init__(self, settings: Settings) -> None:
        p = settings.pipeline
        self._host, self._port = p.http_host, p.http_port
        self._info = p.data_path / INFO_FILE
        self._token_file = p.data_path / TOKEN_FILE
        self._sessions = EndpointSessions(settings)
        self._thread = AsyncStore(self._sessions.reader)
        self._runner: web.AppRunner | None = None
        self._closed = False
        self._token = ""
        self._expected_host = ""
        self.url = ""

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._token = write_token(self._token_file)
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.add_routes([web.post("/query", self._query)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError:
            await self.stop()
            raise
        host, port = self._runner.addresses[0][:2]
        self._expected_host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"http://{self._expected_host}"
        self._info.write_text(json.dumps({"pid": os.getpid(), "url": self.url}), encoding="utf-8")
        log.info("query endpoint on %s (token in %s)", self.url, self._token_file)

    async def stop(self) -> None:
        if self._runner is not None:
            self._info.unlink(missing_ok=True)
            self._token_file.unlink(missing_ok=True)
            await self._runner.cleanup()
            self._runner = None
        if not self._closed:  # waits for a query in flight: at most pipeline.query_timeout
            self._closed = True
            await self._thread.run(self._sessions.close)
            await self._thread.close()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse what a browser page could send, before any body is read."""
        host = request.headers.get("Host", "")
        if host != self._expected_host:
            return error(403, f"refused: Host {host[:100]!r} is not this endpoint's address "
                              f"{self._expected_host}")
        if "Origin" in request.headers:
            return error(403, "refused: a request with an Origin header (sent by a web page) is not accepted")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._token.encode()):
            return error(401, f"refused: no valid token (send Authorization: Bearer <{self._token_file}>)")
        if request.content_type != "application/json":
            return error(415, "refused: Content-Type must be application/json, not "
                              f"{request.content_type[:100]!r}")
        return await handler(request)

    async def _query(self, request: web.Request) -> web.Response:
        try:
            sql, params, write = parse_body(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"refused: the request is over the endpoint's {MAX_BODY >> 20} MiB limit; "
                              "stop the pipeline to run such SQL directly")
        except BatchscopeError as exc:
            return error(400, str(exc))
        try:
            result = await self._thread.run(lambda: self._sessions.run(sql, params, write=write))
            body = orjson.dumps({"columns": list(result.columns), "rows": result.plain_rows()})
        except Refused as exc:
            return error(403, str(exc))
        except BatchscopeError as exc:
            return error(400, str(exc))
        except orjson.JSONEncodeError as exc:  # e.g. arrays nested deeper than JSON output allows
            return error(400, f"the result cannot be sent as JSON ({exc})")
        except Exception as exc:  # never a 500 with a traceback: one line back, the details logged
            log.exception("query endpoint: %s", first_line(str(sql)))
            return error(500, f"the endpoint failed: {type(exc).__name__}: {first_line(str(exc))}")
        return web.Response(body=body, content_type="application/json")


def parse_body(body: bytes) -> tuple[str, Params, bool]:
    """``{"sql": "...", "params": {...}, "write": false}``, checked."""
    usage = 'expected a JSON body {"sql": "...", "params": {}, "write": false}'
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BatchscopeError(usage) from None
    if not isinstance(data, dict) or not isinstance(data.get("sql"), str) or not data["sql"].strip():
        raise BatchscopeError(usage)
    params, write = data.get("params", {}), data.get("write", False)
    if not isinstance(params, dict) or not isinstance(write, bool):
        raise BatchscopeError(usage)
    return data["sql"], {str(k): str(v) for k, v in params.items()}, write


def write_token(path: Path) -> str:
    """A fresh random token in a file only this user can read: created 0600 (O_EXCL, no symlink
    followed), never readable by others even for a moment."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token)
    return token


def error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type="application/json")
