"""``batchscope migrate`` against the real ClickHouse engine (chDB): idempotent and recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.clickhouse.store import Store, migrations

pytestmark = pytest.mark.integration


def migrate(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "batchscope.toml"
    config.write_text(f'[pipeline]\ndata_dir = "{tmp_path / "data"}"\n[clickhouse]\ndatabase = "mig_test"\n',
                      encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "batchscope.cli", "--config", str(config), "migrate"],
                          capture_output=True, text=True, timeout=120, check=False)


def schema(tmp_path: Path) -> list[tuple[object, ...]]:
    store = Store(f"chdb://{tmp_path / 'data' / 'clickhouse'}", "mig_test")
    try:
        return store.query(
            "SELECT name, engine, create_table_query FROM system.tables "
            "WHERE database = 'mig_test' ORDER BY name").rows + store.query(
            "SELECT version, name, checksum FROM mig_test.schema_migrations ORDER BY version").rows
    finally:
        store.close()


def test_migrate_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    first = migrate(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"applied {len(migrations())} migration(s)")
    before = schema(tmp_path)
    assert {"batch_snapshots", "batch_latest", "batch_changes"} <= {row[0] for row in before}

    second = migrate(tmp_path)
    assert second.returncode == 0, second.stderr
    up_to_date, prices = second.stdout.splitlines()
    assert up_to_date == "up to date"
    assert prices.startswith("loaded ")  # the price table, reloaded every time (docs/spend.md)
    assert schema(tmp_path) == before
