"""Groq batches (``/openai/v1/batches``): the OpenAI object and statuses; no paging documented.

``completion_window`` runs from ``24h`` up to ``7d`` and is kept as sent.
"""

from __future__ import annotations

from typing import Any

from pipeline.models import Snapshot
from pipeline.providers.base import Adapter, bearer
from pipeline.providers.openai import normalise_shaped
from pipeline.providers.paging import SinglePage


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    return normalise_shaped(obj, source, observed_at, "groq")


ADAPTER = Adapter(
    name="groq",
    list_path="/batches",
    get_path="/batches/{id}",
    paging=SinglePage(),
    items_key="data",
    auth=bearer,
    normalise=normalise,
    default_base_url="https://api.groq.com/openai/v1",
)
