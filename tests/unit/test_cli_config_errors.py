"""A missing or malformed config value: non-zero exit, one line naming it, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATCHSCOPE_")}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**environ, **(env or {})}, check=False)


@pytest.mark.parametrize(("toml", "names"), [
    ('[kafka]\npartitions = "four"\n', "kafka.partitions"),
    ("[kafka]\npartitions = 0\n", "kafka.partitions"),
    ("[kafka]\nbootstrapp = 'x'\n", "kafka.bootstrapp"),
    ("[clikhouse]\n", "clikhouse"),
    ('[clickhouse]\ndsn = "mysql://x"\n', "clickhouse.dsn"),
    ("[[sources]]\nname = 'a'\n", "sources[0].provider"),
    ("[[sources]]\nname = 'a'\nprovider = 'openai'\napi_key_env = 'BS_TEST_UNSET_KEY'\n",
     "sources[0].api_key_env"),
    ("[[sources]]\nname = 'a'\nprovider = 'openai'\npoll_interval = -1\n", "sources[0].poll_interval"),
    ("[kafka\n", "invalid TOML"),
])
def test_bad_config_file_exits_with_one_line(tmp_path: Path, toml: str, names: str) -> None:
    (tmp_path / "batchscope.toml").write_text(toml, encoding="utf-8")
    result = run_cli(tmp_path, "migrate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "migrate", env={"BATCHSCOPE_KAFKA_PARTITIONS": "many"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "batchscope: config error: BATCHSCOPE_KAFKA_PARTITIONS: expected int, got 'many'"]


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--config", "nope.toml", "migrate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "nope.toml: not found" in result.stderr


def test_bad_argument_is_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "query", "SELECT 1", "--format", "xml")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--format" in result.stderr


def test_secret_from_environment_is_never_printed(tmp_path: Path) -> None:
    (tmp_path / "batchscope.toml").write_text(
        "[[sources]]\nname = 'a'\nprovider = 'openai'\napi_key_env = 'BS_TEST_KEY'\npage_limit = 500\n",
        encoding="utf-8")
    result = run_cli(tmp_path, "migrate", env={"BS_TEST_KEY": "sk-test-SECRET-123"})
    assert result.returncode == 2
    assert "sources[0].page_limit" in result.stderr
    assert "sk-test-SECRET-123" not in result.stderr + result.stdout
