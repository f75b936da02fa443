"""Dead letters stay sendable whatever the original's size; dead-letter logging is rate-limited."""

from __future__ import annotations

import base64
import hashlib

import orjson

from agents.deadletters import LogLimit
from pipeline.core.dlq import MAX_ORIGINAL, dead_letter
from tests.support.clocks import FakeClock


def letter(original: bytes) -> dict[str, object]:
    value = dead_letter(reason="r", stage="normalise", topic="t.raw", partition=1, offset=2,
                        original=original, key=b"s/b", source="s")
    decoded: dict[str, object] = orjson.loads(value)
    return decoded


def test_small_original_is_kept_whole() -> None:
    d = letter(b"{not json")
    assert base64.b64decode(str(d["original_b64"])) == b"{not json"
    assert "original_truncated" not in d


def test_large_original_is_cut_and_identified() -> None:
    big = b"x" * (10 * 1024 * 1024)
    value = dead_letter(reason="r", stage="normalise", topic="t.raw", partition=1, offset=2,
                        original=big, key=b"s/b", source="s")
    assert len(value) < 1024 * 1024  # below Kafka's default record limit
    d = orjson.loads(value)
    assert base64.b64decode(d["original_b64"]) == big[:MAX_ORIGINAL]
    assert d["original_truncated"] is True
    assert d["original_size"] == len(big)
    assert d["original_sha256"] == hashlib.sha256(big).hexdigest()


def test_log_limit_allows_a_burst_then_holds_back_until_the_window_ends() -> None:
    clock = FakeClock()
    limit = LogLimit(3, 10.0, clock=clock)
    assert [limit.allow() for _ in range(5)] == [True, True, True, False, False]
    assert limit.suppressed == 2
    clock.now = 10.0
    assert limit.allow()
    assert limit.suppressed == 0
