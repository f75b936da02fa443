"""orq.ai batches (``/v3/router/batches``): the OpenAI object, as sent on the wire (snake_case)
or as the orq.ai TypeScript SDK gives it (``ListBatchesData``: ``inputFileId``,
``requestCounts``, ``createdAt``, ...). camelCase keys are mapped to their wire names first, so
every field of the SDK object reaches the snapshot (``object`` lands in ``provider_extra``).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.models import Snapshot
from pipeline.providers.openai import normalise_shaped, shaped_adapter

CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(key: str) -> str:
    """``inputFileId`` -> ``input_file_id``; snake_case keys are unchanged."""
    return CAMEL.sub(r"_\1", key).lower() if key[:1].islower() and not key.islower() else key


def wire_form(obj: dict[str, Any]) -> dict[str, Any]:
    """The SDK's camelCase object in wire form; a snake_case key wins over its camelCase twin."""
    if all(k.islower() or not k[:1].islower() for k in obj):
        return obj
    out = {snake(k): v for k, v in obj.items() if snake(k) not in obj}
    out.update({k: v for k, v in obj.items() if snake(k) == k})
    return out


def normalise(obj: dict[str, Any], source: str, observed_at: str) -> Snapshot:
    return normalise_shaped(wire_form(obj), source, observed_at, "orq")


ADAPTER = shaped_adapter("orq", "https://api.orq.ai/v3/router", normalise=normalise)
