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
    return subprocess.run([sys.executable, "-m", "batchscope.cli", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**environ, **(env or {})}, check=False)


@pytest.mark.parametrize(("toml", "names"), [
    ('[kafka]\npartitions = "four"\n', "kafka.partitions"),
    ("[kafka]\npartitions = 0\n", "kafka.partitions"),
    ("[kafka]\nbootstrapp = 'x'\n", "kafka.bootstrapp"),
    ("[clikhouse]\n", "clikhouse"),
    ('[clickhouse]\ndsn = "mysql://x"\n', "clickhouse.dsn"),
    ("[[sources]]\nname = 'a'\n", "sources[0].provider"),
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


# --- in process, through batchscope.cli.main ----------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No BATCHSCOPE_* variable and no provider key of the caller's shell leaks into a case."""
    for name in list(os.environ):
        if name.startswith("BATCHSCOPE_") or name.endswith(("_API_KEY", "_PASSWORD")):
            monkeypatch.delenv(name)
    return monkeypatch


def main_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, *args: str,
               ) -> tuple[int, list[str]]:
    from batchscope.cli import main

    config = tmp_path / "batchscope.toml"
    config.write_text(toml, encoding="utf-8")
    code = main(["--config", str(config), *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip().splitlines()


def closed_url() -> str:
    return "http://127.0.0.1:9/metrics"  # discard: nothing listens there on a test machine


OPENAI = '[[sources]]\nname = "openai-prod"\nprovider = "openai"\napi_key_env = "OPENAI_API_KEY"\n'
HIDDEN = "hunter2-SECRET-5d1c"
BINARY_KEY = "binary-key"


@pytest.mark.parametrize(("toml", "args", "key"), [
    # Point 14: tracebacks before, now one line naming the key.
    ("[pipeline]\nmetrics_port = 99999\n", ("health",), "pipeline.metrics_port"),
    ("[pipeline]\nmetrics_port = -5\n", ("health",), "pipeline.metrics_port"),
    (OPENAI.replace('api_key_env = "OPENAI_API_KEY"', f'api_key_file = "{BINARY_KEY}"'), ("poll",),
     "sources[0].api_key_file"),
    (f'[clickhouse]\ndsn = "http://clickhouse:8123/?password={HIDDEN}"\n', ("migrate",), "clickhouse.dsn"),
    # Point 14: accepted silently before.
    (OPENAI + "poll_interval = inf\n", ("health", "--url", closed_url()), "sources[0].poll_interval"),
    (OPENAI + "max_rps = 1e-9\n", ("health", "--url", closed_url()), "sources[0].max_rps"),
    ("[simulator]\nspeed = inf\n", ("health", "--url", closed_url()), "simulator.speed"),
    ("[track]\nstall_seconds = nan\n", ("health", "--url", closed_url()), "track.stall_seconds"),
    # Point 13: a URL with userinfo, refused when the settings load, its secret not shown.
    (OPENAI + f'base_url = "https://user:{HIDDEN}@api.openai.com/v1"\n', ("health", "--url", closed_url()),
     "sources[0].base_url"),
    (f'[clickhouse]\ndsn = "http://batchscope_sink:{HIDDEN}@clickhouse:8123"\n',
     ("health", "--url", closed_url()), "clickhouse.dsn"),
])
def test_hostile_config_is_one_line_exit_2_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch,
        toml: str, args: tuple[str, ...], key: str) -> None:
    clean_env.chdir(tmp_path)
    (tmp_path / BINARY_KEY).write_bytes(b"\x00\xff\xfe" + bytes(range(128, 256)) * 40)
    clean_env.setenv("OPENAI_API_KEY", "sk-test-cli-1234")
    code, lines = main_lines(tmp_path, capsys, toml, *args)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"batchscope: config error: {key}: ")
    assert HIDDEN not in lines[0]


def test_dsn_with_a_password_points_at_password_env(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BATCHSCOPE_CLICKHOUSE_DSN", f"http://batchscope_sink@clickhouse:8123/?password={HIDDEN}")
    code, lines = main_lines(tmp_path, capsys, "", "migrate")
    assert code == 2
    assert lines == ["batchscope: config error: clickhouse.dsn: must not carry a password (user:password@ or "
                     "?password=): put it in an environment variable and name that in "
                     "clickhouse.password_env (the DSN is not shown)"]


def test_a_timeout_argument_must_be_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("inf", "nan", "-1", "0"):
        with pytest.raises(SystemExit) as info:
            main_lines(tmp_path, capsys, "", "health", "--timeout", value)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "--timeout" in err[0]


def test_a_simulator_argument_is_checked_like_the_setting(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "simulate", "--speed", "inf")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "batchscope: config error: simulator.speed: must be a finite number, got inf"]


# --- point 10: a provider key is read only by the commands that poll --------------------------


def test_poll_without_its_key_fails_naming_the_source(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch) -> None:
    code, lines = main_lines(tmp_path, capsys, OPENAI, "poll")
    assert code == 2
    assert lines == ["batchscope: config error: sources[0].api_key_env: environment variable OPENAI_API_KEY "
                     "is not set or empty"]


def test_commands_that_do_not_poll_start_without_the_provider_keys(tmp_path: Path) -> None:
    """The real-source config of docs/deployment.md, run where only the poller has the key (compose)."""
    absent = tmp_path / "absent-key"
    (tmp_path / "batchscope.toml").write_text(
        f'[pipeline]\ndata_dir = "{tmp_path / "data"}"\n\n' + OPENAI
        + f'\n[[sources]]\nname = "vertex-eval"\nprovider = "vertex"\nbase_url = "https://x.example/v1"\n'
        f'api_key_file = "{absent}"\n', encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    for args in (("migrate",), ("query", "SELECT 1 AS one"), ("status",)):
        result = run_cli(tmp_path, *args, env=environ)
        assert result.returncode == 0, (args, result.stderr)
    health = run_cli(tmp_path, "health", "--url", closed_url(), env=environ)
    assert health.returncode == 1
    assert len(health.stderr.strip().splitlines()) == 1
    assert "OPENAI_API_KEY" not in health.stderr
    normalise = subprocess.run([sys.executable, "-m", "batchscope.cli", "normalise", "--provider", "openai",
                                "--source", "s"], cwd=tmp_path, input='{"data": []}', capture_output=True,
                               text=True, timeout=60, env=environ, check=False)
    assert normalise.returncode == 0, normalise.stderr


CH_TOML = '[clickhouse]\ndsn = "http://batchscope_sink@127.0.0.1:9"\npassword_env = "CH_SINK_PW_UNSET"\n'


def test_commands_that_do_not_open_clickhouse_start_without_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch) -> None:
    code, lines = main_lines(tmp_path, capsys, CH_TOML, "health", "--url", closed_url())
    assert code == 1  # it ran: the unset password did not stop it
    assert len(lines) == 1
    assert "CH_SINK_PW_UNSET" not in lines[0]
    code, lines = main_lines(tmp_path, capsys, CH_TOML, "migrate")
    assert code == 2
    assert lines == ["batchscope: config error: clickhouse.password_env: environment variable "
                     "CH_SINK_PW_UNSET is not set or empty"]


def test_which_command_reads_which_secret(tmp_path: Path) -> None:
    from batchscope.cli import SECRETS
    from pipeline.config import Secrets, load_settings

    (tmp_path / "batchscope.toml").write_text(CH_TOML, encoding="utf-8")
    settings = load_settings(tmp_path / "batchscope.toml", {}, secrets=SECRETS["poll"])  # the poller's
    assert settings.clickhouse_secret is None
    opening = {name for name, secrets in SECRETS.items() if Secrets.CLICKHOUSE_PASSWORD in secrets}
    assert opening == {"run", "worker", "migrate", "query", "status", "prices"}
    polling = {name for name, secrets in SECRETS.items() if Secrets.SOURCE_KEYS in secrets}
    assert polling == {"run", "poll"}
