"""The results reader end to end: Anthropic and Gemini batches' spend from their results files
equals the simulator's truth exactly, with 10% API faults (on the results GETs too), a worker SIGKILLed and
restarted and the poller restarted after it read some results (so it reads them again: counted
once all the same).

The real commands as subprocesses (``migrate``, ``simulate``, ``poll``, ``worker``) on the real
Kafka broker and chDB. An Anthropic and a Gemini source with ``read_results = true`` and ``tags =
{ team = "research" }`` (their objects carry no metadata, so the team is the source's); the
models the Anthropic results name and Gemini's object model are priced by a test table, but for
``claude-3-haiku-20240307`` (unpriced on purpose: it must show in ``unpriced``) and the Anthropic
batches where no request succeeded (their files name no model). A Gemini batch where no request
succeeded has no responses file: no usage, no cost, counted once all the same.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import Fleet
from tests.support.kafka import read_all
from tests.support.spend import HEADER, expected_spend, query, run_fleet, stored_spend

pytestmark = pytest.mark.integration

FLEET = Fleet(batches=15, sources=2, speed=3000.0, providers=("anthropic", "gemini"))
TEST_PRICES = HEADER + (
    "anthropic,claude-haiku-4-5,prefix,2000-01-01,0.5,0.05,2.5,USD,test table\n"
    "anthropic,claude-sonnet-4-5,prefix,2000-01-01,1.5,0.15,7.5,USD,test table\n"
    "anthropic,claude-opus-4-5-20251101,exact,2000-01-01,2.5,,12.5,USD,test table\n"
    "gemini,models/gemini-2.5-flash,exact,2000-01-01,0.15,0.0375,1.25,USD,test table\n"
)


def test_anthropic_spend_from_results_equals_the_truth(tmp_path: Path, kafka_bootstrap: str,
                                                       topic_prefix: str) -> None:
    raw = f"{topic_prefix}.raw"

    def results_read() -> list[bytes]:
        """The keys of the results reader's records (version 1 records with a ``results`` key)."""
        records = asyncio.run(read_all(kafka_bootstrap, raw))
        return [r.key for r in records if b'"results":{' in r.value and not r.value.startswith(b'{"v"')]

    def with_results(truth: dict[str, Any]) -> set[bytes]:
        return {f"{b['source']}/{b['batch_id']}".encode() for b in truth["batches"] if b["usage"] is not None}

    batches = FLEET.batches * FLEET.sources
    config, truth, _ = run_fleet(tmp_path, kafka_bootstrap, topic_prefix, FLEET, TEST_PRICES,
                                 source_extra='read_results = true\ntags = { team = "research" }\n',
                                 restart_poller=lambda: len(results_read()) >= 3,
                                 settled=lambda t: set(results_read()) == with_results(t))
    read, files = results_read(), with_results(truth)
    assert set(read) == files
    assert {k.split(b"/")[0] for k in files} == {b"sim-1", b"sim-2"}  # Anthropic and Gemini batches
    assert len(read) > len(files)  # the restarted poller read some files again ...

    expected = expected_spend(truth, TEST_PRICES, team_of=lambda b: "research")
    stored = stored_spend(query(config, "--saved", "spend"))
    assert stored == expected  # ... and each batch is counted once, to the token and the Decimal
    assert sum(v["cost"] for v in expected.values() if v["cost"] is not None) > 0
    (counted,) = query(config, "SELECT count() AS n, uniqExact(source, batch_id) AS batches, "
                               "countIf(usage_source = 'results') AS from_results FROM batch_spend")
    assert counted == {"n": batches, "batches": batches, "from_results": len(files)}
    unpriced = {r["model"] for r in query(config, "--saved", "unpriced")}
    assert unpriced == {m for (p, _, m), v in expected.items() if v["cost"] is None and p == "anthropic"}
    assert "claude-3-haiku-20240307" in unpriced
