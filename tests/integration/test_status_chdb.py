"""``batchscope status --config PATH`` on the real ClickHouse engine (chDB): every provider's active
batch gets an ETA from its rate, and a Bedrock ARN keeps the columns.

Snapshots are normalised by each provider's adapter from objects as the provider lists them, one
hour after they were created (or started) with a quarter of their requests processed, and written
by the sink's own path (``cut`` + ``ClickHouseSink``) into a migrated chDB database.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchscope.cli import main
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.core.models import Snapshot
from pipeline.core.timeutil import iso_ms
from pipeline.providers import adapter
from tests.support.workload import store_in_order

pytestmark = pytest.mark.integration

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234efgh"
TOPIC = "status.snapshots"


def iso(at: float) -> str:
    return iso_ms(datetime.fromtimestamp(at, UTC))


def raw_objects(hour_ago: float) -> dict[str, dict[str, Any]]:
    since, expires = iso(hour_ago), iso(hour_ago + 86_400)
    return {
        "anthropic": {"id": "msgbatch_01", "type": "message_batch", "processing_status": "in_progress",
                      "created_at": since, "expires_at": expires, "ended_at": None,
                      "request_counts": {"processing": 300, "succeeded": 100, "errored": 0, "canceled": 0,
                                         "expired": 0}},
        "gemini": {"name": "batches/123456", "state": "BATCH_STATE_RUNNING", "createTime": since,
                   "batchStats": {"requestCount": "400", "successfulRequestCount": "100"}},
        "bedrock": {"jobArn": ARN, "status": "InProgress", "submitTime": since, "jobExpirationTime": expires,
                    "totalRecordCount": 400, "successRecordCount": 100, "errorRecordCount": 0},
        "openai": {"id": "batch_01", "object": "batch", "status": "in_progress", "completion_window": "24h",
                   "created_at": int(hour_ago) - 600, "in_progress_at": int(hour_ago),
                   "expires_at": int(hour_ago) + 86_400,
                   "request_counts": {"total": 400, "completed": 100, "failed": 0}},
    }


def snapshots(now: float) -> list[Snapshot]:
    observed = iso(now)
    return [adapter(p).normalise(obj, p, observed) for p, obj in raw_objects(now - 3600).items()]


async def write(store: AsyncStore, snaps: list[Snapshot]) -> None:
    await store_in_order(store, snaps, TOPIC)


async def test_status_gives_every_provider_an_eta_and_keeps_the_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    plain = Store(dsn, "batchscope")
    plain.migrate()
    store = AsyncStore(plain)
    try:
        await write(store, snapshots(time.time()))
    finally:
        store.close_now()
    config = tmp_path / "batchscope.toml"
    config.write_text(f'[clickhouse]\ndsn = "{dsn}"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    active = lines[lines.index("ACTIVE (oldest 20)") + 1:][:4]
    assert sorted(line.split()[0] for line in active) == ["anthropic", "bedrock", "gemini", "openai"]
    assert all("ETA ?" not in line for line in active), out
    assert all(line.endswith(("ETA 2h59m", "ETA 3h00m")) for line in active), out
    assert len({line.index("[") for line in active}) == 1, out  # the ARN did not push its bar right
    assert f"{ARN[:13]}…{ARN[-14:]}" in out
