"""Stand-ins for provider APIs in tests: small aiohttp apps served on loopback, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """Serve GET ``routes`` (aiohttp paths) on 127.0.0.1, a free port; yields ``http://127.0.0.1:PORT``."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool], within: float, step: float = 0.05) -> None:
    """Wait at most ``within`` seconds for ``condition`` to hold; fail the test otherwise."""
    for _ in range(max(1, int(within / step))):
        if condition():
            return
        await asyncio.sleep(step)
    pytest.fail(f"condition never held within {within:g} s")
