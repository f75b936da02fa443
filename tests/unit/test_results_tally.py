"""The results reader's core: an Anthropic results file (and a Gemini responses file) streamed
in chunks of any size."""

from __future__ import annotations

import orjson
import pytest

from pipeline.core.results import GeminiTally, ResultsTally, ResultsTooLarge
from pipeline.core.usage import NO_USAGE, Usage


def line(kind: str = "succeeded", model: str = "claude-sonnet-4-5-20250929", **usage: int) -> bytes:
    if kind != "succeeded":
        return orjson.dumps({"custom_id": "r", "result": {"type": kind}}) + b"\n"
    used = {"input_tokens": 10, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 5,
            "output_tokens": 7, **usage}
    return orjson.dumps({"custom_id": "r", "result": {"type": "succeeded",
                                                      "message": {"model": model, "usage": used}}}) + b"\n"


FILE = line() + line(input_tokens=100, output_tokens=1) + line("errored") + line("expired") + line("canceled")


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(FILE)])
def test_sums_succeeded_results_whatever_the_chunks(size: int) -> None:
    tally = ResultsTally()
    for start in range(0, len(FILE), size):
        tally.feed(FILE[start:start + size])
    # input = uncached + cache writes + cache reads; cached = the reads; errored etc. cost nothing
    assert tally.usage() == Usage(17 + 107, 10, 8, 0, "results")
    assert (tally.lines, tally.succeeded, tally.not_billed, tally.unreadable) == (5, 2, 3, 0)
    assert tally.model == "claude-sonnet-4-5-20250929"


def test_a_last_line_without_newline_counts() -> None:
    tally = ResultsTally()
    tally.feed(line().rstrip(b"\n"))
    assert tally.usage() == Usage(17, 5, 7, 0, "results")


def test_several_models_name_none() -> None:
    tally = ResultsTally()
    tally.feed(line() + line(model="claude-haiku-4-5"))
    assert tally.model is None
    assert tally.usage().input_tokens == 34


@pytest.mark.parametrize("bad", [b"not json\n", b"[1]\n", b'{"result": {"type": "succeeded"}}\n',
                                 line(input_tokens=-1), line(output_tokens="7"),  # type: ignore[arg-type]
                                 b'{"result": {"type": "mystery", "message": {"usage": {}}}}\n'])
def test_one_unreadable_line_gives_no_figure(bad: bytes) -> None:
    tally = ResultsTally()
    tally.feed(line() + bad + line())
    assert tally.usage() == NO_USAGE
    assert tally.unreadable == 1


def test_caps_in_bytes_and_lines() -> None:
    with pytest.raises(ResultsTooLarge, match="over 10 bytes"):
        ResultsTally(max_bytes=10).feed(line())
    tally = ResultsTally(max_lines=2)
    with pytest.raises(ResultsTooLarge, match="over 2 lines"):
        tally.feed(line() * 3)


def gemini(**usage: object) -> bytes:
    used = {"promptTokenCount": 100, "cachedContentTokenCount": 40, "candidatesTokenCount": 20,
            "thoughtsTokenCount": 5, "totalTokenCount": 125, **usage}
    response = {"usageMetadata": used, "modelVersion": "gemini-2.5-flash"}
    return orjson.dumps({"key": "k", "response": response}) + b"\n"


GEMINI_FILE = gemini() + gemini(cachedContentTokenCount=None, thoughtsTokenCount=None) + \
    orjson.dumps({"key": "e", "error": {"code": 3, "message": "bad"}}) + b"\n"


@pytest.mark.parametrize("size", [1, 13, len(GEMINI_FILE)])
def test_gemini_sums_usage_metadata_thoughts_as_output(size: int) -> None:
    tally = GeminiTally()
    for start in range(0, len(GEMINI_FILE), size):
        tally.feed(GEMINI_FILE[start:start + size])
    # input = prompt (cached included); output = candidates + thoughts; a failed request costs nothing
    assert tally.usage() == Usage(200, 40, 25 + 20, 5, "results")
    assert (tally.lines, tally.succeeded, tally.not_billed, tally.model) == (3, 2, 1, "gemini-2.5-flash")


@pytest.mark.parametrize("bad", [
    gemini(promptTokenCount=-1), gemini(cachedContentTokenCount=101), gemini(promptTokenCount="100"),
    b'{"key": "k", "response": {}}\n', b'{"key": "k"}\n', b"[]\n",
])
def test_gemini_one_unreadable_line_gives_no_figure(bad: bytes) -> None:
    tally = GeminiTally()
    tally.feed(gemini() + bad)
    assert tally.usage() == NO_USAGE
