"""pipeline.core.timeutil: every provider timestamp shape -> 'YYYY-MM-DDTHH:MM:SS.mmmZ'."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.core.errors import InvalidRecord
from pipeline.core.timeutil import iso_ms, iso_to_ms, parse_iso, to_iso, utcnow

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_700_000_000, "2023-11-14T22:13:20.000Z"),
        (1_700_000_000.25, "2023-11-14T22:13:20.250Z"),
        (-1, "1969-12-31T23:59:59.000Z"),
        ("1700000000", "2023-11-14T22:13:20.000Z"),
        ("1700000000.5", "2023-11-14T22:13:20.500Z"),
        (" 1700000000 ", "2023-11-14T22:13:20.000Z"),
        ("-1", "1969-12-31T23:59:59.000Z"),
        ("2024-01-02T03:04:05.123456+02:00", "2024-01-02T01:04:05.123Z"),
        ("2024-01-02T03:04:05.999999-05:30", "2024-01-02T08:34:05.999Z"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T03:04:05.5z", "2024-01-02T03:04:05.500Z"),
        ("2024-01-02T03:04:05", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02 03:04:05.120", "2024-01-02T03:04:05.120Z"),
        ("2024-01-02", "2024-01-02T00:00:00.000Z"),
    ],
)
def test_to_iso_accepts_provider_shapes(value: object, expected: str) -> None:
    result = to_iso(value, "created_at")
    assert result == expected
    assert ISO_MS.match(result)


def test_to_iso_none_is_none() -> None:
    assert to_iso(None, "completed_at") is None


def test_to_iso_offsets_name_the_same_instant() -> None:
    a = to_iso("2024-06-01T12:00:00+00:00", "x")
    b = to_iso("2024-06-01T14:00:00+02:00", "x")
    c = to_iso("2024-06-01T12:00:00Z", "x")
    d = to_iso(1_717_243_200, "x")
    assert a == b == c == d == "2024-06-01T12:00:00.000Z"


@pytest.mark.parametrize("value", [True, False])
def test_to_iso_rejects_booleans(value: bool) -> None:
    with pytest.raises(InvalidRecord, match=r"^created_at: expected a timestamp, got a boolean"):
        to_iso(value, "created_at")


@pytest.mark.parametrize("value", [[1], {"t": 1}, b"1700000000", object()])
def test_to_iso_rejects_other_types(value: object) -> None:
    with pytest.raises(InvalidRecord, match=r"^expires_at: expected a timestamp"):
        to_iso(value, "expires_at")


@pytest.mark.parametrize("value", ["", "   ", "yesterday", "2024-13-01T00:00:00Z", "1.2.3", "-"])
def test_to_iso_rejects_unparseable_text(value: str) -> None:
    with pytest.raises(InvalidRecord):
        to_iso(value, "created_at")


@pytest.mark.parametrize("value", [1e20, -1e20, float("inf"), float("nan"), "1" * 400, "99999999999999999"])
def test_to_iso_out_of_range_is_invalid_record(value: object) -> None:
    with pytest.raises(InvalidRecord, match="out of range"):
        to_iso(value, "created_at")


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_to_iso_offset_past_datetime_range_is_invalid_record(value: str) -> None:
    with pytest.raises(InvalidRecord):
        to_iso(value, "created_at")


@pytest.mark.parametrize("value", ["--1", "\u00b2"], ids=["double-minus", "superscript-two"])
def test_to_iso_numeric_looking_text_float_rejects_is_invalid_record(value: str) -> None:
    with pytest.raises(InvalidRecord):
        to_iso(value, "created_at")


def test_to_iso_huge_int_is_invalid_record() -> None:
    with pytest.raises(InvalidRecord):
        to_iso(10**400, "created_at")


def test_iso_ms_converts_to_utc_and_truncates_to_milliseconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    value = datetime(2024, 1, 2, 3, 4, 5, 678_999, tzinfo=plus2)
    assert iso_ms(value) == "2024-01-02T01:04:05.678Z"


def test_parse_iso_naive_means_utc() -> None:
    assert parse_iso("2024-01-02T03:04:05") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_iso_to_ms_round_trips_iso_ms() -> None:
    text = "2024-01-02T03:04:05.678Z"
    ms = iso_to_ms(text)
    assert ms == 1_704_164_645_678
    assert iso_ms(datetime.fromtimestamp(ms / 1000, UTC)) == text


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert ISO_MS.match(iso_ms(now))
