"""pipeline.clickhouse.store against chDB: a refused read-only query must not leave the session read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clickhouse.store import Store
from pipeline.core.errors import StoreError

pytestmark = pytest.mark.integration


def test_inserts_work_after_a_refused_readonly_query(tmp_path: Path) -> None:
    store = Store(f"chdb://{tmp_path / 'ch'}", "ro_test")
    try:
        store.migrate()
        with pytest.raises(StoreError, match="readonly"):
            store.query("INSERT INTO batch_output_acks (source, batch_id) VALUES ('s', 'b')")
        store.insert_json("batch_output_acks", [b'{"source": "s", "batch_id": "b"}'], "token-1")
        assert store.query("SELECT count() FROM batch_output_acks", params={}).rows == [(1,)]
        assert store.query("SELECT {n:UInt8} + 1", params={"n": "1"}).rows == [(2,)]
    finally:
        store.close()


def test_an_unmigrated_schema_is_a_retriable_error(tmp_path: Path) -> None:
    """A worker started before `batchscope migrate` must wait (paused), not dead-letter its records."""
    store = Store(f"chdb://{tmp_path / 'ch'}", "not_migrated")
    try:
        with pytest.raises(StoreError) as info:
            store.insert_json("batch_snapshots", [b'{"source": "s"}'], "token-1")
        assert info.value.retriable is True
        store.command("CREATE DATABASE IF NOT EXISTS not_migrated")
        with pytest.raises(StoreError) as again:
            store.insert_json("batch_snapshots", [b'{"source": "s"}'], "token-2")
        assert again.value.retriable is True
        with pytest.raises(StoreError, match="Syntax error") as bad:
            store.query("SELEC 1")
        assert bad.value.retriable is False
    finally:
        store.close()
