"""Spend end to end: the simulated fleet with usage, 10% API faults and a worker SIGKILLed and
restarted, on the real Kafka broker and chDB; the ``spend`` saved query equals the simulator's
ground truth priced under a test price table, exactly (Decimal), by team and model.

The real commands as subprocesses: ``batchscope migrate`` (which loads the shipped prices and the
test table as the operator's ``[spend] prices_file``), ``simulate``, ``poll`` and ``worker``. The
fleet is OpenAI and Azure OpenAI (priced by the test table), Groq (OpenAI-shaped usage, no price:
its tokens must show in ``unpriced``) and Mistral (no usage on the object, no price).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.core.prices import cost, parse_prices, select
from pipeline.core.usage import Usage
from tests.reliability.harness import Fleet, Proc, get_json, wait_for, write_config
from tests.support.kafka import lag, topic_ends
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

FLEET = Fleet(batches=40, sources=4, speed=3000.0, providers=("openai", "azure_openai", "groq", "mistral"))
PRICED = ("openai", "azure_openai")
HEADER = "provider,model,match,valid_from,input,cached_input,output,currency,source_url\n"
TEST_PRICES = HEADER + "".join(
    f"{provider},{model},{match},2000-01-01,{inp},{cached},{out},USD,test table\n"
    for provider in PRICED
    for model, match, inp, cached, out in (
        ("gpt-4o-mini", "prefix", "0.075", "0.0375", "0.3"),
        ("gpt-4.1", "exact", "1", "0.25", "4"),
        ("o4-mini", "exact", "0.55", "", "2.2"),
        ("text-embedding-3-small", "exact", "0.013", "", "0"),
    ))
TOKENS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
Key = tuple[str, str, str]  # (provider, team, model)


def cli(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "batchscope.cli", "--config", str(config), *args],
                          cwd=config.parent, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout.decode()


def query(config: Path, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = orjson.loads(cli(config, "query", *args, "--format", "json"))
    return rows


def empty() -> dict[str, Any]:
    return {**dict.fromkeys(TOKENS, 0), "batches": 0, "cost": None}


def expected_spend(truth: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    """Per (provider, team, model): the truth's tokens and their cost under the test table (None:
    unpriced), computed in Python from the same rule the view applies in SQL."""
    prices = parse_prices(TEST_PRICES, "override", "test")
    out: dict[Key, dict[str, Any]] = defaultdict(empty)
    for b in truth["batches"]:
        model = "mistral-small-latest" if b["provider"] == "mistral" else b["model"]
        row = out[(b["provider"], b["team"], model)]
        row["batches"] += 1
        usage = b["usage"]
        if usage is None:
            continue
        for name in TOKENS:
            row[name] += usage[name]
        price = select(prices, b["provider"], model, datetime.fromtimestamp(b["created_at"], UTC))
        if price is not None:
            found = cost(price, Usage(usage["input_tokens"], usage["cached_input_tokens"],
                                      usage["output_tokens"], usage["reasoning_tokens"], "object"))
            assert found is not None
            row["cost"] = (row["cost"] or Decimal(0)) + found
    return dict(out)


def stored_spend(rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The ``spend`` query's rows summed over day and source, per (provider, team, model)."""
    out: dict[Key, dict[str, Any]] = defaultdict(empty)
    for r in rows:
        row = out[(r["provider"], r["team"], r["model"])]
        row["batches"] += r["batches"]
        for name in TOKENS:
            row[name] += r[name]
        if r["cost"] is not None:
            row["cost"] = (row["cost"] or Decimal(0)) + Decimal(r["cost"])
    return dict(out)


def test_spend_matches_the_truth_exactly(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> None:
    sim_port = free_port()
    prices = tmp_path / "prices.csv"
    prices.write_text(TEST_PRICES, encoding="utf-8")
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port=sim_port, fleet=FLEET,
                          extra=f'fault_rate = 0.1\nretry_after = 0.5\nhang_seconds = 1.0\n\n'
                                f'[spend]\nprices_file = "{prices}"\n')
    assert "loaded" in cli(config, "migrate")
    truth_url = f"http://127.0.0.1:{sim_port}/_sim/truth"
    sim = Proc(config, tmp_path / "sim.log", "simulate").start()
    poll = Proc(config, tmp_path / "poll.log", "poll").start()
    worker = Proc(config, tmp_path / "worker.log", "worker").start()
    topics = [f"{topic_prefix}.{t}" for t in ("raw", "snapshots", "changes")]
    try:
        wait_for(lambda: get_json(truth_url), "the simulator", 60, sim)
        wait_for(lambda: sum(asyncio.run(topic_ends(kafka_bootstrap, [f"{topic_prefix}.changes"])).values()),
                 "the first change events", 90, sim, poll, worker)
        time.sleep(2.0)
        assert worker.kill(signal.SIGKILL) == -signal.SIGKILL, worker.tail()
        worker.start()

        def terminal_and_served() -> dict[str, Any] | None:
            t: dict[str, Any] = get_json(truth_url)
            done = t["all_terminal"] and all(b["served"] and b["served"][-1] == b["final_status"]
                                             for b in t["batches"])
            return t if done else None

        truth = wait_for(terminal_and_served, "the fleet to end and be seen so", 120, sim, poll, worker)
        poll.stop()
        wait_for(lambda: asyncio.run(lag(kafka_bootstrap, topic_prefix, topics)) == 0,
                 "the worker to drain", 90, sim, worker)
        time.sleep(2.0)  # the sink's last block commits with the offsets
        assert worker.stop() == 0, worker.tail()
    finally:
        for p in (worker, poll, sim):
            p.stop()

    assert sum(truth["faults"]["injected"].values()) > 0, "no API fault was injected"
    assert worker.text().count("worker: agents") == 2  # it was restarted
    expected = expected_spend(truth)
    stored = stored_spend(query(config, "--saved", "spend"))
    assert stored == expected
    priced = {k: v for k, v in expected.items() if k[0] in PRICED}
    assert all(v["cost"] is not None for v in priced.values())
    assert sum(v["cost"] for v in priced.values()) > 0
    assert all(v["cost"] is None for k, v in expected.items() if k[0] not in PRICED)

    # Every batch once: the view has one row per batch, whatever was replayed after the kill.
    (counted,) = query(config, "SELECT count() AS n, uniqExact(source, batch_id) AS batches FROM batch_spend")
    assert counted == {"n": len(truth["batches"]), "batches": len(truth["batches"])}

    unpriced = {(r["provider"], r["model"]): r for r in query(config, "--saved", "unpriced")}
    models = {(k[0], k[2]) for k in expected if k[0] not in PRICED}
    assert set(unpriced) == models
    for (provider, model), row in unpriced.items():
        want = [v for k, v in expected.items() if (k[0], k[2]) == (provider, model)]
        assert row["batches"] == sum(v["batches"] for v in want)
        assert row["input_tokens"] == sum(v["input_tokens"] for v in want)
        assert row["output_tokens"] == sum(v["output_tokens"] for v in want)
    assert any(r["input_tokens"] > 0 for (p, _), r in unpriced.items() if p == "groq")
