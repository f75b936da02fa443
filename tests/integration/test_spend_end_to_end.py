"""Spend end to end: the simulated fleet with usage, 10% API faults and a worker SIGKILLed and
restarted, on the real Kafka broker and chDB; the ``spend`` saved query equals the simulator's
ground truth priced under a test price table, exactly (Decimal), by team and model.

The real commands as subprocesses: ``batchscope migrate`` (which loads the shipped prices and the
test table as the operator's ``[spend] prices_file``), ``simulate``, ``poll`` and ``worker``. The
fleet is OpenAI and Azure OpenAI (priced by the test table), Groq (OpenAI-shaped usage, no price:
its tokens must show in ``unpriced``) and Mistral (no usage on the object, no price).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import Fleet
from tests.support.spend import HEADER, expected_spend, query, run_fleet, stored_spend

pytestmark = pytest.mark.integration

FLEET = Fleet(batches=40, sources=4, speed=3000.0, providers=("openai", "azure_openai", "groq", "mistral"))
PRICED = ("openai", "azure_openai")
TEST_PRICES = HEADER + "".join(
    f"{provider},{model},{match},2000-01-01,{inp},{cached},{out},USD,test table\n"
    for provider in PRICED
    for model, match, inp, cached, out in (
        ("gpt-4o-mini", "prefix", "0.075", "0.0375", "0.3"),
        ("gpt-4.1", "exact", "1", "0.25", "4"),
        ("o4-mini", "exact", "0.55", "", "2.2"),
        ("text-embedding-3-small", "exact", "0.013", "", "0"),
    ))


def mistral_named(b: dict[str, Any]) -> str:
    return "mistral-small-latest" if b["provider"] == "mistral" else str(b["model"])


def test_spend_matches_the_truth_exactly(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> None:
    config, truth, _ = run_fleet(tmp_path, kafka_bootstrap, topic_prefix, FLEET, TEST_PRICES)
    expected = expected_spend(truth, TEST_PRICES, model_of=mistral_named)
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
