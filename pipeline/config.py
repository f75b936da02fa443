"""Settings: one typed, frozen object loaded once at the edge (the CLI).

Sources: a TOML file (``batchscope.toml`` in the working directory, or ``--config PATH``, or
``BATCHSCOPE_CONFIG``) and ``BATCHSCOPE_<SECTION>_<KEY>`` environment overrides, e.g.
``BATCHSCOPE_KAFKA_BOOTSTRAP=host:9092``. API keys are read from the environment variable or
file a source names and are held as :class:`Secret`, which never prints its value.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from pipeline.errors import ConfigError
from pipeline.transitions import Rules

ENV_PREFIX = "BATCHSCOPE_"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_CONFIG = "batchscope.toml"
PROVIDERS = (
    "openai", "azure_openai", "orq", "anthropic", "mistral",
    "groq", "together", "gemini", "vertex", "bedrock",
)
# Providers the poller can poll: every provider has an adapter.
POLLABLE = PROVIDERS
# The simulator's default provider mix, assigned round-robin to its sources.
SIM_PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "mistral", "together", "vertex",
                 "azure_openai", "orq", "groq")
# Public API roots; azure_openai, vertex and bedrock have none (per resource, project or region)
# and need ``base_url``. Kept equal to each adapter's ``default_base_url`` (pipeline.providers).
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "orq": "https://api.orq.ai/v3/router",
    "anthropic": "https://api.anthropic.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
NO_DEFAULT_HINT = {
    "azure_openai": "https://<resource>.openai.azure.com/openai",
    "vertex": "https://<location>-aiplatform.googleapis.com/v1/projects/<project>/locations/<location>",
    "bedrock": "https://bedrock.<region>.amazonaws.com",
}
STORES = ("memory", "rocksdb")


class Secret:
    """A credential. ``str()`` and ``repr()`` never show it; :meth:`reveal` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "batchscope"
    partitions: int = 4
    app_id: str = "batchscope"
    # Topic settings applied when ``batchscope topics`` (or run/poll/worker) creates a topic; an
    # existing topic is never altered. Retention in hours; -1 keeps records forever.
    replication_factor: int = 1
    min_insync_replicas: int = 1
    retention_hours: int = 168  # raw and snapshots: 7 days, enough to replay into ClickHouse
    changes_retention_hours: int = 720  # the downstream contract: 30 days to catch up
    dlq_retention_hours: int = 720

    def __post_init__(self) -> None:
        _require(self.partitions >= 1, "kafka.partitions", "must be at least 1")
        _require(self.replication_factor >= 1, "kafka.replication_factor", "must be at least 1")
        _require(1 <= self.min_insync_replicas <= self.replication_factor, "kafka.min_insync_replicas",
                 "must be between 1 and kafka.replication_factor")
        for key in ("retention_hours", "changes_retention_hours", "dlq_retention_hours"):
            hours = getattr(self, key)
            _require(hours == -1 or hours >= 1, f"kafka.{key}", "must be -1 (forever) or at least 1")
        _require(bool(self.topic_prefix.strip()), "kafka.topic_prefix", "must not be empty")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


@dataclass(frozen=True, slots=True)
class ClickHouseConfig:
    dsn: str = field(default="", repr=False)  # empty: embedded chDB under pipeline.data_dir
    database: str = "batchscope"
    password_env: str = ""
    snapshot_ttl_days: int = 400  # batch_snapshots rows older than this are dropped (whole parts)
    # Test hook: while this file exists, every insert fails as if ClickHouse were unreachable.
    fault_file: str = ""

    def __post_init__(self) -> None:
        _require(self.snapshot_ttl_days >= 1, "clickhouse.snapshot_ttl_days", "must be at least 1")
        ok = self.dsn == "" or self.dsn.startswith(("chdb:", "http://", "https://"))
        _require(ok, "clickhouse.dsn", "must start with chdb://, http:// or https://")
        _require(self.database.isidentifier(), "clickhouse.database", "must be an identifier")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    batches: int = 100
    seed: int = 42
    speed: float = 60.0
    host: str = "127.0.0.1"
    port: int = 8787
    sources: int = 4
    poll_interval: float = 2.0
    fault_rate: float = 0.0  # share of API requests answered with an injected fault
    retry_after: float = 1.0  # seconds a 429 asks the client to wait
    hang_seconds: float = 3.0  # how long a hung request stalls before its connection drops
    providers: tuple[str, ...] = SIM_PROVIDERS  # assigned to the sources round-robin
    latency: float = 0.0  # extra seconds before every API answer
    vanish_share: float = 0.0  # share of batches that answer 404 (and leave the list) after they end
    vanish_after: float = 3600.0  # simulated seconds after its end that such a batch vanishes
    malformed: int = 0  # batches (fleet-wide, chosen by the seed) served as objects the normaliser rejects
    hostile: int = 0  # hostile payloads (pipeline.hostile) served: objects inside list pages, whole bodies
    creation_span: float = 4.0  # simulated hours over which the batches are created, half before start
    history: int = 0  # batches per source created 2-30 simulated days earlier: terminal history

    def __post_init__(self) -> None:
        _require(bool(self.providers), "simulator.providers", "must name at least one provider")
        for name in self.providers:
            _require(name in PROVIDERS, "simulator.providers",
                     f"{name!r} is not one of {', '.join(PROVIDERS)}")
        _require(self.latency >= 0, "simulator.latency", "must be at least 0")
        _require(0 <= self.vanish_share <= 1, "simulator.vanish_share", "must be between 0 and 1")
        _require(self.vanish_after >= 0, "simulator.vanish_after", "must be at least 0")
        _require(self.malformed >= 0, "simulator.malformed", "must be at least 0")
        _require(self.hostile >= 0, "simulator.hostile", "must be at least 0")
        _require(self.creation_span > 0, "simulator.creation_span", "must be greater than 0")
        _require(self.history >= 0, "simulator.history", "must be at least 0")
        _require(self.batches >= 1, "simulator.batches", "must be at least 1")
        _require(0 <= self.fault_rate <= 1, "simulator.fault_rate", "must be between 0 and 1")
        _require(self.retry_after >= 0, "simulator.retry_after", "must be at least 0")
        _require(self.hang_seconds >= 0, "simulator.hang_seconds", "must be at least 0")
        _require(1 <= self.sources <= 100, "simulator.sources", "must be between 1 and 100")
        _require(self.poll_interval > 0, "simulator.poll_interval", "must be greater than 0")
        _require(self.speed > 0, "simulator.speed", "must be greater than 0")
        _require(0 <= self.port <= 65535, "simulator.port", "must be a port number (0-65535)")


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    data_dir: str = ".batchscope"
    http_host: str = "127.0.0.1"
    http_port: int = 8790
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # Prometheus /metrics of the poller; 0 picks a free port
    sink_batch_size: int = 1000
    sink_flush_seconds: float = 1.0
    log_level: str = "info"
    # The query endpoint (pipeline/queryserver.py): limits of every query it runs.
    query_timeout: float = 30.0  # seconds of execution
    query_max_rows: int = 100_000  # rows in a result
    query_max_memory_mib: int = 1024  # memory one query may use
    # /health fails once a source has completed no poll cycle for this many of its poll intervals.
    stale_intervals: int = 10

    def __post_init__(self) -> None:
        _require(0 <= self.http_port <= 65535, "pipeline.http_port", "must be a port number")
        _require(_loopback(self.http_host), "pipeline.http_host",
                 f"must be a loopback address such as 127.0.0.1 or ::1, not {self.http_host!r}: the query "
                 "endpoint is for this machine only")
        _require(self.sink_batch_size >= 1, "pipeline.sink_batch_size", "must be at least 1")
        _require(self.sink_flush_seconds > 0, "pipeline.sink_flush_seconds", "must be > 0")
        _require(self.query_timeout > 0, "pipeline.query_timeout", "must be greater than 0")
        _require(self.query_max_rows >= 1, "pipeline.query_max_rows", "must be at least 1")
        _require(self.query_max_memory_mib >= 1, "pipeline.query_max_memory_mib", "must be at least 1")
        _require(self.stale_intervals >= 1, "pipeline.stale_intervals", "must be at least 1")
        levels = ("debug", "info", "warning", "error")
        _require(self.log_level in levels, "pipeline.log_level", f"must be one of {levels}")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """The track agent: its table store and the thresholds of the derived change kinds."""

    store: str = "memory"  # memory | rocksdb (needs the batchscope[rocksdb] extra)
    stall_seconds: float = 3600.0  # 0 disables ``stalled``
    progress_min_interval: float = 60.0
    progress_min_step: int = 0  # 0: only the interval throttles ``progress``
    expiry_risk: bool = True

    def __post_init__(self) -> None:
        _require(self.store in STORES, "track.store", f"must be one of {', '.join(STORES)}")
        _require(self.store != "rocksdb" or importlib.util.find_spec("rocksdict") is not None,
                 "track.store", "rocksdb needs the rocksdict package: pip install 'batchscope[rocksdb]'")
        _require(self.stall_seconds >= 0, "track.stall_seconds", "must be 0 (off) or more")
        _require(self.progress_min_interval >= 0, "track.progress_min_interval", "must be 0 or more")
        _require(self.progress_min_step >= 0, "track.progress_min_step", "must be 0 (off) or more")

    def rules(self) -> Rules:
        return Rules(self.stall_seconds, self.progress_min_interval, self.progress_min_step,
                     self.expiry_risk)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    name: str
    provider: str
    base_url: str
    api_key: Secret | None = None
    poll_interval: float = 30.0
    page_limit: int = 100
    tags: Mapping[str, str] = field(default_factory=dict)
    max_rps: float = 5.0
    breaker_threshold: int = 5
    breaker_reset: float = 30.0
    request_timeout: float = 30.0
    active_interval: float | None = None  # None: ACTIVE_FACTOR x poll_interval
    max_body_mib: int = 32  # a response body over this (decompressed) is refused

    @property
    def refresh_interval(self) -> float:
        """The longest wait between two refreshes of an active batch (at least the poll interval)."""
        chosen = self.active_interval or ACTIVE_FACTOR * self.poll_interval
        return max(chosen, self.poll_interval)


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    sources: tuple[SourceConfig, ...] = ()
    clickhouse_secret: Secret | None = field(default=None, repr=False)

    @property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse.dsn:
            return self.clickhouse.dsn
        return f"chdb://{self.pipeline.data_path / 'clickhouse'}"

    def clickhouse_password(self) -> Secret | None:
        """The server password: resolved by :func:`load_settings`, else from the process env."""
        if self.clickhouse_secret is not None:
            return self.clickhouse_secret
        name = self.clickhouse.password_env
        return _secret_from_env(name, "clickhouse.password_env") if name else None


SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "clickhouse": ClickHouseConfig,
    "simulator": SimulatorConfig,
    "pipeline": PipelineConfig,
    "track": TrackConfig,
}
# By default an active batch far from its expected end is refreshed every 10 poll intervals (5 min
# at the default 30 s): far from its end only an unforeseen cancel or failure changes it, and 5 min
# bounds how late that is seen; near its end (and in validating/finalizing/cancelling) the poll
# interval applies. The refresh of far batches then costs at most a tenth of listing everything
# each cycle (bench/poller_bench.py measures the whole schedule against that).
ACTIVE_FACTOR = 10.0
SOURCE_KEYS = {"name", "provider", "base_url", "api_key_env", "api_key_file", "poll_interval",
               "active_interval", "page_limit", "tags", "max_rps", "breaker_threshold", "breaker_reset",
               "request_timeout", "max_body_mib"}

FLOW_KEYS: tuple[tuple[str, type[Any], Any], ...] = (
    ("max_rps", float, 5.0), ("breaker_threshold", int, 5),
    ("breaker_reset", float, 30.0), ("request_timeout", float, 30.0),
)

T = TypeVar("T")


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any) and the ``BATCHSCOPE_*`` overrides into :class:`Settings`."""
    environ = os.environ if env is None else env
    raw = _read_toml(path, environ)
    unknown = set(raw) - set(SECTIONS) - {"sources"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{key}: unknown section (known: {', '.join([*SECTIONS, 'sources'])})")
    _check_env_names(environ)
    parts = {name: _section(name, cls, raw.get(name, {}), environ) for name, cls in SECTIONS.items()}
    sources = raw.get("sources", [])
    if not isinstance(sources, list):
        raise ConfigError("sources: must be an array of tables ([[sources]])")
    loaded = tuple(_source(i, s, environ) for i, s in enumerate(sources))
    names = [s.name for s in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    _require(not dupes, "sources", f"duplicate source name {dupes[0]!r}" if dupes else "")
    pw_env = parts["clickhouse"].password_env
    password = _secret_from_env(pw_env, "clickhouse.password_env", environ) if pw_env else None
    return Settings(sources=loaded, clickhouse_secret=password, **parts)


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A mistyped ``BATCHSCOPE_<SECTION>_<KEY>`` is an error, not a silently ignored setting."""
    for name in environ:
        for section, cls in SECTIONS.items():
            prefix = f"{ENV_PREFIX}{section.upper()}_"
            if name.startswith(prefix):
                known = {f.name.upper() for f in fields(cls)}
                _require(name[len(prefix):] in known, name,
                         f"unknown setting (known: {', '.join(prefix + k for k in sorted(known))})")


def _read_toml(path: str | Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    explicit = path or environ.get(f"{ENV_PREFIX}CONFIG")
    target = Path(explicit) if explicit else Path(DEFAULT_CONFIG)
    if not target.exists():
        if explicit:
            raise ConfigError(f"config file {target}: not found (check --config or BATCHSCOPE_CONFIG)")
        return {}
    try:
        return tomllib.loads(target.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {target}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {target}: cannot read: {exc}") from None


def _section(name: str, cls: type[T], table: object, environ: Mapping[str, str]) -> T:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table ([{name}])")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in table:
        _require(key in known, f"{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    values = {k: _coerce(f"{name}.{k}", hints[k], v) for k, v in table.items()}
    for key in known:
        env_name = f"{ENV_PREFIX}{name}_{key}".upper()
        if env_name in environ:
            values[key] = _coerce_text(env_name, hints[key], environ[env_name])
    return cls(**values)


def _coerce(key: str, hint: Any, value: object) -> object:
    """Check a TOML value against a field's type; ints are accepted where floats are."""
    if get_origin(hint) is tuple:  # tuple[str, ...]: a TOML array of strings
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: expected an array of strings, got {value!r}")
    base = _base_type(hint)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key}: expected {base.__name__}, got {type(value).__name__} {value!r}")


def _coerce_text(key: str, hint: Any, text: str) -> object:
    """Parse an environment value strictly: ``bool`` takes true/false/1/0/yes/no only; a list
    (``tuple[str, ...]``) is comma-separated."""
    if get_origin(hint) is tuple:
        return tuple(v.strip() for v in text.split(",") if v.strip())
    base = _base_type(hint)
    try:
        if base is bool:
            lowered = text.strip().lower()
            _require(lowered in {"true", "false", "1", "0", "yes", "no"}, key,
                     f"expected true or false, got {text!r}")
            return lowered in {"true", "1", "yes"}
        return base(text.strip()) if base in (int, float) else text
    except ValueError:
        raise ConfigError(f"{key}: expected {base.__name__}, got {text!r}") from None


def _base_type(hint: Any) -> type[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    return hint if isinstance(hint, type) else str


def _source(index: int, table: object, environ: Mapping[str, str]) -> SourceConfig:
    where = f"sources[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    for key in table:
        known = ", ".join(sorted(SOURCE_KEYS))
        _require(key in SOURCE_KEYS, f"{where}.{key}", f"unknown key (known: {known})")
    name = _get(table, where, "name", str, "")
    provider = _get(table, where, "provider", str, "")
    _require(bool(name) and "/" not in name, f"{where}.name", "required, without '/'")
    _require(provider in PROVIDERS, f"{where}.provider", f"must be one of {', '.join(PROVIDERS)}")
    _require(provider in POLLABLE, f"{where}.provider",
             f"{provider!r} cannot be polled yet (pollable: {', '.join(POLLABLE)})")
    default_url = DEFAULT_BASE_URLS.get(provider)
    _require(default_url is not None or "base_url" in table, f"{where}.base_url",
             f"required for provider {provider!r} (it has no public default: "
             f"{NO_DEFAULT_HINT.get(provider, 'the account API root')})")
    base_url = _get(table, where, "base_url", str, default_url or "")
    _require(base_url.startswith(("http://", "https://")), f"{where}.base_url", "must be an http(s) URL")
    interval = _get(table, where, "poll_interval", float, 30.0)
    _require(interval > 0, f"{where}.poll_interval", "must be greater than 0")
    active = _get(table, where, "active_interval", float, ACTIVE_FACTOR * interval)
    _require(active >= interval, f"{where}.active_interval",
             f"must be at least poll_interval ({interval:g} s)")
    chosen = active if "active_interval" in table else None
    limit = _get(table, where, "page_limit", int, 100)
    _require(1 <= limit <= 100, f"{where}.page_limit", "must be between 1 and 100")
    tags = table.get("tags", {})
    ok_tags = isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
    _require(ok_tags, f"{where}.tags", "must be a table of strings")
    flow = {key: _get(table, where, key, kind, default) for key, kind, default in FLOW_KEYS}
    for key, value in flow.items():
        _require(value > 0, f"{where}.{key}", "must be greater than 0")
    max_body = _get(table, where, "max_body_mib", int, 32)
    _require(1 <= max_body <= 1024, f"{where}.max_body_mib", "must be between 1 and 1024")
    api_key = _api_key(where, table, environ)
    if provider == "bedrock" and api_key is not None:
        from pipeline.sigv4 import credentials  # imports this module

        credentials(api_key, f"{where}.api_key_env" if "api_key_env" in table else f"{where}.api_key_file")
    return SourceConfig(name=name, provider=provider, base_url=base_url.rstrip("/"),
                        api_key=api_key, poll_interval=interval, active_interval=chosen,
                        page_limit=limit, tags=dict(tags), max_body_mib=max_body, **flow)


def _get(table: dict[str, Any], where: str, key: str, kind: type[T], default: T) -> T:
    value = _coerce(f"{where}.{key}", kind, table.get(key, default))
    assert isinstance(value, kind)
    return value


def _api_key(where: str, table: dict[str, Any], environ: Mapping[str, str]) -> Secret | None:
    env_name, file_name = table.get("api_key_env"), table.get("api_key_file")
    _require(not (env_name and file_name), where, "set api_key_env or api_key_file, not both")
    if env_name:
        ok = isinstance(env_name, str) and ENV_NAME.fullmatch(env_name) is not None
        _require(ok, f"{where}.api_key_env",
                 "must be the NAME of an environment variable (the value given is not shown)")
        return _secret_from_env(env_name, f"{where}.api_key_env", environ)
    if file_name:
        _require(isinstance(file_name, str), f"{where}.api_key_file", "must be a string")
        try:
            text = Path(file_name).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}.api_key_file: cannot read {file_name}: {exc.strerror}") from None
        _require(bool(text), f"{where}.api_key_file", f"{file_name} is empty")
        return Secret(text)
    return None


def _secret_from_env(name: str, key: str, environ: Mapping[str, str] | None = None) -> Secret:
    value = (os.environ if environ is None else environ).get(name, "")
    _require(bool(value), key, f"environment variable {name} is not set or empty")
    return Secret(value)
