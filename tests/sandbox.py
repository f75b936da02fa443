"""A container's network for one process, without Docker: ``python -m tests.sandbox SPEC.json``.

Started by ``tests/integration/test_compose_native.py`` under ``unshare --net --mount``, so the
process has its own network namespace (only a loopback interface: ports such as 9108 and 8787
are its own, as in a container) and its own mount namespace (its own ``/etc/hosts``). It then

- brings the loopback interface up;
- bind-mounts the spec's hosts file over ``/etc/hosts`` (the compose service names);
- relays TCP to the outside through Unix sockets, the only path out of an empty network
  namespace: ``forward`` listens on an address inside and connects to a socket outside (Kafka, or
  another service); ``export`` listens on a socket and connects to a port inside (a service's
  port for the others);
- runs the service's command with the spec's environment and working directory, passes SIGTERM
  and SIGINT on to it, and exits with its status. The service dies with this process.

The relays live here too (:func:`relay_unix_to_tcp` also runs in the test process, for Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_PDEATHSIG = 1
CHUNK = 64 * 1024
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def loopback_up() -> None:
    """``ip link set lo up``, by ioctl (no iproute2 needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def use_hosts(path: str) -> None:
    """This mount namespace sees ``path`` as ``/etc/hosts`` (private: the host's is untouched)."""
    subprocess.run(["mount", "--bind", path, "/etc/hosts"], check=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: Connect) -> None:
    """Both directions of one connection, until both ends are done (or the relay is cancelled)."""
    upstream: asyncio.StreamWriter | None = None
    try:
        up_reader, upstream = await connect()
        await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
    except OSError:
        pass
    finally:
        for side in (writer, upstream):
            if side is not None:
                side.close()


async def relay_tcp_to_unix(host: str, port: int, path: str) -> asyncio.Server:
    """Listen on ``host:port`` (inside), connect each client to the Unix socket ``path``."""
    return await asyncio.start_server(
        lambda r, w: _splice(r, w, lambda: asyncio.open_unix_connection(path)), host, port)


async def relay_unix_to_tcp(path: str, host: str, port: int) -> asyncio.Server:
    """Listen on the Unix socket ``path``, connect each client to ``host:port``."""
    return await asyncio.start_unix_server(
        lambda r, w: _splice(r, w, lambda: asyncio.open_connection(host, port)), path)


def start_relays(spec: dict[str, Any]) -> None:
    """The spec's relays on their own event loop thread; returns once every one listens."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def listen() -> None:
        for address, path in spec.get("forward", {}).items():
            host, port = address.rsplit(":", 1)
            await relay_tcp_to_unix(host, int(port), path)
        for path, address in spec.get("export", {}).items():
            host, port = address.rsplit(":", 1)
            await relay_unix_to_tcp(path, host, int(port))

    asyncio.run_coroutine_threadsafe(listen(), loop).result(30)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run(spec: dict[str, Any]) -> int:
    loopback_up()
    use_hosts(spec["hosts"])
    start_relays(spec)
    child = subprocess.Popen(spec["command"], env=spec["env"], cwd=spec["cwd"],
                             preexec_fn=_die_with_parent)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _: child.send_signal(number))
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    status = run(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    sys.stdout.flush()
    os._exit(status)  # the relays' thread and loop die with the process, unfinished by design
