"""The real-broker harness of the integration and reliability tests and the broker benchmarks.

A worker subprocess (``python -m agents.worker``) with its config file, a producer that
publishes records and waits for them, a reader of a whole topic up to its end offsets, the
consumer group's committed offsets, and :func:`wait_committed`: the wait until the group has
committed every record the topics hold.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.core.records import Rejected, read_snapshots
from pipeline.core.transitions import Rules

PARTITIONS = 4
# Faust's 60 s session timeout would hold a restarted worker's rebalance for a minute.
FAST_GROUP = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}


def run_toml(tmp: Path, bootstrap: str, prefix: str, partitions: int = PARTITIONS) -> str:
    """The start of a benchmark's or test's settings file: its own topics, consumer group and data
    directory. The ``[pipeline]`` table is open at the end, for the caller's keys."""
    return f"""
[kafka]
bootstrap = "{bootstrap}"
topic_prefix = "{prefix}"
app_id = "{prefix}"
partitions = {partitions}

[pipeline]
data_dir = "{tmp / 'data'}"
"""


def write_config(tmp: Path, bootstrap: str, prefix: str, rules: Rules, store: str = "memory") -> Path:
    path = tmp / "worker.toml"
    path.write_text(run_toml(tmp, bootstrap, prefix) + f"""log_level = "warning"

[track]
store = "{store}"
stall_seconds = {rules.stall_seconds}
progress_min_interval = {rules.progress_min_interval}
progress_min_step = {rules.progress_min_step}
expiry_risk = {str(rules.expiry_risk).lower()}
""", encoding="utf-8")
    return path


class Worker:
    """``python -m agents.worker`` (normalise + track) as a subprocess, logging to a file."""

    def __init__(self, config: Path, log: Path, codec: str | None = "orjson",
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        """``codec`` None: the worker's default; ``env`` and ``cwd``: a code tree's
        (:meth:`bench.baseline.Tree.env`), to run the worker of another checkout."""
        self.config, self.log, self.codec, self.env, self.cwd = config, log, codec, dict(env or {}), cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        codec = ["--codec", self.codec] if self.codec else []
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agents.worker", "--config", str(self.config), *codec],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd,
                env={**os.environ, **FAST_GROUP, "PYTHONUNBUFFERED": "1", **self.env})

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def alive(self) -> bool:
        return self.running()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def cpu_seconds(self) -> float:
        """The worker's CPU time so far, user and system, every thread (Linux ``/proc``)."""
        assert self.proc is not None, "start() the worker first"
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], *,
                  max_request_size: int = 1_048_576) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=20, max_request_size=max_request_size)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


Assigned = tuple[AIOKafkaConsumer, list[TopicPartition], dict[TopicPartition, int]]


@asynccontextmanager
async def assigned(bootstrap: str, topic: str, *, from_start: bool) -> AsyncIterator[Assigned]:
    """A consumer assigned every partition of ``topic`` (``PARTITIONS``), at their beginnings if
    ``from_start``, with those partitions and their end offsets now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        if from_start:
            await consumer.seek_to_beginning(*parts)
        yield consumer, parts, await consumer.end_offsets(parts)
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic (with ``PARTITIONS`` partitions) up to its current end offsets."""
    async with assigned(bootstrap, topic, from_start=True) as (consumer, parts, ends):
        return await read_to(consumer, parts, ends)


async def read_to(consumer: AIOKafkaConsumer, parts: list[TopicPartition],
                  ends: Mapping[TopicPartition, int]) -> list[Any]:
    """What ``consumer`` reads of ``parts`` from its positions up to ``ends`` (excluded)."""
    records: list[Any] = []
    while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
        batch = await consumer.getmany(timeout_ms=500)
        records += [r for tp, rs in batch.items() for r in rs if r.offset < ends[tp]]
    return records


async def count(bootstrap: str, topic: str) -> int:
    """The number of records in a topic (sum of end offsets; nothing is deleted in these runs)."""
    return sum((await end_offsets(bootstrap, topic)).values())


async def snapshot_entries(bootstrap: str, topic: str) -> list[tuple[Any, dict[str, Any] | Rejected]]:
    """Every snapshot on a snapshots topic, with its record: the normalise agent packs the snapshots
    of several raw records into one record, so records are not observations."""
    return [(r, entry) for r in await read_all(bootstrap, topic) for entry in read_snapshots(r.value, r.key)]


async def end_offsets(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: int(o) for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def topic_ends(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    for topic in topics:
        found.update({(topic, p): o for p, o in (await end_offsets(bootstrap, topic)).items()})
    return found


async def first_timestamp(bootstrap: str, topic: str) -> float:
    """The earliest broker timestamp (seconds) among the first records of the topic's partitions."""
    async with assigned(bootstrap, topic, from_start=True) as (consumer, parts, ends):
        left, first = {tp for tp in parts if ends[tp] > 0}, []
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=1)
            for tp, rows in batch.items():
                if rows:
                    first.append(rows[0].timestamp)
                    left.discard(tp)
        return float(min(first)) / 1000.0


async def last_timestamp(bootstrap: str, topic: str) -> float:
    """The latest broker timestamp (seconds) among the last records of the topic's partitions."""
    async with assigned(bootstrap, topic, from_start=False) as (consumer, parts, ends):
        left, last = {tp for tp in parts if ends[tp] > 0}, []
        for tp in left:
            consumer.seek(tp, ends[tp] - 1)
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in batch.items():
                if records and records[-1].offset + 1 >= ends[tp]:
                    last.append(records[-1].timestamp)
                    left.discard(tp)
        return float(max(last)) / 1000.0


async def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


# --- the consumer group's committed offsets ----------------------------------------------------

async def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets per (topic, partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def lag(bootstrap: str, group: str, topics: Sequence[str],
              ends: Mapping[tuple[str, int], int] | None = None) -> int:
    """Records of ``topics`` the group has not committed: up to ``ends`` if given, else the end now."""
    if ends is None:
        ends = await topic_ends(bootstrap, topics)
    done = await committed(bootstrap, group)
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())


def drained(committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> bool:
    """Every partition's committed offset has reached its end offset (an empty one needs none)."""
    return all(committed.get(tp, 0) >= end for tp, end in ends.items())


async def group_offsets(bootstrap: str, group: str, topics: Iterable[str]
                        ) -> tuple[float, dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The wall time at which the group's committed offsets on ``topics`` were read, those
    offsets, and the end offsets read after them (clients started for this one look)."""
    async with CommitWatch(bootstrap) as watch:
        return await watch.offsets(group, topics)


class CommitWatch:
    """Clients kept open to read, as often as asked, whether consumer groups have committed every
    record of their topics. :func:`group_done` starts its clients for every look (0.3 s here):
    a benchmark polling it sees a commit up to that late, and its client start-ups take CPU from
    the worker it times."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> CommitWatch:
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._admin.close()

    async def count(self, topic: str) -> int:
        """The records ``topic`` holds (:func:`count`)."""
        ends = await self._consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return sum(ends.values())

    async def offsets(self, group: str, topics: Iterable[str]
                      ) -> tuple[float, dict[TopicPartition, int], dict[TopicPartition, int]]:
        """The wall time at which the group's committed offsets on ``topics`` were read, those
        offsets, and the end offsets read after them."""
        parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        offsets = await self._admin.list_consumer_group_offsets(group, partitions=parts)
        seen = time.time()
        committed = {tp: m.offset for tp, m in offsets.items() if m is not None and m.offset >= 0}
        return seen, committed, await self._consumer.end_offsets(parts)

    async def done(self, group: str, topics: Iterable[str]) -> float | None:
        """As :func:`group_done`: the wall time ``group`` was seen to have committed everything
        on ``topics`` (committed offsets read before the end offsets), or None."""
        seen, committed, ends = await self.offsets(group, topics)
        return seen if drained(committed, ends) else None


async def group_done(bootstrap: str, group: str, topics: Iterable[str]) -> float | None:
    """The wall time at which the group was seen to have committed everything on ``topics``
    (committed offsets read before the end offsets), or None."""
    seen, done, ends = await group_offsets(bootstrap, group, topics)
    return seen if drained(done, ends) else None


async def uncommitted(bootstrap: str, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Per partition of ``topics``, the records the group has not committed (committed offsets
    read before the end offsets); empty once it has committed everything."""
    _, done, ends = await group_offsets(bootstrap, group, topics)
    return {tp: end - done.get(tp, 0) for tp, end in ends.items() if done.get(tp, 0) < end}


async def records_created_since(bootstrap: str, topic: str, starts: Mapping[tuple[str, int], int],
                                until_ms: int) -> list[Any]:
    """The records of ``topic`` (``PARTITIONS`` partitions) from the offsets ``starts`` gives
    (``(topic, partition) -> offset``, as :func:`committed` returns; 0 where absent) up to the
    end, that their producer created at or before ``until_ms`` (epoch milliseconds): what was
    in flight at that instant, including records the broker only took later."""
    async with assigned(bootstrap, topic, from_start=False) as (consumer, parts, ends):
        for tp in parts:
            consumer.seek(tp, starts.get((topic, tp.partition), 0))
        records = await read_to(consumer, parts, ends)
    return [r for r in records if r.timestamp <= until_ms]


class Watched(Protocol):
    """A process a wait gives up on as soon as it exits (``Worker``, the reliability ``Proc``)."""

    def alive(self) -> bool: ...

    def tail(self) -> str: ...


def wait_committed(bootstrap: str, group: str, topics: Sequence[str], *watch: Watched,
                   timeout: float = 60.0) -> None:
    """Block until ``group`` has committed every record ``topics`` hold: whatever its members do
    with those records (a duplicate write or event included) has then been done, since they
    commit a record only after acting on it. The group must consume every topic named.

    Fails (AssertionError) after ``timeout`` seconds, naming the records left per partition, or
    as soon as a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in watch:
            if not proc.alive():
                raise AssertionError(f"a process exited while waiting for consumer group {group!r} to "
                                     f"commit {', '.join(topics)}:\n{proc.tail()}")
        left = asyncio.run(uncommitted(bootstrap, group, topics))
        if not left:
            return
        if time.monotonic() >= deadline:
            behind = ", ".join(f"{tp.topic}[{tp.partition}]: {n}" for tp, n in sorted(left.items()))
            tails = "".join(f"\n--- {proc.tail()}" for proc in watch)
            raise AssertionError(f"consumer group {group!r} had not committed every record after "
                                 f"{timeout:.0f} s; records left per partition: {behind}{tails}")
        time.sleep(0.2)
