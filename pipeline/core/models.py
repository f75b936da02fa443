"""The data contracts: raw envelope, canonical snapshot and change event.

Described in docs/records.md (records and the canonical snapshot) and docs/change-events.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any

import orjson

from pipeline.core.codec import orjson_dumps
from pipeline.core.errors import InvalidRecord

Loads = Callable[[bytes], Any]
Dumps = Callable[[Any], bytes]
STATUSES = (
    "validating", "in_progress", "finalizing", "cancelling",
    "completed", "failed", "expired", "cancelled",
)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CHANGE_KINDS = ("discovered", "status_changed", "progress", "stalled", "expiry_risk", "purged", "vanished")
SCHEMA_VERSION = 2  # of change events: schemas/change_event.v2.json (version 2 added ``vanished``)
UNKNOWN = "unknown"
# A batch id longer than this (UTF-8 bytes) is an invalid record: the Kafka key carries it
# (``source/batch_id``), and a key of hundreds of KiB plus the value passes Kafka's 1 MB limit.
MAX_BATCH_ID = 1024
# The provider timestamp field that records entry into each status.
STATUS_TIME_FIELD = {
    "validating": "created_at",
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "cancelling": "cancelling_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelled": "cancelled_at",
}


@dataclass
class Envelope:
    """What the poller publishes to ``<prefix>.raw``: one provider object as observed.

    Treat it as immutable; like :class:`Snapshot` it is a plain dataclass for speed (the
    normalise agent builds one per record)."""

    source: str
    provider: str
    observed_at: str
    payload: dict[str, Any]
    # Set by whoever read the object (the poller: its provider adapter's ``batch_id``, e.g. Gemini
    # ``name``, Bedrock ``jobArn``); not part of the record, which carries the object itself.
    batch_id: str | None = field(default=None, compare=False)
    # Not an object but the poller's word that the provider no longer returns batch ``batch_id``
    # (``payload`` is empty): published as a raw record of version 3 (docs/records.md).
    vanished: bool = False
    # The results reader's sums beside the batch object as last seen (``usage.results_dict``):
    # published as a raw record of version 1 with a ``results`` key (docs/records.md).
    results: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def vanish(cls, source: str, provider: str, observed_at: str, batch_id: str) -> Envelope:
        """The observation that batch ``batch_id`` is gone (a 404, or absent from a listing)."""
        return cls(source, provider, observed_at, {}, batch_id, vanished=True)

    @property
    def key(self) -> str:
        """``source/batch_id``, as in the snapshot's key: the record key and partition."""
        return f"{self.source}/{self.batch_id or ''}"

    def to_json(self, dumps: Dumps = orjson_dumps) -> bytes:
        """The envelope as a record of its own: version 1, or version 3 for a vanish."""
        if self.vanished:
            return dumps({"v": 3, "source": self.source, "provider": self.provider,
                          "observed_at": self.observed_at, "vanished": [self.batch_id]})
        record = {"source": self.source, "provider": self.provider, "observed_at": self.observed_at,
                  "payload": self.payload}
        if self.results is not None:
            record["results"] = self.results
        return dumps(record)

    @classmethod
    def from_json(cls, data: bytes, loads: Loads = orjson.loads) -> Envelope:
        obj = loads_object(data, "raw envelope", loads)
        get = obj.get
        source, provider = get("source"), get("provider")
        observed_at, payload = get("observed_at"), get("payload")
        if not (isinstance(source, str) and source and isinstance(provider, str) and provider
                and isinstance(observed_at, str) and observed_at and isinstance(payload, dict)):
            for name in ("source", "provider", "observed_at"):
                if not isinstance(obj.get(name), str) or not obj[name]:
                    raise InvalidRecord(f"raw envelope: {name!r} missing or not a string")
            raise InvalidRecord("raw envelope: 'payload' missing or not an object")
        results = get("results")
        return cls(source, provider, observed_at, payload,
                   results=results if isinstance(results, dict) else None)


@dataclass
class Snapshot:
    """The canonical record of one batch as observed once. Field names are a public contract.

    Treat it as immutable (use ``dataclasses.replace``). It is deliberately neither frozen nor
    slotted: this is the normaliser's hot path, and a frozen dataclass's ``__init__`` costs one
    ``object.__setattr__`` call per field (about 3 µs for the 29 fields against 0.4 µs), while
    orjson serialises a plain dataclass from its ``__dict__`` (about 0.7 µs against 2 µs for
    slots). It was never hashable in practice (``errors`` is a list, ``metadata`` a dict).
    """

    source: str
    provider: str
    batch_id: str
    status: str
    provider_status: str
    observed_at: str
    endpoint: str | None = None
    model: str | None = None
    completion_window: str | None = None
    created_at: str | None = None
    in_progress_at: str | None = None
    finalizing_at: str | None = None
    completed_at: str | None = None
    failed_at: str | None = None
    expired_at: str | None = None
    cancelling_at: str | None = None
    cancelled_at: str | None = None
    expires_at: str | None = None
    requests_total: int | None = None
    requests_completed: int | None = None
    requests_failed: int | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    # Additive (not in the design contract): provider counts beyond total/completed/failed
    # (Anthropic processing/canceled/expired, Gemini pending, ...) and provider fields with no
    # canonical home (``object``, Together's ``progress``, Anthropic's ``results_url``, ...).
    requests_extra: dict[str, int] = field(default_factory=dict)
    provider_extra: dict[str, Any] = field(default_factory=dict)
    # Additive (issue 16, docs/spend.md): typed token usage, from ``pipeline.core.usage``, and
    # where it came from: ``object`` (the batch object), ``results`` (the results file) or ``none``.
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str = "none"

    @property
    def key(self) -> str:
        return f"{self.source}/{self.batch_id}"

    def to_dict(self) -> dict[str, Any]:
        """A shallow field dict (``dataclasses.asdict`` deep-copies and is 10x slower)."""
        return {name: getattr(self, name) for name in SNAPSHOT_FIELDS}

    def to_json(self, dumps: Dumps = orjson_dumps) -> bytes:
        return dumps(self)

    @classmethod
    def from_json(cls, data: bytes, loads: Loads = orjson.loads) -> Snapshot:
        return cls.from_dict(loads_object(data, "snapshot", loads))

    @classmethod
    def from_dict(cls, obj: dict[str, Any], what: str = "snapshot") -> Snapshot:
        """The snapshot of a parsed JSON object; unknown or missing required fields are invalid.

        An object with exactly the contract's fields (what :meth:`to_json` writes) is passed by
        position: keyword arguments cost a string comparison per parameter tried, since parsed keys
        are not the interned names the function compares first (5 µs of the 6 for 29 fields).
        """
        if len(obj) == len(SNAPSHOT_FIELDS):
            try:
                return cls(*_snapshot_values(obj))
            except KeyError:
                pass  # as many keys, not the same ones: the keyword call below names the culprit
        try:
            return cls(**obj)
        except TypeError as exc:
            raise InvalidRecord(f"{what}: {exc}") from exc

    def status_time(self, status: str) -> str | None:
        name = STATUS_TIME_FIELD.get(status)
        value = getattr(self, name) if name else None
        return value if isinstance(value, str) else None


SNAPSHOT_FIELDS = tuple(f.name for f in fields(Snapshot))
_snapshot_values = itemgetter(*SNAPSHOT_FIELDS)


@dataclass
class ChangeEvent:
    """One entry of ``<prefix>.changes``: what changed for a batch, and the snapshot after it.

    Treat it as immutable. Like :class:`Snapshot` it is a plain dataclass for speed: the track
    agent builds and serialises one per change, and a frozen slotted class took 4x as long to
    build (one ``object.__setattr__`` per field) and orjson 3x as long to serialise.
    """

    event_id: str
    kind: str
    source: str
    provider: str
    batch_id: str
    observed_at: str
    at: str
    snapshot: Snapshot
    from_status: str | None = None
    to_status: str | None = None
    seconds_in_previous: float | None = None
    off_graph: bool | None = None  # status_changed: the edge is not in the lifecycle graph
    deltas: dict[str, int] | None = None  # progress: count changes since the last progress event
    stalled_seconds: float | None = None  # stalled: time without progress
    projected_finish_at: str | None = None  # expiry_risk: when the batch would finish
    requests_per_second: float | None = None  # expiry_risk: the observed request rate
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return f"{self.source}/{self.batch_id}"

    def to_json(self, dumps: Dumps = orjson_dumps) -> bytes:
        return dumps(self)

    @classmethod
    def from_json(cls, data: bytes) -> ChangeEvent:
        obj = loads_object(data, "change event")
        snapshot = obj.pop("snapshot", None)
        if not isinstance(snapshot, dict):
            raise InvalidRecord("change event: 'snapshot' missing or not an object")
        try:
            return cls(snapshot=Snapshot.from_dict(snapshot, "change event"), **obj)
        except TypeError as exc:
            raise InvalidRecord(f"change event: {exc}") from exc


def oversized_id(batch_id: str) -> bool:
    """Whether a batch id is over :data:`MAX_BATCH_ID` bytes (UTF-8 is at most 4 bytes a character)."""
    return len(batch_id) > MAX_BATCH_ID // 4 and len(batch_id.encode("utf-8", "surrogatepass")) > MAX_BATCH_ID


def loads_object(data: bytes, what: str, loads: Loads = orjson.loads) -> dict[str, Any]:
    """Parse JSON bytes that must hold an object; anything else is an :class:`InvalidRecord`."""
    try:
        obj = loads(data)
    except ValueError as exc:  # orjson's and the stdlib's decode errors are ValueErrors
        raise InvalidRecord(f"{what}: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidRecord(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj
