"""pipeline.clickhouse.store: migrations, statement splitting, DSN redaction and error mapping (no
ClickHouse)."""

from __future__ import annotations

import re

import pytest
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    OperationalError,
    ProgrammingError,
)

from pipeline.clickhouse.store import Migration, Store, first_line, migrations, redact
from pipeline.core.errors import StoreError


def test_migrations_finds_the_core_migration() -> None:
    found = migrations()
    assert [m.name for m in found][:1] == ["001_core.sql"]
    assert [m.version for m in found] == sorted({m.version for m in found})
    core = found[0]
    assert core.version == 1
    assert "{db}.batch_snapshots" in core.sql


def test_core_migration_statements() -> None:
    statements = migrations()[0].statements("obs")
    assert len(statements) == 3
    tables = [re.search(r"CREATE TABLE IF NOT EXISTS (\S+)", s) for s in statements]
    assert [m.group(1) if m else None for m in tables] == [
        "obs.batch_snapshots", "obs.batch_latest", "obs.batch_changes"]
    for statement in statements:
        assert "{db}" not in statement
        assert ";" not in statement
        assert not any(line.strip().startswith("--") for line in statement.splitlines())
        assert statement == statement.strip()


def test_statements_split_and_substitute() -> None:
    sql = """-- a comment; with a semicolon
CREATE TABLE {db}.t (a Int8);

  -- indented comment
;
INSERT INTO {db}.t VALUES (1);
SELECT * FROM {db}.t
"""
    assert Migration(2, "002_x.sql", sql).statements("db1") == [
        "CREATE TABLE db1.t (a Int8)",
        "INSERT INTO db1.t VALUES (1)",
        "SELECT * FROM db1.t",
    ]


def test_statements_of_empty_or_comment_only_sql() -> None:
    assert Migration(3, "003_x.sql", "").statements("db") == []
    assert Migration(3, "003_x.sql", "-- nothing\n;\n  ;").statements("db") == []


def test_semicolon_inside_a_string_literal_is_not_a_separator() -> None:
    sql = "CREATE TABLE {db}.t (a String COMMENT 'x; y') ENGINE = Memory;\nSELECT 1;"
    assert Migration(4, "004_x.sql", sql).statements("db") == [
        "CREATE TABLE db.t (a String COMMENT 'x; y') ENGINE = Memory",
        "SELECT 1",
    ]


def test_checksum_is_stable_and_content_based() -> None:
    a = Migration(1, "001_a.sql", "SELECT 1")
    assert a.checksum == Migration(9, "009_b.sql", "SELECT 1").checksum
    assert a.checksum != Migration(1, "001_a.sql", "SELECT 2").checksum
    assert re.fullmatch(r"[0-9a-f]{16}", a.checksum)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("http://default:hunter2@ch:8123/db", "http://default:***@ch:8123/db"),
        ("https://user:p%40ss:word@ch.example:8443", "https://user:***@ch.example:8443"),
        ("https://user:@ch:8443", "https://user:***@ch:8443"),
        ("http://ch:8123", "http://ch:8123"),
        ("http://user@ch:8123", "http://user@ch:8123"),
        ("chdb:///var/lib/bs/clickhouse", "chdb:///var/lib/bs/clickhouse"),
    ],
)
def test_redact(dsn: str, expected: str) -> None:
    assert redact(dsn) == expected


def test_redact_password_with_at_sign() -> None:
    assert "ss" not in redact("http://default:p@ss@ch:8123")


def test_redact_password_without_user() -> None:
    assert "secret" not in redact("http://:secret@ch:8123")


def test_first_line() -> None:
    assert first_line("  \n") == "unknown ClickHouse error"
    assert first_line("\nCode: 60. Table missing\nStack trace:\n...") == "Code: 60. Table missing"
    assert len(first_line("x" * 2000)) == 500


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (OperationalError("connection refused"), True),
        (ProgrammingError("Code: 62. Syntax error\nmore"), False),
        (DatabaseError("Code: 47. Unknown identifier"), False),
        (DatabaseError("Code: 60. Unknown table"), True),  # not migrated yet: the sink waits
        (DatabaseError("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)"), True),
        (DatabaseError("Code: 159. Timeout exceeded (TIMEOUT_EXCEEDED)"), True),
        (ClickHouseError("something odd"), True),
    ],
)
def test_call_maps_clickhouse_errors(exc: Exception, retriable: bool) -> None:
    store = Store("http://default:hunter2@127.0.0.1:1", "batchscope")  # never connects

    def boom() -> None:
        raise exc

    with pytest.raises(StoreError) as info:
        store._call(boom)
    assert info.value.retriable is retriable
    assert info.value.__cause__ is exc
    assert "\n" not in str(info.value)


def test_ttl_days_substituted_in_migrations() -> None:
    (snapshots, *_) = migrations()[0].statements("obs", ttl_days=30)
    assert "toIntervalDay(30)" in snapshots
    assert "{ttl_days}" not in " ".join(m.sql for m in migrations()[1:])
