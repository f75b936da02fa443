"""Scenario 3: a whole ``batchscope run`` on chDB with ClickHouse inserts failing for 60 s, then
failing intermittently for 20 s.

The outage is the test suite's fault plugin (``tests/support/faults.py``,
``BATCHSCOPE_FAULT_CLICKHOUSE_FILE``): while the file exists, every
insert fails at the client boundary as a retriable "unavailable" error; the intermittent phase
creates and removes it at random 0.5-2 s intervals. The sink must pause its partitions, resume
when inserts succeed again, and end with exactly the simulator's ground truth: the checker finds
nothing lost, nothing doubled (deduplication tokens and high-water marks), nothing out of order;
the process's resident memory stays within ``RSS_GROWTH`` of what it was when the outage began.
Then every saved query runs against that data and is checked against the truth where it has an
exact answer, and ``batchscope query`` / ``status`` run as subprocesses while the pipeline holds
the database. (This supersedes the integration suite's former 30 s outage test.)
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.queries import query_running
from pipeline.core.errors import BatchscopeError
from pipeline.core.models import TERMINAL
from simulator.fleet import build_fleet
from tests.integration.test_end_to_end import expected_pairs, get_json, wait_for
from tests.reliability.harness import (
    Fleet,
    Stored,
    assert_clean,
    check_all,
    collect,
    dump,
    summary,
    write_config,
)
from tests.support.faults import CLICKHOUSE_DOWN_ENV, plugin_env
from tests.support.kafka import delete_topics, end_offsets, wait_committed
from tests.support.processes import free_port, start_run, stop_run

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

OUTAGE = 60.0  # fixed by the issue
INTERMITTENT = 20.0
RSS_GROWTH = 150.0  # MiB above the resident size at the start of the outage
# Slow enough that observations still flow through the intermittent phase.
# OpenAI-shaped sources: the saved queries' exact answers need every *_at time (in_progress_at).
FLEET = Fleet(batches=50, sources=2, seed=7, speed=1100.0, providers=("openai", "orq"))


class Run:
    def __init__(self, tmp: Path, proc: subprocess.Popen[bytes], log: Path, sim_port: int, http_port: int,
                 config: Path, fault: Path) -> None:
        self.tmp, self.proc, self.log, self.config, self.fault = tmp, proc, log, config, fault
        self.truth_url = f"http://127.0.0.1:{sim_port}/_sim/truth"
        self.data_dir = tmp / "data"
        self.truth: dict[str, Any] = {}
        self.during_outage: dict[str, subprocess.CompletedProcess[str]] = {}
        self.rss: list[float] = []  # MiB, sampled once a second from the outage to the catch-up
        self.stored: Stored | None = None
        self.bootstrap = self.prefix = ""

    def sql(self, text: str, params: dict[str, str] | None = None) -> list[tuple[Any, ...]]:
        return query_running(self.data_dir, text, params=params).rows

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "batchscope.cli", "--config", str(self.config), *args],
                              cwd=self.tmp, capture_output=True, text=True, timeout=120, check=False)

    def wait(self, predicate: Any, what: str) -> Any:
        return wait_for(predicate, what, self.proc, self.log)


def snapshot_count(run: Run) -> int:
    return int(run.sql("SELECT count() FROM batch_snapshots")[0][0])


def started_writing(run: Run) -> bool:
    try:
        return snapshot_count(run) > 0
    except BatchscopeError:  # the endpoint is not up yet
        return False


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("fleet")
    prefix = f"it-{uuid.uuid4().hex[:10]}"
    sim_port, http_port = free_port(), free_port()
    fault = tmp / "clickhouse-down"
    config = write_config(tmp, kafka_bootstrap, prefix, sim_port=sim_port, fleet=FLEET, http_port=http_port,
                          extern_sim=False)
    log = tmp / "run.log"
    proc = start_run(config, tmp, log, plugin_env(**{CLICKHOUSE_DOWN_ENV: str(fault)}))
    r = Run(tmp, proc, log, sim_port, http_port, config, fault)
    r.bootstrap, r.prefix = kafka_bootstrap, prefix
    try:
        outage_then_catch_up(r)
        r.stored = collect(dump(r.sql), kafka_bootstrap, prefix)
        yield r
    finally:
        stop_run(proc)
        asyncio.run(delete_topics(kafka_bootstrap, prefix))


def outage_then_catch_up(r: Run) -> None:
    r.wait(lambda: started_writing(r), "the first rows in ClickHouse")
    r.fault.touch()
    started = time.monotonic()
    r.wait(lambda: "pausing the sink's partitions" in r.log.read_text(errors="replace"), "the sink to pause")
    time.sleep(2.0)  # any insert in flight has landed by now
    frozen = snapshot_count(r)
    r.during_outage = {"query": r.cli("query", "--saved", "failure_rates", "--format", "json"),
                       "status": r.cli("status"),
                       "write_refused": r.cli("query", "INSERT INTO batch_output_acks (source, batch_id) "
                                              "VALUES ('x', 'y')")}
    while time.monotonic() - started < OUTAGE:
        r.rss.append(rss_mb(r.proc.pid))
        time.sleep(1.0)
    assert snapshot_count(r) == frozen, "rows were written while ClickHouse was 'down'"
    r.fault.unlink()
    r.wait(lambda: "ClickHouse is back" in r.log.read_text(errors="replace"), "the sink to resume")
    flap(r)
    truth = r.wait(lambda: (t := get_json(r.truth_url))["all_terminal"] and t, "a terminal fleet")
    time.sleep(1.0)  # one more poll after the fleet turned terminal
    r.truth = get_json(r.truth_url)
    want = sum(len(p) for p in expected_pairs(truth).values())

    def caught_up() -> bool:
        terminal = r.sql("SELECT count() FROM batch_latest FINAL WHERE status IN "
                         "('completed','failed','expired','cancelled')")[0][0]
        return bool(terminal == len(r.truth["batches"])
                    and r.sql("SELECT count() FROM batch_changes")[0][0] >= want
                    and all_stored(r))

    r.wait(caught_up, "ClickHouse to catch up after the outage")
    # Once the group has committed every record, a duplicate would have landed.
    wait_committed(r.bootstrap, r.prefix, [f"{r.prefix}.{t}" for t in ("raw", "snapshots", "changesets")])


def all_stored(r: Run) -> bool:
    """ClickHouse holds rows of as many records as the snapshots and changes topics hold (the sink
    may still be backing off from the last intermittent failure); a snapshot record of many gives
    many rows at one offset, so Kafka positions are counted, not rows."""
    for table, topic in (("batch_snapshots", "snapshots"), ("batch_changes", "changesets")):
        ends = asyncio.run(end_offsets(r.bootstrap, f"{r.prefix}.{topic}"))
        stored = r.sql(f"SELECT uniqExact(kafka_partition, kafka_offset) FROM {table}")[0][0]
        if int(stored) < sum(ends.values()):
            return False
    return True


def flap(r: Run) -> None:
    """Intermittent failures: the fault file toggled at random intervals, ending with ClickHouse up."""
    rng = random.Random(3)
    until = time.monotonic() + INTERMITTENT
    while time.monotonic() < until:
        r.fault.touch()
        time.sleep(rng.uniform(0.5, 2.0))
        r.fault.unlink()
        r.rss.append(rss_mb(r.proc.pid))
        time.sleep(rng.uniform(0.5, 2.0))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_checker_finds_nothing_lost_doubled_or_reordered(run: Run) -> None:
    assert run.stored is not None
    reports = check_all(run.truth, run.stored)
    print(f"checker after a {OUTAGE:.0f}s outage and {INTERMITTENT:.0f}s of intermittent failures:\n"
          f"{summary(reports)}")
    assert_clean(reports)


def test_memory_stays_bounded(run: Run) -> None:
    start, peak = run.rss[0], max(run.rss)
    print(f"RSS of batchscope run: {start:.0f} MiB at the outage, peak {peak:.0f} MiB")
    assert peak - start < RSS_GROWTH, run.rss


def test_outage_pauses_resumes_and_loses_or_doubles_nothing(run: Run) -> None:
    finals = {(b["source"], b["batch_id"]): b["final_status"] for b in run.truth["batches"]}
    latest = {(s, b): st for s, b, st in run.sql("SELECT source, batch_id, status FROM batch_latest FINAL")}
    assert latest == finals
    rows, positions = run.sql("SELECT count(), uniqExact(kafka_topic, kafka_partition, kafka_offset, "
                              "kafka_index) FROM batch_snapshots")[0]
    assert rows == positions  # no snapshot stored twice (a record of many: one row per index)
    # Nothing lost: every offset of <prefix>.snapshots up to the highest one is stored.
    gaps = run.sql("SELECT kafka_partition, max(kafka_offset) + 1 - uniqExact(kafka_offset) "
                   "FROM batch_snapshots GROUP BY kafka_partition "
                   "HAVING min(kafka_offset) != 0 OR max(kafka_offset) + 1 != uniqExact(kafka_offset)")
    assert gaps == []
    want = sum(len(p) for p in expected_pairs(run.truth).values())
    changes = run.sql("SELECT count(), uniqExact(event_id) FROM batch_changes "
                      "WHERE kind = 'status_changed'")[0]
    assert changes == (want, want)
    assert run.sql("SELECT count() FROM batch_changes FINAL WHERE kind = 'status_changed'")[0][0] == want
    text = run.log.read_text(errors="replace")
    assert "fault injected" in text
    assert text.count("pausing the sink's partitions") == text.count("ClickHouse is back") >= 1


def test_query_and_status_work_while_run_runs(run: Run) -> None:
    query, status, refused = (run.during_outage[k] for k in ("query", "status", "write_refused"))
    assert query.returncode == 0, query.stderr
    assert isinstance(orjson.loads(query.stdout), list)
    assert status.returncode == 0, status.stderr
    assert "FLEET" in status.stdout
    assert "ACTIVE" in status.stdout
    assert refused.returncode == 1
    assert "readonly" in refused.stderr.lower() or "read-only" in refused.stderr.lower()
    after = run.cli("status")
    assert after.returncode == 0, after.stderr
    assert f"{len(run.truth['batches']):>7}" in after.stdout
    assert "ACTIVE (oldest 20)\n  (none)" in after.stdout


def saved(run: Run, name: str, *params: str) -> list[dict[str, Any]]:
    args = [a for p in params for a in ("--param", p)]
    done = run.cli("query", "--saved", name, "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = orjson.loads(done.stdout)
    return rows


def test_saved_queries_match_the_simulator_truth(run: Run) -> None:
    batches = run.truth["batches"]
    finals = [b["final_status"] for b in batches]
    assert saved(run, "active_batches") == []
    assert saved(run, "at_risk") == []
    assert saved(run, "stalled") == []

    rates = saved(run, "failure_rates")
    for column, status in (("failed", "failed"), ("expired", "expired"), ("cancelled", "cancelled")):
        assert sum(int(r[column]) for r in rates) == finals.count(status)
    assert sum(int(r["terminal_batches"]) for r in rates) == len(batches)

    started = sum(any(t["status"] == "in_progress" for t in b["transitions"]) for b in batches)
    assert sum(int(r["batches"]) for r in saved(run, "durations")) == started

    instant = sorted(b["created_at"] for b in batches)[len(batches) // 2] + 600
    expected: dict[tuple[str, str], int] = {}
    for b in batches:
        now = [t["status"] for t in b["transitions"] if t["at"] <= instant]
        if now and now[-1] not in TERMINAL:
            expected[(b["source"], now[-1])] = expected.get((b["source"], now[-1]), 0) + 1
    at = datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%d %H:%M:%S")
    rows = saved(run, "in_progress_at", f"at={at}")
    got = {(r["source"], r["status_then"]): int(r["batches"]) for r in rows}
    assert got == expected
    assert sum(expected.values()) > 0

    with_output = {(s, b.id) for s in {x["source"] for x in batches} for b in build_fleet(7, 50, s)
                   if b.final_status == "completed" and b.failed < b.total}
    uncollected = {(r["source"], r["batch_id"]) for r in saved(run, "uncollected_outputs")}
    assert uncollected == with_output
    acked = sorted(with_output)[:3]
    values = ", ".join(f"('{s}', '{b}', 'test')" for s, b in acked)
    insert = f"INSERT INTO batch_output_acks (source, batch_id, consumer) VALUES {values}"
    done = run.cli("query", "--write", insert)
    assert done.returncode == 0, done.stderr
    still = {(r["source"], r["batch_id"]) for r in saved(run, "uncollected_outputs")}
    assert still == with_output - set(acked)
