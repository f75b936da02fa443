"""``batchscope`` as a subprocess, and free ports for what it serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_run(config: Path, cwd: Path, log: Path,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``batchscope run`` as a subprocess, its output in ``log``; ``env`` adds variables (e.g. the
    fault plugin's, :func:`tests.support.faults.plugin_env`)."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "batchscope.cli", "--config", str(config), "run"],
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def stop_run(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, as Ctrl-C would; SIGKILL after ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
