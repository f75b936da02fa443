"""Raw envelope -> canonical :class:`~pipeline.models.Snapshot`, by the envelope's provider.

The per-provider mappings live in :mod:`pipeline.providers`; this is the entry point the
normalise agent and the CLI call. Anything that cannot be normalised is an :class:`InvalidRecord`.
"""

from __future__ import annotations

from pipeline.models import Envelope, Snapshot
from pipeline.providers import adapter


def normalise(envelope: Envelope) -> Snapshot:
    """The canonical snapshot of one observed provider object; raises :class:`InvalidRecord`."""
    return adapter(envelope.provider).normalise(envelope.payload, envelope.source, envelope.observed_at)
