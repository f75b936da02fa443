"""Stand-ins for provider APIs in tests: small aiohttp apps served on loopback, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(routes: Mapping[str, Handler], method: str = "GET") -> AsyncIterator[str]:
    """Serve ``routes`` (aiohttp paths) for ``method`` on 127.0.0.1, a free port; yields
    ``http://127.0.0.1:PORT``."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serving_in_thread(routes: Mapping[str, Handler], method: str = "POST") -> Iterator[str]:
    """:func:`serving` on a thread with its own event loop, for code under test that runs its own
    loop (the CLI) or that the test waits for without a loop (subprocesses)."""
    loop = asyncio.new_event_loop()
    ready, done = threading.Event(), asyncio.Event()
    where: list[str] = []

    async def serve() -> None:
        async with serving(routes, method) as url:
            where.append(url)
            ready.set()
            await done.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        pytest.fail("the loopback server did not start")
    try:
        yield where[0]
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(10)
        loop.close()


async def until(condition: Callable[[], bool], within: float, step: float = 0.05) -> None:
    """Wait at most ``within`` seconds for ``condition`` to hold; fail the test otherwise."""
    for _ in range(max(1, int(within / step))):
        if condition():
            return
        await asyncio.sleep(step)
    pytest.fail(f"condition never held within {within:g} s")
