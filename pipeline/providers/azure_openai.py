"""Azure OpenAI batches (``{resource}/openai/batches?api-version=2024-10-21``).

The object is OpenAI's; ``endpoint`` lacks the ``/v1`` prefix (``/chat/completions``), so it is
given one to match the fleet's other OpenAI-shaped sources. Auth is the ``api-key`` header (an
Entra ID token would go in ``Authorization: Bearer`` instead). The base URL is per resource.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.core.models import Snapshot
from pipeline.providers.base import header
from pipeline.providers.openai import normalise_shaped, shaped_adapter

API_VERSION = "2024-10-21"


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    snap = normalise_shaped(obj, source, observed_at, "azure_openai")
    endpoint = snap.endpoint
    if endpoint and endpoint.startswith("/") and not endpoint.startswith("/v1/"):
        return replace(snap, endpoint=f"/v1{endpoint}")
    return snap


ADAPTER = shaped_adapter(
    "azure_openai",
    None,
    normalise=normalise,
    base_url_hint="https://<resource>.openai.azure.com/openai",
    auth=header("api-key"),
    fixed_params=(("api-version", API_VERSION),),
)
