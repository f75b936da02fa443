"""The poller and a batch id over 1 KiB (issue 12, point 4).

Before: a provider object whose ``id`` was 460-600 KiB passed the poller's object limit, its
Kafka key (``source/batch_id``) plus the value passed 1 MB, and the producer's refusal stopped
every source. Now such an id is no id: the object is published once under the key ``source/``
(the normalise agent dead-letters it, saying why) and not again while it is unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from pipeline.config import SourceConfig
from pipeline.polling.poller import SourcePoller
from pipeline.polling.retry import RetryPolicy
from tests.loopback import serving
from tests.support.sinks import CaptureSink

HUGE_ID = "batch_" + "x" * 600 * 1024


def batch(batch_id: str, status: str) -> dict[str, object]:
    return {"id": batch_id, "object": "batch", "status": status, "created_at": 1_790_000_000,
            "request_counts": {"total": 2, "completed": 1, "failed": 0}}


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    data = [batch(HUGE_ID, "in_progress"), batch("batch_ok", "completed")]
    body = orjson.dumps({"object": "list", "data": data, "has_more": False})

    async def listing(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async with serving({"/v1/batches": listing}) as url:
        yield f"{url}/v1"


async def test_an_oversized_id_is_published_once_under_a_short_key(base_url: str) -> None:
    sink = CaptureSink()
    source = SourceConfig(name="acct", provider="openai", base_url=base_url, max_rps=1000.0)
    poller = SourcePoller(source, sink, RetryPolicy(max_attempts=1))
    async with aiohttp.ClientSession() as session:
        await poller.poll_once(session)
        await poller.poll_once(session)
    keys = [e.key for e in sink.envelopes]
    # Each once: the completed one is terminal, the huge one rejected as it stands (no id in its key).
    assert sorted(keys) == ["acct/", "acct/batch_ok"]
    assert all(len(k.encode()) <= len("acct/") + 1024 for k in keys)
    assert HUGE_ID not in poller.known
