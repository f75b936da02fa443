"""Raw envelope -> canonical :class:`~pipeline.models.Snapshot`, by the envelope's provider.

The per-provider mappings live in :mod:`pipeline.providers`; this is the entry point the
normalise agent and the CLI call. Anything that cannot be normalised is an :class:`InvalidRecord`.
"""

from __future__ import annotations

from pipeline.models import Envelope, Snapshot
from pipeline.providers import ADAPTERS, adapter


def normalise(envelope: Envelope) -> Snapshot:
    """The canonical snapshot of one observed provider object; raises :class:`InvalidRecord`."""
    found = ADAPTERS.get(envelope.provider)
    if found is None:
        found = adapter(envelope.provider)  # raises InvalidRecord for an unknown provider name
    return found.normalise(envelope.payload, envelope.source, envelope.observed_at)
