"""docker-compose.yml, the Dockerfile and the Grafana/ClickHouse files under deploy/, checked
without a Docker engine (none exists on the development machines or in CI).

- The compose file validates against the Compose Specification's JSON schema, vendored in
  ``tests/data/compose-spec.json``: compose-spec ``schema/compose-spec.json`` as vendored by
  compose-go v2.9.1 and embedded in Docker Compose v2.40.3 (sha256 e4e1a42c...76a4), i.e. the
  schema the real ``docker compose`` validates with.
- Every service that runs our image has a command the real ``batchscope.cli.build_parser()``
  accepts, and its environment plus the mounted ``batchscope.toml`` load as settings, read with
  the secrets that command reads (``batchscope.cli.SECRETS``).
- The variables are interpolated as Compose does (``tests/deploy_files.py``) from a test ``.env``
  (:data:`TEST_ENV`): the passwords are required, and each secret reaches only the services that
  use it. The ClickHouse users accept the compose network only; the reader's
  ``max_execution_time`` has a maximum. ``tests/integration/test_compose_native.py`` runs the
  services themselves.
- Every healthcheck command exists in its image. For our image that is a real ``batchscope``
  command aimed at the port the service serves. For third-party images this test can only check
  against :data:`KNOWN_EXECUTABLES`, a table of paths documented for the exact pinned tags
  (their Dockerfiles and docs), not verified by running the images here.
"""

from __future__ import annotations

import ipaddress
import json
import re
import xml.etree.ElementTree as ET  # our own file from the repo, not untrusted input
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from batchscope.cli import COMMANDS, SECRETS, build_parser
from pipeline.config import Secrets, Settings, load_settings
from pipeline.core.errors import ConfigError
from simulator.server import Simulator
from tests.deploy_files import (
    ROOT,
    InterpolationError,
    dashboard_variables,
    dockerfile_stages,
    expand,
    interpolate,
    load_compose,
    load_compose_raw,
    load_dashboard,
    panel_queries,
    read_dotenv,
)

SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
USERS_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "batchscope.xml"
CONFIG_IN_CONTAINER = "/etc/batchscope/batchscope.toml"
OUR_IMAGE = "batchscope:local"
# Healthcheck executables known to exist in the pinned third-party images (not run here):
# apache/kafka ships Kafka under /opt/kafka (bin/*.sh); clickhouse-server installs the
# clickhouse-client link on PATH (/usr/bin); grafana/grafana is Alpine-based, with BusyBox wget.
KNOWN_EXECUTABLES = {
    "apache/kafka:4.1.1": {"/opt/kafka/bin/kafka-broker-api-versions.sh", "/opt/kafka/bin/kafka-topics.sh"},
    "clickhouse/clickhouse-server:25.8": {"clickhouse-client", "/usr/bin/clickhouse-client"},
    "grafana/grafana:11.6.0": {"wget", "/usr/bin/wget"},
}
# The .env a deployment must have (docs/deployment.md): the four passwords, each distinct, plus a
# provider key.
TEST_ENV = {"CLICKHOUSE_ADMIN_PASSWORD": "admin-pw-TEST-1", "CLICKHOUSE_SINK_PASSWORD": "sink-pw-TEST-2",
            "CLICKHOUSE_READER_PASSWORD": "reader-pw-TEST-3", "GRAFANA_ADMIN_PASSWORD": "grafana-pw-TEST-4",
            "OPENAI_API_KEY": "sk-TEST-openai-5", "OPENAI_WEBHOOK_SECRET": "whsec_VEVTVC1vcGVuYWktNg==",
            "GEMINI_WEBHOOK_SECRET": "whsec_VEVTVC1nZW1pbmktNw==", "SLACK_ALERTS_URL": "https://hooks.slack.test/TEST-6",
            "ALERTS_WEBHOOK_URL": "https://alerts.test/TEST-7",
            "ALERTS_SIGNING_KEY": "whsec_VEVTVC1zaWduaW5nLTg="}
PASSWORDS = sorted(k for k in TEST_ENV if k.endswith("_PASSWORD"))
# Which service may hold which secret (docs/security.md, "Docker compose").
SECRETS_OF = {
    "poller": {"OPENAI_API_KEY"},
    "alerts": {"SLACK_ALERTS_URL", "ALERTS_WEBHOOK_URL", "ALERTS_SIGNING_KEY"},
    "webhooks": {"OPENAI_WEBHOOK_SECRET", "GEMINI_WEBHOOK_SECRET"},
    "worker": {"CLICKHOUSE_SINK_PASSWORD"},
    "migrate": {"CLICKHOUSE_ADMIN_PASSWORD"},
    "topics": set(),
    "simulator": set(),
    "kafka": set(),
    "clickhouse": {"CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_SINK_PASSWORD", "CLICKHOUSE_READER_PASSWORD"},
    "grafana": {"CLICKHOUSE_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"},
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|API_KEY")
COMPOSE = load_compose(TEST_ENV)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def ours() -> list[str]:
    return sorted(n for n, s in SERVICES.items() if s.get("image") == OUR_IMAGE)


def one_shots() -> set[str]:
    return {n for n, s in SERVICES.items() if s.get("restart") == "no"}


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in service.get("environment", {}).items()}


def settings_of(name: str, services: dict[str, dict[str, Any]] | None = None,
                secrets: Secrets | None = None) -> Settings:
    """The settings the service's process loads: its environment and its mounted toml, with the
    secrets its command reads (or ``secrets``)."""
    service = (services or SERVICES)[name]
    env = environment(service)
    assert env["BATCHSCOPE_CONFIG"] == CONFIG_IN_CONTAINER
    mounts = [v.split(":") for v in service["volumes"]]
    host = next(src for src, dst, *_ in mounts if dst == CONFIG_IN_CONTAINER)
    chosen = SECRETS[service["command"][0]] if secrets is None else secrets
    return load_settings(ROOT / host if not Path(host).is_absolute() else Path(host), env, secrets=chosen)


def opens_clickhouse(name: str) -> bool:
    return Secrets.CLICKHOUSE_PASSWORD in SECRETS[SERVICES[name]["command"][0]]


def compose_schema() -> jsonschema.Draft7Validator:
    """The schema declares draft 07 (``$schema`` without the trailing ``#``, so say it here)."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    validator = compose_schema()
    validator.validate(load_compose_raw())
    validator.validate(COMPOSE)


def test_the_schema_check_rejects_what_compose_rejects() -> None:
    validator = compose_schema()
    bad = load_compose(TEST_ENV)
    bad["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    bad = load_compose(TEST_ENV)
    bad["services"]["poller"]["helthcheck"] = bad["services"]["poller"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def test_the_roles_are_all_there() -> None:
    roles = {"kafka", "clickhouse", "migrate", "topics", "poller", "worker", "simulator", "grafana"}
    assert roles <= set(SERVICES)
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    assert SERVICES["grafana"]["profiles"] == ["ui"]
    assert SERVICES["alerts"]["profiles"] == ["alerts"]
    assert SERVICES["webhooks"]["profiles"] == ["webhooks"]
    assert one_shots() == {"migrate", "topics"}


@pytest.mark.parametrize("name", ours())
def test_command_is_a_real_batchscope_command(name: str) -> None:
    command = SERVICES[name]["command"]
    args = build_parser().parse_args(command)  # exits (SystemExit 2) on a bad command or option
    assert args.command in COMMANDS
    assert command[0] == args.command


def test_roles_run_the_commands_they_are_named_for() -> None:
    wanted = {"migrate": "migrate", "topics": "topics", "poller": "poll", "worker": "worker",
              "simulator": "simulate", "alerts": "alerts", "webhooks": "webhooks"}
    assert {n: SERVICES[n]["command"][0] for n in wanted} == wanted


@pytest.mark.parametrize("name", ours())
def test_environment_and_mounted_toml_load_as_settings(name: str) -> None:
    settings = settings_of(name)
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.pipeline.metrics_host == "0.0.0.0"
    if opens_clickhouse(name):
        assert settings.clickhouse_dsn.startswith("http://batchscope_")
        assert settings.clickhouse_password() is not None
    else:
        assert settings.clickhouse.password_env == ""
        assert settings.clickhouse.dsn == ""


@pytest.mark.parametrize("name", [n for n in ours() if "healthcheck" in SERVICES[n]])
def test_the_healthcheck_loads_the_services_settings_without_any_secret(name: str) -> None:
    command = health_command(name)
    assert SECRETS[command[1]] == Secrets.NONE
    settings_of(name, secrets=SECRETS[command[1]])


def test_a_mistyped_setting_in_the_environment_would_fail() -> None:
    """The check above is real: load_settings refuses an unknown BATCHSCOPE_ name."""
    env = {**SERVICES["worker"]["environment"], "BATCHSCOPE_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    with pytest.raises(ConfigError, match="BATCHSCOPE_KAFKA_BOOTSTRAP_SERVERS"):
        load_settings(ROOT / "deploy" / "batchscope.toml", {k: str(v) for k, v in env.items()})


def test_demo_sources_point_at_the_simulator_service() -> None:
    settings = settings_of("poller")
    port = SERVICES["simulator"]["command"][SERVICES["simulator"]["command"].index("--port") + 1]
    assert settings.sources, "the demo toml must configure sources for `poll`"
    for source in settings.sources:
        url = urlsplit(source.base_url)
        assert (url.hostname, str(url.port)) == ("simulator", port)
        assert source.api_key is None
    assert SERVICES["simulator"]["environment"]["BATCHSCOPE_SIMULATOR_HOST"] == "0.0.0.0"
    sim_config = settings_of("simulator").simulator
    assert {s.name for s in settings.sources} == {f"sim-{i + 1}" for i in range(sim_config.sources)}
    # Each source speaks what the simulator serves under its prefix, at the provider's API root.
    sim = Simulator(sim_config)
    for source in settings.sources:
        assert source.provider == sim.provider(source.name)
        assert urlsplit(source.base_url).path == urlsplit(sim.source_url(source.name)).path
    assert len({s.provider for s in settings.sources}) >= 4


def health_command(name: str) -> list[str]:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] == "CMD", f"{name}: exec form, so the executable itself is what must exist"
    return list(test[1:])


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        if name in one_shots():
            continue
        assert "healthcheck" in service, name
        assert not service["healthcheck"].get("disable", False), name


@pytest.mark.parametrize("name", [n for n in ours() if n not in one_shots()])
def test_our_healthchecks_are_batchscope_commands_aimed_at_the_served_port(name: str) -> None:
    command = health_command(name)
    assert command[0] == "batchscope"
    args = build_parser().parse_args(command[1:])
    assert args.command == "health"
    port = urlsplit(args.url).port
    if SERVICES[name]["command"][0] == "simulate":
        served = int(SERVICES[name]["command"][SERVICES[name]["command"].index("--port") + 1])
    else:
        served = settings_of(name).pipeline.metrics_port  # poll and worker serve /health there
        assert urlsplit(args.url).path == "/health"  # /metrics answers 200 even while a source is stale
    assert port == served
    assert urlsplit(args.url).hostname == "127.0.0.1"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if s.get("image") != OUR_IMAGE))
def test_third_party_healthcheck_executables_exist_in_the_pinned_image(name: str) -> None:
    image = SERVICES[name]["image"]
    assert ":" in image, f"{name}: pin the image tag"
    assert not image.endswith((":latest", ":")), f"{name}: pin the image tag"
    assert image in KNOWN_EXECUTABLES, f"{name}: {image} is not in the table of known paths"
    assert health_command(name)[0] in KNOWN_EXECUTABLES[image]


def test_depends_on_conditions_match_what_the_dependency_offers() -> None:
    for name, service in SERVICES.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name}: {dep} has no healthcheck"
            else:
                assert spec["condition"] == "service_completed_successfully", f"{name} -> {dep}"
                assert dep in one_shots(), f"{name}: {dep} is not a one-shot"
            if "profiles" in SERVICES[dep] and "profiles" not in service:
                assert spec.get("required") is False, f"{name} must start without {dep}'s profile"


def test_startup_order() -> None:
    def deps(name: str) -> set[str]:
        return set(SERVICES[name].get("depends_on", {}))

    assert deps("migrate") == {"clickhouse"}
    assert deps("topics") == {"kafka"}
    assert {"migrate", "topics"} <= deps("worker")
    assert "topics" in deps("poller")


def test_worker_can_be_scaled() -> None:
    """``docker compose up --scale worker=3``: nothing in the worker is unique per host."""
    worker = SERVICES["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker.get("deploy", {}).get("replicas", 1) >= 1


def test_named_volumes_hold_the_data() -> None:
    named = set(COMPOSE["volumes"])
    mounts = {s["image"]: [v.split(":")[0] for v in s.get("volumes", [])] for s in SERVICES.values()}
    assert "kafka-data" in mounts["apache/kafka:4.1.1"]
    assert "clickhouse-data" in mounts["clickhouse/clickhouse-server:25.8"]
    assert "grafana-data" in mounts["grafana/grafana:11.6.0"]
    assert {"kafka-data", "clickhouse-data", "grafana-data"} <= named


def test_bind_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"


def users_xml() -> ET.Element:
    return ET.parse(USERS_XML).getroot()  # noqa: S314 - the repo's own file


def test_passwords_agree_between_clickhouse_and_its_clients() -> None:
    """users.d reads each password from the ClickHouse container's environment (from_env)."""
    server_env = SERVICES["clickhouse"]["environment"]
    users = users_xml().find("users")
    assert users is not None
    from_env = {u.tag: str(p.get("from_env")) for u in users if (p := u.find("password")) is not None}
    assert set(from_env.values()) <= set(server_env)
    for name in filter(opens_clickhouse, ours()):
        settings = settings_of(name)
        user = urlsplit(settings.clickhouse_dsn).username
        assert user in from_env, f"{name}: {user} is not a ClickHouse user in users.d"
        password = settings.clickhouse_password()
        assert password is not None
        assert password.reveal() == server_env[from_env[user]]
    grafana_env = SERVICES["grafana"]["environment"]
    assert grafana_env["CLICKHOUSE_READER_PASSWORD"] == server_env[from_env["batchscope_reader"]]


def test_clickhouse_users_are_least_privilege() -> None:
    root = users_xml()
    database = settings_of("worker").clickhouse.database

    def grants(user: str) -> list[str]:
        return [q.text or "" for q in root.findall(f"users/{user}/grants/query")]

    assert grants("batchscope_sink") == [f"GRANT INSERT, SELECT ON {database}.*"]
    assert grants("batchscope_reader") == [f"GRANT SELECT ON {database}.*"]
    assert all(g.endswith(f"ON {database}.*") for g in grants("batchscope_admin"))
    assert root.findtext("users/batchscope_reader/profile") == "batchscope_readonly"
    assert root.findtext("profiles/batchscope_readonly/readonly") == "1"
    for user in ("batchscope_admin", "batchscope_sink", "batchscope_reader"):
        assert root.findtext(f"users/{user}/access_management") == "0"
    assert [ip.text for ip in root.findall("users/default/networks/ip")] == ["::1", "127.0.0.1"]
    assert urlsplit(settings_of("migrate").clickhouse_dsn).username == "batchscope_admin"
    assert urlsplit(settings_of("worker").clickhouse_dsn).username == "batchscope_sink"


def test_grafana_datasource_and_dashboard_provisioning_agree() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "clickhouse.yml").read_text())["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["username"] == "batchscope_reader"
    assert source["jsonData"]["host"] == "clickhouse"
    assert source["jsonData"]["defaultDatabase"] == settings_of("worker").clickhouse.database
    assert "grafana-clickhouse-datasource" in SERVICES["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    dashboard = load_dashboard()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
    provider = yaml.safe_load((provisioning / "dashboards" / "batchscope.yml").read_text())["providers"][0]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    assert Path(ROOT / mounted[provider["options"]["path"]] / "fleet.json").exists()


def test_dashboard_covers_the_fleet_questions() -> None:
    titles = " / ".join(title.lower() for title, _ in panel_queries(load_dashboard()))
    for topic in ("status", "active batches", "queue time", "failure", "expiry", "at-risk"):
        assert topic in titles, topic


def test_every_dashboard_macro_and_variable_expands() -> None:
    from datetime import UTC, datetime, timedelta

    from tests.deploy_files import TimeRange

    dashboard = load_dashboard()
    end = datetime(2026, 11, 29, 12, tzinfo=UTC)
    when = TimeRange(end - timedelta(hours=6), end, 300)
    for title, sql in panel_queries(dashboard):
        expanded = expand(sql, when, dashboard_variables(dashboard))
        assert "$" not in expanded, f"{title}: unexpanded macro or variable"
        assert "{" not in expanded, f"{title}: unexpanded placeholder"


def test_macro_expansion_matches_the_plugin() -> None:
    from datetime import UTC, datetime

    from tests.deploy_files import TimeRange

    when = TimeRange(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), 60)
    assert expand("WHERE $__timeFilter(t) GROUP BY $__timeInterval(t)", when, {}) == (
        "WHERE t >= toDateTime(1767225600) AND t <= toDateTime(1767312000) "
        "GROUP BY toStartOfInterval(toDateTime(t), INTERVAL 60 second)")
    assert expand("$__fromTime $__toTime $__interval_s ${m} $m", when, {"m": "5"}) == (
        "toDateTime(1767225600) toDateTime(1767312000) 60 5 5")


def test_interpolation_follows_compose() -> None:
    assert interpolate("${A:-x} ${B-y} ${C} $$D", {"A": "", "B": ""}) == "x   $D"
    assert interpolate("${A:-x}", {"A": "set"}) == "set"
    assert interpolate("$A-$B_c ${A}", {"A": "1", "B_c": "2"}) == "1-2 1"
    assert interpolate("${A:-${B:-deep}}", {}) == "deep"
    assert interpolate("${A:+alt}|${B:+alt}|${C+alt}", {"A": "v", "B": "", "C": ""}) == "alt||alt"
    assert interpolate("${A?msg}", {"A": ""}) == ""  # set, though empty: only :? refuses it
    with pytest.raises(InterpolationError, match="required variable A is missing a value: set it"):
        interpolate("x${A:?set it}", {"A": ""})
    with pytest.raises(InterpolationError, match="required variable A is missing a value: no A"):
        interpolate("${A?no A}", {})
    overridden = load_compose({**TEST_ENV, "BATCHSCOPE_TOML": "./my.toml", "CLICKHOUSE_SINK_PASSWORD": "s3"})
    assert overridden["services"]["poller"]["volumes"][0].startswith("./my.toml:")
    assert overridden["services"]["clickhouse"]["environment"]["CLICKHOUSE_SINK_PASSWORD"] == "s3"


def test_dotenv_is_read_as_compose_reads_it(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# passwords\nA=plain # comment\nexport B='lit $A #x'\nC=\"q ${A}\\n\"\n\nD=\n",
                      encoding="utf-8")
    assert read_dotenv(dotenv) == {"A": "plain", "B": "lit $A #x", "C": "q plain\n", "D": ""}


# --- secrets: required, and only where they are used ------------------------------------------


def test_passwords_are_required_with_no_dev_fallback() -> None:
    raw = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    references = re.findall(r"\$\{([A-Z_]*PASSWORD)([^}]*)\}", raw)
    assert {name for name, _ in references} == set(PASSWORDS)
    for name, rest in references:
        assert rest == ":?set it in .env", f"${{{name}{rest}}}: a password must be required"
    for missing in PASSWORDS:
        for value in ({}, {missing: ""}):
            with pytest.raises(InterpolationError, match=f"required variable {missing} is missing"):
                load_compose({**{k: v for k, v in TEST_ENV.items() if k != missing}, **value})


@pytest.mark.parametrize("name", sorted(SECRETS_OF))
def test_each_service_gets_only_the_secrets_it_uses(name: str) -> None:
    env = environment(SERVICES[name])
    holds = {secret for secret, value in TEST_ENV.items() if value in env.values()}
    assert holds == SECRETS_OF[name]
    named = {k for k in env if SECRET_NAME.search(k) and not k.startswith("BATCHSCOPE_")}
    assert named <= {*SECRETS_OF[name], "GF_SECURITY_ADMIN_PASSWORD"}, named


def test_every_service_is_in_the_table_of_secrets() -> None:
    assert set(SECRETS_OF) == set(SERVICES)


def test_the_poller_reads_no_clickhouse_password() -> None:
    poller = settings_of("poller")
    assert poller.clickhouse.password_env == ""
    assert poller.clickhouse_secret is None
    assert SECRETS["poll"] == Secrets.SOURCE_KEYS


REAL_SOURCES = """[kafka]
topic_prefix = "batchscope"

[[sources]]
name = "openai-prod"
provider = "openai"
api_key_env = "OPENAI_API_KEY"
"""


def test_the_readme_real_source_config_starts_every_service(tmp_path: Path) -> None:
    """Point 10: only the poller receives the provider key, and only the poller needs it."""
    toml = tmp_path / "my-batchscope.toml"
    toml.write_text(REAL_SOURCES, encoding="utf-8")
    without_key = {k: v for k, v in TEST_ENV.items() if k != "OPENAI_API_KEY"}
    services = load_compose({**without_key, "BATCHSCOPE_TOML": str(toml)})["services"]
    for name in ours():
        if name == "poller":
            with pytest.raises(ConfigError, match=r"^sources\[0\]\.api_key_env: environment variable "
                                                  "OPENAI_API_KEY is not set"):
                settings_of(name, services)
        else:
            settings_of(name, services)  # worker, migrate, topics, simulator start without it
        if "healthcheck" in services[name]:
            settings_of(name, services, secrets=SECRETS["health"])
    services = load_compose({**TEST_ENV, "BATCHSCOPE_TOML": str(toml)})["services"]
    (source,) = settings_of("poller", services).sources
    assert source.api_key is not None
    assert source.api_key.reveal() == TEST_ENV["OPENAI_API_KEY"]


# --- the ClickHouse users: the compose network only, a bounded reader -------------------------


def compose_subnet(compose: dict[str, Any]) -> str:
    (pool,) = compose["networks"]["default"]["ipam"]["config"]
    return str(pool["subnet"])


def test_clickhouse_users_accept_only_the_compose_network() -> None:
    root = users_xml()
    for user in ("batchscope_admin", "batchscope_sink", "batchscope_reader"):
        networks = root.findall(f"users/{user}/networks/*")
        assert [(n.tag, n.get("from_env"), (n.text or "").strip()) for n in networks] == [
            ("ip", "BATCHSCOPE_SUBNET", "")], user
    subnet = compose_subnet(COMPOSE)
    assert SERVICES["clickhouse"]["environment"]["BATCHSCOPE_SUBNET"] == subnet
    network = ipaddress.ip_network(subnet)
    assert network.is_private
    assert network.num_addresses <= 65_536
    for name, service in SERVICES.items():
        assert "network_mode" not in service, name
        assert set(service.get("networks", ["default"])) == {"default"}, name
    moved = load_compose({**TEST_ENV, "BATCHSCOPE_SUBNET": "10.99.0.0/24"})
    assert compose_subnet(moved) == moved["services"]["clickhouse"]["environment"]["BATCHSCOPE_SUBNET"]
    assert compose_subnet(moved) == "10.99.0.0/24"


def test_the_readers_max_execution_time_has_a_maximum() -> None:
    root = users_xml()
    limit = root.find("profiles/batchscope_readonly/constraints/max_execution_time")
    assert limit is not None
    assert limit.find("changeable_in_readonly") is not None
    maximum = int(limit.findtext("max") or "0")
    assert 0 < maximum <= 600
    assert int(root.findtext("profiles/batchscope_readonly/max_execution_time") or "0") <= maximum
    source = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "clickhouse.yml")
                            .read_text())["datasources"][0]
    # clickhouse-go sets max_execution_time to the query timeout plus a few seconds
    assert int(source["jsonData"]["queryTimeout"]) + 10 <= maximum


def test_dockerfile_is_multi_stage_slim_non_root_with_the_batchscope_entry_point() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert any("pip wheel" in line for line in builder)
    assert any("--no-index" in line for line in runtime), "the runtime installs only the built wheels"
    assert "python:3.11-slim" in (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0", "0:0")
    entry = [line for line in runtime if line.startswith("ENTRYPOINT ")]
    assert entry
    assert json.loads(entry[-1].removeprefix("ENTRYPOINT ")) == ["batchscope"]
    health = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    command = json.loads(health[-1].split(" CMD ", 1)[1])
    assert command[0] == "batchscope"
    assert build_parser().parse_args(command[1:]).command == "health"


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", ".batchscope", "tests"} <= set(ignored)
    for needed in ("pipeline", "agents", "sql", "pyproject.toml", "README.md"):
        assert needed not in ignored
