"""Provider timestamps -> ISO 8601 UTC with milliseconds, with fast paths for the hot path.

Integer unix seconds are formatted by arithmetic and table lookups (no ``datetime``); text that
is already canonical is validated and passed through; everything else (floats, numeric text,
ISO 8601 / RFC 3339 with any offset and up to nanoseconds) goes through :mod:`pipeline.core.timeutil`.
Text is converted once and cached (a batch's timestamps come back at every poll).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import lru_cache

from pipeline.core.errors import InvalidRecord
from pipeline.core.timeutil import to_iso

EPOCH = date(1970, 1, 1)
NANOS = re.compile(r"(\.[0-9]{6})[0-9]+")


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
    rest = seconds % 86_400
    return _day(seconds // 86_400) + HOURS_MINUTES[rest // 60] + SECONDS[rest % 60]


def timestamp(value: object, name: str) -> str | None:
    """Any provider timestamp (unix seconds, numeric text, ISO 8601 / RFC 3339) as ISO ms UTC."""
    if value is None:
        return None
    if type(value) is int:
        if -62_135_596_800 <= value <= 253_402_300_799:  # unix_iso, inlined (the hot path)
            rest = value % 86_400
            return _day(value // 86_400) + HOURS_MINUTES[rest // 60] + SECONDS[rest % 60]
        raise InvalidRecord(f"{name}: unix timestamp out of range: {value}")
    if type(value) is str:
        return _text_time(value, name)
    return to_iso(value, name)


@lru_cache(maxsize=1 << 16)
def _text_time(value: str, name: str) -> str:
    """A text timestamp as ISO ms UTC. Cached: a batch's timestamps come back unchanged at every
    poll, and half the providers write them as text to parse (RFC 3339 with microseconds or an
    offset); 64k entries (about 10 MB) hold those of a fleet of 10,000 batches."""
    if _is_canonical(value):
        return value
    iso = to_iso(NANOS.sub(r"\1", value), name)  # RFC 3339 allows 9 digits; Python parses at most 6
    assert iso is not None  # a str is never None
    return iso


def _is_canonical(text: str) -> bool:
    """Already ``YYYY-MM-DDTHH:MM:SS.mmmZ`` and a real instant: returned unchanged."""
    if len(text) != 24 or text[10] != "T" or text[19] != "." or text[23] != "Z":
        return False
    try:
        datetime.fromisoformat(text[:23])
    except ValueError:
        return False
    return text[20:23].isdigit() and text.isascii()


def required_time(value: object, name: str = "observed_at") -> str:
    """A required time, e.g. the envelope's ``observed_at`` (the poller stamps a whole list page
    with one: cached)."""
    if type(value) is not str:
        raise InvalidRecord(f"{name}: missing or not a string")
    return _text_time(value, name)
