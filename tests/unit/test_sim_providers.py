"""The simulator speaks every provider's API, checked through that provider's own adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from pipeline.config import SimulatorConfig
from pipeline.core.errors import InvalidRecord
from pipeline.core.models import TERMINAL
from pipeline.core.secret import Secret
from pipeline.polling import sigv4
from pipeline.providers import PROVIDERS, adapter
from pipeline.providers.paging import Params
from simulator.fleet import CREATION_SPAN, WINDOW, build_fleet
from simulator.server import SimSource, Simulator, simulator_secret
from simulator.wire import project, projected_timeline
from tests.support.clocks import SimClock

EPOCH = 1_700_000_000.0
SPEED = 3600.0
OBSERVED = "2026-11-29T12:00:00.000Z"
KEY = "sim-provider-key-77c1"



@pytest.fixture
def clock() -> SimClock:
    return SimClock(SPEED)


@pytest.fixture
async def sim(clock: SimClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(port=0, batches=40, sources=len(PROVIDERS), providers=PROVIDERS, speed=SPEED,
                             seed=3, vanish_share=0.5, vanish_after=600.0)
    async with Simulator(config, clock=clock, wall=lambda: EPOCH) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def name_of(sim: Simulator, provider: str) -> str:
    return next(n for n, s in sim.sources.items() if s.provider == provider)


async def fetch(http: aiohttp.ClientSession, url: str, params: Params | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, params=params, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def list_all(http: aiohttp.ClientSession, sim: Simulator, name: str,
                   limit: int) -> list[dict[str, Any]]:
    """Every page, as the adapter pages (its query parameters and its stop rule)."""
    a = adapter(sim.provider(name))
    params: Params | None = a.list_params(limit)
    out: list[dict[str, Any]] = []
    while params is not None:
        status, body = await fetch(http, sim.source_url(name) + a.list_path, params)
        assert status == 200, body
        out += a.items(body)
        params = a.next_params(params, body)
    return out


# --- rendering, without a server ---------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_rendered_object_normalises_to_the_projected_status(provider: str) -> None:
    """Along every lifecycle, the provider's normaliser reads back the truth's canonical status."""
    source = SimSource("acct-1", build_fleet(9, 120, "acct-1"), provider)
    a = adapter(provider)
    finals = set()
    for batch in source.fleet:
        truth = dict(projected_timeline(provider, batch))
        probes = [at for _, at in batch.timeline] + [batch.timeline[-1][1] + 60]
        for t in probes:
            obj = source.render(batch, t, EPOCH)
            snap = a.normalise(obj, "acct-1", OBSERVED)
            expected = project(provider, batch, batch.status_at(t) or "validating")
            assert snap.status == expected, (batch.timeline, t, obj)
            assert snap.batch_id == a.batch_id(obj) == source.snapshot_id(batch)
            assert expected in truth
        finals.add(snap.status)
        assert snap.status == projected_timeline(provider, batch)[-1][0]
        assert snap.created_at is not None
    assert finals == set(TERMINAL)  # every outcome is reachable for every provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_objects_keep_their_id_and_are_rejected(provider: str) -> None:
    fleet = build_fleet(9, 3, "acct-1")
    source = SimSource("acct-1", fleet, provider, malformed=frozenset({1}))
    obj = source.serve(fleet[1], WINDOW, EPOCH)
    assert obj == source.serve(fleet[1], 2 * WINDOW, EPOCH)  # the same bytes every time
    with pytest.raises(InvalidRecord):
        adapter(provider).normalise(obj, "acct-1", OBSERVED)
    assert adapter(provider).batch_id(obj) == source.snapshot_id(fleet[1])
    assert source.served == {}  # a rejected object serves no status


def test_providers_are_assigned_round_robin() -> None:
    sim = Simulator(SimulatorConfig(sources=5, providers=("gemini", "bedrock")))
    assert [s.provider for s in sim.sources.values()] == ["gemini", "bedrock", "gemini", "bedrock", "gemini"]


# --- the server, through each adapter --------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_list_every_page_then_get_one(sim: Simulator, clock: SimClock, http: aiohttp.ClientSession,
                                            provider: str) -> None:
    clock.advance_sim(CREATION_SPAN)  # the whole fleet exists; some batches have vanished
    name = name_of(sim, provider)
    source, a = sim.sources[name], adapter(provider)
    listed = await list_all(http, sim, name, limit=7)
    ids = [a.batch_id(o) for o in listed]
    visible = source.visible(sim.now())
    assert 10 <= len(visible) < 40
    if provider not in ("groq", "together"):  # one-page providers ignore the limit
        assert len(await list_all(http, sim, name, limit=100)) == len(visible)
    assert ids == [source.snapshot_id(b) for b in visible]  # each exactly once, newest first
    batch = visible[5]
    status, one = await fetch(http, sim.source_url(name) + a.batch_path(source.snapshot_id(visible[5])),
                              dict(a.fixed_params))
    assert status == 200, one
    assert one == listed[5] == source.render(batch, sim.now(), sim.epoch)
    truth = {b["batch_id"]: b for b in sim.truth()["batches"] if b["source"] == name}
    gone = {source.snapshot_id(b) for b in source.fleet if source.vanish.get(b.index, 1e12) <= sim.now()}
    assert gone
    assert set(truth) == set(ids) | gone
    snap = a.normalise(one, name, OBSERVED)
    assert truth[snap.batch_id]["served"][-1] == snap.status
    assert truth[snap.batch_id]["provider"] == provider


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_vanished_batch_is_404_and_leaves_the_list(
    sim: Simulator, clock: SimClock, http: aiohttp.ClientSession, provider: str,
) -> None:
    name = name_of(sim, provider)
    source, a = sim.sources[name], adapter(provider)
    gone = next(b for b in source.newest_first if sim.now() < source.vanish.get(b.index, -1))
    clock.advance_sim(max(0.0, gone.created - sim.now()) + 1)
    path = sim.source_url(name) + a.batch_path(source.snapshot_id(gone))
    assert (await fetch(http, path, dict(a.fixed_params)))[0] == 200
    clock.advance_sim(source.vanish[gone.index] - sim.now() + 1)
    status, body = await fetch(http, path, dict(a.fixed_params))
    assert status == 404
    assert a.read_error(status, orjson_bytes(body)).retriable is False
    assert source.snapshot_id(gone) not in {a.batch_id(o) for o in await list_all(http, sim, name, 50)}
    entry = next(b for b in sim.truth()["batches"] if b["source"] == name and b["batch_id"] == a.batch_id(
        source.render(gone, 0, EPOCH)))
    assert entry["vanishes_at"] == int(EPOCH + source.vanish[gone.index])


def orjson_bytes(body: Any) -> bytes:
    import orjson

    return orjson.dumps(body)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_auth_is_checked_per_provider(clock: SimClock, http: aiohttp.ClientSession,
                                            provider: str) -> None:
    config = SimulatorConfig(port=0, batches=3, sources=1, providers=(provider,), speed=SPEED)
    async with Simulator(config, api_key=KEY, clock=clock, wall=lambda: EPOCH) as guarded:
        a = adapter(provider)
        url = guarded.source_url("sim-1") + a.list_path
        params = a.list_params(10)
        status, body = await fetch(http, url, params)
        assert status in (401, 403)
        assert a.read_error(status, orjson_bytes(body)).retriable is False
        assert KEY not in str(body)
        secret = Secret(simulator_secret(provider, KEY))
        if a.signing == "sigv4":
            full = str(URL(url).with_query(params))
            headers = sigv4.sign(sigv4.credentials(secret), "GET", full, region="us-east-1",
                                 now=datetime.now(UTC))
            status, _ = await fetch(http, full, headers=headers)
            assert status == 200
            wrong = sigv4.credentials(Secret(simulator_secret(provider, "other")))
            headers = sigv4.sign(wrong, "GET", full, region="us-east-1", now=datetime.now(UTC))
            assert (await fetch(http, full, headers=headers))[0] == 403
        else:
            assert (await fetch(http, url, params, a.auth(secret)))[0] == 200
            assert (await fetch(http, url, params, a.auth(Secret("wrong"))))[0] == 401


async def test_list_parameters_are_checked(sim: Simulator, http: aiohttp.ClientSession) -> None:
    cases = [("anthropic", {"limit": "1001"}, "invalid_limit"), ("mistral", {"page_size": "x"}, None),
             ("gemini", {"pageToken": "!!"}, None), ("bedrock", {"maxResults": "0"}, None),
             ("azure_openai", {}, None)]
    for provider, params, code in cases:
        a = adapter(provider)
        query = params if provider != "azure_openai" else {}
        status, body = await fetch(http, sim.source_url(name_of(sim, provider)) + a.list_path, query)
        assert status == 400, (provider, body)
        if code:
            assert a.read_error(status, orjson_bytes(body)).message


async def test_anthropic_before_id_pages_backwards(sim: Simulator, clock: SimClock,
                                                   http: aiohttp.ClientSession) -> None:
    clock.advance_sim(CREATION_SPAN)
    name = name_of(sim, "anthropic")
    ids = [o["id"] for o in await list_all(http, sim, name, 100)]
    url = sim.source_url(name) + "/messages/batches"
    _, page = await fetch(http, url, {"limit": "5", "before_id": ids[12]})
    assert [o["id"] for o in page["data"]] == ids[7:12]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[7], ids[11], True)
