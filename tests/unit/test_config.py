"""pipeline.config: defaults, TOML, BATCHSCOPE_* overrides, [[sources]] and Secret hygiene."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest

from pipeline.config import (
    ClickHouseConfig,
    KafkaConfig,
    PipelineConfig,
    Secrets,
    Settings,
    SimulatorConfig,
    SourceConfig,
    TrackConfig,
    load_settings,
)
from pipeline.core.errors import ConfigError
from pipeline.core.secret import Secret
from pipeline.core.validate import Bounds
from pipeline.providers import PROVIDERS

KEY = "sk-test-DO-NOT-PRINT-8c1f2e"


def write(tmp_path: Path, text: str, name: str = "batchscope.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | None, env: dict[str, str], secrets: Secrets = Secrets.NONE) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env, secrets=secrets)
    return str(info.value)


def key_error(path: Path, env: dict[str, str]) -> str:
    return load_error(path, env, Secrets.SOURCE_KEYS)


def with_keys(path: Path, env: dict[str, str]) -> Settings:
    """The settings as the commands that poll load them: every source's key read."""
    return load_settings(path, env, secrets=Secrets.SOURCE_KEYS)


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
    s = load_settings(path, {"CH_PASSWORD": "pw-for-test"}, secrets=Secrets.CLICKHOUSE_PASSWORD)
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
    (source,) = with_keys(write(tmp_path, source_toml(body)), {"OPENAI_KEY": KEY}).sources
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
        (source_toml("poll_interval = 0"), "sources[0].poll_interval:", "between 0.01 and 86400"),
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
    message = load_error(path, {}, Secrets.SOURCE_KEYS)
    assert message.startswith("sources[0].api_key_env:")
    assert "PROD_KEY" in message
    assert load_error(path, {"PROD_KEY": ""}, Secrets.SOURCE_KEYS).startswith("sources[0].api_key_env:")


def test_api_key_env_reads_the_given_environment(tmp_path: Path) -> None:
    path = write(tmp_path, source_toml('api_key_env = "PROD_KEY"'))
    (source,) = with_keys(path, {"PROD_KEY": KEY}).sources
    assert source.api_key is not None
    assert source.api_key.reveal() == KEY


def test_api_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"  {KEY}\n", encoding="utf-8")
    path = write(tmp_path, source_toml(f'api_key_file = "{key_file}"'))
    (source,) = with_keys(path, {}).sources
    assert source.api_key is not None
    assert source.api_key.reveal() == KEY


def test_api_key_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path, source_toml(f'api_key_file = "{tmp_path / "absent.txt"}"'))
    message = load_error(path, {}, Secrets.SOURCE_KEYS)
    assert message.startswith("sources[0].api_key_file:")
    assert "cannot read" in message


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_api_key_file_empty(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(content, encoding="utf-8")
    message = key_error(write(tmp_path, source_toml(f'api_key_file = "{key_file}"')), {})
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


def test_clickhouse_password_is_read_only_when_asked_for(tmp_path: Path) -> None:
    path = write(tmp_path, '[clickhouse]\npassword_env = "BATCHSCOPE_TEST_CH_PW_X2"\n')
    settings = load_settings(path, {"BATCHSCOPE_TEST_CH_PW_X2": KEY}, secrets=Secrets.CLICKHOUSE_PASSWORD)
    password = settings.clickhouse_password()
    assert password is not None
    assert password.reveal() == KEY
    assert load_error(path, {}, Secrets.CLICKHOUSE_PASSWORD).startswith("clickhouse.password_env:")


def test_settings_loaded_without_the_password_do_not_need_it(tmp_path: Path) -> None:
    """The poller's settings: the password's variable is unset, and nothing reads it."""
    path = write(tmp_path, '[clickhouse]\npassword_env = "BATCHSCOPE_TEST_CH_PW_X3"\n')
    settings = load_settings(path, {}, secrets=Secrets.SOURCE_KEYS)
    assert settings.clickhouse_secret is None
    with pytest.raises(ConfigError, match=r"^clickhouse\.password_env: the password is read only by"):
        settings.clickhouse_password()  # a store opened from them would be refused, not passwordless


def test_source_keys_are_read_only_when_asked_for(tmp_path: Path) -> None:
    """Point 10: the commands that do not poll load settings whose keys are not set anywhere."""
    key_file = tmp_path / "absent-key"
    text = source_toml('api_key_env = "UNSET_KEY_X4"') + source_toml(
        f'api_key_file = "{key_file}"').replace('"prod"', '"b"')
    path = write(tmp_path, text)
    for secrets in (Secrets.NONE, Secrets.CLICKHOUSE_PASSWORD):
        first, second = load_settings(path, {}, secrets=secrets).sources
        assert (first.api_key, first.api_key_env) == (None, "UNSET_KEY_X4")
        assert (second.api_key, second.api_key_file) == (None, str(key_file))
    assert load_error(path, {}, Secrets.SOURCE_KEYS).startswith("sources[0].api_key_env:")
    key_file.write_text(KEY, encoding="utf-8")
    first, second = with_keys(path, {"UNSET_KEY_X4": KEY}).sources
    assert first.api_key == second.api_key == Secret(KEY)


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
    settings = with_keys(write(tmp_path, text), {"PROD_KEY": KEY})
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
    message = load_error(path, {"AWS_CREDS": "just-a-secret-value"}, Secrets.SOURCE_KEYS)
    assert message.startswith("sources[0].api_key_env:")
    assert "ACCESS_KEY_ID:SECRET_ACCESS_KEY" in message
    assert "just-a-secret-value" not in message
    (source,) = with_keys(path, {"AWS_CREDS": "AKID:secret"}).sources
    assert source.api_key is not None
    (source,) = load_settings(path, {"AWS_CREDS": "just-a-secret-value"}).sources  # checked only when read
    assert source.api_key is None


def test_simulator_providers_from_toml_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[simulator]\nproviders = ["anthropic", "gemini"]\nmalformed = 3\n')
    sim = load_settings(path, {}).simulator
    assert (sim.providers, sim.malformed) == (("anthropic", "gemini"), 3)
    env = {"BATCHSCOPE_SIMULATOR_PROVIDERS": "bedrock, vertex"}
    assert load_settings(path, env).simulator.providers == ("bedrock", "vertex")
    assert len(set(SimulatorConfig().providers)) >= 4  # the default fleet shows several providers


# --- bounds: every numeric setting, finite and within a documented range ----------------------

SECTION_CLASSES = {"kafka": KafkaConfig, "clickhouse": ClickHouseConfig, "simulator": SimulatorConfig,
                   "pipeline": PipelineConfig, "track": TrackConfig}


def numeric_fields(cls: type[object]) -> list[tuple[str, str, Bounds]]:
    """(name, type, bounds) of every int or float field; a field without bounds fails the sweep."""
    hints = get_type_hints(cls)
    found = []
    for spec in fields(cls):  # type: ignore[arg-type]
        kind = hints[spec.name]
        if kind in (int, float, float | None):
            assert "bounds" in spec.metadata, f"{cls.__name__}.{spec.name} has no bounds"
            found.append((spec.name, "int" if kind is int else "float", spec.metadata["bounds"]))
    return found


SECTION_NUMBERS = [(section, name, kind, bounds) for section, cls in SECTION_CLASSES.items()
                   for name, kind, bounds in numeric_fields(cls)]
SOURCE_NUMBERS = numeric_fields(SourceConfig)


def test_every_numeric_setting_has_bounds_and_a_default_inside_them() -> None:
    assert len(SECTION_NUMBERS) >= 30
    for cls in (*SECTION_CLASSES.values(), SourceConfig):
        numeric_fields(cls)  # asserts the bounds
    for section, name, _, bounds in SECTION_NUMBERS:
        default = getattr(SECTION_CLASSES[section](), name)
        bounds.check(f"{section}.{name}", default)  # raises if the default were outside


@pytest.mark.parametrize(("section", "name", "kind", "bounds"), SECTION_NUMBERS,
                         ids=[f"{s}.{n}" for s, n, _, _ in SECTION_NUMBERS])
def test_a_value_past_either_bound_names_the_key(tmp_path: Path, section: str, name: str, kind: str,
                                                 bounds: Bounds) -> None:
    too_big = int(bounds.high) + 1 if kind == "int" else bounds.high * 2 + 1
    message = load_error(write(tmp_path, f"[{section}]\n{name} = {too_big}\n"), {})
    assert message.startswith(f"{section}.{name}: must be ")
    if bounds.low > -(2**63):
        too_small = int(bounds.low) - 3 if kind == "int" else bounds.low - 1
        env = {f"BATCHSCOPE_{section.upper()}_{name.upper()}": str(too_small)}
        assert load_error(write(tmp_path, ""), env).startswith(f"{section}.{name}: must be ")


FLOATS = [(s, n) for s, n, kind, _ in SECTION_NUMBERS if kind == "float"]


@pytest.mark.parametrize(("section", "name"), FLOATS, ids=[f"{s}.{n}" for s, n in FLOATS])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_floats_are_refused_from_toml_and_environment(
        tmp_path: Path, section: str, name: str, value: str) -> None:
    message = load_error(write(tmp_path, f"[{section}]\n{name} = {value}\n"), {})
    assert message.startswith(f"{section}.{name}: must be a finite number")
    env_name = f"BATCHSCOPE_{section.upper()}_{name.upper()}"
    message = load_error(write(tmp_path, ""), {env_name: value.replace("inf", "Infinity")})
    assert message.startswith(f"{env_name}: must be a finite number")


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k, _ in SOURCE_NUMBERS])
@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "-1"])
def test_source_numbers_are_finite_and_bounded(tmp_path: Path, name: str, kind: str, value: str) -> None:
    if kind == "int" and value in ("inf", "nan", "1e300"):
        value = str(2**62)
    message = load_error(write(tmp_path, source_toml(f"{name} = {value}")), {})
    assert message.startswith(f"sources[0].{name}: must be ")


def test_the_gaps_of_point_14_are_closed(tmp_path: Path) -> None:
    cases = {
        "[pipeline]\nmetrics_port = 99999\n": "pipeline.metrics_port: must be between 0 and 65535",
        "[pipeline]\nmetrics_port = -5\n": "pipeline.metrics_port: must be between 0 and 65535",
        source_toml("poll_interval = inf"): "sources[0].poll_interval: must be a finite number",
        source_toml("max_rps = 1e-9"): "sources[0].max_rps: must be between 0.01 and 10000",
        "[simulator]\nspeed = inf\n": "simulator.speed: must be a finite number",
    }
    for toml, expected in cases.items():
        assert load_error(write(tmp_path, toml), {}).startswith(expected)
    (source,) = load_settings(write(tmp_path, source_toml("max_rps = 0.01")), {}).sources
    assert source.max_rps == 0.01


# --- URLs carry no credentials ----------------------------------------------------------------

HIDDEN = "hunter2-SECRET-7f3a"


@pytest.mark.parametrize("url", [
    f"https://user:{HIDDEN}@api.openai.com/v1",
    f"https://{HIDDEN}@api.openai.com/v1",
    f"https://api.openai.com/v1?key={HIDDEN}",
    f"https://api.openai.com/v1#{HIDDEN}",
    f"https://api.openai.com:99999/v1/{HIDDEN}",
    f"https://api.openai.com/v1/{HIDDEN} x",
    f"https:///{HIDDEN}",
])
def test_a_base_url_with_credentials_or_a_query_is_refused_unshown(tmp_path: Path, url: str) -> None:
    message = load_error(write(tmp_path, source_toml(f'base_url = "{url}"')), {})
    assert message.startswith("sources[0].base_url: ")
    assert "(the URL is not shown)" in message
    assert HIDDEN not in message
    assert "\n" not in message


@pytest.mark.parametrize("dsn", [
    f"http://batchscope_sink:{HIDDEN}@clickhouse:8123",
    "http://batchscope_sink:@clickhouse:8123",
    f"http://clickhouse:8123/?password={HIDDEN}",
    f"https://clickhouse:8443/?user=a&Password={HIDDEN}",
    f"http://clickhouse:8123/?access_token={HIDDEN}",
    f"chdb://user:{HIDDEN}@memory/db",
    f"chdb:///var/lib/ch?password={HIDDEN}",
])
def test_a_dsn_with_a_password_is_refused_and_points_at_password_env(tmp_path: Path, dsn: str) -> None:
    message = load_error(write(tmp_path, f'[clickhouse]\ndsn = "{dsn}"\n'), {})
    assert message.startswith("clickhouse.dsn: must not carry a password")
    assert "clickhouse.password_env" in message
    assert HIDDEN not in message
    assert load_error(write(tmp_path, ""), {"BATCHSCOPE_CLICKHOUSE_DSN": dsn}).startswith("clickhouse.dsn:")


@pytest.mark.parametrize("dsn", ["http://batchscope_sink@clickhouse:8123", "https://ch.example:8443/?compress=0",
                                 "chdb:///tmp/with space/ch", "http://clickhouse:8123"])
def test_a_dsn_may_name_a_user(tmp_path: Path, dsn: str) -> None:
    assert load_settings(write(tmp_path, f'[clickhouse]\ndsn = "{dsn}"\n'), {}).clickhouse.dsn == dsn


def test_a_dsn_with_a_bad_port_is_one_line(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, '[clickhouse]\ndsn = "http://clickhouse:123456"\n'), {})
    assert message.startswith("clickhouse.dsn: has an invalid port")


def test_password_env_must_be_a_name_not_the_password(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, f'[clickhouse]\npassword_env = "{HIDDEN}!"\n'), {})
    assert message.startswith("clickhouse.password_env: must be the NAME")
    assert HIDDEN not in message


# --- what a key may be -------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "problem"), [
    (b"\xff\xfe\x00binary\x80", "is not UTF-8 text"),
    (b"sk-" + b"x" * (64 * 1024), "is larger than 64 KiB"),
    (b"sk-one two", "printable ASCII without spaces"),
    (b"sk-line\nsk-other", "printable ASCII without spaces"),
])
def test_a_key_file_that_is_not_one_key_is_one_line(tmp_path: Path, content: bytes, problem: str) -> None:
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(content)
    message = key_error(write(tmp_path, source_toml(f'api_key_file = "{key_file}"')), {})
    assert message.startswith("sources[0].api_key_file: ")
    assert problem in message
    assert "sk-" not in message
    assert "binary" not in message


def test_a_key_file_must_be_a_regular_file(tmp_path: Path) -> None:
    message = key_error(write(tmp_path, source_toml(f'api_key_file = "{tmp_path}"')), {})
    assert message.startswith("sources[0].api_key_file: ")
    assert "not a regular file" in message


def test_a_key_with_a_control_character_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = write(tmp_path, source_toml('api_key_env = "PROD_KEY"'))
    message = load_error(path, {"PROD_KEY": f"{KEY}\r\nX-Injected: 1"}, Secrets.SOURCE_KEYS)
    assert message.startswith("sources[0].api_key_env: the key must be printable ASCII")
    assert KEY not in message
    (source,) = with_keys(path, {"PROD_KEY": f"  {KEY}\n"}).sources  # surrounding space is trimmed
    assert source.api_key == Secret(KEY)
