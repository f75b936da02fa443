"""The versioned JSON Schema of change events, for tests that check what they produce against it."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from pipeline.core.models import ChangeEvent

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "change_event.v2.json"


@functools.cache
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(record: bytes | dict[str, Any]) -> dict[str, Any]:
    """The change event as a dict; raises ``jsonschema.ValidationError`` if it breaks the schema."""
    obj = orjson.loads(record) if isinstance(record, bytes) else record
    validator().validate(obj)
    return obj


def checked(events: Iterable[ChangeEvent]) -> list[ChangeEvent]:
    """Validate each event's wire form and hand the events back."""
    events = list(events)
    for event in events:
        validate(event.to_json())
    return events
