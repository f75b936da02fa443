"""The shipped price file and the operator's [spend] prices_file as the loader reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clickhouse.spend import all_prices, override_prices, shipped_prices, source_teams
from pipeline.config import Settings, SourceConfig, SpendConfig
from pipeline.core.errors import ConfigError
from pipeline.providers import PROVIDERS
from simulator.fleet import MODELS

HEADER = "provider,model,match,valid_from,input,cached_input,output,currency,source_url\n"


def test_shipped_prices_are_sourced_and_cover_the_simulator_models() -> None:
    prices = shipped_prices()
    assert prices
    for p in prices:
        assert p.provider in PROVIDERS
        assert p.source_url.startswith("https://"), p  # every shipped figure names its public page
        assert p.currency == "USD"
        assert p.origin == "shipped"
    openai = {p.model for p in prices if p.provider == "openai"}
    for model in MODELS:
        assert any(model == m or model.startswith(m) for m in openai), model


def test_override_file_adds_rows(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(HEADER + "mistral,mistral-small,prefix,2025-01-01,0.05,,0.15,EUR,contract 7\n")
    settings = Settings(spend=SpendConfig(prices_file=str(path)))
    prices = all_prices(settings)
    assert prices[-1].origin == "override"
    assert prices[-1].model == "mistral-small"
    assert len(prices) == len(shipped_prices()) + 1


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot be read"),
    (b"\xff\xfe", "not UTF-8"),
    (HEADER.encode() + b"nosuch,m,exact,2025-01-01,1,,1,USD,u\n", "unknown provider 'nosuch'"),
    (b"x" * ((1 << 20) + 1), "over 1048576 bytes"),
])
def test_a_bad_override_file_is_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "mine.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        override_prices(str(path))
    assert str(caught.value).startswith(f"spend.prices_file {path}")


def test_source_teams_come_from_the_team_key_tag() -> None:
    sources = (SourceConfig("a", "openai", "http://x", tags={"team": "ml"}),
               SourceConfig("b", "openai", "http://x", tags={"owner": "ads"}),
               SourceConfig("c", "openai", "http://x"))
    assert source_teams(Settings(sources=sources)) == [["a", "ml"]]
    assert source_teams(Settings(sources=sources, spend=SpendConfig(team_key="owner"))) == [["b", "ads"]]


@pytest.mark.parametrize("key", ["", "x" * 65, "te\nam"])
def test_bad_team_key_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=r"spend\.team_key"):
        SpendConfig(team_key=key)
