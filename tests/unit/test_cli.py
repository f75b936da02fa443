"""pipeline.cli: output formats and argument parsing (no command is run)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from pipeline import __version__
from pipeline.cli import COMMANDS, FORMATS, build_parser, render, table
from pipeline.store import QueryResult

RESULT = QueryResult(("status", "n", "note"), [("completed", 12, None), ("in_progress", 3, "slow")])


def test_table() -> None:
    assert table(RESULT) == (
        "status       n   note\n"
        "-----------  --  ----\n"
        "completed    12  NULL\n"
        "in_progress  3   slow\n"
        "(2 rows)\n"
    )


def test_table_singular_and_empty() -> None:
    assert table(QueryResult(("x",), [(1,)])).endswith("(1 row)\n")
    assert table(QueryResult(("count()",), [])) == "count()\n-------\n(0 rows)\n"


def test_table_header_wider_than_values() -> None:
    lines = table(QueryResult(("a_long_name", "b"), [(1, 2)])).splitlines()
    assert lines[0] == "a_long_name  b"
    assert lines[1] == "-----------  -"
    assert lines[2] == "1            2"


def test_render_table_is_the_default_format() -> None:
    assert render(RESULT, "table") == table(RESULT)


def test_render_json() -> None:
    out = render(RESULT, "json")
    assert out.endswith("\n")
    assert orjson.loads(out) == [
        {"status": "completed", "n": 12, "note": None},
        {"status": "in_progress", "n": 3, "note": "slow"},
    ]


def test_render_json_non_native_values() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    out = orjson.loads(render(QueryResult(("t", "d"), [(when, Decimal("1.50"))]), "json"))
    assert out == [{"t": "2024-05-01T12:00:00+00:00", "d": "1.50"}]


def test_render_json_empty() -> None:
    assert orjson.loads(render(QueryResult(("a",), []), "json")) == []


def test_render_csv() -> None:
    out = render(RESULT, "csv")
    assert list(csv.reader(io.StringIO(out))) == [
        ["status", "n", "note"], ["completed", "12", ""], ["in_progress", "3", "slow"],
    ]


def test_render_csv_quotes() -> None:
    out = render(QueryResult(("a",), [("x,y",), ('say "hi"',)]), "csv")
    assert list(csv.reader(io.StringIO(out))) == [["a"], ["x,y"], ['say "hi"']]


# --- the parser -------------------------------------------------------------------------------


def test_parser_commands() -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).command == "run"
    args = parser.parse_args(["-c", "x.toml", "query", "SELECT 1", "--format", "csv", "--write"])
    assert (args.config, args.command, args.sql, args.format, args.write) == ("x.toml", "query", "SELECT 1",
                                                                             "csv", True)
    defaults = parser.parse_args(["query", "SELECT 1"])
    assert (defaults.format, defaults.write, defaults.config) == ("table", False, None)
    sim = parser.parse_args(["simulate", "--batches", "5", "--speed", "2.5", "--port", "0"])
    assert (sim.batches, sim.speed, sim.port, sim.seed, sim.sources) == (5, 2.5, 0, None, None)
    assert set(COMMANDS) == {"run", "poll", "worker", "migrate", "query", "simulate", "normalise", "status",
                             "topics", "health"}
    assert parser.parse_args(["worker"]).agents == ["normalise", "track", "sink"]
    assert parser.parse_args(["worker", "--agents", "track, sink"]).agents == ["track", "sink"]
    saved = parser.parse_args(["query", "--saved", "stalled", "-p", "stall_minutes=5", "-p", "x=1"])
    assert (saved.sql, saved.saved, saved.param) == (None, "stalled", ["stall_minutes=5", "x=1"])
    assert FORMATS == ("table", "json", "csv")


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        [],
        ["query", "SELECT 1", "--format", "xml"],
        ["simulate", "--batches", "many"],
        ["simulate", "--providers", "openai,acme"],
        ["simulate", "--malformed", "few"],
        ["run", "--nope"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("batchscope: ")
    assert err.count("\n") == 1
    assert "--help" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"batchscope {__version__}"


@pytest.mark.parametrize("agents", ["foo", "track,bogus", ","])
def test_worker_rejects_unknown_agents(agents: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["worker", "--agents", agents])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "choose from normalise,track,sink" in err


def test_simulate_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["simulate", "--providers", "anthropic, bedrock", "--latency", "0.2",
                                      "--vanish-share", "0.1", "--vanish-after", "60", "--malformed", "3"])
    assert (args.providers, args.latency, args.vanish_share, args.vanish_after, args.malformed) == (
        ("anthropic", "bedrock"), 0.2, 0.1, 60.0, 3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--batches", "--sources", "--seed", "--speed", "--port", "--fault-rate", "--retry-after",
                 "--hang-seconds", "--providers", "--latency", "--vanish-share", "--vanish-after",
                 "--malformed", "--creation-span", "--history"):
        assert flag in text
