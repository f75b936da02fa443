"""Groq batches (``/openai/v1/batches``): the OpenAI object and statuses; no paging documented.

``completion_window`` runs from ``24h`` up to ``7d`` and is kept as sent.
"""

from __future__ import annotations

from pipeline.providers.openai import shaped_adapter
from pipeline.providers.paging import SinglePage

ADAPTER = shaped_adapter("groq", "https://api.groq.com/openai/v1", paging=SinglePage())
normalise = ADAPTER.normalise
