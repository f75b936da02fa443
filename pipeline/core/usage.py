"""Typed token usage: the snapshot's ``input_tokens``, ``cached_input_tokens``, ``output_tokens``,
``reasoning_tokens`` and ``usage_source``, read from a provider's usage object.

Which providers carry usage where (docs/spend.md): the OpenAI family (OpenAI, Azure OpenAI,
orq.ai, Groq) on the batch object, in OpenAI's shape; Anthropic, Gemini, Vertex, Mistral,
Bedrock and Together do not, so their snapshots say ``usage_source = none``.

A usage object that cannot be read as counts (a count that is not a non-negative integer, a
missing ``input_tokens`` or ``output_tokens``) gives no typed figures and ``usage_source = none``:
a wrong figure is worse than none. The raw object stays in the snapshot's ``usage``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

USAGE_SOURCES = ("object", "results", "none")
MAX_TOKENS = 2**63 - 1  # ClickHouse UInt64 columns; orjson writes at most 64-bit integers


class Usage(NamedTuple):
    """Token counts of one batch. ``input_tokens`` includes the cached ones (OpenAI's rule), and
    ``output_tokens`` the reasoning ones: cost prices ``input - cached``, ``cached`` and ``output``."""

    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str = "none"


NO_USAGE = Usage()


def _count(value: object) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_TOKENS else None


def _detail(obj: dict[str, Any], key: str, name: str) -> int | None:
    """A count inside ``obj[key]`` (absent or null: 0; present but unreadable: ``None``)."""
    details = obj.get(key)
    if details is None:
        return 0
    if type(details) is not dict:
        return None
    value = details.get(name)
    return 0 if value is None else _count(value)


def openai_usage(usage: object) -> Usage:
    """OpenAI's batch ``usage``: ``input_tokens``, ``input_tokens_details.cached_tokens``,
    ``output_tokens``, ``output_tokens_details.reasoning_tokens`` (Azure and orq.ai pass the same
    shape through). Absent, or not readable as counts: :data:`NO_USAGE`."""
    if type(usage) is not dict:
        return NO_USAGE
    if "input_tokens" not in usage and "inputTokens" in usage:
        usage = camel_usage(usage)  # orq.ai's TypeScript SDK object (``ListBatchesData``)
    get = usage.get
    inputs, outputs = _count(get("input_tokens")), _count(get("output_tokens"))
    cached = _detail(usage, "input_tokens_details", "cached_tokens")
    reasoning = _detail(usage, "output_tokens_details", "reasoning_tokens")
    if inputs is None or cached is None or outputs is None or reasoning is None or cached > inputs:
        return NO_USAGE
    return Usage(inputs, cached, outputs, reasoning, "object")


CAMEL = {"inputTokens": "input_tokens", "outputTokens": "output_tokens", "totalTokens": "total_tokens",
         "inputTokensDetails": "input_tokens_details", "outputTokensDetails": "output_tokens_details",
         "cachedTokens": "cached_tokens", "reasoningTokens": "reasoning_tokens"}


def camel_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """The camelCase usage object of an SDK in wire (snake_case) names, one level deep."""
    return {CAMEL.get(k, k): camel_usage(v) if type(v) is dict else v for k, v in usage.items()}
