"""Scenario 7: the soak. Behind ``--reliability-long``; ``make soak`` runs it.

``batchscope run`` with twice the default fleet (4 simulated sources x 200 batches instead of
2 x 200, polled at the default 2 s interval, so twice the observations per second), slowed so
the fleet stays active for the whole soak (``--soak-minutes``, default 30). Every 10 s the test
samples the process's resident memory and, per partition of raw/snapshots/changes, the consumer
group's committed offset and the end offset.

Written to ``--soak-report`` (JSON): the samples, memory growth per hour (least-squares slope of
RSS over the second half of the run, after warm-up), and every stalled partition: lag above zero
with the committed offset unchanged for ``STALL`` seconds. Pass criteria: the process lives to
the end, no partition stalls, and the checker finds nothing lost or doubled once the run drains.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.queries import query_running
from pipeline.core.errors import BatchscopeError
from tests.reliability.harness import Fleet, Proc, wait_for, write_config
from tests.support.kafka import committed, topic_ends
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SAMPLE_EVERY = 10.0
STALL = 60.0
LIFECYCLE_HOURS = 26.0  # the simulator's longest lifecycle: created up to +2 h, expires 24 h later


def growth_per_hour(samples: list[dict[str, Any]]) -> float:
    """Least-squares slope of RSS (MiB) against time over the second half of the samples."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = [s["t"] / 3600 for s in half]
    ys = [s["rss_mb"] for s in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def stalls(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Partitions whose lag stayed above zero with an unchanged committed offset for STALL s."""
    found: dict[str, dict[str, Any]] = {}
    since: dict[str, tuple[float, int]] = {}
    for s in samples:
        for tp, (done, end) in s["offsets"].items():
            start = since.get(tp)
            if end > done and start is not None and start[1] == done:
                if s["t"] - start[0] >= STALL:
                    found[tp] = {"partition": tp, "since_s": start[0], "seconds": s["t"] - start[0],
                                 "committed": done, "end": end}
            else:
                since[tp] = (s["t"], done)
    return list(found.values())


def test_soak(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, long_run: bool,
              request: pytest.FixtureRequest) -> None:
    if not long_run:
        pytest.skip("the soak runs with --reliability-long (make soak)")
    minutes = float(request.config.getoption("--soak-minutes"))
    report_path = Path(str(request.config.getoption("--soak-report"))).resolve()
    speed = LIFECYCLE_HOURS * 3600 / (minutes * 60 + 300)
    fleet = Fleet(batches=200, sources=4, seed=42, speed=speed, poll_interval=2.0)
    http_port = free_port()
    config = write_config(tmp_path, kafka_bootstrap, topic_prefix, sim_port=free_port(), fleet=fleet,
                          http_port=http_port, extern_sim=False)
    topics = [f"{topic_prefix}.{t}" for t in ("raw", "snapshots", "changesets")]
    run = Proc(config, tmp_path / "run.log", "run").start()
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < minutes * 60:
            assert run.alive(), f"batchscope run died during the soak:\n{run.tail()}"
            samples.append(sample(run, kafka_bootstrap, topic_prefix, topics, time.monotonic() - started))
            time.sleep(SAMPLE_EVERY)

        def drained() -> bool:
            try:
                rows = query_running(tmp_path / "data", "SELECT count() FROM batch_snapshots").rows
            except BatchscopeError:
                return False
            return int(rows[0][0]) >= sum(asyncio.run(topic_ends(kafka_bootstrap, topics[1:2])).values())

        wait_for(drained, "ClickHouse to hold every snapshot", 300, run)
    finally:
        run.stop()
    report = {"minutes": minutes, "fleet": {"sources": fleet.sources, "batches": fleet.batches,
                                            "speed": speed, "poll_interval": fleet.poll_interval},
              "rss_start_mb": samples[0]["rss_mb"], "rss_end_mb": samples[-1]["rss_mb"],
              "rss_growth_mb_per_hour": growth_per_hour(samples), "stalled_partitions": stalls(samples),
              "samples": samples}
    report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"soak report: {report_path}: growth {report['rss_growth_mb_per_hour']:.1f} MiB/h, "
          f"{len(report['stalled_partitions'])} stalled partitions")
    assert report["stalled_partitions"] == []


def sample(run: Proc, bootstrap: str, group: str, topics: list[str], t: float) -> dict[str, Any]:
    ends = asyncio.run(topic_ends(bootstrap, topics))
    done = asyncio.run(committed(bootstrap, group))
    offsets = {f"{tp[0]}/{tp[1]}": (done.get(tp, 0), end) for tp, end in ends.items()}
    return {"t": round(t, 1), "rss_mb": round(run.rss_mb(), 1), "offsets": offsets,
            "lag": sum(max(0, end - d) for d, end in offsets.values())}
