"""pipeline.clickhouse.queries and .status: saved query files, parameters and the dashboard (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clickhouse import status
from pipeline.clickhouse.queries import parse_params, parse_saved, saved, saved_queries
from pipeline.clickhouse.store import QueryResult
from pipeline.core.errors import ConfigError

EXPECTED = {"active_batches", "at_risk", "durations", "failure_rates", "gone", "in_progress_at", "stalled",
            "uncollected_outputs", "spend", "unpriced"}


def test_every_saved_query_says_what_it_answers() -> None:
    queries = saved_queries()
    assert set(queries) == EXPECTED
    for query in queries.values():
        assert len(query.description) > 30, query.name
        assert "default:" not in query.description


def test_defaults_come_from_default_lines() -> None:
    q = parse_saved("x", "-- What.\n-- default: n=5\n-- default: at=2026-01-01 00:00:00\nSELECT {n:UInt8}")
    assert q.description == "What."
    assert q.defaults == {"n": "5", "at": "2026-01-01 00:00:00"}
    assert saved("stalled").defaults == {"stall_minutes": "30"}


def test_unknown_saved_query_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: active_batches, at_risk"):
        saved("nope")


def test_parse_params() -> None:
    assert parse_params(["at=2026-01-01 00:00:00", "n=1=2"]) == {"at": "2026-01-01 00:00:00", "n": "1=2"}
    assert parse_params(None) == {}
    for bad in ("novalue", "=1", "1a=2"):
        with pytest.raises(ConfigError, match="--param"):
            parse_params([bad])


def test_bar_and_eta() -> None:
    assert status.bar(5, 20) == "[#####...............]  25%"
    assert status.bar(0, None).endswith("?")
    assert status.bar(30, 20).endswith("100%")
    assert status.eta(None) == "ETA ?"
    assert status.eta(59) == "ETA 0m"
    assert status.eta(3 * 3600 + 5 * 60) == "ETA 3h05m"


def test_render_dashboard() -> None:
    columns = ("source", "batch_id", "status", "expires_at", "processed", "stalled_minutes")
    empty = QueryResult((), [])  # chDB gives no column names for an empty result
    fleet = status.Fleet(
        counts=QueryResult(("source", "provider", "status", "batches"),
                           [("sim-1", "openai", "completed", 3), ("sim-1", "openai", "in_progress", 1)]),
        active=QueryResult(("source", "batch_id", "status", "processed", "requests_total", "in_progress_unix",
                            "created_unix", "now_unix"),
                           [("sim-1", "b1", "in_progress", 10, 40, 1000.0, 900.0, 1200.0)]),
        at_risk=empty,
        stalled=QueryResult(columns, [("sim-1", "b1", "in_progress", None, 10, 45.0)]),
    )
    text = status.render(fleet)
    assert "sim-1" in text
    assert "total" in text
    assert " 4\n" in text
    assert "[#####...............]  25%  ETA 10m" in text
    assert "AT RISK OF EXPIRING (0)\n  (none)" in text
    assert f"STALLED (1)\n  {'sim-1':<12} {'b1':<28} 10 45.0\n" in text


def test_query_without_sql_lists_the_saved_queries(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from batchscope.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["query"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == sorted(EXPECTED)
    assert "batchscope query --saved NAME" in out.splitlines()[0]
    assert "(default: stall_minutes=30)" in out
    assert main(["query", "SELECT 1", "--saved", "stalled"]) == 2
    assert main(["query", "--saved", "stalled", "--write"]) == 2
