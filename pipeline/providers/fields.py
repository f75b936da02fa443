"""Typed readers for provider fields: every bad value becomes an :class:`InvalidRecord`.

The hot path (OpenAI-shaped objects) goes through :func:`count` and the timestamp readers of
:mod:`pipeline.providers.times` (re-exported here), which have fast paths for the common types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import MAX_BATCH_ID, STATUS_TIME_FIELD, TERMINAL, oversized_id
from pipeline.providers.times import required_time as required_time
from pipeline.providers.times import timestamp as timestamp

MAX_COUNT = 2**63 - 1  # ClickHouse UInt64 columns; orjson writes at most 64-bit integers
Errors = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Reader:
    """Typed reads of one provider object's top-level fields, named by their wire key."""

    obj: dict[str, Any]

    def text(self, key: str) -> str | None:
        return text(self.obj.get(key), key)

    def time(self, key: str) -> str | None:
        return timestamp(self.obj.get(key), key)

    def count(self, key: str) -> int | None:
        return count(self.obj.get(key), key)


def text(value: object, name: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise InvalidRecord(f"{name}: expected a string, got {type(value).__name__}")


def required_text(value: object, name: str) -> str:
    if type(value) is not str or not value:
        raise InvalidRecord(f"payload: {name!r} missing or not a non-empty string")
    return value


def batch_id(value: object, name: str) -> str:
    """A batch id: a non-empty string of at most :data:`MAX_BATCH_ID` bytes."""
    found = required_text(value, name)
    if oversized_id(found):
        raise InvalidRecord(f"payload: {name!r} is over the {MAX_BATCH_ID}-byte batch id limit "
                            f"({len(found.encode('utf-8', 'surrogatepass'))} bytes)")
    return found


def count(value: object, name: str) -> int | None:
    """A non-negative count; JSON strings holding integers (int64 on Google APIs) are accepted."""
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRecord(f"{name}: expected an integer, got {type(value).__name__}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRecord(f"{name}: expected an integer, got {str(value)[:32]!r}") from None
    if number < 0:
        raise InvalidRecord(f"{name}: negative count {number}")
    if number > MAX_COUNT:
        raise InvalidRecord(f"{name}: count too large")
    return number


def mapping(value: object, name: str) -> dict[str, Any]:
    """An optional JSON object (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRecord(f"{name}: expected an object, got {type(value).__name__}")
    return value


def error(code: object, message: object, param: object = None, line: object = None) -> dict[str, Any]:
    """One canonical ``{code, message, param, line}``."""
    return {"code": text(code, "errors.code"), "message": text(message, "errors.message"),
            "param": text(param, "errors.param"), "line": count(line, "errors.line")}


def error_list(value: object) -> Errors:
    """OpenAI's ``errors`` is ``{object: list, data: [...]}``; a bare list is accepted too."""
    if value is None:
        return []
    items = value.get("data") if isinstance(value, dict) else value
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidRecord("errors: expected a list of error objects")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRecord("errors: each error must be an object")
        out.append(error(item.get("code"), item.get("message"), item.get("param"), item.get("line")))
    return out


def metadata(value: object, name: str = "metadata") -> dict[str, str]:
    """A string map; non-string values become their JSON text."""
    if type(value) is dict and all(type(v) is str for v in value.values()):
        return value  # the common case: already a string map (JSON keys are strings)
    return {str(k): v if type(v) is str else json_text(v, name) for k, v in mapping(value, name).items()}


def usage(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRecord("usage: expected an object")
    json_text(value, "usage")
    return value


def json_text(value: object, name: str) -> str:
    """Compact JSON text of a value; one that JSON cannot carry (a >64-bit int) is invalid."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError
        raise InvalidRecord(f"{name}: cannot be written as JSON: {exc}") from None


def extras(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """Provider fields with no canonical home, kept verbatim (checked to be JSON-writable)."""
    out = {k: obj[k] for k in sorted(obj.keys() - known)}  # sorted: the same bytes every run
    for key, value in out.items():
        if type(value) is not str:
            json_text(value, key)
    return out


def status_of(raw: object, table: dict[str, str], name: str = "status") -> tuple[str, str]:
    """``(canonical, raw)``; a string the table does not know maps to ``unknown``."""
    if type(raw) is not str:
        raise InvalidRecord(f"payload: {name!r} missing or not a string")
    return table.get(raw, "unknown"), raw


def terminal_times(status: str, at: str | None) -> dict[str, Any]:
    """A provider's single end time becomes the ``*_at`` field of the terminal status reached."""
    if at is None or status not in TERMINAL:
        return {}
    return {STATUS_TIME_FIELD[status]: at}
