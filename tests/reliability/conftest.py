"""Fixtures of the reliability suite: a dedicated broker a scenario may kill, and the
``--reliability-long`` switch (the shared broker's fixtures are in ``tests/support/fixtures.py``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import ROOT

# Dedicated brokers listen in this range (broker port and the controller on the next one).
DEDICATED_PORTS = range(int(os.environ.get("BATCHSCOPE_RELIABILITY_PORTS", "9210")), 9230, 2)


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--reliability-long"))


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Broker:
    """A single-node broker of its own, started and stopped with ``scripts/kafka``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        cache = Path(os.environ.get("BATCHSCOPE_CACHE", Path.home() / ".cache" / "batchscope"))
        self.run_dir = cache / f"kafka-run-{port}"
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_HEAP": "384m"}

    def script(self, command: str) -> None:
        done = subprocess.run([str(ROOT / "scripts" / "kafka"), command], env=self.env,
                              capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, f"scripts/kafka {command} (port {self.port}): {done.stderr[-2000:]}"

    def up(self) -> float:
        """Start (or restart) the broker; returns the seconds it took to accept connections."""
        started = time.monotonic()
        self.script("up")
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the broker's JVM (no clean shutdown, no flush)."""
        pid = int((self.run_dir / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        (self.run_dir / "broker.pid").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def dedicated_broker() -> Iterator[Broker]:
    port = next((p for p in DEDICATED_PORTS if _free(p) and _free(p + 1)), None)
    if port is None:
        pytest.fail(f"no free port pair in {DEDICATED_PORTS} for a dedicated broker")
    broker = Broker(port)
    try:
        broker.up()
        yield broker
    finally:
        broker.script("down")
        shutil.rmtree(broker.run_dir, ignore_errors=True)
