"""pipeline.clickhouse.status: the ETA of every provider's active batches and columns that hold long ids
(no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.clickhouse import status
from pipeline.clickhouse.store import QueryResult
from pipeline.core.models import Snapshot
from pipeline.core.timeutil import iso_to_ms
from pipeline.providers import adapter

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234efgh"
OBSERVED = "2025-07-01T12:00:00.000Z"
# Active batches as each provider lists them: 1 hour since they were created (or started), a quarter
# of the requests processed, so 3 more hours to go at that rate.
RAW: dict[str, dict[str, Any]] = {
    "anthropic": {
        "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message_batch",
        "processing_status": "in_progress",
        "created_at": "2025-07-01T11:00:00Z", "expires_at": "2025-07-02T11:00:00Z", "ended_at": None,
        "request_counts": {"processing": 300, "succeeded": 90, "errored": 10, "canceled": 0, "expired": 0},
    },
    "gemini": {
        "name": "batches/123456", "model": "models/gemini-2.5-flash", "state": "BATCH_STATE_RUNNING",
        "createTime": "2025-07-01T11:00:00.000000000Z",
        "batchStats": {"requestCount": "400", "successfulRequestCount": "100", "pendingRequestCount": "300"},
    },
    "bedrock": {
        "jobArn": ARN, "jobName": "nightly", "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "status": "InProgress", "submitTime": "2025-07-01T11:00:00Z",
        "jobExpirationTime": "2025-07-02T11:00:00Z", "totalRecordCount": 400, "processedRecordCount": 100,
        "successRecordCount": 99, "errorRecordCount": 1,
    },
    "openai": {
        "id": "batch_abc123", "object": "batch", "endpoint": "/v1/chat/completions", "status": "in_progress",
        "completion_window": "24h", "created_at": 1751367600 - 600, "in_progress_at": 1751367600,
        "expires_at": 1751367600 + 86400,
        "request_counts": {"total": 400, "completed": 100, "failed": 0},
    },
}


def unix(iso: str | None) -> float | None:
    return None if iso is None else iso_to_ms(iso) / 1000


def active_row(snap: Snapshot, now: str = OBSERVED) -> tuple[Any, ...]:
    """The row ACTIVE_SQL reads for a batch whose latest snapshot is ``snap``."""
    processed = (snap.requests_completed or 0) + (snap.requests_failed or 0)
    return (snap.source, snap.batch_id, snap.status, processed, snap.requests_total,
            unix(snap.in_progress_at), unix(snap.created_at), unix(now))


def fleet(*active: tuple[Any, ...], stalled: QueryResult | None = None) -> status.Fleet:
    empty = QueryResult((), [])
    return status.Fleet(empty, QueryResult(("active",), list(active)), empty, stalled or empty)


@pytest.mark.parametrize("provider", sorted(RAW))
def test_every_provider_gets_an_eta_from_its_rate(provider: str) -> None:
    snap = adapter(provider).normalise(RAW[provider], "acct", OBSERVED)
    assert snap.status == "in_progress"
    line = status.active_line(active_row(snap))
    assert line.endswith("[#####...............]  25%  ETA 3h00m")


def test_the_start_is_in_progress_at_when_the_provider_gives_it() -> None:
    # created 1 h before it started: the rate counts from the start (2 h to go, not 3 h 20 m)
    row = ("acct", "b1", "in_progress", 100, 300, 3600.0, 0.0, 7200.0)
    assert status.active_line(row).endswith("ETA 2h00m")


@pytest.mark.parametrize(("done", "total", "in_progress", "created"), [
    (0, 400, 0.0, 0.0),  # nothing processed yet: no rate
    (10, None, 0.0, 0.0),  # no total
    (10, 400, None, None),  # no start time at all
])
def test_no_rate_no_eta(done: int, total: int | None, in_progress: float | None,
                        created: float | None) -> None:
    row = ("acct", "b1", "in_progress", done, total, in_progress, created, 60.0)
    assert status.active_line(row).endswith("ETA ?")


def test_eta_seconds() -> None:
    assert status.eta_seconds(now=100.0, started_at=0.0, done=25, total=100) == pytest.approx(300.0)
    assert status.eta_seconds(now=100.0, started_at=0.0, done=100, total=100) == pytest.approx(0.0)
    assert status.eta_seconds(now=100.0, started_at=None, done=25, total=100) is None


@pytest.mark.parametrize("width", [1, 2, 5, 12, 28])
def test_middle_keeps_the_width_the_head_and_the_tail(width: int) -> None:
    cut = status.middle(ARN, width)
    assert len(cut) == width
    assert cut.count("…") == 1
    head, tail = cut.split("…")
    assert ARN.startswith(head)
    assert ARN.endswith(tail)
    assert len(tail) >= len(head)


def test_middle_leaves_short_text_alone() -> None:
    assert status.middle("batch_1", 28) == "batch_1"
    assert status.middle("x" * 28, 28) == "x" * 28
    assert status.middle(ARN, 28) == "arn:aws:bedro…b/abcd1234efgh"


def test_long_ids_keep_the_columns() -> None:
    rows = [("acct", ARN, "in_progress", 100, 400, None, 0.0, 3600.0),
            ("a-source-name-longer-than-twelve", "batch_1", "validating", 0, None, None, 0.0, 60.0)]
    stalled = QueryResult(("source", "batch_id", "processed", "stalled_minutes"), [("acct", ARN, 100, 45.0)])
    lines = status.render(fleet(*rows, stalled=stalled)).splitlines()
    active = lines[lines.index(f"ACTIVE (oldest {status.ACTIVE_LIMIT})") + 1:][:2]
    assert [line.index("[") for line in active] == [2 + 12 + 1 + 28 + 1 + 12 + 1] * 2
    assert active[0].startswith(f"  acct         {ARN[:13]}…{ARN[-14:]} in_progress  ")
    assert "a-sou…twelve" in active[1]
    assert lines[-1] == f"  acct         {ARN[:13]}…{ARN[-14:]} 100 45.0"


def test_spend_section_shows_today_and_month_per_currency() -> None:
    from decimal import Decimal

    empty = QueryResult((), [])
    spend = QueryResult(("currency", "today", "month", "unpriced_batches", "batches_without_usage"),
                        [(None, None, None, 4, 1), ("USD", Decimal("1.005000000000000"),
                                                    Decimal("1234.994999999999999"), 0, 2)])
    out = status.render(status.Fleet(empty, empty, empty, empty, spend))
    lines = out[out.index("SPEND"):].splitlines()
    assert lines[1].split() == ["(unpriced)", "today", "-", "month", "-", "unpriced", "batches", "4",
                                "without", "usage", "1"]
    assert lines[2].split()[:5] == ["USD", "today", "1.00", "month", "1,234.99"]  # half-even, display only
    assert "SPEND" not in status.render(status.Fleet(empty, empty, empty, empty))
