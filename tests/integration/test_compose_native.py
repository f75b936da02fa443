"""Compose, proven without Docker: every batchscope service of docker-compose.yml, run natively.

For each service that runs our image (migrate, topics, simulator, poller, worker), in
``depends_on`` order (a one-shot must exit 0, a service a dependant waits on must pass its
healthcheck, before the dependant starts), the test runs the service's ``command`` through the
image's entry point (``batchscope``) with exactly the environment the compose file gives it,
interpolated as Compose does from a test ``.env`` (as ``docker compose --env-file``): the four
required passwords, a fake ``OPENAI_API_KEY`` and ``BATCHSCOPE_TOML``, the mounted config. That
config is a real-source one: an ``openai`` source whose key is ``api_key_env = "OPENAI_API_KEY"``
and whose ``base_url`` is ``http://simulator:8787/...``, the simulator service, so only the poller
receives a provider key, as in compose. Each long-running service must pass its own healthcheck
command, run as given (``CMD`` form, resolved on the service's PATH, with its environment), and
one observation must travel from the poller through Kafka and the worker to a ClickHouse row.

Faithful where it matters: each service runs in its own network and mount namespaces
(``unshare --net --mount``, :mod:`tests.sandbox`), so the poller and the worker both serve 9108
and the simulator 8787, each on its own loopback, as in their containers, and no port of the
host is taken. Service names resolve through a per-service ``/etc/hosts`` (bind-mounted in its
mount namespace); the only way out of a namespace is a Unix-socket relay to the ports a service
publishes (the simulator's 8787) and to Kafka. This needs root or user namespaces (CI runs as
root); without either the test fails and says so.

What is replaced, and nothing else:

- Kafka: ``BATCHSCOPE_KAFKA_BOOTSTRAP`` ``kafka:9092`` becomes the local broker's address, relayed
  into each namespace at that same address (the broker advertises it). The mounted config sets a
  per-test ``topic_prefix`` and ``app_id``, as the integration tests do, on the shared broker.
- ClickHouse: ``BATCHSCOPE_CLICKHOUSE_DSN`` ``http://batchscope_<user>@clickhouse:8123`` becomes
  chDB under a temp dir, shared by migrate and then the worker, like one server. chDB has no users,
  so the user name and the password (still given, through ``clickhouse.password_env``) are
  not checked here; ``tests/unit/test_compose.py`` checks they agree with ``users.d``. chDB allows
  one process per data directory: compose's order gives that (migrate exits before the worker
  starts), and the row is read after the worker stopped, its insert seen on ``/metrics`` first.
- Container paths: the mounted config and the image's volume and working directory
  (``/var/lib/batchscope``) are a host file and a temp dir per service; ``PATH`` and ``HOME``
  point at this checkout's virtualenv and that dir.
- Healthchecks are run every second rather than every ``interval``, so the test is not slower
  than it needs to be; a check still has its ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import AIOKafkaConsumer

from tests.deploy_files import ROOT, dockerfile_stages, image_env, load_compose, read_dotenv
from tests.sandbox import relay_unix_to_tcp

pytestmark = pytest.mark.integration

OUR_IMAGE = "batchscope:local"
SUNK = re.compile(r"^batchscope_pipeline_sunk(?:\{[^}]*\})? (\S+)$", re.MULTILINE)  # the sink's rows
REPLACED = {"kafka", "clickhouse"}  # the local broker and chDB stand in for these services
BIN = Path(sys.executable).parent
KEY = "sk-compose-native-FAKE-3c5e7a9b"
DOTENV = """# what docker compose needs (docs/deployment.md)
CLICKHOUSE_ADMIN_PASSWORD=admin-native-pw-1
CLICKHOUSE_SINK_PASSWORD=sink-native-pw-2
CLICKHOUSE_READER_PASSWORD=reader-native-pw-3
GRAFANA_ADMIN_PASSWORD=grafana-native-pw-4
OPENAI_API_KEY={key}
BATCHSCOPE_TOML={toml}
"""
REAL_SOURCES = """[kafka]
topic_prefix = "{prefix}"
app_id = "{prefix}"

[simulator]
batches = 6
sources = 1
providers = ["openai"]

[[sources]]
name = "openai-prod"
provider = "openai"
base_url = "http://simulator:8787/sim-1/v1"
api_key_env = "OPENAI_API_KEY"
poll_interval = 1.0
active_interval = 1.0
"""


def seconds(text: str) -> float:
    """A compose duration (``15s``, ``1m30s``)."""
    total, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total + (float(number) if number else 0.0)


def unshare_args() -> tuple[list[str], list[str]]:
    """(unshare, nsenter) options for a private network and mount namespace: as root, else in a
    user namespace."""
    private = ["--net", "--mount", "--propagation", "private"]
    for extra, enter in (([], []), (["--user", "--map-root-user"], ["--user", "--preserve-credentials"])):
        probe = subprocess.run(["unshare", *extra, *private, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["unshare", *extra, *private], ["--net", "--mount", *enter]
    pytest.fail("network namespaces are unavailable (unshare --net failed): this test needs root or "
                f"user namespaces: {probe.stderr.decode(errors='replace').strip()}")


@dataclass
class Service:
    """One compose service run natively: its spec for :mod:`tests.sandbox` and its process."""

    name: str
    compose: dict[str, Any]
    spec: dict[str, Any]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    healthy: bool = False
    exit_code: int | None = None
    checks: list[str] = field(default_factory=list)

    @property
    def one_shot(self) -> bool:
        return self.compose.get("restart") == "no"

    def tail(self) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-25:])


class Stack:
    """The batchscope services of the compose file, started in ``depends_on`` order."""

    def __init__(self, compose: dict[str, Any], bootstrap: str, root: Path, sockets: Path,
                 namespaces: tuple[list[str], list[str]]) -> None:
        self.compose = compose
        self.bootstrap = bootstrap
        self.root = root
        self.sockets = sockets
        self.unshare, self.nsenter = namespaces
        # as `--profile demo`: the services of no profile and of that one (not `webhooks`)
        ours = [n for n, s in compose["services"].items()
                if s.get("image") == OUR_IMAGE and (not s.get("profiles") or "demo" in s["profiles"])]
        self.exports = {n: self._published(compose["services"][n]) for n in ours}
        self.addresses = {n: f"127.0.1.{i + 1}" for i, n in enumerate(ours)}
        self.services = {n: self._service(n, compose["services"][n]) for n in ours}

    # --- building each service's spec ---------------------------------------------------------

    @staticmethod
    def _published(service: dict[str, Any]) -> list[int]:
        """The container ports a service publishes: the ones the others can reach."""
        return [int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])]

    def _service(self, name: str, compose: dict[str, Any]) -> Service:
        home = self.root / name
        home.mkdir(parents=True)
        env = self._environment(compose, home)
        hosts = home / "hosts"
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{self.addresses[other]} {other}" for other in self.exports if other != name]
        hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")
        forward = {self.bootstrap: str(self.sockets / "kafka.sock")}
        forward |= {f"{self.addresses[other]}:{port}": self._socket(other, port)
                    for other, ports in self.exports.items() if other != name for port in ports}
        export = {self._socket(name, port): f"127.0.0.1:{port}" for port in self.exports[name]}
        spec = {"command": [str(BIN / "batchscope"), *compose["command"]], "env": env, "cwd": str(home),
                "hosts": str(hosts), "forward": forward, "export": export}
        return Service(name, compose, spec, self.root / f"{name}.log")

    def _socket(self, name: str, port: int) -> str:
        return str(self.sockets / f"{name}-{port}.sock")

    def _environment(self, compose: dict[str, Any], home: Path) -> dict[str, str]:
        """The image's ENV, then the service's environment; container paths made host paths;
        the Kafka and ClickHouse addresses replaced."""
        given = {k: "" if v is None else str(v) for k, v in compose.get("environment", {}).items()}
        env = image_env() | given
        paths = self._mounts(compose, home)
        env = {k: translate(v, paths) for k, v in env.items()}
        if "BATCHSCOPE_KAFKA_BOOTSTRAP" in env:
            assert env["BATCHSCOPE_KAFKA_BOOTSTRAP"] == "kafka:9092"
            env["BATCHSCOPE_KAFKA_BOOTSTRAP"] = self.bootstrap
        if "BATCHSCOPE_CLICKHOUSE_DSN" in env:
            assert urlsplit(env["BATCHSCOPE_CLICKHOUSE_DSN"]).hostname == "clickhouse"
            env["BATCHSCOPE_CLICKHOUSE_DSN"] = f"chdb://{self.root / 'clickhouse'}"
        return env | {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}

    @staticmethod
    def _mounts(compose: dict[str, Any], home: Path) -> dict[str, Path]:
        """Container path -> host path: the bind mounts, the image's volumes and working dir."""
        paths: dict[str, Path] = {}
        for volume in compose.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            paths[target] = (ROOT / source).resolve() if not Path(source).is_absolute() else Path(source)
        for line in dockerfile_stages()[-1]:
            if line.startswith("VOLUME "):
                paths |= {v: home for v in json.loads(line.removeprefix("VOLUME "))}
            elif line.startswith("WORKDIR "):
                paths[line.split()[1]] = home
        return paths

    # --- running ------------------------------------------------------------------------------

    def start_all(self) -> None:
        pending = list(self.services)
        while pending:
            name = next((n for n in pending if self._ready(n)), None)
            assert name is not None, f"no service can start: {pending}"
            pending.remove(name)
            service = self.services[name]
            self._start(service)
            if service.one_shot:
                self._wait_exit(service)
            else:
                self.wait_healthy(service)

    def _ready(self, name: str) -> bool:
        for dep, spec in self.services[name].compose.get("depends_on", {}).items():
            if dep in REPLACED:
                continue
            other = self.services[dep]
            condition = spec["condition"]
            if condition == "service_completed_successfully" and other.exit_code != 0:
                return False
            if condition == "service_healthy" and not other.healthy:
                return False
            if condition == "service_started" and other.proc is None:
                return False
        return True

    def _start(self, service: Service) -> None:
        spec_file = self.root / f"{service.name}.json"
        spec_file.write_text(json.dumps(service.spec), encoding="utf-8")
        with service.log.open("wb") as out:
            service.proc = subprocess.Popen(
                [*self.unshare, sys.executable, "-m", "tests.sandbox", str(spec_file)], cwd=ROOT,
                stdout=out, stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def _wait_exit(self, service: Service) -> None:
        assert service.proc is not None
        try:
            service.exit_code = service.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"one-shot {service.name} did not exit within 120 s\n{service.tail()}")
        assert service.exit_code == 0, f"{service.name} exited {service.exit_code}\n{service.tail()}"

    def healthcheck(self, service: Service) -> subprocess.CompletedProcess[str]:
        """The service's healthcheck command, run in its namespaces with its environment."""
        check = service.compose["healthcheck"]
        assert check["test"][0] == "CMD"
        assert service.proc is not None
        return subprocess.run(["nsenter", "--target", str(service.proc.pid), *self.nsenter, "--",
                               *check["test"][1:]], env=service.spec["env"], cwd=service.spec["cwd"],
                              capture_output=True, text=True, timeout=seconds(check["timeout"]), check=False)

    def wait_healthy(self, service: Service, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert service.proc is not None
            assert service.proc.poll() is None, f"{service.name} exited\n{service.tail()}"
            result = self.healthcheck(service)
            service.checks.append(result.stdout.strip() or result.stderr.strip())
            if result.returncode == 0:
                service.healthy = True
                return
            time.sleep(1.0)
        pytest.fail(f"{service.name} never passed its healthcheck: {service.checks[-3:]}\n{service.tail()}")

    def inside(self, service: Service, *command: str) -> str:
        """A command run in a service's namespaces (e.g. to read its /metrics)."""
        assert service.proc is not None
        done = subprocess.run(["nsenter", "--target", str(service.proc.pid), *self.nsenter, "--", *command],
                              capture_output=True, text=True, timeout=30, check=False)
        return done.stdout

    def stop_all(self) -> None:
        """``docker compose down``: SIGTERM, SIGKILL after 30 s."""
        running = [s.proc for s in self.services.values() if s.proc is not None and s.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(s.tail() for s in self.services.values())


def translate(value: str, paths: dict[str, Path]) -> str:
    for inside, outside in sorted(paths.items(), key=lambda item: -len(item[0])):
        if value == inside or value.startswith(inside + "/"):
            return str(outside) + value[len(inside):]
    return value


class KafkaRelay:
    """The host side of the Kafka relay: a Unix socket in front of the local broker."""

    def __init__(self, path: Path, bootstrap: str) -> None:
        self.path, self.bootstrap = path, bootstrap
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> KafkaRelay:
        self.thread.start()
        host, port = self.bootstrap.rsplit(":", 1)
        relay = relay_unix_to_tcp(str(self.path), host, int(port))
        self.server = asyncio.run_coroutine_threadsafe(relay, self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            self.server.close()
            current = asyncio.current_task()
            connections = [t for t in asyncio.all_tasks() if t is not current]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await asyncio.sleep(0.05)  # the closed transports let go of their sockets

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short private directory for the Unix sockets (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bsc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def raw_keys(bootstrap: str, topic: str, within: float) -> set[str]:
    """Keys of the raw topic's records, once there is at least one."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    keys: set[str] = set()
    try:
        deadline = time.monotonic() + within
        while not keys and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                keys |= {r.key.decode() for r in records if r.key}
    finally:
        await consumer.stop()
    return keys


def sunk(stack: Stack) -> float:
    text = stack.inside(stack.services["worker"], sys.executable, "-c",
                        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9108/metrics', "
                        "timeout=5).read().decode())")
    found = SUNK.search(text)
    return float(found.group(1)) if found else 0.0


def stored_rows(chdb: Path) -> list[list[str]]:
    """(source, batch_id) of the stored snapshots, read after the worker released chDB."""
    script = ("import json; from pipeline.clickhouse.store import Store; "
              f"store = Store('chdb://{chdb}', 'batchscope'); "
              "rows = store.query('SELECT source, batch_id FROM batch_snapshots').rows; "
              "print(json.dumps([list(r) for r in rows]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def test_every_batchscope_service_starts_passes_its_healthcheck_and_an_observation_reaches_clickhouse(
        tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, sockets: Path) -> None:
    namespaces = unshare_args()
    toml = tmp_path / "my-batchscope.toml"
    toml.write_text(REAL_SOURCES.format(prefix=topic_prefix), encoding="utf-8")
    dotenv = tmp_path / ".env"
    dotenv.write_text(DOTENV.format(key=KEY, toml=toml), encoding="utf-8")
    compose = load_compose(read_dotenv(dotenv))  # as `docker compose --env-file .env --profile demo`
    stack = Stack(compose, kafka_bootstrap, tmp_path / "stack", sockets, namespaces)
    assert set(stack.services) == {"migrate", "topics", "simulator", "poller", "worker"}
    assert [n for n, s in stack.services.items() if "OPENAI_API_KEY" in s.spec["env"]] == ["poller"]
    assert not [k for k in stack.services["poller"].spec["env"] if "PASSWORD" in k]
    with KafkaRelay(sockets / "kafka.sock", kafka_bootstrap):
        try:
            stack.start_all()
            keys = asyncio.run(raw_keys(kafka_bootstrap, f"{topic_prefix}.raw", 60))
            assert keys, "the poller published nothing"
            assert all(k.startswith("openai-prod/") for k in keys)
            deadline = time.monotonic() + 90
            while sunk(stack) < 1 and time.monotonic() < deadline:
                time.sleep(1.0)
            assert sunk(stack) >= 1, "the worker's sink wrote nothing"
            for service in stack.services.values():
                if not service.one_shot:
                    assert stack.healthcheck(service).returncode == 0, service.name
        except BaseException:
            stack.stop_all()
            print(stack.logs())
            raise
        stack.stop_all()
    rows = stored_rows(tmp_path / "stack" / "clickhouse")
    assert rows, "no snapshot in ClickHouse"
    assert {f"{source}/{batch}" for source, batch in rows} & keys, (rows[:5], sorted(keys)[:5])
    assert {service.exit_code for service in stack.services.values() if service.one_shot} == {0}
