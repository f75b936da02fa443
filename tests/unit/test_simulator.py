"""simulator.server: the deterministic fleet and the OpenAI-compatible aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.config import SIM_PROVIDERS, SimulatorConfig
from pipeline.core.errors import ConfigError
from pipeline.core.models import STATUSES, TERMINAL, Envelope
from pipeline.core.normalise import normalise
from pipeline.core.transitions import RANK
from simulator import wire as simwire
from simulator.fleet import CREATION_SPAN, WINDOW, SimBatch, build_fleet
from simulator.server import SimSource, Simulator, openai_object
from tests.support.clocks import SimClock

EPOCH = 1_700_000_000.0
SPEED = 3600.0  # one fake clock second is one simulated hour



@pytest.fixture
def clock() -> SimClock:
    return SimClock(SPEED)


@pytest.fixture
async def sim(clock: SimClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=30, speed=SPEED, seed=11, sources=2, providers=("openai",))
    async with Simulator(config, clock=clock, wall=lambda: EPOCH) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200, **kw: Any) -> Any:
    async with http.get(url, **kw) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def list_all(http: aiohttp.ClientSession, base: str, limit: int = 7) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": str(limit)} | ({"after": after} if after else {})
        page = await get_json(http, f"{base}/batches", params=params)
        assert page["object"] == "list"
        data = page["data"]
        assert len(data) <= limit
        if data:
            assert page["first_id"] == data[0]["id"]
            assert page["last_id"] == data[-1]["id"]
        else:
            assert page["first_id"] is None
            assert page["last_id"] is None
        out += data
        if not page["has_more"]:
            return out
        assert len(data) == limit
        after = page["last_id"]


# --- the fleet --------------------------------------------------------------------------------


def test_fleet_is_deterministic_per_seed_and_source() -> None:
    a = build_fleet(42, 50, "sim-1")
    assert a == build_fleet(42, 50, "sim-1")
    assert a != build_fleet(43, 50, "sim-1")
    assert a != build_fleet(42, 50, "sim-2")
    assert [b.timeline for b in a] != [b.timeline for b in build_fleet(42, 50, "sim-2")]


def test_history_batches_are_old_and_terminal_and_the_rest_unchanged() -> None:
    plain = build_fleet(42, 200, "sim-1")
    span = 1800.0
    fleet = build_fleet(42, 200, "sim-1", history=150, span=span)
    old, new = fleet[:150], fleet[150:]
    assert all(b.timeline[-1][1] < -span / 2 for b in old)  # terminal before the span starts
    assert [b.created for b in old] == sorted(b.created for b in old)  # oldest first
    assert all(-span / 2 <= b.created <= span / 2 for b in new)
    # the same lives as without history, only created elsewhere
    assert [b.timeline[-1][0] for b in fleet] == [b.timeline[-1][0] for b in plain]
    assert build_fleet(42, 200, "sim-1", history=0) == plain


def test_history_knobs_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"simulator\.creation_span"):
        SimulatorConfig(creation_span=0.0)
    with pytest.raises(ConfigError, match=r"simulator\.history"):
        SimulatorConfig(history=-1)


def test_fleet_ids_are_unique_and_indexed() -> None:
    fleet = build_fleet(1, 100, "s")
    assert [b.index for b in fleet] == list(range(100))
    assert len({b.id for b in fleet}) == 100
    assert fleet[3].id == "batch_s_000003"


@pytest.mark.parametrize("seed", [0, 1, 42, 1234])
def test_every_timeline_is_a_valid_path(seed: int) -> None:
    for batch in build_fleet(seed, 200, "sim-1"):
        statuses = [s for s, _ in batch.timeline]
        times = [t for _, t in batch.timeline]
        assert statuses[0] == "validating"
        assert statuses[-1] in TERMINAL
        assert batch.final_status == statuses[-1]
        assert all(s in STATUSES for s in statuses)
        assert not any(s in TERMINAL for s in statuses[:-1])
        assert times == sorted(times)
        assert times[0] == batch.created
        assert [RANK[s] for s in statuses] == sorted({RANK[s] for s in statuses})  # strictly rising
        assert -CREATION_SPAN / 2 <= batch.created <= CREATION_SPAN / 2
        assert times[-1] <= batch.created + WINDOW
        assert 0 <= batch.failed <= batch.total
        assert (batch.error_code is not None) == (batch.final_status == "failed")


def test_fleet_covers_every_outcome() -> None:
    finals = {b.final_status for b in build_fleet(42, 400, "sim-1")}
    assert finals == {"completed", "failed", "expired", "cancelled"}


def test_status_at() -> None:
    batch = build_fleet(42, 1, "x")[0]
    assert batch.status_at(batch.created - 1) is None
    for status, at in batch.timeline:
        assert batch.status_at(at) == status
    assert batch.status_at(batch.created + 10 * WINDOW) == batch.final_status


def first_with(final: str) -> SimBatch:
    return next(b for b in build_fleet(42, 400, "sim-1") if b.final_status == final)


@pytest.mark.parametrize("final", ["completed", "failed", "expired", "cancelled"])
def test_openai_object_along_the_timeline(final: str) -> None:
    batch = first_with(final)
    probes = [batch.created - 60, *(at for _, at in batch.timeline), batch.timeline[-1][1] + 3600]
    previous_rank = 0
    for t in probes:
        obj = openai_object(batch, t, EPOCH)
        status = batch.status_at(t) or "validating"
        assert obj["id"] == batch.id
        assert obj["object"] == "batch"
        assert obj["status"] == status
        assert obj["model"] == batch.model
        assert obj["endpoint"] == batch.endpoint
        assert obj["completion_window"] == "24h"
        assert obj["created_at"] == int(EPOCH + batch.created)
        assert obj["expires_at"] == int(EPOCH + batch.created + WINDOW)
        for s, at in batch.timeline[1:]:
            field = {"in_progress": "in_progress_at", "finalizing": "finalizing_at",
                     "completed": "completed_at", "failed": "failed_at", "expired": "expired_at",
                     "cancelling": "cancelling_at", "cancelled": "cancelled_at"}[s]
            assert obj[field] == (int(EPOCH + at) if at <= t else None)
        counts = obj["request_counts"]
        assert counts["completed"] >= 0
        assert counts["failed"] >= 0
        if status == "validating":
            assert counts == {"total": 0, "completed": 0, "failed": 0}
        else:
            assert counts["total"] == batch.total
            assert counts["completed"] + counts["failed"] <= batch.total
        assert (obj["errors"] is not None) == (status == "failed")
        if status not in TERMINAL:
            assert obj["output_file_id"] is None
            assert obj["error_file_id"] is None
        assert RANK[status] >= previous_rank
        previous_rank = RANK[status]
        normalise(Envelope("sim-1", "openai", "2024-01-01T00:00:00Z", obj))  # always canonicalisable
    assert obj["status"] == final


def test_openai_object_final_counts() -> None:
    batch = first_with("completed")
    obj = openai_object(batch, batch.timeline[-1][1], EPOCH)
    counts = obj["request_counts"]
    assert counts["completed"] + counts["failed"] == batch.total
    assert counts["failed"] == batch.failed
    assert (obj["output_file_id"] is not None) == (counts["completed"] > 0)
    assert (obj["error_file_id"] is not None) == (counts["failed"] > 0)
    failed = first_with("failed")
    errors = openai_object(failed, failed.timeline[-1][1], EPOCH)["errors"]
    assert errors["object"] == "list"
    assert errors["data"][0]["code"] == failed.error_code
    assert errors["data"][0]["line"] == 1


# --- the server -------------------------------------------------------------------------------


async def test_simulator_basics(sim: Simulator, clock: SimClock) -> None:
    assert sim.port != 0
    assert list(sim.sources) == ["sim-1", "sim-2"]
    assert sim.source_url("sim-1") == f"http://127.0.0.1:{sim.port}/sim-1/v1"
    assert sim.epoch == EPOCH
    assert sim.now() == 0.0
    clock.advance_sim(90)
    assert sim.now() == pytest.approx(90.0)


async def test_paging_returns_every_visible_batch_newest_first(
    sim: Simulator, http: aiohttp.ClientSession,
) -> None:
    source = sim.sources["sim-1"]
    visible = source.visible(sim.now())
    assert 0 < len(visible) < 30  # half the fleet is created before the start
    listed = await list_all(http, sim.source_url("sim-1"), limit=7)
    ids = [b["id"] for b in listed]
    assert len(ids) == len(set(ids))
    assert ids == [b.id for b in visible]
    created = [(source.by_id[i].created, i) for i in ids]
    assert created == sorted(created, reverse=True)
    t = sim.now()
    assert listed == [openai_object(b, t, sim.epoch) for b in visible]


async def test_paging_sees_more_batches_as_time_passes(
    sim: Simulator, clock: SimClock, http: aiohttp.ClientSession,
) -> None:
    clock.advance_sim(CREATION_SPAN)  # every batch has been created
    listed = await list_all(http, sim.source_url("sim-2"), limit=7)
    assert sorted(b["id"] for b in listed) == sorted(b.id for b in sim.sources["sim-2"].fleet)
    assert len(await list_all(http, sim.source_url("sim-2"), limit=100)) == 30


async def test_exact_page_boundary(sim: Simulator, clock: SimClock, http: aiohttp.ClientSession) -> None:
    clock.advance_sim(CREATION_SPAN)
    base = sim.source_url("sim-1")
    page = await get_json(http, f"{base}/batches", params={"limit": "30"})
    assert len(page["data"]) == 30
    assert page["has_more"] is False
    page = await get_json(http, f"{base}/batches", params={"limit": "15"})
    assert page["has_more"] is True
    last = await get_json(http, f"{base}/batches", params={"limit": "15", "after": page["last_id"]})
    assert len(last["data"]) == 15
    assert last["has_more"] is False


async def test_default_limit_is_20(sim: Simulator, clock: SimClock, http: aiohttp.ClientSession) -> None:
    clock.advance_sim(CREATION_SPAN)
    page = await get_json(http, f"{sim.source_url('sim-1')}/batches")
    assert len(page["data"]) == 20
    assert page["has_more"] is True


async def test_get_one_batch(sim: Simulator, http: aiohttp.ClientSession) -> None:
    batch = sim.sources["sim-1"].visible(sim.now())[0]
    obj = await get_json(http, f"{sim.source_url('sim-1')}/batches/{batch.id}")
    assert obj == openai_object(batch, sim.now(), sim.epoch)


async def test_unknown_and_future_batches_are_404(sim: Simulator, http: aiohttp.ClientSession) -> None:
    base = sim.source_url("sim-1")
    body = await get_json(http, f"{base}/batches/batch_nope", status=404)
    assert "batch_nope" in body["error"]["message"]
    future = next(b for b in sim.sources["sim-1"].fleet if b.created > sim.now())
    await get_json(http, f"{base}/batches/{future.id}", status=404)


async def test_unknown_source_is_404(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.source_url("sim-9") + "/batches") as resp:
        assert resp.status == 404


@pytest.mark.parametrize("limit", ["0", "101", "-5", "ten", ""])
async def test_bad_limit_is_400(sim: Simulator, http: aiohttp.ClientSession, limit: str) -> None:
    body = await get_json(http, f"{sim.source_url('sim-1')}/batches", status=400, params={"limit": limit})
    assert body["error"]["code"] == "invalid_limit"
    assert body["error"]["type"] == "invalid_request_error"


async def test_unknown_after_is_400(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = await get_json(http, f"{sim.source_url('sim-1')}/batches", status=400,
                          params={"after": "batch_missing"})
    assert body["error"]["code"] == "invalid_after"


async def test_api_key_is_enforced(clock: SimClock, http: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(port=0, batches=5, speed=SPEED, sources=2, providers=("openai",))
    async with Simulator(config, api_key="sk-sim-right", clock=clock, wall=lambda: EPOCH) as guarded:
        url = f"{guarded.source_url('sim-1')}/batches"
        for headers in ({}, {"Authorization": "Bearer sk-sim-wrong"}, {"Authorization": "sk-sim-right"}):
            body = await get_json(http, url, status=401, headers=headers)
            assert body["error"]["code"] == "invalid_api_key"
            assert "sk-sim-right" not in str(body)
        ok = await get_json(http, url, headers={"Authorization": "Bearer sk-sim-right"})
        assert ok["object"] == "list"
        truth = await get_json(http, f"http://127.0.0.1:{guarded.port}/_sim/truth")  # never guarded
        assert len(truth["batches"]) == 10


async def test_truth_shape(sim: Simulator, http: aiohttp.ClientSession) -> None:
    truth = await get_json(http, f"http://127.0.0.1:{sim.port}/_sim/truth")
    assert set(truth) == {"now", "all_terminal", "batches", "faults", "sources", "malformed", "hostile",
                          "webhooks"}
    assert truth["webhooks"] is None  # none sent without webhook_url and a secret
    assert truth["hostile"] == {"objects": 0, "bodies": 0, "kinds": {}, "left": 0}
    assert truth["malformed"] == []
    assert truth["sources"] == [{"name": n, "provider": "openai", "base_url": sim.source_url(n)}
                                for n in ("sim-1", "sim-2")]
    assert truth["faults"] == {"injected": {}, "early_requests": {}}
    assert truth["now"] == int(EPOCH)
    assert truth["all_terminal"] is False
    assert len(truth["batches"]) == 60
    fleet = {(name, b.id): b for name, source in sim.sources.items() for b in source.fleet}
    for entry in truth["batches"]:
        assert set(entry) == {"source", "provider", "batch_id", "final_status", "status", "created_at",
                              "transitions", "served", "malformed", "vanishes_at", "model", "team", "usage"}
        assert (entry["provider"], entry["malformed"], entry["vanishes_at"]) == ("openai", False, None)
        batch = fleet[(entry["source"], entry["batch_id"])]
        assert entry["final_status"] == batch.final_status
        assert entry["status"] == batch.status_at(0.0)
        assert entry["created_at"] == int(EPOCH + batch.created)
        assert entry["transitions"] == [{"status": s, "at": int(EPOCH + at)} for s, at in batch.timeline]
        assert entry["served"] == []


async def test_truth_all_terminal_at_the_end(sim: Simulator, clock: SimClock) -> None:
    clock.advance_sim(CREATION_SPAN + WINDOW)
    truth = sim.truth()
    assert truth["all_terminal"] is True
    assert all(b["status"] == b["final_status"] for b in truth["batches"])


async def test_served_records_each_status_change_once(
    sim: Simulator, clock: SimClock, http: aiohttp.ClientSession,
) -> None:
    base = sim.source_url("sim-1")
    first = {b["id"]: b["status"] for b in await list_all(http, base)}
    await list_all(http, base)  # a repeat adds nothing
    served = {b["batch_id"]: b["served"] for b in sim.truth()["batches"] if b["source"] == "sim-1"}
    assert {i: s for i, s in served.items() if s} == {i: [status] for i, status in first.items()}
    clock.advance_sim(CREATION_SPAN + WINDOW)
    second = {b["id"]: b["status"] for b in await list_all(http, base)}
    assert all(s in TERMINAL for s in second.values())
    truth = {b["batch_id"]: b for b in sim.truth()["batches"] if b["source"] == "sim-1"}
    for batch_id, status in second.items():
        expected = [first[batch_id], status] if batch_id in first and first[batch_id] != status else [status]
        assert truth[batch_id]["served"] == expected
    other = [b for b in sim.truth()["batches"] if b["source"] == "sim-2"]
    assert all(b["served"] == [] for b in other)


async def test_hostile_payloads_are_served_in_pages_and_as_whole_bodies(
        clock: SimClock, http: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(port=0, batches=30, speed=SPEED, seed=11, sources=1, providers=("openai",),
                             hostile=40)
    async with Simulator(config, clock=clock, wall=lambda: EPOCH) as sim:
        url = f"{sim.source_url('sim-1')}/batches?limit=5"
        pages, bodies = 0, 0
        for _ in range(400):
            async with http.get(url) as resp:
                assert resp.status == 200
                raw = await resp.read()
            try:
                page = orjson.loads(raw)
                found = isinstance(page, dict) and isinstance(page.get("data"), list)
            except orjson.JSONDecodeError:
                found = False
            if not found:
                bodies += 1
                continue
            pages += 1
            assert page["last_id"] == page["data"][-1]["id"]  # the cursor stays a batch's
            assert page["last_id"].startswith("batch_sim-1_")
        truth = sim.truth()["hostile"]
    assert truth["left"] == 0
    assert truth["objects"] + truth["bodies"] == 40
    assert truth["bodies"] == bodies > 0
    assert truth["objects"] > 0
    assert pages == 400 - bodies


@pytest.mark.parametrize("provider", SIM_PROVIDERS)
def test_a_terminal_batch_renders_the_same_object_at_any_later_time(provider: str) -> None:
    """What lets a simulated source render a terminal batch once and serve that object after."""
    fleet = build_fleet(5, 40, "sim-1")
    source = SimSource("sim-1", fleet, provider)
    for batch in fleet:
        end = batch.timeline[-1][1]
        if batch.status_at(end) not in TERMINAL:
            continue
        first = source.render(batch, end, 1_700_000_000.0)
        later = simwire.render(provider, batch, end + 86_400.0, 1_700_000_000.0, source.wire_ids[batch.id])
        assert later == first
        assert source.render(batch, end + 86_400.0, 1_700_000_000.0) is first


def test_openai_family_usage_grows_with_completed_requests_and_matches_the_truth() -> None:
    from simulator import usage as simusage
    from simulator.fleet import build_fleet
    from simulator.wire import render

    fleet = build_fleet(11, 40, "s")
    for batch in fleet:
        final = simusage.truth("openai", batch)
        assert (final["model"], final["team"]) == (batch.model, simusage.TEAMS[batch.index % 3])
        obj = render("openai", batch, 10 * 86_400.0, 1_764_000_000.0, batch.id)
        usage = obj["usage"]
        assert final["usage"] == {"input_tokens": usage["input_tokens"],
                                  "cached_input_tokens": usage["input_tokens_details"]["cached_tokens"],
                                  "output_tokens": usage["output_tokens"],
                                  "reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"]}
        completed = obj["request_counts"]["completed"]
        assert usage["input_tokens"] == simusage.per_request(batch)[0] * completed
        assert simusage.truth("anthropic", batch)["usage"] is None
    assert any(simusage.truth("openai", b)["usage"]["input_tokens"] > 0 for b in fleet)


def test_vanish_active_sends_the_same_batches_away_midway_instead() -> None:
    def source(active: float) -> SimSource:
        config = SimulatorConfig(batches=200, seed=9, sources=1, vanish_share=0.3, vanish_after=600.0,
                                 vanish_active=active)
        return Simulator(config).sources["sim-1"]

    after, midway, mixed = source(0.0), source(1.0), source(0.5)
    assert set(after.vanish) == set(midway.vanish) == set(mixed.vanish) != set()  # the same batches
    for b in after.fleet:
        if b.index in after.vanish:
            end = b.timeline[-1][1]
            assert after.vanish[b.index] == end + 600.0
            assert b.created < midway.vanish[b.index] < end
            assert b.status_at(midway.vanish[b.index]) not in TERMINAL  # still active when it goes
    early = sum(mixed.vanish[i] < after.vanish[i] for i in after.vanish)
    assert 0 < early < len(after.vanish)
