"""One adapter per provider, by the provider names used everywhere (config, CLI, snapshots)."""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Envelope, Snapshot
from pipeline.providers import (
    anthropic,
    azure_openai,
    bedrock,
    gemini,
    groq,
    mistral,
    openai,
    orq,
    together,
    vertex,
)
from pipeline.providers.base import Adapter, ProviderError

ADAPTERS: dict[str, Adapter] = {
    m.ADAPTER.name: m.ADAPTER
    for m in (openai, azure_openai, orq, anthropic, mistral, groq, together, gemini, vertex, bedrock)
}
# The catalogue, derived from the adapters (their order is the order shown everywhere).
PROVIDERS = tuple(ADAPTERS)
# Public API roots; azure_openai, vertex and bedrock have none (per resource, project or region)
# and need ``base_url``, of the shape in NO_DEFAULT_HINT.
DEFAULT_BASE_URLS = {name: a.default_base_url for name, a in ADAPTERS.items() if a.default_base_url}
NO_DEFAULT_HINT = {name: a.base_url_hint for name, a in ADAPTERS.items() if not a.default_base_url}

__all__ = ["ADAPTERS", "DEFAULT_BASE_URLS", "NO_DEFAULT_HINT", "PROVIDERS", "Adapter", "ProviderError",
           "adapter", "envelope", "normalise"]


def adapter(provider: str) -> Adapter:
    """The adapter of a provider name; an unknown name is an :class:`InvalidRecord`."""
    try:
        return ADAPTERS[provider]
    except KeyError:
        raise InvalidRecord(f"provider {provider[:64]!r} is not one of {', '.join(ADAPTERS)}") from None


def envelope(source: str, provider: str, observed_at: str, obj: dict[str, Any]) -> Envelope:
    """An observation of ``obj``, its batch id read by the provider's adapter (the object's
    ``id`` for an unknown provider; None when it has none), so that its key is its batch's."""
    found = ADAPTERS.get(provider)
    if found is not None:
        batch_id = found.batch_id(obj)
    else:
        batch_id = raw if isinstance(raw := obj.get("id"), str) else None
    return Envelope(source, provider, observed_at, obj, batch_id)


def normalise(provider: str, obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    return adapter(provider).normalise(obj, source, observed_at)
