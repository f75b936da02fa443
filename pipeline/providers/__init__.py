"""One adapter per provider, by the provider names used everywhere (config, CLI, snapshots)."""

from __future__ import annotations

from typing import Any

from pipeline.config import PROVIDERS
from pipeline.errors import InvalidRecord
from pipeline.models import Snapshot
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
assert tuple(ADAPTERS) == PROVIDERS, "every provider name in config has exactly one adapter"

__all__ = ["ADAPTERS", "Adapter", "ProviderError", "adapter", "normalise"]


def adapter(provider: str) -> Adapter:
    """The adapter of a provider name; an unknown name is an :class:`InvalidRecord`."""
    try:
        return ADAPTERS[provider]
    except KeyError:
        raise InvalidRecord(f"provider {provider[:64]!r} is not one of {', '.join(ADAPTERS)}") from None


def normalise(provider: str, obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    return adapter(provider).normalise(obj, source, observed_at)
