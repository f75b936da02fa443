"""Token usage of the simulated OpenAI-family batches, and its ground truth.

Each batch gets fixed per-request token counts, a pure function of its id (a separate seeded
stream, so the fleet itself is unchanged); its usage at any instant is those counts times the
requests completed so far, as OpenAI reports it: ``input_tokens`` includes the cached ones,
``output_tokens`` the reasoning ones, and failed requests cost nothing. ``/_sim/truth`` gives each
batch's final usage, model and team, so a test prices it under its own table.
"""

from __future__ import annotations

import random
from typing import Any

from simulator.fleet import SimBatch

OPENAI_SHAPED = frozenset({"openai", "azure_openai", "orq", "groq"})
TEAMS = ("search", "ads", "eval")


def team(batch: SimBatch) -> str:
    """The ``team`` metadata the OpenAI-family and Mistral objects carry."""
    return TEAMS[batch.index % 3]


def per_request(batch: SimBatch) -> tuple[int, int, int, int]:
    """(input, cached input, output, reasoning) tokens of one completed request of the batch."""
    rng = random.Random(f"usage/{batch.id}")  # simulation, not security
    inputs = rng.randint(50, 4000)
    cached = rng.choice((0, 0, inputs // 4, inputs // 2))
    embeddings = batch.endpoint == "/v1/embeddings" or batch.model.startswith("text-embedding")
    outputs = 0 if embeddings else rng.randint(10, 1500)
    reasoning = rng.randint(0, outputs) if batch.model.startswith("o") else 0
    return inputs, cached, outputs, reasoning


def usage(batch: SimBatch, completed: int) -> dict[str, Any]:
    """The batch object's ``usage`` once ``completed`` requests have succeeded (OpenAI's shape)."""
    inputs, cached, outputs, reasoning = (n * completed for n in per_request(batch))
    return {"input_tokens": inputs, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": outputs, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inputs + outputs}


def truth(provider: str, batch: SimBatch) -> dict[str, Any]:
    """The batch's model, team and final token usage (``None`` where its provider's object carries
    none), for ``/_sim/truth``."""
    final = None
    if provider in OPENAI_SHAPED:
        completed, _ = batch.progress_at(float("inf"))
        found = usage(batch, completed)
        final = {"input_tokens": found["input_tokens"],
                 "cached_input_tokens": found["input_tokens_details"]["cached_tokens"],
                 "output_tokens": found["output_tokens"],
                 "reasoning_tokens": found["output_tokens_details"]["reasoning_tokens"]}
    return {"model": batch.model, "team": team(batch), "usage": final}
