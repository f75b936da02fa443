"""Records of many: the raw and snapshot records that carry several observations each.

Faust costs about half a millisecond per event whatever the event holds, so the poller publishes
the objects of one list page as one raw record per partition, and the normalise agent packs the
snapshots of consecutive raw records of a partition into one snapshot record
(``agents/packing.py``). The contract (``docs/records.md``):

* **Raw, version 2**: ``{"v": 2, "source", "provider", "observed_at", "payloads": [object, ...]}``,
  keyed by its first observation's ``source/batch_id``, in the partition every one of its
  observations' keys falls in (Kafka's default partitioner: murmur2 of the key). A batch's
  observations therefore keep their partition and their order, as with one record each.
* **Raw, version 1**: one envelope ``{"source", "provider", "observed_at", "payload"}``: still
  valid input (tests and replay tools publish it), and what a lone observation is sent as. The
  results reader's observation is one too, with a ``results`` key: the usage summed from the
  batch's results file beside its object (``pipeline.core.usage.results_dict``); always alone.
* **Raw, version 3**: ``{"v": 3, "source", "provider", "observed_at", "vanished": [batch_id, ...]}``:
  the batches the poller found the provider no longer returns (same key and partition rules).
  Never inside ``payloads``: a provider object cannot pass for one.
* **Snapshots**: ``{"v": 2, "snapshots": [snapshot, ...]}``, or one snapshot object; same rules.
  A vanish travels as a marker entry ``{"vanished": true, "source", "provider", "batch_id",
  "observed_at"}`` (:func:`vanish_entry`) in a batch's place among its snapshots: the track
  agent turns it into ``purged`` or ``vanished``, the sink writes no snapshot row for it.

* **Change sets** (``<prefix>.changesets``, the sink's feed): ``{"v": 2, "changes": [event, ...]}``,
  or one change event object: the change events the snapshots of one snapshot record made, in
  order, keyed and partitioned as that record. ``<prefix>.changes`` keeps one event a record
  for its subscribers.

Readers never raise on one bad observation: it comes back as a :class:`Rejected` with its index
in the record, so its dead letter names it and the good ones go on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import orjson

from pipeline.core.codec import orjson_dumps
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Envelope, Snapshot, loads_object, oversized_id

VERSION = 2
VANISHED = 3  # the raw record version of vanishes
# A packed record is cut before it passes this many bytes, so it stays under the producer's and
# the broker's default limit of about 1 MB; one entry is at most MAX_ENTRY (bigger ones are
# dead-lettered or, at the poller, not published).
PACK_BYTES = 256 * 1024
MAX_ENTRY = 512 * 1024
Loads = Callable[[bytes], Any]
T = TypeVar("T", tuple[bytes, bytes], tuple[bytes, bytes, int])
_RAW_HEAD = (b'{"v":2,"source":', b',"provider":', b',"observed_at":', b',"payloads":[')
_SNAP_HEAD = b'{"v":2,"snapshots":['
_CHANGES_HEAD = b'{"v":2,"changes":['


@dataclass(frozen=True, slots=True)
class Rejected:
    """One observation (or a whole record) that cannot be read: why, where, and its bytes."""

    reason: str
    index: int  # its position in the record's list; 0 for a record of one
    original: bytes  # the observation's own JSON when it could be cut out, else the record
    key: bytes | None = None  # ``source/batch_id`` when known


@dataclass(frozen=True, slots=True)
class Packed:
    """One record to produce: its key, value, partition, and the observations it carries."""

    key: bytes
    value: bytes
    partition: int
    members: tuple[int, ...]  # the positions of its observations in the list packed

    @property
    def count(self) -> int:
        return len(self.members)


SEED = 0x9747B28C  # Kafka's murmur2 seed and constants (org.apache.kafka.common.utils.Utils.murmur2)
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


@lru_cache(maxsize=256)
def _words(count: int) -> Callable[[bytes], tuple[int, ...]]:
    return struct.Struct(f"<{count}I").unpack_from


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (unsigned), as aiokafka's ``murmur2`` computes it, in half its
    time: the 4-byte words unpacked at once, the masks folded (2.9 against 6.4 µs for a key of
    44 bytes). Pure Python on purpose: the compiled ``murmurhash2`` package releases the GIL on
    each call, and under the worker's other threads a call then cost about 70 µs."""
    length = len(data)
    h = SEED ^ length
    count = length >> 2
    for k in _words(count)(data):
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    extra = length & 3
    if extra:
        i = count << 2
        if extra == 3:
            h ^= data[i + 2] << 16
        if extra >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


@lru_cache(maxsize=65536)
def _hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and aiokafka's) gives ``key``: murmur2 of the
    key, its sign bit cleared, modulo the partition count; cached, as a batch is seen again
    every poll (``tests/unit/test_records.py`` checks it against aiokafka's partitioner and the
    Java client's own test vectors)."""
    return _hash(key) % partitions


def _chunks(items: list[T], budget: int) -> Iterator[list[T]]:
    """``(key, json, ...)`` items cut into runs of at most ``budget`` bytes of JSON (one at least)."""
    run: list[T] = []
    size = 0
    for item in items:
        if run and size + len(item[1]) > budget:
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item[1]) + 1
    if run:
        yield run


def by_partition(items: Iterable[T], partitions: int) -> dict[int, list[T]]:
    """``(key, ...)`` items by the partition of their key, each group in the items' order."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(partition_of(item[0], partitions), []).append(item)
    return groups


def pack_raw(envelopes: list[Envelope], partitions: int, budget: int = PACK_BYTES) -> list[Packed]:
    """The raw records of envelopes observed together (one list page of one source): one per
    partition (more when over ``budget`` bytes), in the envelopes' order; a lone one as version 1.
    Vanishes go in records of version 3, apart."""
    out: list[Packed] = []
    for (source, provider, observed_at, vanished), group in _same_head(envelopes).items():
        head = [orjson.dumps(x) for x in (source, provider, observed_at)]
        alone = [i for i in group if envelopes[i].results is not None]
        if alone:  # the results reader's observations: version 1 records with their ``results``
            out += [_pack_alone(envelopes[i], i, partitions) for i in alone]
            group = [i for i in group if envelopes[i].results is None]
        if vanished:
            out += _pack_vanished(envelopes, group, head, partitions, budget)
            continue
        many = b"".join((_RAW_HEAD[0], head[0], _RAW_HEAD[1], head[1], _RAW_HEAD[2], head[2], _RAW_HEAD[3]))
        one = b"".join((b'{"source":', head[0], b',"provider":', head[1], b',"observed_at":', head[2],
                        b',"payload":'))
        items = [(envelopes[i].key.encode(), orjson_dumps(envelopes[i].payload), i) for i in group]
        for partition, members in by_partition(items, partitions).items():
            for run in _chunks(members, budget):
                indices = tuple(i for *_, i in run)
                if len(run) == 1:  # version 1: exactly what a lone envelope always was
                    out.append(Packed(run[0][0], b"".join((one, run[0][1], b"}")), partition, indices))
                else:
                    value = b"".join((many, b",".join(v for _, v, _ in run), b"]}"))
                    out.append(Packed(run[0][0], value, partition, indices))
    return out


def _pack_alone(envelope: Envelope, index: int, partitions: int) -> Packed:
    """One envelope as its own record of version 1 (with its ``results``)."""
    key = envelope.key.encode()
    return Packed(key, envelope.to_json(), partition_of(key, partitions), (index,))


def _pack_vanished(envelopes: list[Envelope], group: list[int], head: list[bytes], partitions: int,
                   budget: int) -> list[Packed]:
    """The version 3 records of vanishes of one head: one per partition (more past ``budget``)."""
    start = b"".join((b'{"v":3,"source":', head[0], b',"provider":', head[1], b',"observed_at":', head[2],
                      b',"vanished":['))
    items = [(envelopes[i].key.encode(), orjson.dumps(envelopes[i].batch_id), i) for i in group]
    out = []
    for partition, members in by_partition(items, partitions).items():
        for run in _chunks(members, budget):
            value = b"".join((start, b",".join(v for _, v, _ in run), b"]}"))
            out.append(Packed(run[0][0], value, partition, tuple(i for *_, i in run)))
    return out


def _same_head(envelopes: list[Envelope]) -> dict[tuple[str, str, str, bool], list[int]]:
    """The positions of the envelopes, by (source, provider, observed_at, vanished)."""
    groups: dict[tuple[str, str, str, bool], list[int]] = {}
    for i, e in enumerate(envelopes):
        groups.setdefault((e.source, e.provider, e.observed_at, e.vanished), []).append(i)
    return groups


def pack_snapshots(run: list[T]) -> tuple[bytes, bytes]:
    """``(key, value)`` of the snapshot record of one run: version 2, or a lone snapshot as itself."""
    if len(run) == 1:
        return run[0][0], run[0][1]
    return run[0][0], b"".join((_SNAP_HEAD, b",".join(item[1] for item in run), b"]}"))


def pack_changes(values: list[bytes], budget: int = PACK_BYTES) -> list[bytes]:
    """The change-set records of one snapshot record's change events (``values``, serialised), in
    order: version 2, cut before a record passes ``budget`` bytes (one event at least)."""
    items = [(b"", value) for value in values]
    return [b"".join((_CHANGES_HEAD, b",".join(item[1] for item in run), b"]}"))
            for run in _chunks(items, budget)]


def read_raw(value: bytes, key: bytes | None = None,
             loads: Loads = orjson.loads) -> list[Envelope | Rejected]:
    """The envelopes of one raw record, in order; an unreadable record or observation is a
    :class:`Rejected` (the record as a whole at index 0 when its head cannot be read)."""
    try:
        obj = loads_object(value, "raw record", loads)
        if "v" not in obj:
            return [_envelope(obj)]
        if obj["v"] == VANISHED:
            return _vanishes(obj)
        source, provider, observed_at, payloads = _raw_head(obj)
    except InvalidRecord as exc:
        return [Rejected(str(exc), 0, value, key)]
    out: list[Envelope | Rejected] = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, dict):
            out.append(Envelope(source, provider, observed_at, payload))
        else:
            original = orjson_dumps({"source": source, "provider": provider, "observed_at": observed_at,
                                     "payload": payload})
            out.append(Rejected(f"raw record: payload {index} is not an object ({type(payload).__name__})",
                                index, original, f"{source}/".encode()))
    return out


def _vanishes(obj: dict[str, Any]) -> list[Envelope | Rejected]:
    """The vanishes of a version 3 record; an id that is not a string of 1 to MAX_BATCH_ID bytes
    is a :class:`Rejected`."""
    source, provider, observed_at, ids = (obj.get(n) for n in ("source", "provider", "observed_at",
                                                                "vanished"))
    _check_head(source, provider, observed_at, "raw record")
    if not isinstance(ids, list):
        raise InvalidRecord("raw record: 'vanished' missing or not a list")
    head = (str(source), str(provider), str(observed_at))
    out: list[Envelope | Rejected] = []
    for index, batch_id in enumerate(ids):
        if isinstance(batch_id, str) and batch_id and not oversized_id(batch_id):
            out.append(Envelope.vanish(*head, batch_id))
            continue
        original = orjson_dumps({"v": VANISHED, "source": head[0], "provider": head[1],
                                 "observed_at": head[2], "vanished": [batch_id]})
        out.append(Rejected(f"raw record: vanished {index} is not a batch id", index, original,
                            f"{head[0]}/".encode()))
    return out


def _envelope(obj: dict[str, Any]) -> Envelope:
    source, provider, observed_at, payload = (obj.get(n) for n in ("source", "provider", "observed_at",
                                                                     "payload"))
    _check_head(source, provider, observed_at, "raw envelope")
    if not isinstance(payload, dict):
        raise InvalidRecord("raw envelope: 'payload' missing or not an object")
    results = obj.get("results")
    if results is not None and not isinstance(results, dict):
        raise InvalidRecord("raw envelope: 'results' not an object")
    return Envelope(str(source), str(provider), str(observed_at), payload, results=results)


def _raw_head(obj: dict[str, Any]) -> tuple[str, str, str, list[Any]]:
    if obj["v"] != VERSION:
        raise InvalidRecord(f"raw record: unknown version {obj['v']!r} (this worker reads 1, 2 and 3)")
    source, provider, observed_at, payloads = (obj.get(n) for n in ("source", "provider", "observed_at",
                                                                      "payloads"))
    _check_head(source, provider, observed_at, "raw record")
    if not isinstance(payloads, list):
        raise InvalidRecord("raw record: 'payloads' missing or not a list")
    return str(source), str(provider), str(observed_at), payloads


def _check_head(source: Any, provider: Any, observed_at: Any, what: str) -> None:
    for name, value in (("source", source), ("provider", provider), ("observed_at", observed_at)):
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"{what}: {name!r} missing or not a string")


def read_snapshots(value: bytes, key: bytes | None = None,
                   loads: Loads = orjson.loads) -> list[dict[str, Any] | Rejected]:
    """The snapshot objects of one snapshot record, in order (fields not checked here: the
    caller builds its :class:`~pipeline.core.models.Snapshot`); an entry that is not an object is a
    :class:`Rejected` with its index."""
    return read_entries(value, key, loads, "snapshot")


def read_changes(value: bytes, key: bytes | None = None,
                 loads: Loads = orjson.loads) -> list[dict[str, Any] | Rejected]:
    """The change events of one change-set record, in order, as :func:`read_snapshots` reads
    snapshots (fields not checked here)."""
    return read_entries(value, key, loads, "change")


def read_entries(value: bytes, key: bytes | None, loads: Loads, kind: str) -> list[dict[str, Any] | Rejected]:
    """The objects of a record of many (``{"v": 2, "<kind>s": [...]}``) or of one (the object)."""
    return read_counted(value, key, loads, kind)[0]


# A record's entries, and how many a record of many carries (None for a record of one, or one
# that could not be read: a dead letter then names the whole record).
Counted = tuple[list[dict[str, Any] | Rejected], int | None]


@dataclass(frozen=True, slots=True)
class Made:
    """A snapshot record as the normalise agent made it: each entry's JSON (the bytes the record
    joins) and its object (the :class:`~pipeline.core.models.Snapshot`, or a vanish marker's dict:
    what reading the JSON gives, ``Snapshot.from_dict`` applied), and, for a record of many
    (version 2), how many it carries; None for a record of one (as :data:`Counted`)."""

    jsons: list[bytes]
    objects: list[Snapshot | dict[str, Any]]
    count: int | None


def read_counted(value: bytes, key: bytes | None, loads: Loads, kind: str) -> Counted:
    """:func:`read_entries`, with how many entries a record of many carries."""
    what, field = f"{kind} record", f"{kind}s"
    try:
        obj = loads_object(value, what, loads)
    except InvalidRecord as exc:
        return [Rejected(str(exc), 0, value, key)], None
    if "v" not in obj:
        return [obj], None
    entries = obj.get(field) if obj["v"] == VERSION else None
    if not isinstance(entries, list):
        why = f"{field!r} missing or not a list" if obj["v"] == VERSION else f"unknown version {obj['v']!r}"
        return [Rejected(f"{what}: {why}", 0, value, key)], None
    return [e if isinstance(e, dict) else
            Rejected(f"{what}: entry {i} is not an object ({type(e).__name__})", i, orjson_dumps(e), key)
            for i, e in enumerate(entries)], len(entries)


def vanish_entry(envelope: Envelope, dumps: Callable[[Any], bytes] = orjson_dumps) -> bytes:
    """The snapshot-topic marker of a vanish (:meth:`Envelope.vanish`)."""
    return dumps({"vanished": True, "source": envelope.source, "provider": envelope.provider,
                  "batch_id": envelope.batch_id, "observed_at": envelope.observed_at})


def is_vanish(entry: dict[str, Any]) -> bool:
    """Whether a snapshot-topic entry is a vanish marker (:func:`vanish_entry`), not a snapshot."""
    return entry.get("vanished") is True


def snapshot_key(entry: dict[str, Any] | Snapshot | Rejected) -> bytes | None:
    """``source/batch_id`` of a snapshot object, when it has both (a :class:`Rejected` has its own)."""
    if isinstance(entry, Rejected):
        return entry.key
    if isinstance(entry, Snapshot):
        return entry.key.encode("utf-8", "replace")
    source, batch_id = entry.get("source"), entry.get("batch_id")
    if isinstance(source, str) and isinstance(batch_id, str):
        return f"{source}/{batch_id}".encode("utf-8", "replace")
    return None
