"""The results reader's usage on the real ClickHouse engine (chDB): kept whatever comes after it.

An Anthropic batch object carries no usage and no model; the results reader publishes the object
as last seen plus the usage summed from its results file (``Envelope.results``), normalised to
``usage_source = results``. A later observation of the object alone (a poller restart, a sweep, a
replay) wins ``batch_latest`` (a later ``observed_at``) but must not take the usage away:
``batch_usage`` keeps it and ``batch_spend`` reads it, in any order of arrival, replayed or not.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchscope.cli import main
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.core.models import Envelope, Snapshot
from pipeline.core.normalise import normalise
from pipeline.core.timeutil import iso_ms
from pipeline.core.usage import Usage, results_dict
from tests.support.workload import store_in_order

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
MODEL = "claude-sonnet-4-5-20250929"
SONNET = (Decimal("1.5"), Decimal("0.15"), Decimal("7.5"))  # the shipped claude-sonnet-4-5 batch prices


def ended(batch_id: str) -> dict[str, Any]:
    created = NOW - timedelta(hours=1)
    return {"id": batch_id, "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0},
            "created_at": iso_ms(created), "ended_at": iso_ms(NOW - timedelta(minutes=5)),
            "expires_at": iso_ms(created + timedelta(days=1)), "cancel_initiated_at": None,
            "results_url": f"https://api.anthropic.com/v1/messages/batches/{batch_id}/results"}


def observed(batch_id: str, second: int, results: dict[str, Any] | None = None) -> Snapshot:
    seen = iso_ms(NOW - timedelta(seconds=60 - second))
    return normalise(Envelope("claude", "anthropic", seen, ended(batch_id), results=results))


def arrivals(order: str) -> list[Snapshot]:
    """One batch's three observations (the object ended, the results read, the object re-polled
    later) in the order ``order`` names them; and a batch whose results could not be read."""
    read = results_dict(Usage(12_000, 3_000, 900, 0, "results"), MODEL)
    by_name = {"ended": observed("msgbatch_a", 1), "results": observed("msgbatch_a", 2, read),
               "repoll": observed("msgbatch_a", 3)}
    return [by_name[name] for name in order.split(",")] + [observed("msgbatch_b", 4)]


@pytest.mark.parametrize("order", ["ended,results,repoll", "repoll,ended,results", "results,repoll,ended"])
def test_usage_from_results_survives_later_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   order: str) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    config = tmp_path / "batchscope.toml"
    config.write_text(f'[clickhouse]\ndsn = "{dsn}"\n\n[[sources]]\nname = "claude"\nprovider = "anthropic"\n'
                      'tags = { team = "research" }\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["migrate", "--config", str(config)]) == 0
    snaps = arrivals(order)
    plain = Store(dsn, "batchscope")
    store = AsyncStore(plain)
    try:
        asyncio.run(store_in_order(store, snaps, "results.snapshots"))
        asyncio.run(store_in_order(store, snaps[::-1], "results.replayed"))  # replayed, in reverse
        rows = plain.query("SELECT * FROM batch_spend ORDER BY batch_id")
        latest = plain.query("SELECT usage_source FROM batch_latest FINAL WHERE batch_id = 'msgbatch_a'")
    finally:
        store.close_now()
    got = [dict(zip(rows.columns, r, strict=True)) for r in rows.rows]
    assert [r["batch_id"] for r in got] == ["msgbatch_a", "msgbatch_b"]  # counted once each
    assert latest.rows == [("none",)]  # the re-poll won the latest state ...
    a, b = got
    assert (a["usage_source"], a["model"], a["team"]) == ("results", MODEL, "research")  # ... not the usage
    assert (a["input_tokens"], a["cached_input_tokens"], a["output_tokens"]) == (12_000, 3_000, 900)
    uncached, cached, out = SONNET
    assert a["priced"] == 1
    assert a["cost"] == (9_000 * uncached + 3_000 * cached + 900 * out) / 1_000_000
    # the batch whose results were not read: no model, no price, no figure, still one row
    assert (b["usage_source"], b["model"], b["priced"], b["cost"], b["input_tokens"]) == \
        ("none", None, 0, None, None)
