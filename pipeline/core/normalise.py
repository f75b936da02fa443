"""Raw envelope -> canonical :class:`~pipeline.core.models.Snapshot`, by the envelope's provider.

The per-provider mappings live in :mod:`pipeline.providers`; this is the entry point the
normalise agent and the CLI call. Anything that cannot be normalised is an :class:`InvalidRecord`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.core.codec import ORJSON, Codec
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Envelope, Snapshot
from pipeline.core.records import MAX_ENTRY, Rejected, read_raw, vanish_entry
from pipeline.core.timeutil import iso_ms, parse_iso
from pipeline.core.usage import results_usage
from pipeline.providers import ADAPTERS, adapter
from pipeline.providers import envelope as envelope_of


def normalise(envelope: Envelope) -> Snapshot:
    """The canonical snapshot of one observed provider object; raises :class:`InvalidRecord`."""
    found = ADAPTERS.get(envelope.provider)
    if found is None:
        found = adapter(envelope.provider)  # raises InvalidRecord for an unknown provider name
    snap = found.normalise(envelope.payload, envelope.source, envelope.observed_at)
    if envelope.results is not None:
        return with_results(snap, envelope.results)
    return snap


def with_results(snap: Snapshot, results: object) -> Snapshot:
    """The snapshot with the results reader's usage (``usage_source = results``) and model (when
    the object names none), unless its object carries usage already; results that cannot be read
    as counts leave it as it is (``none``: never a wrong figure)."""
    usage, model = results_usage(results)
    if usage.usage_source == "none" or snap.usage_source != "none":
        return snap
    return replace(snap, input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens,
                   output_tokens=usage.output_tokens, reasoning_tokens=usage.reasoning_tokens,
                   usage_source=usage.usage_source, model=snap.model or model)


def normalise_record(data: bytes, codec: Codec = ORJSON) -> tuple[bytes, bytes]:
    """``(key, value)`` of the snapshot record for one raw envelope record: what the normalise
    agent sends per record (and what ``bench/normaliser_bench.py`` times). Raises
    :class:`InvalidRecord` for an envelope or payload that cannot be normalised."""
    snap = normalise(Envelope.from_json(data, codec.loads))
    return snap.key.encode(), snap.to_json(codec.dumps)


def normalise_raw(value: bytes, key: bytes | None = None, codec: Codec = ORJSON, max_bytes: int = MAX_ENTRY,
                  objects: dict[int, Snapshot | dict[str, Any]] | None = None,
                  ) -> tuple[list[tuple[bytes, bytes, int]], list[Rejected]]:
    """The ``(key, snapshot JSON, index)`` items of one raw record of one or many envelopes
    (``docs/records.md``), in order, and its observations that cannot be normalised (each a
    :class:`Rejected` naming its index; a snapshot over ``max_bytes`` is one too). A vanish is
    passed on as its marker (:func:`~pipeline.core.records.vanish_entry`), its provider checked.
    Given ``objects``, each item's object is put there under its index: the snapshot, or the
    marker's dict (what reading the item's JSON gives; :class:`~pipeline.core.records.Made`)."""
    items: list[tuple[bytes, bytes, int]] = []
    rejected: list[Rejected] = []
    for index, entry in enumerate(read_raw(value, key, codec.loads)):
        if isinstance(entry, Rejected):
            rejected.append(entry)
            continue
        try:
            if entry.vanished:
                adapter(entry.provider)  # an unknown provider is an InvalidRecord, as for a snapshot
                seen = replace(entry, observed_at=iso_ms(parse_iso(entry.observed_at)))
                marker = vanish_entry(seen, codec.dumps)
                items.append((entry.key.encode(), marker, index))
                if objects is not None:
                    objects[index] = codec.loads(marker)
                continue
            snap, out = _snapshot(entry, codec, max_bytes)
        except Exception as exc:  # noqa: BLE001 - one observation never stops the others
            why = str(exc) if isinstance(exc, InvalidRecord) else f"unexpected {type(exc).__name__}: {exc}"
            key = entry.key.encode() if entry.vanished else _key_of(entry)
            rejected.append(Rejected(why, index, entry.to_json(codec.dumps), key))
            continue
        items.append((snap.key.encode(), out, index))
        if objects is not None:
            objects[index] = snap
    return items, rejected


def _snapshot(envelope: Envelope, codec: Codec, max_bytes: int) -> tuple[Snapshot, bytes]:
    snap = normalise(envelope)
    out = snap.to_json(codec.dumps)
    if len(out) > max_bytes:  # the producer would refuse it
        raise InvalidRecord(f"snapshot of {len(out)} bytes is over the {max_bytes}-byte record limit")
    return snap, out


def _key_of(envelope: Envelope) -> bytes | None:
    """The record key of an observation read from Kafka (which carries no batch id)."""
    try:
        return envelope_of(envelope.source, envelope.provider, envelope.observed_at,
                           envelope.payload).key.encode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a hostile payload may break the adapter's id lookup
        return f"{envelope.source}/".encode("utf-8", "replace")
