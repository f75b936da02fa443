"""bench.worker_bench / bench.bareloop: when a group has drained, what a raw record carries, and
the config both code trees read (no Kafka, no timing)."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiokafka import TopicPartition

from bench.bareloop import BareResult, observations_in
from bench.worker_bench import Drain, drained, parse, write_config
from pipeline.config import load_settings

A, B = TopicPartition("t.raw", 0), TopicPartition("t.raw", 1)


def test_drained_needs_every_partition_committed_to_its_end() -> None:
    assert drained({A: 10, B: 3}, {A: 10, B: 3})
    assert not drained({A: 10, B: 2}, {A: 10, B: 3})
    assert not drained({A: 10}, {A: 10, B: 3})  # nothing committed on B yet
    assert drained({A: 10}, {A: 10, B: 0})  # an empty partition needs no commit


def test_a_version_2_record_carries_its_payloads_anything_else_one() -> None:
    v2 = orjson.loads(b'{"v":2,"source":"s","provider":"openai","observed_at":"t","payloads":[{},{},{}]}')
    assert observations_in(v2) == 3
    assert observations_in({"source": "s", "provider": "openai", "observed_at": "t", "payload": {}}) == 1
    assert observations_in({"v": 2, "payloads": "not a list"}) == 1


def test_the_share_is_worker_observations_over_the_bare_loops() -> None:
    d = Drain("t", raw_records=100, rows=2000, seconds=2.0, bare=BareResult(100, 2000, 0.5))
    assert (d.rate, d.bare.observations_per_s, d.share) == (1000.0, 4000.0, 0.25)


def test_the_config_names_every_simulated_source_for_the_poller(tmp_path: Path) -> None:
    args = parse(["--batches", "5", "--sources", "3"])
    settings = load_settings(str(write_config(tmp_path, args, "bench-x", 8799)))
    assert [s.name for s in settings.sources] == ["sim-1", "sim-2", "sim-3"]
    assert all(s.base_url.startswith("http://127.0.0.1:8799/sim-") for s in settings.sources)
    assert all(s.active_interval == s.poll_interval == 1.0 for s in settings.sources)
    assert (settings.kafka.topic_prefix, settings.kafka.app_id) == ("bench-x", "bench-x")
    assert settings.simulator.batches == 5
