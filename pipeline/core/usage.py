"""Typed token usage: the snapshot's ``input_tokens``, ``cached_input_tokens``, ``output_tokens``,
``reasoning_tokens`` and ``usage_source``, read from a provider's usage object.

Which providers carry usage where (docs/spend.md): the OpenAI family (OpenAI, Azure OpenAI,
orq.ai, Groq) on the batch object, in OpenAI's shape; Anthropic, Gemini, Vertex, Mistral,
Bedrock and Together do not, so their snapshots say ``usage_source = none``, unless the results
reader summed the batch's results file (:func:`results_usage`: ``usage_source = results``).

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


def _detail(details: object, name: str) -> int | None:
    """A count inside a details object (absent or null: 0; present but unreadable: ``None``)."""
    if details is None:
        return 0
    if type(details) is not dict:
        return None
    value = details.get(name)
    return 0 if value is None else _count(value)


def openai_usage(usage: object) -> Usage:
    """OpenAI's batch ``usage``: ``input_tokens``, ``input_tokens_details.cached_tokens``,
    ``output_tokens``, ``output_tokens_details.reasoning_tokens`` (Azure and orq.ai pass the same
    shape through). Absent, or not readable as counts: :data:`NO_USAGE`. On the normaliser's hot
    path: the plain-integer case is checked inline before any helper is called."""
    if type(usage) is not dict:
        return NO_USAGE
    get = usage.get
    inputs, outputs = get("input_tokens"), get("output_tokens")
    if inputs is None and "inputTokens" in usage:
        return openai_usage(camel_usage(usage))  # orq.ai's TypeScript SDK object (``ListBatchesData``)
    in_details, out_details = get("input_tokens_details"), get("output_tokens_details")
    cached = in_details.get("cached_tokens") if type(in_details) is dict else None
    reasoning = out_details.get("reasoning_tokens") if type(out_details) is dict else None
    if (type(inputs) is int and type(outputs) is int and type(cached) is int and type(reasoning) is int
            and 0 <= cached <= inputs <= MAX_TOKENS and reasoning >= 0 and 0 <= outputs <= MAX_TOKENS):
        return Usage(inputs, cached, outputs, reasoning, "object")
    return _checked(inputs, outputs, in_details, out_details)


def _checked(inputs: object, outputs: object, in_details: object, out_details: object) -> Usage:
    """The general case: absent details count 0, anything unreadable gives :data:`NO_USAGE`."""
    found_in, found_out = _count(inputs), _count(outputs)
    cached, reasoning = _detail(in_details, "cached_tokens"), _detail(out_details, "reasoning_tokens")
    if found_in is None or found_out is None or cached is None or reasoning is None or cached > found_in:
        return NO_USAGE
    return Usage(found_in, cached, found_out, reasoning, "object")


CAMEL = {"inputTokens": "input_tokens", "outputTokens": "output_tokens", "totalTokens": "total_tokens",
         "inputTokensDetails": "input_tokens_details", "outputTokensDetails": "output_tokens_details",
         "cachedTokens": "cached_tokens", "reasoningTokens": "reasoning_tokens"}


def camel_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """The camelCase usage object of an SDK in wire (snake_case) names, one level deep."""
    return {CAMEL.get(k, k): camel_usage(v) if type(v) is dict else v for k, v in usage.items()}


RESULTS_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens")


def results_dict(usage: Usage, model: str | None) -> dict[str, Any]:
    """What the results reader publishes beside the batch object (the raw envelope's ``results``,
    docs/records.md): the summed counts and the one model its requests named, if one."""
    return {"input_tokens": usage.input_tokens, "cached_input_tokens": usage.cached_input_tokens,
            "output_tokens": usage.output_tokens, "reasoning_tokens": usage.reasoning_tokens, "model": model}


def results_usage(results: object) -> tuple[Usage, str | None]:
    """The usage and model of an envelope's ``results`` (:func:`results_dict`); anything that is
    not counts (a cached count over the input count included) gives :data:`NO_USAGE`."""
    if type(results) is not dict:
        return NO_USAGE, None
    inputs, cached, outputs = (_count(results.get(name)) for name in RESULTS_FIELDS)
    reasoning = _count(results.get("reasoning_tokens", 0))
    model = results.get("model")
    found = model if isinstance(model, str) and model else None
    if inputs is None or cached is None or outputs is None or reasoning is None or cached > inputs:
        return NO_USAGE, found
    return Usage(inputs, cached, outputs, reasoning, "results"), found
