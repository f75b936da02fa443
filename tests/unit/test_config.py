"""pipeline.config: defaults, TOML, BATCHSCOPE_* overrides, [[sources]] and Secret hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    PROVIDERS,
    ClickHouseConfig,
    KafkaConfig,
    PipelineConfig,
    Secret,
    Settings,
    SimulatorConfig,
    SourceConfig,
    load_settings,
)
from pipeline.errors import ConfigError

KEY = "sk-test-DO-NOT-PRINT-8c1f2e"


def write(tmp_path: Path, text: str, name: str = "batchscope.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | None, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env)
    return str(info.value)


# --- defaults and the config file -------------------------------------------------------------


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./batchscope.toml here
    settings = load_settings(None, {})
    assert settings == Settings()
    assert settings.kafka == KafkaConfig()
    assert settings.kafka.partitions == 4
    assert settings.kafka.topic("raw") == "batchscope.raw"
    assert settings.clickhouse == ClickHouseConfig()
    assert settings.simulator == SimulatorConfig()
    assert settings.pipeline == PipelineConfig()
    assert settings.sources == ()
    assert settings.clickhouse_password() is None


def test_default_file_in_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[kafka]\npartitions = 9\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, {}).kafka.partitions == 9


def test_config_env_var_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka]\npartitions = 7\n", "other.toml")
    assert load_settings(None, {"BATCHSCOPE_CONFIG": str(path)}).kafka.partitions == 7


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.toml", {})
    assert "not found" in message


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "[kafka\npartitions = 1\n"), {})
    assert "invalid TOML" in message


def test_toml_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
[kafka]
bootstrap = "kafka:29092"
topic_prefix = "bs"
partitions = 12
app_id = "bs-app"

[clickhouse]
dsn = "http://clickhouse:8123"
database = "obs"
password_env = "CH_PASSWORD"

[simulator]
batches = 10
seed = 7
speed = 5           # an int is accepted for a float field
port = 0
sources = 3
poll_interval = 0.5

[pipeline]
data_dir = "/var/lib/bs"
http_port = 9000
sink_batch_size = 50
sink_flush_seconds = 2.5
log_level = "debug"
""")
    s = load_settings(path, {"CH_PASSWORD": "pw-for-test"})
    assert s.kafka == KafkaConfig("kafka:29092", "bs", 12, "bs-app")
    assert s.kafka.topic("changes") == "bs.changes"
    assert s.clickhouse == ClickHouseConfig("http://clickhouse:8123", "obs", "CH_PASSWORD")
    assert s.clickhouse_dsn == "http://clickhouse:8123"
    assert s.simulator == SimulatorConfig(batches=10, seed=7, speed=5.0, port=0, sources=3, poll_interval=0.5)
    assert isinstance(s.simulator.speed, float)
    assert s.pipeline.data_dir == "/var/lib/bs"
    assert s.pipeline.http_port == 9000
    assert s.pipeline.sink_batch_size == 50
    assert s.pipeline.sink_flush_seconds == 2.5
    assert s.pipeline.log_level == "debug"


def test_empty_dsn_means_embedded_chdb_under_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, f'[pipeline]\ndata_dir = "{tmp_path / "data"}"\n')
    assert load_settings(path, {}).clickhouse_dsn == f"chdb://{tmp_path / 'data' / 'clickhouse'}"


# --- environment overrides --------------------------------------------------------------------


def test_env_overrides_defaults_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\npartitions = 2\nbootstrap = "file:9092"\n')
    env = {
        "BATCHSCOPE_KAFKA_PARTITIONS": " 16 ",
        "BATCHSCOPE_SIMULATOR_SPEED": "2.5",
        "BATCHSCOPE_SIMULATOR_POLL_INTERVAL": "3",
        "BATCHSCOPE_PIPELINE_LOG_LEVEL": "warning",
        "BATCHSCOPE_CLICKHOUSE_DSN": "https://ch.example:8443",
    }
    s = load_settings(path, env)
    assert s.kafka.partitions == 16
    assert s.kafka.bootstrap == "file:9092"  # not overridden: the file wins over the default
    assert s.simulator.speed == 2.5
    assert s.simulator.poll_interval == 3.0
    assert s.pipeline.log_level == "warning"
    assert s.clickhouse.dsn == "https://ch.example:8443"


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("BATCHSCOPE_KAFKA_PARTITIONS", "abc", "int"),
        ("BATCHSCOPE_KAFKA_PARTITIONS", "4.0", "int"),
        ("BATCHSCOPE_PIPELINE_HTTP_PORT", "", "int"),
        ("BATCHSCOPE_SIMULATOR_SPEED", "fast", "float"),
    ],
)
def test_bad_env_value_names_the_variable(tmp_path: Path, name: str, value: str, kind: str) -> None:
    message = load_error(write(tmp_path, ""), {name: value})
    assert message.startswith(f"{name}: expected {kind}")


def test_env_value_is_validated_like_a_file_value(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, ""), {"BATCHSCOPE_KAFKA_PARTITIONS": "0"})
    assert message.startswith("kafka.partitions:")


# --- unknown names and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "prefix"),
    [
        ("[kafka]\npartitions = \"4\"\n", "kafka.partitions:"),
        ("[kafka]\npartitions = 4.5\n", "kafka.partitions:"),
        ("[kafka]\npartitions = true\n", "kafka.partitions:"),
        ("[kafka]\nbootstrap = 9092\n", "kafka.bootstrap:"),
        ("[simulator]\nspeed = \"x\"\n", "simulator.speed:"),
        ("[simulator]\nspeed = true\n", "simulator.speed:"),
        ("[kafka]\npartitons = 4\n", "kafka.partitons:"),
        ("[pipeline]\nhttp_port = 70000\n", "pipeline.http_port:"),
        ("[pipeline]\nlog_level = \"loud\"\n", "pipeline.log_level:"),
        ("[clickhouse]\ndsn = \"tcp://x\"\n", "clickhouse.dsn:"),
        ("[clickhouse]\ndatabase = \"my-db\"\n", "clickhouse.database:"),
        ("[kafka]\ntopic_prefix = \"  \"\n", "kafka.topic_prefix:"),
        ("[simulator]\nsources = 0\n", "simulator.sources:"),
        ("[simulator]\nproviders = \"openai\"\n", "simulator.providers:"),
        ("[simulator]\nproviders = []\n", "simulator.providers:"),
        ("[simulator]\nproviders = [\"openai\", \"acme\"]\n", "simulator.providers:"),
        ("[simulator]\nvanish_share = 2\n", "simulator.vanish_share:"),
        ("[simulator]\nmalformed = -1\n", "simulator.malformed:"),
        ("[simulator]\nlatency = -1\n", "simulator.latency:"),
        ("kafka = 5\n", "kafka:"),
        ("[kafak]\npartitions = 4\n", "kafak:"),
        ("[sources]\nname = \"a\"\n", "sources:"),
    ],
)
def test_errors_start_with_the_dotted_key(tmp_path: Path, toml: str, prefix: str) -> None:
    assert load_error(write(tmp_path, toml), {}).startswith(prefix)


def test_unknown_section_and_key_list_the_known_ones(tmp_path: Path) -> None:
    assert "unknown section" in load_error(write(tmp_path, "[kafak]\n"), {})
    message = load_error(write(tmp_path, "[kafka]\nbrokers = \"x\"\n"), {})
    assert "unknown key" in message
    assert "bootstrap" in message


# --- [[sources]] ------------------------------------------------------------------------------


def source_toml(body: str) -> str:
    return f'[[sources]]\nname = "prod"\nprovider = "openai"\n{body}\n'


def test_source_defaults(tmp_path: Path) -> None:
    (source,) = load_settings(write(tmp_path, source_toml("")), {}).sources
    assert source == SourceConfig(name="prod", provider="openai", base_url="https://api.openai.com/v1")
    assert source.api_key is None
    assert source.poll_interval == 30.0
    assert source.refresh_interval == 300.0  # 10 x poll_interval
    assert source.page_limit == 100
    assert source.tags == {}


def test_source_active_interval(tmp_path: Path) -> None:
    text = source_toml("poll_interval = 5\nactive_interval = 120")
    (source,) = load_settings(write(tmp_path, text), {}).sources
    assert (source.active_interval, source.refresh_interval) == (120.0, 120.0)
    (source,) = load_settings(write(tmp_path, source_toml("poll_interval = 5")), {}).sources
    assert source.refresh_interval == 50.0


def test_source_all_fields(tmp_path: Path) -> None:
    body = """base_url = "http://127.0.0.1:8787/sim-1/v1/"
api_key_env = "OPENAI_KEY"
poll_interval = 5
page_limit = 20
tags = { team = "search", env = "prod" }"""
    (source,) = load_settings(write(tmp_path, source_toml(body)), {"OPENAI_KEY": KEY}).sources
    assert source.base_url == "http://127.0.0.1:8787/sim-1/v1"  # trailing slash dropped
    assert source.api_key == Secret(KEY)
    assert source.api_key is not None
    assert source.api_key.reveal() == KEY
    assert source.poll_interval == 5.0
    assert source.page_limit == 20
    assert source.tags == {"team": "search", "env": "prod"}


def test_several_sources_keep_their_order(tmp_path: Path) -> None:
    text = "".join(f'[[sources]]\nname = "s{i}"\nprovider = "openai"\n' for i in range(3))
    assert [s.name for s in load_settings(write(tmp_path, text), {}).sources] == ["s0", "s1", "s2"]


@pytest.mark.parametrize(
    ("toml", "prefix", "fragment"),
    [
        ('[[sources]]\nprovider = "openai"\n', "sources[0].name:", "required"),
        ('[[sources]]\nname = "a/b"\nprovider = "openai"\n', "sources[0].name:", "without '/'"),
        ('[[sources]]\nname = "a"\n', "sources[0].provider:", "must be one of"),
        ('[[sources]]\nname = "a"\nprovider = "acme"\n', "sources[0].provider:", "must be one of"),
        ('[[sources]]\nname = "a"\nprovider = "azure_openai"\n', "sources[0].base_url:",
         "required for provider 'azure_openai'"),
        ('[[sources]]\nname = "a"\nprovider = "vertex"\n', "sources[0].base_url:", "required for provider"),
        ('[[sources]]\nname = "a"\nprovider = "bedrock"\n', "sources[0].base_url:",
         "https://bedrock.<region>.amazonaws.com"),
        ('[[sources]]\nname = "a"\nprovider = 1\n', "sources[0].provider:", "expected str"),
        (source_toml('base_url = "ftp://x"'), "sources[0].base_url:", "http(s)"),
        (source_toml("poll_interval = 0"), "sources[0].poll_interval:", "greater than 0"),
        (source_toml('poll_interval = "5"'), "sources[0].poll_interval:", "expected float"),
        (source_toml("active_interval = 10"), "sources[0].active_interval:", "at least poll_interval (30 s)"),
        (source_toml('active_interval = "60"'), "sources[0].active_interval:", "expected float"),
        (source_toml("page_limit = 0"), "sources[0].page_limit:", "between 1 and 100"),
        (source_toml("page_limit = 101"), "sources[0].page_limit:", "between 1 and 100"),
        (source_toml("tags = { a = 1 }"), "sources[0].tags:", "table of strings"),
        (source_toml('api_key = "sk-inline"'), "sources[0].api_key:", "unknown key"),
        (source_toml("api_key_env = 5"), "sources[0].api_key_env:", "must be the NAME"),
        ("sources = [1]\n", "sources[0]:", "must be a table"),
    ],
)
def test_source_errors(tmp_path: Path, toml: str, prefix: str, fragment: str) -> None:
    message = load_error(write(tmp_path, toml), {})
    assert message.startswith(prefix)
    assert fragment in message


def test_second_source_error_names_its_index(tmp_path: Path) -> None:
    text = source_toml("") + '[[sources]]\nname = "b"\nprovider = "nope"\n'
    assert load_error(write(tmp_path, text), {}).startswith("sources[1].provider:")


def test_duplicate_source_names(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, source_toml("") + source_toml("")), {})
    assert message.startswith("sources:")
    assert "duplicate source name 'prod'" in message


def test_api_key_env_missing_variable(tmp_path: Path) -> None:
    path = write(tmp_path, source_toml('api_key_env = "PROD_KEY"'))
    message = load_error(path, {})
    assert message.startswith("sources[0].api_key_env:")
    assert "PROD_KEY" in message
    assert load_error(path, {"PROD_KEY": ""}).startswith("sources[0].api_key_env:")


def test_api_key_env_reads_the_given_environment(tmp_path: Path) -> None:
    path = write(tmp_path, source_toml('api_key_env = "PROD_KEY"'))
    (source,) = load_settings(path, {"PROD_KEY": KEY}).sources
    assert source.api_key is not None
    assert source.api_key.reveal() == KEY


def test_api_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"  {KEY}\n", encoding="utf-8")
    path = write(tmp_path, source_toml(f'api_key_file = "{key_file}"'))
    (source,) = load_settings(path, {}).sources
    assert source.api_key is not None
    assert source.api_key.reveal() == KEY


def test_api_key_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path, source_toml(f'api_key_file = "{tmp_path / "absent.txt"}"'))
    message = load_error(path, {})
    assert message.startswith("sources[0].api_key_file:")
    assert "cannot read" in message


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_api_key_file_empty(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(content, encoding="utf-8")
    message = load_error(write(tmp_path, source_toml(f'api_key_file = "{key_file}"')), {})
    assert message.startswith("sources[0].api_key_file:")
    assert "empty" in message


def test_api_key_env_and_file_together(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY, encoding="utf-8")
    body = f'api_key_env = "PROD_KEY"\napi_key_file = "{key_file}"'
    message = load_error(write(tmp_path, source_toml(body)), {"PROD_KEY": KEY})
    assert message.startswith("sources[0]:")
    assert "not both" in message
    assert KEY not in message


def test_clickhouse_password_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHSCOPE_TEST_CH_PW_X1", KEY)
    settings = Settings(clickhouse=ClickHouseConfig(password_env="BATCHSCOPE_TEST_CH_PW_X1"))
    password = settings.clickhouse_password()
    assert password is not None
    assert password.reveal() == KEY
    monkeypatch.delenv("BATCHSCOPE_TEST_CH_PW_X1")
    with pytest.raises(ConfigError, match=r"^clickhouse\.password_env:"):
        settings.clickhouse_password()


def test_clickhouse_password_uses_the_env_given_to_load_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BATCHSCOPE_TEST_CH_PW_X2", raising=False)
    path = write(tmp_path, '[clickhouse]\npassword_env = "BATCHSCOPE_TEST_CH_PW_X2"\n')
    settings = load_settings(path, {"BATCHSCOPE_TEST_CH_PW_X2": KEY})
    password = settings.clickhouse_password()
    assert password is not None
    assert password.reveal() == KEY


# --- Secret hygiene ---------------------------------------------------------------------------


def test_secret_never_prints_its_value() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret)
    assert KEY not in str(secret)
    assert KEY not in f"{secret}"
    assert KEY not in f"{secret!r}"
    assert KEY not in "%s %r" % (secret, secret)  # noqa: UP031 - the old formatting path too
    assert KEY not in repr([secret, {"k": secret}])
    assert secret.reveal() == KEY


def test_secret_equality_and_hash() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_settings_and_source_repr_hide_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY, encoding="utf-8")
    text = source_toml(f'api_key_file = "{key_file}"').replace('"prod"', '"a"') + source_toml(
        'api_key_env = "PROD_KEY"')
    settings = load_settings(write(tmp_path, text), {"PROD_KEY": KEY})
    assert all(s.api_key is not None for s in settings.sources)
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    for source in settings.sources:
        assert KEY not in repr(source)
        assert KEY not in f"{source}"
        assert "Secret('***')" in repr(source)


# --- every provider is pollable ---------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_provider_is_pollable(tmp_path: Path, provider: str) -> None:
    text = f'[[sources]]\nname = "a"\nprovider = "{provider}"\nbase_url = "https://x.example/v1"\n'
    (source,) = load_settings(write(tmp_path, text), {}).sources
    assert (source.provider, source.base_url) == (provider, "https://x.example/v1")


def test_bedrock_credentials_must_be_key_id_and_secret(tmp_path: Path) -> None:
    text = ('[[sources]]\nname = "aws"\nprovider = "bedrock"\n'
            'base_url = "https://bedrock.eu-west-1.amazonaws.com"\napi_key_env = "AWS_CREDS"\n')
    path = write(tmp_path, text)
    message = load_error(path, {"AWS_CREDS": "just-a-secret-value"})
    assert message.startswith("sources[0].api_key_env:")
    assert "ACCESS_KEY_ID:SECRET_ACCESS_KEY" in message
    assert "just-a-secret-value" not in message
    (source,) = load_settings(path, {"AWS_CREDS": "AKID:secret"}).sources
    assert source.api_key is not None


def test_simulator_providers_from_toml_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[simulator]\nproviders = ["anthropic", "gemini"]\nmalformed = 3\n')
    sim = load_settings(path, {}).simulator
    assert (sim.providers, sim.malformed) == (("anthropic", "gemini"), 3)
    env = {"BATCHSCOPE_SIMULATOR_PROVIDERS": "bedrock, vertex"}
    assert load_settings(path, env).simulator.providers == ("bedrock", "vertex")
    assert len(set(SimulatorConfig().providers)) >= 4  # the default fleet shows several providers
