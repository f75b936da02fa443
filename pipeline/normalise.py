"""Raw envelope -> canonical :class:`~pipeline.models.Snapshot`, by the envelope's provider.

The per-provider mappings live in :mod:`pipeline.providers`; this is the entry point the
normalise agent and the CLI call. Anything that cannot be normalised is an :class:`InvalidRecord`.
"""

from __future__ import annotations

from pipeline.codec import ORJSON, Codec
from pipeline.models import Envelope, Snapshot
from pipeline.providers import ADAPTERS, adapter


def normalise(envelope: Envelope) -> Snapshot:
    """The canonical snapshot of one observed provider object; raises :class:`InvalidRecord`."""
    found = ADAPTERS.get(envelope.provider)
    if found is None:
        found = adapter(envelope.provider)  # raises InvalidRecord for an unknown provider name
    return found.normalise(envelope.payload, envelope.source, envelope.observed_at)


def normalise_record(data: bytes, codec: Codec = ORJSON) -> tuple[bytes, bytes]:
    """``(key, value)`` of the snapshot record for one raw envelope record: what the normalise
    agent sends per record (and what ``bench/normaliser_bench.py`` times). Raises
    :class:`InvalidRecord` for an envelope or payload that cannot be normalised."""
    snap = normalise(Envelope.from_json(data, codec.loads))
    return snap.key.encode(), snap.to_json(codec.dumps)
