"""bench.report (saving and rendering figures) and the matching logic of bench.e2e_bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.e2e_bench import Load, Outcome, match, pct
from bench.report import cell, load_records, render, save, table


def test_save_and_render_round_trip(tmp_path: Path) -> None:
    rows = [{"path": "orjson", "rate": 123456.7, "ok": True}, {"path": "json", "rate": 9.5, "ok": False}]
    save("normaliser", "Normaliser", rows, "Some notes.", directory=tmp_path)
    save("e2e", "End to end", [{"p99": None}], directory=tmp_path)
    records = load_records(tmp_path)
    assert {r["name"] for r in records} == {"normaliser", "e2e"}
    text = render(records)
    assert text.index("## Normaliser") < text.index("## End to end")  # pipeline order, not file order
    assert "| orjson | 123,457 | yes |" in text
    assert "| json | 9.5 | no |" in text
    assert "Some notes." in text
    assert "Machine: " in text
    assert "Command: `python -m bench." in text


@pytest.mark.parametrize(("value", "text"), [(None, "-"), (12, "12"), (1234, "1,234"), (0.01234, "0.0123"),
                                            (12.34, "12.3"), ("a|b", "a\\|b")])
def test_cell(value: object, text: str) -> None:
    assert cell(value) == text


def test_empty_table() -> None:
    assert table([]) == "(no figures)\n"


def test_pct() -> None:
    assert pct([], 50) is None
    assert pct([3.0], 99) == 3.0
    assert pct([float(i) for i in range(1, 101)], 50) == pytest.approx(50.5)
    assert pct([float(i) for i in range(1, 101)], 99) == pytest.approx(99.01)


def test_match_pairs_true_transitions_in_the_window_with_rows() -> None:
    speed, wall, now = 10.0, 1000.0, 5000.0  # truth read at wall 1000 s, simulated now 5000 s
    truth = {"now": now, "batches": [
        {"source": "s", "batch_id": "a", "transitions": [
            {"status": "validating", "at": 4000},   # the discovery: never a status_changed
            {"status": "in_progress", "at": 4900},  # wall 990
            {"status": "completed", "at": 4990},    # wall 999: outside the window
        ]},
        {"source": "s", "batch_id": "b", "transitions": [
            {"status": "validating", "at": 4000}, {"status": "failed", "at": 4950},  # wall 995, unseen
        ]},
    ]}
    rows = [("s", "a", "in_progress", 991_000, 992_500), ("s", "a", "completed", 999_500, 1_000_000)]
    out = match(Load(2, 1), truth, wall, rows, (980.0, 998.0), speed)
    assert (out.transitions, out.matched) == (2, 1)
    assert out.detection == [pytest.approx(1.0)]
    assert out.total == [pytest.approx(2.5)]


def test_a_row_holds_the_issue_13_targets_against_its_percentiles() -> None:
    fast = Outcome(Load(8000, 10), "current", 3, 3, [0.5, 0.5, 0.5], [1.0, 1.2, 2.9])
    row = fast.row()
    assert row["pipeline_p50"] == pytest.approx(0.7)
    assert (row["e2e p99 <= 3 s"], row["pipeline p50 <= 1 s"]) == ("met", "met")
    slow = Outcome(Load(8000, 10), "baseline", 2, 2, [0.5, 0.5], [28.0, 31.0]).row()
    assert (slow["e2e p99 <= 3 s"], slow["pipeline p50 <= 1 s"]) == ("NOT met", "NOT met")
    empty = Outcome(Load(500, 10), "current", 0, 0, [], []).row()
    assert (empty["e2e p99 <= 3 s"], empty["pipeline p50 <= 1 s"]) == ("-", "-")
    unseen = Outcome(Load(8000, 10), "baseline", 1753, 0, [], []).row()  # a queue longer than the window
    assert unseen["e2e p99 <= 3 s"] == "NOT met: none observed"
