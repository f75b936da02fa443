"""The chaos harness: the real pipeline's processes, their config, and what they stored.

Every process is the real command (``batchscope simulate``, ``poll``, ``worker``, ``run``) as a
subprocess with its log in a file, so a scenario can SIGKILL any of them. :func:`collect` reads
what ClickHouse and the topics hold into the checker's rows; :func:`check_all` runs the checker
over them against the simulator's truth.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import SimulatorConfig
from pipeline.core.records import read_changes, read_snapshots
from simulator.server import Simulator
from tests.reliability.checker import (
    Change,
    Observation,
    Report,
    check_changes,
    check_observations,
    check_positions,
    replaced_changes,
    same_events,
)
from tests.support.kafka import FAST_GROUP, end_offsets, read_all, run_toml

ROOT = Path(__file__).resolve().parents[2]
# The shortest session timeout the broker accepts by default: a SIGKILLed member leaves the group
# after 6 s instead of Faust's 60.
GROUP_ENV = {**FAST_GROUP, "BROKER_SESSION_TIMEOUT": "6"}


@dataclass(frozen=True, slots=True)
class Fleet:
    """The simulated fleet: ``sources`` x ``batches`` at ``speed`` simulated seconds per second."""

    batches: int = 50
    sources: int = 2
    seed: int = 7
    speed: float = 1500.0
    poll_interval: float = 0.25
    # Round-robin over the sources, as the simulator assigns them: several providers' APIs.
    providers: tuple[str, ...] = ("openai", "anthropic", "mistral", "together")

    def sim_config(self, port: int) -> SimulatorConfig:
        return SimulatorConfig(batches=self.batches, sources=self.sources, seed=self.seed, speed=self.speed,
                               port=port, poll_interval=self.poll_interval, providers=self.providers)


def write_config(tmp: Path, bootstrap: str, prefix: str, *, sim_port: int, fleet: Fleet,
                 http_port: int = 0, metrics_port: int = 0, extern_sim: bool = True,
                 extra: str = "", source_extra: str = "") -> Path:
    """A config for one scenario; ``extern_sim``: poll a ``batchscope simulate`` on ``sim_port``.

    ``extra`` lands in the ``[simulator]`` table (and may open later tables); ``source_extra`` in
    every ``[[sources]]`` table."""
    sim = Simulator(fleet.sim_config(sim_port))  # only to name each source's provider and API root
    sources = "".join(f"""
[[sources]]
name = "{name}"
provider = "{sim.provider(name)}"
base_url = "{sim.source_url(name)}"
poll_interval = {fleet.poll_interval}
active_interval = {fleet.poll_interval}
max_rps = 200.0
{source_extra}""" for name in sim.sources) if extern_sim else ""
    path = tmp / "batchscope.toml"
    path.write_text(run_toml(tmp, bootstrap, prefix) + f"""http_port = {http_port}
metrics_port = {metrics_port}
sink_flush_seconds = 0.5

[simulator]
batches = {fleet.batches}
sources = {fleet.sources}
seed = {fleet.seed}
speed = {fleet.speed}
port = {sim_port}
poll_interval = {fleet.poll_interval}
providers = [{", ".join(f'"{p}"' for p in fleet.providers)}]
{extra}
{sources}""", encoding="utf-8")
    return path


class Proc:
    """One ``batchscope`` command as a subprocess, its output appended to ``log``."""

    def __init__(self, config: Path, log: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.config, self.log, self.args = config, log, args
        self.env = {**os.environ, **GROUP_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchscope.cli", "--config", str(self.config), *self.args],
                cwd=self.config.parent, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Send ``sig`` and wait; SIGKILL if it has not exited within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop(self) -> int | None:
        return self.kill(signal.SIGTERM)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self) -> str:
        return self.text()[-4000:]

    def rss_mb(self) -> float:
        """Resident memory of the process (MiB), from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float, *watch: Proc) -> Any:
    """Poll ``predicate`` until truthy; fail early if a watched process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in watch:
            if not p.alive():
                raise AssertionError(f"{' '.join(p.args)} exited ({p.proc and p.proc.returncode}) "
                                     f"while waiting for {what}:\n{p.tail()}")
        try:
            value = predicate()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {' '.join(p.args)}:\n{p.tail()}" for p in watch)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
        return json.loads(resp.read())


# --- what was stored -------------------------------------------------------------------------

QUERIES = {
    "snapshots": "SELECT source, batch_id, status, toString(observed_at), kafka_partition, kafka_offset, "
                 "kafka_index FROM batch_snapshots",
    "latest": "SELECT source, batch_id, status FROM batch_latest FINAL",
    "changes": "SELECT event_id, kind, source, batch_id, from_status, to_status, kafka_partition, "
               "kafka_offset, toString(cityHash64(snapshot, kind, ifNull(from_status, ''))), kafka_index "
               "FROM batch_changes",
    "changes_final": "SELECT event_id FROM batch_changes FINAL",
}


def dump(sql: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, list[list[Any]]]:
    """Every table the checker reads, as plain lists (JSON-safe)."""
    return {name: [list(r) for r in sql(text)] for name, text in QUERIES.items()}


def dump_offline(config: Path) -> dict[str, list[list[Any]]]:
    """:func:`dump` in a subprocess that opens the embedded database (nothing else may hold it)."""
    done = subprocess.run([sys.executable, "-m", "tests.reliability.dump", str(config)], cwd=ROOT,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result: dict[str, list[list[Any]]] = orjson.loads(done.stdout)
    return result


@dataclass(slots=True)
class Stored:
    """What ClickHouse and the topics hold at the end of a scenario."""

    tables: dict[str, list[list[Any]]]
    snapshot_records: list[Any] = field(default_factory=list)
    change_records: list[Any] = field(default_factory=list)
    change_set_records: list[Any] = field(default_factory=list)
    snapshot_ends: dict[int, int] = field(default_factory=dict)
    change_ends: dict[int, int] = field(default_factory=dict)


def collect(tables: dict[str, list[list[Any]]], bootstrap: str, prefix: str) -> Stored:
    async def go() -> Stored:
        return Stored(tables,
                      await read_all(bootstrap, f"{prefix}.snapshots"),
                      await read_all(bootstrap, f"{prefix}.changes"),
                      await read_all(bootstrap, f"{prefix}.changesets"),
                      await end_offsets(bootstrap, f"{prefix}.snapshots"),
                      await end_offsets(bootstrap, f"{prefix}.changes"))
    return asyncio.run(go())


def table_observations(stored: Stored) -> list[Observation]:
    # toString(DateTime64) gives 'YYYY-MM-DD hh:mm:ss.sss': comparable within one format.
    return [Observation(s, b, st, at, int(p), int(o), int(i))
            for s, b, st, at, p, o, i in stored.tables["snapshots"]]


def topic_observations(records: Sequence[Any]) -> list[Observation]:
    """One per snapshot of each record (a record may carry many: ``docs/records.md``)."""
    rows = []
    for r in records:
        for index, snap in enumerate(read_snapshots(r.value)):
            assert isinstance(snap, dict), snap  # the normalise agent writes no unreadable snapshot
            rows.append(Observation(snap["source"], snap["batch_id"], snap["status"], snap["observed_at"],
                                    r.partition, r.offset, index))
    return rows


def table_changes(stored: Stored) -> list[Change]:
    return [Change(i, k, s, b, f, t, int(p), int(o), h, int(x))
            for i, k, s, b, f, t, p, o, h, x in stored.tables["changes"]]


def topic_changes(records: Sequence[Any]) -> list[Change]:
    rows = []
    for r in records:
        e = orjson.loads(r.value)
        rows.append(Change(e["event_id"], e["kind"], e["source"], e["batch_id"], e.get("from_status"),
                           e.get("to_status"), r.partition, r.offset, r.value))
    return rows


def topic_change_sets(records: Sequence[Any]) -> list[Change]:
    """The change events of the sink's feed (``<prefix>.changesets``), each at its (offset, index)."""
    rows = []
    for r in records:
        for index, e in enumerate(read_changes(r.value)):
            assert isinstance(e, dict), e  # the track agent writes no unreadable change set
            rows.append(Change(e["event_id"], e["kind"], e["source"], e["batch_id"], e.get("from_status"),
                               e.get("to_status"), r.partition, r.offset, orjson.dumps(e), index))
    return rows


def positions_by_partition(rows: Sequence[Observation] | Sequence[Change]
                           ) -> dict[int, list[tuple[int, int]]]:
    found: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        found.setdefault(row.partition, []).append((row.offset, row.index))
    return {p: sorted(o) for p, o in found.items()}


def offsets_by_partition(rows: Sequence[Observation] | Sequence[Change]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for row in rows:
        found.setdefault(row.partition, []).append(row.offset)
    return {p: sorted(o) for p, o in found.items()}


def check_all(truth: Mapping[str, Any], stored: Stored) -> dict[str, Report]:
    """The checker over ClickHouse (tables) and the topics, by where it looked."""
    latest = {(s, b): st for s, b, st in stored.tables["latest"]}
    observations = table_observations(stored)
    on_topic = topic_observations(stored.snapshot_records)
    changes = table_changes(stored)
    change_sets = topic_change_sets(stored.change_set_records)
    final_ids = [row[0] for row in stored.tables["changes_final"]]
    keys = [(r[0], r[1]) for r in stored.tables["latest"]]
    twice_final = [f"batch {k} twice after FINAL" for k, n in Counter(keys).items() if n > 1]
    latest_report = Report(duplicated=twice_final)
    return {
        "clickhouse snapshots": check_observations(truth, observations, latest).merge(latest_report),
        "clickhouse changes": check_changes(truth, changes, final_ids),
        "clickhouse snapshot offsets": check_positions(
            positions_by_partition(observations),
            {p: positions_by_partition(on_topic).get(p, []) for p in stored.snapshot_ends},
            "batch_snapshots"),
        "clickhouse change offsets": check_positions(
            positions_by_partition(changes), positions_by_partition(change_sets), "batch_changes",
            {p: sorted(at) for p, at in replaced_changes(change_sets, changes).items()}),
        "snapshots topic": check_observations(truth, on_topic, latest),
        "changes topic": check_changes(truth, topic_changes(stored.change_records)),
        "change sets topic": check_changes(truth, change_sets),
        "change sets against the changes topic": same_events(topic_changes(stored.change_records),
                                                              change_sets),
    }


def summary(reports: Mapping[str, Report]) -> str:
    return "\n".join(f"  {where}: {r.summary()}" for where, r in reports.items())


# Where a replay may legitimately put an older observation after a newer one (the track agent
# and batch_latest's version absorb it): reported, not a failure. Status changes never go back.
REORDER_TOLERATED = ("clickhouse snapshots", "snapshots topic")


def assert_clean(reports: Mapping[str, Report], *, tolerate_reordered_observations: bool = False) -> None:
    """Nothing lost, nothing doubled (after FINAL, per Kafka position, per event_id), nothing out
    of order; ``tolerate_reordered_observations`` lets replayed observations arrive late."""
    def dirty(where: str, r: Report) -> bool:
        reordered = r.out_of_order and not (tolerate_reordered_observations and where in REORDER_TOLERATED)
        return bool(r.lost or r.duplicated or reordered)

    bad = {w: r for w, r in reports.items() if dirty(w, r)}
    assert not bad, "checker found problems:\n" + summary(bad)


def raw_duplicates(reports: Mapping[str, Report]) -> int:
    return len(reports["clickhouse snapshots"].raw_duplicates)


def expected_count(truth: Mapping[str, Any]) -> int:
    """How many ``status_changed`` events the truth implies (one per consecutive served pair)."""
    return sum(max(0, len(b["served"]) - 1) for b in truth["batches"])
