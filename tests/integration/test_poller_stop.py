"""Every sleep of the poller wakes on stop: ``batchscope run`` exits within 10 s of SIGINT while a
source waits out a 300 s ``Retry-After`` (issue 12, point 12)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.kafka import run_toml
from tests.support.processes import free_port, start_run

pytestmark = pytest.mark.integration

EXIT_WITHIN = 10.0  # fixed by the issue
STARTUP = 120.0


class Throttling:
    """A provider that answers every request 429 with ``Retry-After: 300``; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.called.set()
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"Retry-After": "300"})


@pytest.fixture
async def throttling() -> AsyncIterator[tuple[Throttling, str]]:
    provider = Throttling()
    app = web.Application()
    app.router.add_get("/v1/batches", provider.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield provider, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


def write_config(tmp: Path, bootstrap: str, prefix: str, base_url: str) -> Path:
    path = tmp / "batchscope.toml"
    path.write_text(run_toml(tmp, bootstrap, prefix) + f"""http_port = {free_port()}
metrics_port = {free_port()}

[[sources]]
name = "throttled"
provider = "openai"
base_url = "{base_url}"
poll_interval = 1
""", encoding="utf-8")
    return path


async def exited_within(proc: subprocess.Popen[bytes], seconds: float) -> float | None:
    """Seconds until ``proc`` exited, or None if it still runs after ``seconds``."""
    started = time.monotonic()
    try:
        await asyncio.to_thread(proc.wait, seconds)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


async def test_run_exits_within_10s_of_sigint_during_a_300s_retry_after(
    throttling: tuple[Throttling, str], tmp_path: Path, kafka_bootstrap: str, topic_prefix: str,
) -> None:
    provider, base_url = throttling
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, kafka_bootstrap, topic_prefix, base_url), tmp_path, log)
    try:
        try:
            await asyncio.wait_for(provider.called.wait(), STARTUP)
        except TimeoutError:
            pytest.fail("the source was never polled:\n" + log.read_text(errors="replace")[-3000:])
        await asyncio.sleep(1.0)  # the source now waits out the Retry-After
        assert provider.calls == 1
        proc.send_signal(signal.SIGINT)
        took = await exited_within(proc, EXIT_WITHIN)
        assert took is not None, f"still running {EXIT_WITHIN:.0f}s after SIGINT:\n" + log.read_text(
            errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
