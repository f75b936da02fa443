"""Spend on the real ClickHouse engine (chDB): the ``batch_spend`` view against the Python rule.

Snapshots are normalised by their providers' adapters and written by the sink's own path into a
migrated database whose price table ``batchscope prices load`` filled from the shipped file and an
operator's file. Each batch's price, cost and team in the view must equal what
:func:`pipeline.core.prices.select` and :func:`~pipeline.core.prices.cost` give, exactly; a batch
observed many times, replayed and seen out of order is one row.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchscope.cli import main
from pipeline.clickhouse.spend import all_prices
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.config import load_settings
from pipeline.core.models import Snapshot
from pipeline.core.prices import cost, select
from pipeline.core.timeutil import iso_ms
from pipeline.core.usage import Usage
from pipeline.providers import adapter
from tests.support.workload import store_in_order

pytestmark = pytest.mark.integration

TOPIC = "spend.snapshots"
HEADER = "provider,model,match,valid_from,input,cached_input,output,currency,source_url\n"
OVERRIDE = HEADER + "openai,gpt-4.1,prefix,2026-01-01,0.8,0.2,3.2,USD,contract 42\n"
MINI = "gpt-4o-mini-2024-07-18"
NOW = datetime.now(UTC).replace(microsecond=0)


def usage(inputs: int, cached: int, outputs: int, reasoning: int = 0) -> dict[str, Any]:
    return {"input_tokens": inputs, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": outputs, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inputs + outputs}


def openai(batch_id: str, model: str, created: datetime, status: str, used: dict[str, Any] | None,
           team: str | None = None) -> dict[str, Any]:
    return {"id": batch_id, "object": "batch", "status": status, "model": model,
            "created_at": int(created.timestamp()), "metadata": {"team": team} if team else {},
            "request_counts": {"total": 10, "completed": 10 if status == "completed" else 4, "failed": 0},
            "usage": used}


def observations() -> list[Snapshot]:
    """In Kafka order: a batch's progress, its end, a re-observation and a stale replay after it."""
    today = NOW - timedelta(minutes=5)
    seen = [
        # x: shipped gpt-4o-mini prefix price, team from the source's tag
        ("acct-a", "openai", openai("x", MINI, today, "in_progress", usage(400, 100, 40))),
        ("acct-a", "openai", openai("x", MINI, today, "completed", usage(1000, 250, 100))),
        ("acct-a", "openai", openai("x", MINI, today, "completed", usage(1000, 250, 100))),
        ("acct-a", "openai", openai("x", MINI, today, "in_progress", usage(400, 100, 40))),
        # y: the operator's prefix row beats nothing else; the batch's metadata names its team
        ("acct-b", "openai", openai("y", "gpt-4.1-2025-04-14", datetime(2026, 11, 15, tzinfo=UTC),
                                    "completed", usage(2_000_003, 7, 999, 500), team="ads")),
        # z: created before every gpt-4.1 row's valid_from: unpriced, with its tokens; no team at all
        ("acct-b", "openai", openai("z", "gpt-4.1", datetime(2025, 6, 1, tzinfo=UTC), "completed",
                                    usage(50, 0, 5))),
        # w: priced (a shipped Gemini row) but no usage on the object: cost NULL, not 0
        ("acct-a", "gemini", {"name": "w", "state": "BATCH_STATE_SUCCEEDED",
                              "model": "models/gemini-2.5-flash", "createTime": iso_ms(today),
                              "endTime": iso_ms(NOW),
                              "batchStats": {"requestCount": "3", "successfulRequestCount": "3"}}),
    ]
    snaps = []
    for n, (source, provider, obj) in enumerate(seen):
        observed = iso_ms(NOW - timedelta(seconds=60 - n))
        snaps.append(adapter(provider).normalise(obj, source, observed))
    return snaps


async def write(store: AsyncStore, snaps: list[Snapshot]) -> None:
    await store_in_order(store, snaps, TOPIC)
    await store_in_order(store, snaps, TOPIC)  # a replay of the whole partition: the sink skips it


def test_batch_spend_matches_the_python_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    (tmp_path / "mine.csv").write_text(OVERRIDE, encoding="utf-8")
    config = tmp_path / "batchscope.toml"
    config.write_text(f"""[clickhouse]
dsn = "{dsn}"

[spend]
prices_file = "{tmp_path / 'mine.csv'}"

[[sources]]
name = "acct-a"
provider = "openai"
tags = {{ team = "ml" }}

[[sources]]
name = "acct-b"
provider = "openai"
""", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["migrate", "--config", str(config)]) == 0
    assert "loaded 31 price row(s): 30 shipped, 1 override" in capsys.readouterr().out
    snaps = observations()
    plain = Store(dsn, "batchscope")
    store = AsyncStore(plain)
    try:
        asyncio.run(write(store, snaps))
        rows = plain.query("SELECT * FROM batch_spend ORDER BY batch_id")
    finally:
        store.close_now()
    got = {r[2]: dict(zip(rows.columns, r, strict=True)) for r in rows.rows}
    assert sorted(got) == ["w", "x", "y", "z"]  # one row per batch, after 7 observations and a replay

    prices = all_prices(load_settings(config))
    latest = {s.batch_id: s for s in snaps if s.status == "completed"}
    latest["w"] = snaps[-1]
    for batch_id, snap in latest.items():
        row = got[batch_id]
        created = datetime.fromisoformat(snap.created_at.replace("Z", "+00:00"))  # type: ignore[union-attr]
        price = select(prices, snap.provider, snap.model, created)
        assert bool(row["priced"]) is (price is not None), batch_id
        used = Usage(snap.input_tokens, snap.cached_input_tokens, snap.output_tokens, snap.reasoning_tokens,
                     snap.usage_source)
        assert Usage(row["input_tokens"], row["cached_input_tokens"], row["output_tokens"],
                     row["reasoning_tokens"], row["usage_source"]) == used
        want = None if price is None else cost(price, used)
        assert row["cost"] == want, batch_id
        if price is not None:
            assert (row["input_price"], row["output_price"], row["price_origin"]) == \
                (price.input, price.output, price.origin)
    assert got["x"]["cost"] == (Decimal(750) * Decimal("0.075") + Decimal(250) * Decimal("0.075")
                                + Decimal(100) * Decimal("0.3")) / 1_000_000
    assert got["y"]["price_origin"] == "override"
    assert got["y"]["cost"] == \
        (Decimal(1_999_996) * Decimal("0.8") + 7 * Decimal("0.2") + 999 * Decimal("3.2")) / 10**6
    assert (got["z"]["priced"], got["z"]["cost"], got["z"]["input_tokens"]) == (0, None, 50)
    assert (got["w"]["priced"], got["w"]["cost"], got["w"]["usage_source"]) == (1, None, "none")
    assert {b: got[b]["team"] for b in got} == {"w": "ml", "x": "ml", "y": "ads", "z": "unattributed"}

    # The saved queries, the period parameters, and status.
    assert main(["query", "--config", str(config), "--saved", "spend", "--format", "json",
                 "--param", f"since={NOW:%Y-%m-%d} 00:00:00"]) == 0
    out = capsys.readouterr().out
    assert '"team": "ml"' in out
    assert '"team": "ads"' not in out  # created in November: outside the period
    assert main(["query", "--config", str(config), "--saved", "unpriced", "--format", "json"]) == 0
    assert '"model": "gpt-4.1"' in capsys.readouterr().out
    assert main(["status", "--config", str(config)]) == 0
    status = capsys.readouterr().out
    spend = status[status.index("SPEND"):]
    assert "USD" in spend
    assert "unpriced batches 0  without usage 1" in spend, spend


def test_a_bad_override_file_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    (tmp_path / "mine.csv").write_text(HEADER + "openai,gpt-4.1,prefix,2026-01-01,cheap,,3,USD,x\n")
    config = tmp_path / "batchscope.toml"
    config.write_text(f'[clickhouse]\ndsn = "{dsn}"\n\n[spend]\nprices_file = "{tmp_path / "mine.csv"}"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["prices", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "line 2: input must be a decimal number" in err
    assert main(["migrate", "--config", str(config)]) == 2
    assert not (tmp_path / "clickhouse").exists()  # refused before ClickHouse was opened
