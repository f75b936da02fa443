"""pipeline.polling.results: the results reader against the in-test Simulator and loopback apps.

Each ended Anthropic batch's results are read once, with the source's key, streamed and summed to
exactly the simulator's truth, and published as one observation that normalises to
``usage_source = results``; a file that cannot be read is counted and publishes nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from pipeline.config import SimulatorConfig, SourceConfig, load_settings
from pipeline.core.errors import ConfigError
from pipeline.core.normalise import normalise
from pipeline.core.secret import Secret
from pipeline.polling.metrics import render
from pipeline.polling.poller import SourcePoller
from pipeline.polling.results import results_url
from pipeline.polling.retry import RetryPolicy
from simulator.server import Simulator
from tests import loopback
from tests.support.clocks import FakeClock
from tests.support.sinks import CaptureSink

SPEED = 3600.0
KEY = "sk-ant-sim-key-77c1"
FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)
ENDED = {"id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
         "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
         "created_at": "2026-12-01T10:00:00.000000Z", "ended_at": "2026-12-01T11:00:00.000000Z",
         "expires_at": "2026-12-02T10:00:00.000000Z", "results_url": "https://elsewhere.example/results"}


@pytest.fixture(params=["anthropic", "gemini"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=12, speed=SPEED, seed=3, sources=1, providers=(request.param,))
    async with Simulator(config, api_key=KEY, clock=FakeClock(50.0)) as simulator:
        yield simulator


def source(url: str, provider: str = "anthropic", **more: object) -> SourceConfig:
    config = SourceConfig(name="sim-1", provider=provider, base_url=url, api_key=Secret(KEY),
                          poll_interval=0.01, max_rps=1000.0, read_results=True)
    return replace(config, **more)  # type: ignore[arg-type]


def sim_source(sim: Simulator, **more: object) -> SourceConfig:
    return source(sim.source_url("sim-1"), sim.provider("sim-1"), **more)


async def cycles(poller: SourcePoller, n: int) -> None:
    async with poller.client.session() as session:
        for _ in range(n):
            await poller.poll_once(session)


def ended_ids(sim: Simulator) -> set[str]:
    """The batches with results: every ended one (Anthropic), those with a responses file (Gemini)."""
    return {b["batch_id"] for b in sim.truth()["batches"] if b["usage"] is not None}


async def test_each_ended_batch_is_read_once_and_sums_to_the_truth(sim: Simulator) -> None:
    sim._clock.now += 48 * 3600 / SPEED  # type: ignore[attr-defined]  # every batch ended
    sink = CaptureSink()
    poller = SourcePoller(sim_source(sim), sink)
    await cycles(poller, 3)
    read = [e for e in sink.envelopes if e.results is not None]
    truth = {b["batch_id"]: b for b in sim.truth()["batches"]}
    assert sorted(e.batch_id or "" for e in read) == sorted(ended_ids(sim)) != []  # once each, every one
    for envelope in read:
        snap = normalise(envelope)
        want = truth[snap.batch_id]
        assert snap.usage_source == "results"
        assert snap.model == want["model"]
        got = {k: getattr(snap, k) for k in want["usage"]}
        assert got == want["usage"], snap.batch_id
    assert poller.metrics.results == {"read": len(read)}
    provider = sim.provider("sim-1")
    assert f'batchscope_poller_results_total{{source="sim-1",provider="{provider}",outcome="read"}}' in \
        render([poller.metrics])
    # a new poller (a restart) reads them again, once: batch_usage keeps one row per batch
    again = CaptureSink()
    await cycles(SourcePoller(sim_source(sim), again), 2)
    assert sorted(e.batch_id or "" for e in again.envelopes if e.results is not None) == \
        sorted(e.batch_id or "" for e in read)


async def test_the_reader_is_off_by_default(sim: Simulator) -> None:
    sim._clock.now += 48 * 3600 / SPEED  # type: ignore[attr-defined]
    sink = CaptureSink()
    poller = SourcePoller(sim_source(sim, read_results=False), sink)
    await cycles(poller, 2)
    assert [e for e in sink.envelopes if e.results is not None] == []
    assert poller.metrics.results == {}


async def test_a_file_over_its_line_cap_gives_no_usage(sim: Simulator) -> None:
    sim._clock.now += 48 * 3600 / SPEED  # type: ignore[attr-defined]
    sink = CaptureSink()
    poller = SourcePoller(sim_source(sim, results_max_lines=5), sink)
    await cycles(poller, 2)
    assert len(ended_ids(sim)) > 1
    assert [e for e in sink.envelopes if e.results is not None] == []
    assert poller.metrics.results["too_large"] == len(ended_ids(sim))
    assert poller.metrics.errors["results_too_large"] == len(ended_ids(sim))


def results_app(body: bytes, status: int = 200, seen: list[str] | None = None) -> dict[str, loopback.Handler]:
    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"data": [ENDED], "has_more": False, "first_id": "msgbatch_1",
                                  "last_id": "msgbatch_1"})

    async def results(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request.headers.get("x-api-key", ""))
        headers = {"Location": "https://elsewhere.example/steal"} if 300 <= status < 400 else None
        return web.Response(body=body, status=status, headers=headers)

    return {"/v1/messages/batches": listing, "/v1/messages/batches/msgbatch_1/results": results}


LINE = (b'{"custom_id":"a","result":{"type":"succeeded","message":{"model":"claude-haiku-4-5",'
        b'"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}}}}\n')


@pytest.mark.parametrize(("body", "status", "outcome", "tries"), [
    (b"<html>upstream error</html>", 200, "unreadable", 3),  # tried in three cycles, then counted
    (LINE + b'{"custom_id":"b","result":{"type":"succeeded","message":{"usage":{"input_tokens":-1}}}}\n',
     200, "unreadable", 3),  # one bad line: no partial sum
    (b'{"type":"error","error":{"type":"not_found_error","message":"gone"}}', 404, "gone", 1),
    (b'{"type":"error","error":{"type":"authentication_error","message":"key sk-ant-sim-key-77c1"}}', 401,
     "failed", 1),
    (b"", 302, "failed", 1),  # a redirect is not followed
    (b'{"type":"error","error":{"type":"api_error","message":"echo sk-ant-sim-key-77c1"}}', 500, "failed", 3),
])
async def test_a_file_that_cannot_be_read_is_counted_and_publishes_nothing(
        body: bytes, status: int, outcome: str, tries: int, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    caplog.set_level(logging.INFO)
    async with loopback.serving(results_app(body, status, seen)) as url:
        sink = CaptureSink()
        poller = SourcePoller(source(f"{url}/v1"), sink, FAST)
        await cycles(poller, 5)
    assert [e for e in sink.envelopes if e.results is not None] == []
    assert poller.metrics.results == {outcome: 1}
    assert len(seen) == tries * (FAST.max_attempts if status == 500 else 1)
    assert set(seen) == {KEY}  # the source's own host, never the object's results_url
    assert f"give no usage ({outcome})" in caplog.text
    assert KEY not in caplog.text  # an error body echoing the key is masked


async def test_the_results_url_of_the_object_is_not_followed() -> None:
    seen: list[str] = []
    async with loopback.serving(results_app(LINE, 200, seen)) as url:
        sink = CaptureSink()
        poller = SourcePoller(source(f"{url}/v1"), sink, FAST)
        await cycles(poller, 2)
    (read,) = [e for e in sink.envelopes if e.results is not None]
    assert read.results == {"input_tokens": 15, "cached_input_tokens": 5, "output_tokens": 3,
                            "reasoning_tokens": 0, "model": "claude-haiku-4-5"}
    assert seen == [KEY]


def test_read_results_is_refused_for_a_provider_without_a_reader(tmp_path: Path) -> None:
    config = tmp_path / "b.toml"
    config.write_text('[[sources]]\nname = "o"\nprovider = "openai"\nread_results = true\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sources\[0\]\.read_results: the results reader reads anthropic"):
        load_settings(config)



def test_where_the_results_are() -> None:
    claude = source("https://api.anthropic.com/v1")
    assert results_url(claude, "msgbatch_1/x", {"results_url": "https://evil.example/r"}) == \
        "https://api.anthropic.com/v1/messages/batches/msgbatch_1%2Fx/results"
    assert results_url(claude, "msgbatch_1", {"results_url": None}) is None
    google = source("https://generativelanguage.googleapis.com/v1beta", "gemini")
    op = {"name": "batches/b1", "metadata": {"state": "BATCH_STATE_SUCCEEDED",
                                             "output": {"responsesFile": "files/out-1"}}}
    assert results_url(google, "batches/b1", op) == \
        "https://generativelanguage.googleapis.com/download/v1beta/files/out-1:download?alt=media"
    for bad in ("https://evil.example/f", "files/../../x", "files/a?b", ""):
        op["metadata"]["output"] = {"responsesFile": bad}  # type: ignore[index]
        assert results_url(google, "batches/b1", op) is None, bad
