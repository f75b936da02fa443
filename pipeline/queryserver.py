"""A read-only query endpoint served by a running pipeline.

chDB allows one process per data directory, so while ``batchscope run`` holds it,
``batchscope query`` sends its SQL here. The server listens on loopback only and writes
``<data_dir>/pipeline.json`` (pid and URL) so clients can find it; it removes the file on stop.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pipeline.errors import BatchscopeError, StoreError
from pipeline.store import AsyncStore, QueryResult

log = logging.getLogger(__name__)

INFO_FILE = "pipeline.json"


class QueryServer:
    def __init__(self, store: AsyncStore, host: str, port: int, data_dir: Path) -> None:
        self._store = store
        self._host = host
        self._port = port
        self._info = data_dir / INFO_FILE
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=1 << 20)
        app.add_routes([web.post("/query", self._query), web.get("/health", self._health)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._info.parent.mkdir(parents=True, exist_ok=True)
        self._info.write_text(json.dumps({"pid": os.getpid(), "url": self.url}), encoding="utf-8")
        log.info("query endpoint on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            self._info.unlink(missing_ok=True)
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _query(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            sql, write = str(body["sql"]), bool(body.get("write", False))
            params = {str(k): str(v) for k, v in dict(body.get("params") or {}).items()}
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected a JSON body {\"sql\": ..., \"write\": false}"},
                                     status=400)
        try:
            result = await self._store.run(
                lambda: self._store.store.query(sql, readonly=not write, params=params))
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        payload = {"columns": result.columns, "rows": result.rows}
        return web.Response(body=orjson.dumps(payload, default=_default), content_type="application/json")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(type(value).__name__)


def running_endpoint(data_dir: Path) -> str | None:
    """The URL of a live pipeline's query endpoint for this data directory, if one runs."""
    try:
        info = json.loads((data_dir / INFO_FILE).read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(info["url"])


def remote_query(url: str, sql: str, *, write: bool, params: dict[str, str] | None = None) -> QueryResult:
    """Run SQL through a running pipeline's endpoint."""
    data = orjson.dumps({"sql": sql, "write": write, "params": params or {}})
    request = urllib.request.Request(f"{url}/query", data=data, method="POST",  # noqa: S310 - loopback URL
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310
            payload = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        message = orjson.loads(exc.read()).get("error", str(exc))
        raise BatchscopeError(message) from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise BatchscopeError(f"the running pipeline's query endpoint {url} did not answer: {exc}") from None
    return QueryResult(tuple(payload["columns"]), [tuple(r) for r in payload["rows"]])
