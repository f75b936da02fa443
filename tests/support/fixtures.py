"""Fixtures for tests against the real local Kafka broker (loaded by ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.support.kafka import delete_topics

BOOTSTRAP = os.environ.get("BATCHSCOPE_TEST_KAFKA", "127.0.0.1:9092")


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
