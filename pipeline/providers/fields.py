"""Typed readers for provider fields: every bad value becomes an :class:`InvalidRecord`.

The hot path (OpenAI-shaped objects) goes through :func:`timestamp` and :func:`count`, so both
have fast paths for the common wire types: integer unix seconds and already-canonical ISO text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from pipeline.errors import InvalidRecord
from pipeline.models import STATUS_TIME_FIELD, TERMINAL
from pipeline.timeutil import to_iso

MAX_COUNT = 2**63 - 1  # ClickHouse UInt64 columns; orjson writes at most 64-bit integers
EPOCH = date(1970, 1, 1)
NANOS = re.compile(r"(\.[0-9]{6})[0-9]+")
Errors = list[dict[str, Any]]


@lru_cache(maxsize=8192)
def _day(days: int) -> str:
    try:
        return (EPOCH + timedelta(days=days)).isoformat() + "T"
    except OverflowError:
        raise InvalidRecord(f"unix timestamp out of range: day {days}") from None


HOURS_MINUTES = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
SECONDS = tuple(f"{s:02d}.000Z" for s in range(60))


def unix_iso(seconds: int) -> str:
    """``2024-05-01T10:40:00.000Z`` for integer unix seconds: table lookups, no datetime."""
    days, rest = divmod(seconds, 86_400)
    return _day(days) + HOURS_MINUTES[rest // 60] + SECONDS[rest % 60]


def timestamp(value: object, name: str) -> str | None:
    """Any provider timestamp (unix seconds, numeric text, ISO 8601 / RFC 3339) as ISO ms UTC."""
    if value is None:
        return None
    if type(value) is int:
        if -62_135_596_800 <= value <= 253_402_300_799:
            return unix_iso(value)
        raise InvalidRecord(f"{name}: unix timestamp out of range: {value}")
    if type(value) is str:
        if _is_canonical(value):
            return value
        value = NANOS.sub(r"\1", value)  # RFC 3339 allows 9 digits; Python parses at most 6
    return to_iso(value, name)


def _is_canonical(text: str) -> bool:
    """Already ``YYYY-MM-DDTHH:MM:SS.mmmZ`` and a real instant: returned unchanged."""
    if len(text) != 24 or text[10] != "T" or text[19] != "." or text[23] != "Z":
        return False
    try:
        datetime.fromisoformat(text[:23])
    except ValueError:
        return False
    return text[20:23].isdigit() and text.isascii()


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


@lru_cache(maxsize=256)
def required_time(value: str, name: str = "observed_at") -> str:
    """A required time; cached because the poller stamps a whole list page with one time."""
    iso = timestamp(value, name)
    if iso is None:
        raise InvalidRecord(f"{name}: missing")
    return iso


def text(value: object, name: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise InvalidRecord(f"{name}: expected a string, got {type(value).__name__}")


def required_text(value: object, name: str) -> str:
    if type(value) is not str or not value:
        raise InvalidRecord(f"payload: {name!r} missing or not a non-empty string")
    return value


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
