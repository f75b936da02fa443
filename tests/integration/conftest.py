"""Fixtures for tests against the real local Kafka broker and the real ClickHouse engine (chDB)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.broker import delete_topics

BOOTSTRAP = os.environ.get("BATCHSCOPE_TEST_KAFKA", "127.0.0.1:9092")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    host, port = BOOTSTRAP.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: start one with 'scripts/kafka up' "
                    "(or set BATCHSCOPE_TEST_KAFKA)")
    return BOOTSTRAP


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A unique topic prefix (and Faust app id) for one test; its topics are deleted afterwards."""
    prefix = f"it-{uuid.uuid4().hex[:10]}"
    yield prefix
    asyncio.run(delete_topics(kafka_bootstrap, prefix))


def start_run(config: Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """``batchscope run`` as a subprocess, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--config", str(config), "run"],
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop_run(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as Ctrl-C would; SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
