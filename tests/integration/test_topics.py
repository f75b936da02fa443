"""``batchscope topics`` against the real local broker: partitions, replication, retention and the
compacted changelog as configured; idempotent; existing topics are left alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from pipeline.config import KafkaConfig
from pipeline.core.errors import BatchscopeError
from pipeline.kafka import PIPELINE_TOPICS, describe_topics, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


async def test_topics_are_created_as_configured(kafka_bootstrap: str, topic_prefix: str) -> None:
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, app_id=topic_prefix,
                         partitions=3, retention_hours=2, changes_retention_hours=-1, dlq_retention_hours=5)
    specs = topic_specs(config, changelog=True)
    created = await ensure_topics(config, changelog=True)
    assert created == [s.name for s in specs]
    await until_listed(config, created)
    assert await ensure_topics(config, changelog=True) == []  # idempotent
    described = {t.name: t for t in await describe_topics(config, [s.name for s in specs])}
    assert set(described) == {s.name for s in specs}
    for spec in specs:
        info = described[spec.name]
        assert (info.partitions, info.replication_factor) == (3, 1)
        for key, value in spec.configs.items():
            assert info.configs[key] == value, (spec.name, key)
    assert described[f"{topic_prefix}-batch_state-changelog"].configs["cleanup.policy"] == "compact"
    assert described[f"{topic_prefix}.changes"].configs["retention.ms"] == "-1"
    assert described[f"{topic_prefix}.raw"].configs["retention.ms"] == str(2 * 3_600_000)


async def until_listed(config: KafkaConfig, names: list[str]) -> None:
    """The broker's metadata can trail a creation by a moment: wait (at most 10 s) until it lists them."""
    for _ in range(100):
        if len(await describe_topics(config, names)) == len(names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"topics {names} never listed")


async def test_other_partition_counts_are_refused(kafka_bootstrap: str, topic_prefix: str) -> None:
    base = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=2)
    await until_listed(base, await ensure_topics(base))
    other = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=4)
    with pytest.raises(BatchscopeError, match=r"has 2 partitions but kafka\.partitions is 4"):
        await ensure_topics(other)


async def test_an_unreachable_replication_factor_is_one_line(kafka_bootstrap: str, topic_prefix: str) -> None:
    config = KafkaConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, replication_factor=3)
    with pytest.raises(BatchscopeError, match=r"cannot create topic .*replication factor"):
        await ensure_topics(config, ("raw",))


def test_topics_command_creates_and_describes(kafka_bootstrap: str, topic_prefix: str) -> None:
    env = {"BATCHSCOPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "BATCHSCOPE_KAFKA_TOPIC_PREFIX": topic_prefix,
           "BATCHSCOPE_KAFKA_APP_ID": topic_prefix, "BATCHSCOPE_KAFKA_PARTITIONS": "2",
           "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "batchscope.cli", "topics"]
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:-1]}
    changelog = f"{topic_prefix}-batch_state-changelog"
    assert set(lines) == {f"{topic_prefix}.{n}" for n in PIPELINE_TOPICS} | {changelog}
    assert f"{topic_prefix}.changesets" in lines
    assert lines[f"{topic_prefix}-batch_state-changelog"][1:4] == ["2", "1", "compact"]
    described = subprocess.run([*run, "--describe"], env=env, capture_output=True, text=True, timeout=120,
                               check=True).stdout
    assert described == out
