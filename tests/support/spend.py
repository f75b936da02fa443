"""Spend end to end: the commands, the ``spend`` query's rows summed, and the truth priced."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from pipeline.core.prices import cost, parse_prices, select
from pipeline.core.usage import Usage
from tests.reliability.harness import Fleet, Proc, get_json, wait_for, write_config
from tests.support.kafka import lag, topic_ends
from tests.support.processes import free_port

TOKENS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
HEADER = "provider,model,match,valid_from,input,cached_input,output,currency,source_url\n"
Key = tuple[str, str, str | None]  # (provider, team, model)
Truth = dict[str, Any]


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


def expected_spend(truth: Truth, table: str, *,
                   model_of: Callable[[Truth], str | None] = lambda b: b["model"],
                   team_of: Callable[[Truth], str] = lambda b: b["team"]) -> dict[Key, dict[str, Any]]:
    """Per (provider, team, model): the truth's tokens and their cost under the price ``table``
    (None: unpriced), computed in Python from the same rule the view applies in SQL."""
    prices = parse_prices(table, "override", "test")
    out: dict[Key, dict[str, Any]] = defaultdict(empty)
    for b in truth["batches"]:
        model = model_of(b)
        row = out[(b["provider"], team_of(b), model)]
        row["batches"] += 1
        usage = b["usage"]
        if usage is None:
            continue
        for name in TOKENS:
            row[name] += usage[name]
        created = datetime.fromtimestamp(b["created_at"], UTC)
        price = None if model is None else select(prices, b["provider"], model, created)
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


def run_fleet(tmp_path: Path, bootstrap: str, prefix: str, fleet: Fleet, table: str, *,
              source_extra: str = "", settled: Callable[[Truth], bool] = lambda truth: True,
              restart_poller: Callable[[], bool] | None = None) -> tuple[Path, Truth, Proc]:
    """The simulated fleet polled with 10% API faults into a migrated chDB whose operator's prices
    are ``table``, a worker SIGKILLed and restarted once changes flow (and the poller restarted
    once ``restart_poller()`` holds, if given), until every batch ended, was seen so and
    ``settled(truth)``; then drained. The config, the simulator's truth and the worker."""
    sim_port = free_port()
    prices = tmp_path / "prices.csv"
    prices.write_text(table, encoding="utf-8")
    extra = f'fault_rate = 0.1\nretry_after = 0.5\nhang_seconds = 1.0\n\n[spend]\nprices_file = "{prices}"\n'
    config = write_config(tmp_path, bootstrap, prefix, sim_port=sim_port, fleet=fleet,
                          source_extra=source_extra, extra=extra)
    assert "loaded" in cli(config, "migrate")
    truth_url = f"http://127.0.0.1:{sim_port}/_sim/truth"
    sim = Proc(config, tmp_path / "sim.log", "simulate").start()
    poll = Proc(config, tmp_path / "poll.log", "poll").start()
    worker = Proc(config, tmp_path / "worker.log", "worker").start()
    topics = [f"{prefix}.{t}" for t in ("raw", "snapshots", "changesets")]
    try:
        wait_for(lambda: get_json(truth_url), "the simulator", 60, sim)
        wait_for(lambda: sum(asyncio.run(topic_ends(bootstrap, [f"{prefix}.changes"])).values()),
                 "the first change events", 90, sim, poll, worker)
        time.sleep(2.0)
        assert worker.kill(signal.SIGKILL) == -signal.SIGKILL, worker.tail()
        worker.start()
        if restart_poller is not None:
            wait_for(restart_poller, "the moment to restart the poller", 90, sim, poll, worker)
            poll.stop()
            poll.start()

        def terminal_and_served() -> Truth | None:
            t: Truth = get_json(truth_url)
            done = t["all_terminal"] and all(b["served"] and b["served"][-1] == b["final_status"]
                                             for b in t["batches"])
            return t if done and settled(t) else None

        truth = wait_for(terminal_and_served, "the fleet to end and be seen so", 120, sim, poll, worker)
        poll.stop()
        drained = lambda: asyncio.run(lag(bootstrap, prefix, topics)) == 0  # noqa: E731
        wait_for(drained, "the worker to drain", 90, sim, worker)
        time.sleep(2.0)  # the sink's last block commits with the offsets
        assert worker.stop() == 0, worker.tail()
    finally:
        for p in (worker, poll, sim):
            p.stop()
    assert sum(truth["faults"]["injected"].values()) > 0, "no API fault was injected"
    assert worker.text().count("worker: agents") == 2  # it was restarted
    return config, truth, worker
