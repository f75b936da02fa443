"""Topic settings (``[kafka]`` replication and retention), ``topic_specs``, and ``batchscope health``
against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batchscope.cli import build_parser, main
from batchscope.health import check, default_url
from pipeline.config import KafkaConfig, load_settings
from pipeline.core.errors import BatchscopeError, ConfigError
from pipeline.kafka import PIPELINE_TOPICS, changelog_topic, topic_specs


def test_topic_settings_defaults_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./batchscope.toml here
    k = load_settings(None, {}).kafka
    assert (k.replication_factor, k.min_insync_replicas) == (1, 1)
    assert (k.retention_hours, k.changes_retention_hours, k.dlq_retention_hours) == (168, 720, 720)
    env = {"BATCHSCOPE_KAFKA_REPLICATION_FACTOR": "3", "BATCHSCOPE_KAFKA_MIN_INSYNC_REPLICAS": "2",
           "BATCHSCOPE_KAFKA_CHANGES_RETENTION_HOURS": "-1"}
    k = load_settings(None, env).kafka
    assert (k.replication_factor, k.min_insync_replicas, k.changes_retention_hours) == (3, 2, -1)


def test_fetch_wait_and_linger_defaults_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    k = load_settings(None, {}).kafka
    assert (k.fetch_wait_ms, k.linger_ms) == (10, 20.0)
    assert load_settings(None, {"BATCHSCOPE_KAFKA_FETCH_WAIT_MS": "250"}).kafka.fetch_wait_ms == 250
    assert load_settings(None, {"BATCHSCOPE_KAFKA_LINGER_MS": "5"}).kafka.linger_ms == 5.0


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"replication_factor": 0}, "kafka.replication_factor"),
    ({"min_insync_replicas": 2}, "kafka.min_insync_replicas"),
    ({"replication_factor": 3, "min_insync_replicas": 0}, "kafka.min_insync_replicas"),
    ({"retention_hours": 0}, "kafka.retention_hours"),
    ({"changes_retention_hours": -2}, "kafka.changes_retention_hours"),
    ({"dlq_retention_hours": 0}, "kafka.dlq_retention_hours"),
    ({"fetch_wait_ms": 0}, "kafka.fetch_wait_ms"),
    ({"fetch_wait_ms": 5_001}, "kafka.fetch_wait_ms"),
    ({"linger_ms": -1}, "kafka.linger_ms"),
    ({"linger_ms": 1_001}, "kafka.linger_ms"),
])
def test_bad_topic_settings_name_the_key(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: "):
        KafkaConfig(**kwargs)


def test_topic_specs_retention_replication_and_the_compacted_changelog() -> None:
    config = KafkaConfig(topic_prefix="p", app_id="app", partitions=6, replication_factor=3,
                         min_insync_replicas=2, retention_hours=24, changes_retention_hours=-1,
                         dlq_retention_hours=48)
    specs = {s.name: s for s in topic_specs(config, changelog=True)}
    assert list(specs) == ["p.raw", "p.snapshots", "p.changes", "p.changesets", "p.dlq", "p.hints",
                           "app-batch_state-changelog"]
    assert {(s.partitions, s.replication_factor) for s in specs.values()} == {(6, 3)}
    assert specs["p.raw"].configs == {"cleanup.policy": "delete", "retention.ms": str(24 * 3_600_000),
                                      "min.insync.replicas": "2"}
    assert specs["p.snapshots"].configs["retention.ms"] == str(24 * 3_600_000)
    assert specs["p.changes"].configs["retention.ms"] == "-1"
    assert specs["p.changesets"].configs["retention.ms"] == str(24 * 3_600_000)  # the sink's feed
    assert specs["p.dlq"].configs["retention.ms"] == str(48 * 3_600_000)
    assert specs["p.hints"].configs["retention.ms"] == str(24 * 3_600_000)
    changelog = specs["app-batch_state-changelog"].configs
    assert changelog["cleanup.policy"] == "compact"
    assert "retention.ms" not in changelog
    assert [s.name for s in topic_specs(config)] == [f"p.{n}" for n in PIPELINE_TOPICS]


def test_changelog_name_is_the_one_faust_uses(tmp_path: Path) -> None:
    from agents.app import STATE_TABLE, create_app
    from pipeline.clickhouse.store import AsyncStore, Store
    from pipeline.config import PipelineConfig, Settings

    settings = Settings(kafka=KafkaConfig(app_id="chk", topic_prefix="chk"),
                        pipeline=PipelineConfig(data_dir=str(tmp_path)))
    store = AsyncStore(Store("chdb:///unused", "batchscope"))  # never connected
    try:
        app, _ = create_app(settings, store)
        assert app.tables[STATE_TABLE].changelog_topic.get_topic_name() == changelog_topic(settings.kafka)
        assert app.conf.topic_replication_factor == settings.kafka.replication_factor
    finally:
        store.close_now()


def test_cli_parses_topics_and_health() -> None:
    parser = build_parser()
    assert parser.parse_args(["topics"]).describe is False
    assert parser.parse_args(["topics", "--describe"]).describe is True
    args = parser.parse_args(["health", "--url", "http://127.0.0.1:1/metrics", "--timeout", "2"])
    assert (args.command, args.url, args.timeout) == ("health", "http://127.0.0.1:1/metrics", 2.0)
    assert parser.parse_args(["health"]).url is None


def test_default_health_url_is_the_health_endpoint() -> None:
    settings = load_settings(None, {"BATCHSCOPE_PIPELINE_METRICS_PORT": "9555"})
    assert default_url(settings.pipeline) == "http://127.0.0.1:9555/health"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="batchscope_up 1\n")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="no")

    app = web.Application()
    app.add_routes([web.get("/metrics", ok), web.get("/down", down)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_health_passes_on_2xx_and_fails_otherwise(server: str) -> None:
    assert await asyncio.to_thread(check, f"{server}/metrics") == 200
    with pytest.raises(BatchscopeError, match="answered HTTP 503"):
        await asyncio.to_thread(check, f"{server}/down")
    with pytest.raises(BatchscopeError, match="answered HTTP 404"):
        await asyncio.to_thread(check, f"{server}/nothing")


def test_health_unreachable_and_bad_scheme() -> None:
    with pytest.raises(BatchscopeError, match="unreachable"):
        check("http://127.0.0.1:9/metrics", timeout=2)
    with pytest.raises(BatchscopeError, match="not an http"):
        check("file:///etc/passwd")


async def test_health_command_exit_status_and_one_line(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["health", "--url", f"{server}/metrics"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert await asyncio.to_thread(main, ["health", "--url", f"{server}/down"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "HTTP 503" in err
