"""Settings: one typed, frozen object loaded once at the edge (the CLI).

Sources: a TOML file (``batchscope.toml`` in the working directory, or ``--config PATH``, or
``BATCHSCOPE_CONFIG``) and ``BATCHSCOPE_<SECTION>_<KEY>`` environment overrides, e.g.
``BATCHSCOPE_KAFKA_BOOTSTRAP=host:9092``. Every numeric setting has bounds (:func:`bounded`) and
must be finite; URLs carry no credentials.

Secrets are read only for the commands that use them (:class:`Secrets`, chosen per command by
the CLI): a source's key (the environment variable or file it names) by the commands that poll,
the ClickHouse password by the commands that open ClickHouse, the alert destinations' URLs and
signing keys by the alerts service. They are held as :class:`Secret`,
which never prints its value.
"""

from __future__ import annotations

import enum
import importlib.util
import ipaddress
import os
import re
import stat
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from pipeline.alerts.rules import Rule, Secretref, parse_rules
from pipeline.core.errors import ConfigError
from pipeline.core.secret import Secret
from pipeline.core.transitions import Rules
from pipeline.core.validate import (
    CONTROL,
    ENV_NAME,
    bounded,
    check_base_url,
    check_bounds,
    check_dsn,
    finite,
    require,
    secret_refs,
)
from pipeline.core.webhooks import BATCH_EVENTS, secret_keys
from pipeline.polling.sigv4 import credentials
from pipeline.providers import DEFAULT_BASE_URLS, NO_DEFAULT_HINT, PROVIDERS

ENV_PREFIX = "BATCHSCOPE_"
DEFAULT_CONFIG = "batchscope.toml"
# The simulator's default provider mix, assigned round-robin to its sources.
SIM_PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "mistral", "together", "vertex",
                 "azure_openai", "orq", "groq")
STORES = ("memory", "rocksdb")
# A key is sent in an HTTP header: printable ASCII, no whitespace. A key file over this is refused.
KEY_TEXT = re.compile(r"[\x21-\x7e]+")
MAX_KEY_BYTES = 64 * 1024
INT64 = 2**63 - 1
WEBHOOK_PATH = re.compile(r"/[A-Za-z0-9._/-]{1,200}")
WEBHOOK_PROVIDERS = tuple(BATCH_EVENTS)  # the providers whose batch webhooks the receiver reads
MAX_WEBHOOK_SECRETS = 2
DAY = 86_400.0


class Secrets(enum.Flag):
    """The secrets :func:`load_settings` reads. Each command asks for the ones it uses
    (``batchscope.cli.SECRETS``), so a command that uses none starts without any."""

    NONE = 0
    SOURCE_KEYS = enum.auto()  # each source's api_key_env / api_key_file: the commands that poll
    CLICKHOUSE_PASSWORD = enum.auto()  # clickhouse.password_env: the commands that open ClickHouse
    ALERT_SECRETS = enum.auto()  # each [[alerts]] rule's url and signing key: the alerts service
    WEBHOOK_SECRETS = enum.auto()  # each source's webhook_secret_env / _file: the webhook receiver


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """The broker, the topics and the worker's Kafka clients.

    Topic settings apply when ``batchscope topics`` (or ``run``, ``poll``, ``worker``) creates a
    topic; an existing topic is never altered. Retention is in hours (at most 100 years); ``-1``
    keeps records forever."""

    bootstrap: str = "127.0.0.1:9092"  # the brokers, ``host:port[,host:port...]``
    # topics are ``<prefix>.raw``, ``.snapshots``, ``.changes``, ``.changesets``, ``.dlq``, ``.hints``
    topic_prefix: str = "batchscope"
    partitions: int = bounded(4, 1, 10_000)  # of every topic; at most this many workers do work
    app_id: str = "batchscope"  # Faust consumer group and changelog prefix
    # replicas of each topic batchscope creates (3 on a cluster; Kafka's limit is an int16)
    replication_factor: int = bounded(1, 1, 32_767)
    # topic ``min.insync.replicas`` (2 with ``replication_factor = 3``); producers use ``acks=all``
    min_insync_replicas: int = bounded(1, 1, 32_767)
    # raw, snapshots and changesets: 7 days, enough to replay into ClickHouse
    retention_hours: int = bounded(168, 1, 876_000, also=-1)
    changes_retention_hours: int = bounded(720, 1, 876_000, also=-1)  # the downstream contract: 30 days
    dlq_retention_hours: int = bounded(720, 1, 876_000, also=-1)  # dead letters: 30 days
    # The longest the worker's consumer waits for a fetch to fill (Faust hard-codes 1500 ms; with
    # one fetch per broker at a time, a fetch of idle partitions held back the busy ones that long).
    fetch_wait_ms: int = bounded(10, 1, 5_000)
    # How long the worker holds a batch of dead letters open for more, at most: it goes sooner with
    # the next batch of another topic. The agents' other batches never wait (docs/faust.md).
    linger_ms: float = bounded(20.0, 0, 1_000)

    def __post_init__(self) -> None:
        check_bounds(self, "kafka")
        require(self.min_insync_replicas <= self.replication_factor, "kafka.min_insync_replicas",
                 "must be between 1 and kafka.replication_factor")
        require(bool(self.topic_prefix.strip()), "kafka.topic_prefix", "must not be empty")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


@dataclass(frozen=True, slots=True)
class ClickHouseConfig:
    """Where the tables live: embedded chDB (the default) or a ClickHouse server."""

    # empty: embedded chDB at ``<data_dir>/clickhouse``; or ``chdb:///path``, or
    # ``http://user@host:8123`` (no password in it: see ``password_env``)
    dsn: str = field(default="", repr=False)
    database: str = "batchscope"  # unqualified table names in queries resolve here
    # the NAME of the environment variable holding the server password (never in ``dsn``)
    password_env: str = ""
    # ``batch_snapshots`` rows older than this are dropped (whole parts), set when the table is
    # created (later: ``ALTER TABLE batch_snapshots MODIFY TTL``); at most 100 years
    snapshot_ttl_days: int = bounded(400, 1, 36_500)

    def __post_init__(self) -> None:
        check_bounds(self, "clickhouse")
        ok = self.dsn == "" or self.dsn.startswith(("chdb:", "http://", "https://"))
        require(ok, "clickhouse.dsn", "must start with chdb://, http:// or https://")
        if self.dsn:
            check_dsn(self.dsn)
        require(self.database.isidentifier(), "clickhouse.database", "must be an identifier")
        require(not self.password_env or ENV_NAME.fullmatch(self.password_env) is not None,
                 "clickhouse.password_env", "must be the NAME of an environment variable (the value given "
                 "is not shown)")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """The synthetic fleet of ``batchscope simulate``, and of ``batchscope run`` when no
    ``[[sources]]`` is configured (``batchscope simulate --help`` takes the same knobs)."""

    batches: int = bounded(100, 1, 100_000)  # per simulated source
    seed: int = bounded(42, -INT64 - 1, INT64)  # any 64-bit integer
    speed: float = bounded(60.0, 0, 1_000_000, above=True)  # simulated seconds per real second
    host: str = "127.0.0.1"  # where the simulator listens
    port: int = bounded(8787, 0, 65_535)  # its HTTP port (0: any free port)
    sources: int = bounded(4, 1, 100)  # simulated sources ``sim-1`` ... ``sim-N``
    poll_interval: float = bounded(2.0, 0.01, DAY)  # the poll interval of the simulated sources
    fault_rate: float = bounded(0.0, 0, 1)  # share of API requests answered with an injected fault
    retry_after: float = bounded(1.0, 0, DAY)  # seconds a 429 asks the client to wait
    hang_seconds: float = bounded(3.0, 0, 3_600)  # how long a hung request stalls before its connection drops
    providers: tuple[str, ...] = SIM_PROVIDERS  # assigned to the sources round-robin
    latency: float = bounded(0.0, 0, 3_600)  # extra seconds before every API answer
    # share of batches that answer 404 (and leave the list) after they end
    vanish_share: float = bounded(0.0, 0, 1)
    # simulated seconds after its end that such a batch vanishes (at most 10 simulated years)
    vanish_after: float = bounded(3600.0, 0, 3650 * DAY)
    # share of those batches that vanish half-way through their life instead, while still active
    vanish_active: float = bounded(0.0, 0, 1)
    # batches (fleet-wide, chosen by the seed) served as objects the normaliser rejects
    malformed: int = bounded(0, 0, 10_000_000)
    # hostile payloads (simulator.hostile) served: objects inside list pages, whole bodies
    hostile: int = bounded(0, 0, 10_000_000)
    # simulated hours over which the batches are created, half before start (at most a year)
    creation_span: float = bounded(4.0, 0, 8_760, above=True)
    history: int = bounded(0, 0, 100_000)  # batches per source created 2-30 simulated days earlier
    # Signed webhooks (simulator/webhooks.py) for the terminal transitions of its OpenAI, Azure
    # OpenAI and Gemini sources, POSTed to ``<webhook_url>/<source>``; empty: none sent
    webhook_url: str = ""
    # the NAME of the environment variable holding the ``whsec_`` secret the webhooks are signed with
    webhook_secret_env: str = ""
    webhook_duplicate: float = bounded(0.0, 0, 1)  # share of webhooks sent twice
    webhook_delayed: float = bounded(0.0, 0, 1)  # share held back, so that they arrive out of order
    webhook_delay: float = bounded(2.0, 0, 3_600)  # the longest hold of a delayed webhook, real seconds
    # share of webhooks preceded by a forged copy (bad signature, or a replay with a stale
    # timestamp), which the receiver must refuse
    webhook_forged: float = bounded(0.0, 0, 1)
    webhook_lost: float = bounded(0.0, 0, 1)  # share never sent (polling must find those batches)

    def __post_init__(self) -> None:
        check_bounds(self, "simulator")
        if self.webhook_url:
            check_base_url("simulator.webhook_url", self.webhook_url)
        require(not self.webhook_secret_env or ENV_NAME.fullmatch(self.webhook_secret_env) is not None,
                "simulator.webhook_secret_env", "must be the NAME of an environment variable")
        require(bool(self.providers), "simulator.providers", "must name at least one provider")
        for name in self.providers:
            require(name in PROVIDERS, "simulator.providers",
                     f"{name!r} is not one of {', '.join(PROVIDERS)}")


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The processes themselves: data directory, endpoints, sink batching, logging."""

    data_dir: str = ".batchscope"  # embedded chDB, the query endpoint's token and pid file
    # the query endpoint of a running pipeline (``batchscope query`` while ``run`` holds chDB):
    # a loopback address only
    http_host: str = "127.0.0.1"
    http_port: int = bounded(8790, 0, 65_535)  # its port (0: any free port)
    metrics_host: str = "127.0.0.1"  # where ``/metrics`` and ``/health`` are served
    # Prometheus ``/metrics`` and ``/health`` of the poller and of each worker; 0 picks a free
    # port; if the port is taken, ``run`` goes on without metrics (logged)
    metrics_port: int = bounded(9108, 0, 65_535)
    # most records the sink takes per batch; its insert blocks are cut at offsets aligned to it
    sink_batch_size: int = bounded(1000, 1, 1_000_000)
    # longest the sink waits for a batch to fill before it writes what it has: a change's delay
    # into ClickHouse when traffic is light; 0.25 s is at most 4 inserts a second per table and
    # worker (bench/RESULTS.md, "Worker": 1 s was a second of each drain's tail)
    sink_flush_seconds: float = bounded(0.25, 0, 3_600, above=True)
    log_level: str = "info"  # debug, info, warning or error
    # The query endpoint's limits (pipeline/clickhouse/queryserver.py), on every query it runs:
    query_timeout: float = bounded(30.0, 0, 3_600, above=True)  # seconds a query may run
    query_max_rows: int = bounded(100_000, 1, 100_000_000)  # rows a query may return
    query_max_memory_mib: int = bounded(1024, 1, 1_048_576)  # MiB one query may use (up to 1 TiB)
    # the poller's ``/health`` fails once a source has completed no poll cycle for this many of
    # its poll intervals
    stale_intervals: int = bounded(10, 1, 10_000)

    def __post_init__(self) -> None:
        check_bounds(self, "pipeline")
        require(_loopback(self.http_host), "pipeline.http_host",
                f"must be a loopback address such as 127.0.0.1 or ::1, not {self.http_host!r}: the query "
                "endpoint is for this machine only")
        levels = ("debug", "info", "warning", "error")
        require(self.log_level in levels, "pipeline.log_level", f"must be one of {levels}")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """The webhook receiver (``batchscope webhooks``, and ``batchscope run`` when a source has a
    webhook secret): where it listens and what it accepts. Expose it only behind a TLS reverse
    proxy, and only its paths (docs/webhooks.md)."""

    # where it listens; the compose service sets 0.0.0.0 inside its container
    host: str = "127.0.0.1"
    port: int = bounded(8791, 0, 65_535)  # its port (0: any free port)
    # seconds a ``webhook-timestamp`` may be off the receiver's clock, either way
    tolerance: float = bounded(300.0, 1, DAY)
    max_body_kib: int = bounded(64, 1, 16_384)  # a request body over this is refused (413)
    # webhook-ids remembered per source, so that a redelivery is answered 2xx and not published
    # again; the oldest is forgotten first
    recent_ids: int = bounded(100_000, 1, 10_000_000)

    def __post_init__(self) -> None:
        check_bounds(self, "webhooks")


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """The track agent: its table store and the thresholds of the derived change kinds."""

    store: str = "memory"  # ``memory`` or ``rocksdb`` (needs the ``batchscope[rocksdb]`` extra)
    stall_seconds: float = bounded(3600.0, 0, 365 * DAY)  # 0 disables ``stalled``
    # seconds of observation time between ``progress`` events of a batch
    progress_min_interval: float = bounded(60.0, 0, DAY)
    # requests done that also trigger a ``progress`` event; 0: only the interval throttles it
    progress_min_step: int = bounded(0, 0, INT64)
    expiry_risk: bool = True  # emit ``expiry_risk`` events

    def __post_init__(self) -> None:
        require(self.store in STORES, "track.store", f"must be one of {', '.join(STORES)}")
        require(self.store != "rocksdb" or importlib.util.find_spec("rocksdict") is not None,
                 "track.store", "rocksdb needs the rocksdict package: pip install 'batchscope[rocksdb]'")
        check_bounds(self, "track")

    def rules(self) -> Rules:
        return Rules(self.stall_seconds, self.progress_min_interval, self.progress_min_step,
                     self.expiry_risk)


@dataclass(frozen=True, slots=True)
class SpendConfig:
    """Spend: the operator's price file and where a batch's team comes from (docs/spend.md)."""

    # path of your own price file (CSV, the shipped file's columns): its rows add to the shipped
    # ones and win over them, e.g. negotiated rates; empty: the shipped prices only
    prices_file: str = ""
    # the batch metadata key naming its team, else the source's ``tags`` key of the same name;
    # a batch with neither is attributed to ``unattributed``
    team_key: str = "team"

    def __post_init__(self) -> None:
        require(0 < len(self.team_key) <= 64 and CONTROL.search(self.team_key) is None, "spend.team_key",
                "must be 1 to 64 characters without control characters (a metadata key)")
        require(CONTROL.search(self.prices_file) is None, "spend.prices_file",
                "must be a path without control characters")


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """The alerts service (``batchscope alerts``; the rules are the ``[[alerts]]`` tables)."""

    # a new consumer group starts at the changes topic's start (true) or at its end (false: no
    # alert for history)
    from_start: bool = False
    max_attempts: int = bounded(6, 1, 50)  # deliveries tried per alert before it is dead-lettered

    def __post_init__(self) -> None:
        check_bounds(self, "alerting")


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One provider account. ``api_key_env`` / ``api_key_file`` name where its key is; the key
    itself (``api_key``) is read only when the settings are loaded with ``Secrets.SOURCE_KEYS``.
    Bounds are checked by the loader (``sources[N].key``), not here, so tests can go faster."""

    name: str  # unique, without ``/``; part of every Kafka key (``source/batch_id``)
    provider: str  # one of the provider names (docs/providers.md)
    base_url: str  # the API root; defaults per provider (below), required where there is none
    api_key: Secret | None = None
    # seconds from one poll cycle's start to the next's (fixed rate): discovery of new batches, and
    # refresh of active batches near their expected end
    poll_interval: float = bounded(30.0, 0.01, DAY)
    page_limit: int = bounded(100, 1, 100)  # batches asked for per list page
    tags: Mapping[str, str] = field(default_factory=dict)  # free-form labels, e.g. ``{ team = "ml" }``
    # token-bucket rate limit in requests per second: at least one per 100 s (below that one
    # listing takes hours)
    max_rps: float = bounded(5.0, 0.01, 10_000)
    breaker_threshold: int = bounded(5, 1, 1_000)  # consecutive failures that open the circuit breaker
    # seconds before an open breaker lets one trial request through
    breaker_reset: float = bounded(30.0, 0, 3_600, above=True)
    request_timeout: float = bounded(30.0, 0, 600, above=True)  # seconds per request (connect and read)
    # longest wait between refreshes of an active batch, at least ``poll_interval``; unset:
    # ``ACTIVE_FACTOR`` (10) x ``poll_interval``
    active_interval: float | None = bounded(None, 0.01, DAY)
    # seconds between discoveries that list on to the list's end, so that terminal batches the
    # provider stopped returning are found (``purged`` events); 0: only the first listing does
    sweep_interval: float = bounded(3600.0, 0, 30 * DAY)
    max_body_mib: int = bounded(32, 1, 1024)  # a response body over this (decompressed) is refused
    # read each ended batch's results file once and publish its summed token usage
    # (``usage_source = results``; [spend](spend.md#the-results-reader)): Anthropic and Gemini; one more
    # GET per batch, under this source's rate limit
    read_results: bool = False
    # a results file over this many MiB (decompressed) gives no usage, never a partial sum
    results_max_mib: int = bounded(1024, 1, 16_384)
    results_max_lines: int = bounded(10_000_000, 1, 100_000_000)  # and one over this many lines
    api_key_env: str = ""  # the NAME of the environment variable holding the key
    api_key_file: str = ""  # or the path of the file holding it (e.g. a secret under ``/run/secrets/``)
    # the NAME of the environment variable holding the source's webhook signing secret(s):
    # ``whsec_...``, two separated by a space while a rotation is under way; set (or
    # ``webhook_secret_file``) to receive the provider's webhooks
    webhook_secret_env: str = ""
    webhook_secret_file: str = ""  # or the path of the file holding it
    # the path the receiver takes this source's webhooks on; empty: ``/webhooks/<name>``
    webhook_path: str = ""
    webhook_secret: Secret | None = None

    @property
    def webhooks(self) -> bool:
        """The source's provider pushes its webhooks to the receiver."""
        return bool(self.webhook_secret_env or self.webhook_secret_file)

    @property
    def hook_path(self) -> str:
        return self.webhook_path or f"/webhooks/{self.name}"

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
    spend: SpendConfig = field(default_factory=SpendConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    sources: tuple[SourceConfig, ...] = ()
    alerts: tuple[Rule, ...] = ()
    clickhouse_secret: Secret | None = field(default=None, repr=False)
    # rule name -> (its destination URL, its signing key), read with ``Secrets.ALERT_SECRETS``
    alert_secrets: Mapping[str, tuple[Secret, Secret | None]] = field(default_factory=dict, repr=False)

    @property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse.dsn:
            return self.clickhouse.dsn
        return f"chdb://{self.pipeline.data_path / 'clickhouse'}"

    def clickhouse_password(self) -> Secret | None:
        """The server password, read by :func:`load_settings` with ``Secrets.CLICKHOUSE_PASSWORD``
        (the commands that open ClickHouse); asking for it otherwise is an error, not a silent
        connection without it."""
        if self.clickhouse.password_env and self.clickhouse_secret is None:
            raise ConfigError("clickhouse.password_env: the password is read only by the commands that "
                              "open ClickHouse; this one was started without it")
        return self.clickhouse_secret


SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "clickhouse": ClickHouseConfig,
    "simulator": SimulatorConfig,
    "pipeline": PipelineConfig,
    "track": TrackConfig,
    "spend": SpendConfig,
    "alerting": AlertingConfig,
    "webhooks": WebhooksConfig,
}
# By default an active batch far from its expected end is refreshed every 10 poll intervals (5 min
# at the default 30 s): far from its end only an unforeseen cancel or failure changes it, and 5 min
# bounds how late that is seen; near its end (and in validating/finalizing/cancelling) the poll
# interval applies. The refresh of far batches then costs at most a tenth of listing everything
# each cycle (bench/poller_bench.py measures the whole schedule against that).
ACTIVE_FACTOR = 10.0
SOURCE_TABLE_KEYS = {"name", "provider", "base_url", "api_key_env", "api_key_file", "poll_interval",
                     "active_interval", "sweep_interval", "page_limit", "tags", "max_rps",
                     "breaker_threshold", "breaker_reset", "request_timeout", "max_body_mib",
                     "webhook_secret_env", "webhook_secret_file", "webhook_path", "read_results",
                     "results_max_mib", "results_max_lines"}

RESULTS_PROVIDERS = ("anthropic", "gemini")  # whose results files the results reader sums (docs/spend.md)

FLOW_KEYS: tuple[tuple[str, type[Any], Any], ...] = (
    ("max_rps", float, 5.0), ("breaker_threshold", int, 5),
    ("breaker_reset", float, 30.0), ("request_timeout", float, 30.0),
)

T = TypeVar("T")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None, *,
                  secrets: Secrets = Secrets.NONE) -> Settings:
    """Read the TOML file (if any) and the ``BATCHSCOPE_*`` overrides into :class:`Settings`;
    read the secrets ``secrets`` names, and no other."""
    environ = os.environ if env is None else env
    raw = _read_toml(path, environ)
    unknown = set(raw) - set(SECTIONS) - {"sources", "alerts"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{key}: unknown section (known: {', '.join([*SECTIONS, 'sources', 'alerts'])})")
    _check_env_names(environ)
    parts = {name: _section(name, cls, raw.get(name, {}), environ) for name, cls in SECTIONS.items()}
    sources = raw.get("sources", [])
    if not isinstance(sources, list):
        raise ConfigError("sources: must be an array of tables ([[sources]])")
    loaded = tuple(_source(i, s) for i, s in enumerate(sources))
    names = [s.name for s in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    require(not dupes, "sources", f"duplicate source name {dupes[0]!r}" if dupes else "")
    paths = [s.hook_path for s in loaded if s.webhooks]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    require(not twice, "sources", f"two sources take webhooks on {twice[0]!r}" if twice else "")
    if Secrets.SOURCE_KEYS in secrets:
        loaded = tuple(_with_key(i, s, environ) for i, s in enumerate(loaded))
    if Secrets.WEBHOOK_SECRETS in secrets:
        loaded = tuple(_with_webhook_secret(i, s, environ) for i, s in enumerate(loaded))
    pw_env = parts["clickhouse"].password_env
    password = None
    if pw_env and Secrets.CLICKHOUSE_PASSWORD in secrets:
        password = _secret_from_env(pw_env, "clickhouse.password_env", environ)
        require(CONTROL.search(password.reveal()) is None, "clickhouse.password_env",
                 f"the value of {pw_env} holds control characters (it is not shown)")
    rules = parse_rules(raw.get("alerts"))
    alert_secrets = ({r.name: _alert_secrets(i, r, environ) for i, r in enumerate(rules)}
                     if Secrets.ALERT_SECRETS in secrets else {})
    return Settings(sources=loaded, clickhouse_secret=password, alerts=rules, alert_secrets=alert_secrets,
                    **parts)


def _alert_secrets(index: int, rule: Rule, environ: Mapping[str, str]) -> tuple[Secret, Secret | None]:
    """A rule's destination URL (a secret: a Slack webhook URL is a credential) and signing key, read."""
    url = _alert_secret(index, "url", rule.url, environ)
    text = url.reveal()
    require(text.startswith(("https://", "http://")) and CONTROL.search(text) is None and " " not in text,
            f"alerts[{index}].url", "must be an http(s) URL without spaces (the value is not shown)")
    key = _alert_secret(index, "signing_key", rule.signing_key, environ) if rule.signing_key else None
    return url, key


def _alert_secret(index: int, kind: str, ref: Secretref, environ: Mapping[str, str]) -> Secret:
    found = _read_ref(f"alerts[{index}]", kind, ref.env, ref.file, environ)
    assert found is not None, "parse_rules requires the URL and a webhook's key"
    return found[1]


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A mistyped ``BATCHSCOPE_<SECTION>_<KEY>`` is an error, not a silently ignored setting."""
    for name in environ:
        for section, cls in SECTIONS.items():
            prefix = f"{ENV_PREFIX}{section.upper()}_"
            if name.startswith(prefix):
                known = {f.name.upper() for f in fields(cls)}
                require(name[len(prefix):] in known, name,
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
        require(key in known, f"{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    values = {k: _coerce(f"{name}.{k}", hints[k], v) for k, v in table.items()}
    for key in known:
        env_name = f"{ENV_PREFIX}{name}_{key}".upper()
        if env_name in environ:
            values[key] = _coerce_text(env_name, hints[key], environ[env_name])
    return cls(**values)


def _coerce(key: str, hint: Any, value: object) -> object:
    """Check a TOML value against a field's type; ints are accepted where floats are, and a float
    must be finite (TOML allows ``inf`` and ``nan``)."""
    if get_origin(hint) is tuple:  # tuple[str, ...]: a TOML array of strings
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: expected an array of strings, got {value!r}")
    base = _base_type(hint)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return finite(key, value)
    raise ConfigError(f"{key}: expected {base.__name__}, got {type(value).__name__} {value!r}")


def _coerce_text(key: str, hint: Any, text: str) -> object:
    """Parse an environment value strictly: ``bool`` takes true/false/1/0/yes/no only; a list
    (``tuple[str, ...]``) is comma-separated; a float must be finite."""
    if get_origin(hint) is tuple:
        return tuple(v.strip() for v in text.split(",") if v.strip())
    base = _base_type(hint)
    try:
        if base is bool:
            lowered = text.strip().lower()
            require(lowered in {"true", "false", "1", "0", "yes", "no"}, key,
                     f"expected true or false, got {text!r}")
            return lowered in {"true", "1", "yes"}
        return finite(key, base(text.strip())) if base in (int, float) else text
    except ValueError:
        raise ConfigError(f"{key}: expected {base.__name__}, got {text!r}") from None


def _base_type(hint: Any) -> type[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    return hint if isinstance(hint, type) else str


def _source(index: int, table: object) -> SourceConfig:
    """One ``[[sources]]`` table, checked; its key is not read here (:func:`_with_key`)."""
    where = f"sources[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    for key in table:
        known = ", ".join(sorted(SOURCE_TABLE_KEYS))
        require(key in SOURCE_TABLE_KEYS, f"{where}.{key}", f"unknown key (known: {known})")
    name = _get(table, where, "name", str, "")
    provider = _get(table, where, "provider", str, "")
    require(bool(name) and "/" not in name, f"{where}.name", "required, without '/'")
    require(provider in PROVIDERS, f"{where}.provider", f"must be one of {', '.join(PROVIDERS)}")
    default_url = DEFAULT_BASE_URLS.get(provider)
    require(default_url is not None or "base_url" in table, f"{where}.base_url",
             f"required for provider {provider!r} (it has no public default: "
             f"{NO_DEFAULT_HINT.get(provider, 'the account API root')})")
    base_url = _get(table, where, "base_url", str, default_url or "")
    check_base_url(f"{where}.base_url", base_url)
    interval = _get(table, where, "poll_interval", float, 30.0)
    active = _get(table, where, "active_interval", float, ACTIVE_FACTOR * interval)
    limit = _get(table, where, "page_limit", int, 100)
    sweep = _get(table, where, "sweep_interval", float, 3600.0)
    tags = table.get("tags", {})
    ok_tags = isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
    require(ok_tags, f"{where}.tags", "must be a table of strings")
    flow = {key: _get(table, where, key, kind, default) for key, kind, default in FLOW_KEYS}
    max_body = _get(table, where, "max_body_mib", int, 32)
    reader = _results_reader(table, where, provider)
    key_env, key_file = secret_refs(where, table, "api_key")
    hook_env, hook_file = secret_refs(where, table, "webhook_secret")
    hook_path = _get(table, where, "webhook_path", str, "")
    require(hook_path == "" or WEBHOOK_PATH.fullmatch(hook_path) is not None, f"{where}.webhook_path",
            "must be a path such as /webhooks/openai-prod (letters, digits, - _ . /)")
    require(provider in WEBHOOK_PROVIDERS or not (hook_env or hook_file), f"{where}.webhook_secret_env",
            f"provider {provider!r} sends no webhooks batchscope takes (those that do: "
            f"{', '.join(WEBHOOK_PROVIDERS)})")
    chosen = active if "active_interval" in table else None
    source = SourceConfig(name=name, provider=provider, base_url=base_url.rstrip("/"), poll_interval=interval,
                          active_interval=chosen, sweep_interval=sweep, page_limit=limit, tags=dict(tags),
                          max_body_mib=max_body, api_key_env=key_env, api_key_file=key_file,
                          webhook_secret_env=hook_env, webhook_secret_file=hook_file, webhook_path=hook_path,
                          **flow, **reader)
    check_bounds(source, where)
    require(active >= interval, f"{where}.active_interval",
            f"must be at least poll_interval ({interval:g} s)")
    return source


def _get(table: dict[str, Any], where: str, key: str, kind: type[T], default: T) -> T:
    value = _coerce(f"{where}.{key}", kind, table.get(key, default))
    assert isinstance(value, kind)
    return value


def _results_reader(table: dict[str, Any], where: str, provider: str) -> dict[str, Any]:
    """The results reader's settings of one source: on only for a provider it can read."""
    on = _get(table, where, "read_results", bool, False)
    require(not on or provider in RESULTS_PROVIDERS, f"{where}.read_results",
            f"the results reader reads {', '.join(RESULTS_PROVIDERS)} results only, not {provider!r}")
    return {"read_results": on, "results_max_mib": _get(table, where, "results_max_mib", int, 1024),
            "results_max_lines": _get(table, where, "results_max_lines", int, 10_000_000)}


def _read_ref(where: str, kind: str, env_name: str, file_name: str,
              environ: Mapping[str, str]) -> tuple[str, Secret] | None:
    """The secret of ``kind`` (a source's ``api_key`` or ``webhook_secret``, an alert's ``url`` or
    ``signing_key``) from the variable or the file it names, with the setting's name for errors;
    None when it names neither."""
    if env_name:
        key = f"{where}.{kind}_env"
        return key, _secret_from_env(env_name, key, environ)
    if file_name:
        key = f"{where}.{kind}_file"
        return key, _secret_from_file(file_name, key)
    return None


def _with_key(index: int, source: SourceConfig, environ: Mapping[str, str]) -> SourceConfig:
    """The source with its key read (the commands that poll); Bedrock's format checked."""
    found = _read_ref(f"sources[{index}]", "api_key", source.api_key_env, source.api_key_file, environ)
    if found is None:
        return source
    key, api_key = found
    require(KEY_TEXT.fullmatch(api_key.reveal()) is not None, key,
             "the key must be printable ASCII without spaces (it is not shown)")
    if source.provider == "bedrock":
        credentials(api_key, key)
    return replace(source, api_key=api_key)


def _with_webhook_secret(index: int, source: SourceConfig, environ: Mapping[str, str]) -> SourceConfig:
    """The source with its webhook secret(s) read and checked (``whsec_`` + base64 each)."""
    found = _read_ref(f"sources[{index}]", "webhook_secret", source.webhook_secret_env,
                      source.webhook_secret_file, environ)
    if found is None:
        return source
    key, secret = found
    try:
        keys = secret_keys(secret)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    require(0 < len(keys) <= MAX_WEBHOOK_SECRETS, key,
            f"holds {len(keys)} secrets: one, or two while a rotation is under way")
    return replace(source, webhook_secret=secret)


def _secret_from_file(name: str, key: str) -> Secret:
    """A key file's text, stripped: a regular UTF-8 file of at most 64 KiB."""
    path = Path(name).expanduser()
    try:
        require(stat.S_ISREG(path.stat().st_mode), key, f"{name} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {name}: {exc.strerror}") from None
    require(len(data) <= MAX_KEY_BYTES, key, f"{name} is larger than {MAX_KEY_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {name} is not UTF-8 text (its content is not shown)") from None
    require(bool(text), key, f"{name} is empty")
    return Secret(text)


def _secret_from_env(name: str, key: str, environ: Mapping[str, str]) -> Secret:
    value = environ.get(name, "")
    require(bool(value), key, f"environment variable {name} is not set or empty")
    return Secret(value.strip())
