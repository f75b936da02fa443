"""batchscope.cli: output formats and argument parsing (no command is run)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from batchscope.cli import COMMANDS, FORMATS, build_parser, main, render, table
from pipeline import __version__
from pipeline.clickhouse.store import QueryResult

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
                             "topics", "health", "prices", "alerts", "webhooks"}
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
                 "--vanish-active", "--malformed", "--creation-span", "--history"):
        assert flag in text


# --- --config before or after the command ------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_config_before_or_after_every_command(command: str) -> None:
    extra = ["--provider", "openai", "--source", "s"] if command == "normalise" else []
    parser = build_parser()
    assert parser.parse_args(["--config", "x.toml", command, *extra]).config == "x.toml"
    assert parser.parse_args([command, "--config", "x.toml", *extra]).config == "x.toml"
    assert parser.parse_args([command, *extra, "-c", "x.toml"]).config == "x.toml"
    assert parser.parse_args([command, *extra]).config is None


def test_config_after_the_command_wins() -> None:
    args = build_parser().parse_args(["-c", "before.toml", "query", "SELECT 1", "--config", "after.toml"])
    assert (args.config, args.sql) == ("after.toml", "SELECT 1")


def test_config_after_the_command_is_the_file_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["migrate", "--config", "nope.toml"]) == 2
    assert capsys.readouterr().err == ("batchscope: config error: config file nope.toml: not found "
                                       "(check --config or BATCHSCOPE_CONFIG)\n")


# --- help written for the operator ----------------------------------------------------------------


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_says_what_batchscope_does(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text([], capsys)
    assert "Watch LLM batch jobs" in text
    assert "examples:\n  batchscope run" in text
    assert "the one after the command is used" in text
    for developer_words in ("Loads settings once", "maps errors", "SECRETS", ":data:"):
        assert developer_words not in text
    for command in COMMANDS:
        assert f"\n    {command} " in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_says_what_it_does(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text([command], capsys)
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: batchscope {command} ")
    assert description[0].isupper()
    assert description.endswith(".")
    assert "--config PATH" in text


@pytest.mark.parametrize("command", ["run", "query", "normalise", "simulate", "worker", "health"])
def test_commands_with_choices_show_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text([command], capsys)
    assert "\nexamples:\n  " in text
    assert f"batchscope {command}" in text.split("examples:")[1]
