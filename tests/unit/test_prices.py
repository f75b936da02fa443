"""The price table: parsing, selection by valid_from and model prefix, override precedence, and
exact Decimal cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, localcontext

import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.prices import Price, cost, parse_prices, select
from pipeline.core.usage import NO_USAGE, Usage

HEADER = "provider,model,match,valid_from,input,cached_input,output,currency,source_url\n"
SHIPPED = HEADER + """\
# a comment line
openai,gpt-4.1,prefix,2025-01-01,1,0.25,4,USD,https://example.test/pricing
openai,gpt-4.1-mini,prefix,2025-01-01,0.2,,0.8,USD,https://example.test/pricing
openai,gpt-4.1-mini-2025-04-14,exact,2025-01-01,0.21,,0.81,USD,https://example.test/pricing
openai,gpt-4.1,prefix,2026-06-01,0.9,0.2,3.6,USD,https://example.test/pricing
anthropic,claude-sonnet-4-5,prefix,2025-01-01,1.5,0.15,7.5,USD,https://example.test/claude
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def chosen(prices: list[Price], provider: str, model: str | None, when: str) -> tuple[Decimal, str] | None:
    found = select(prices, provider, model, at(when))
    return None if found is None else (found.input, found.origin)


def test_parse_reads_every_column_as_decimal() -> None:
    prices = parse_prices(SHIPPED, "shipped", "test")
    assert len(prices) == 5
    first = prices[0]
    assert first == Price("openai", "gpt-4.1", "prefix", at("2025-01-01"), Decimal(1), Decimal("0.25"),
                          Decimal(4), "USD", "https://example.test/pricing", "shipped")
    assert prices[1].cached_input is None
    assert all(isinstance(p.input, Decimal) and isinstance(p.output, Decimal) for p in prices)


def test_selection_by_valid_from() -> None:
    prices = parse_prices(SHIPPED, "shipped", "test")
    assert chosen(prices, "openai", "gpt-4.1", "2024-12-31") is None  # before any row: unpriced
    assert chosen(prices, "openai", "gpt-4.1", "2025-03-01") == (Decimal(1), "shipped")
    assert chosen(prices, "openai", "gpt-4.1", "2026-05-31T23:59:59") == (Decimal(1), "shipped")
    assert chosen(prices, "openai", "gpt-4.1", "2026-06-01") == (Decimal("0.9"), "shipped")


def test_selection_by_model_prefix_longest_and_exact_win() -> None:
    prices = parse_prices(SHIPPED, "shipped", "test")
    assert chosen(prices, "openai", "gpt-4.1-2025-04-14", "2025-03-01") == (Decimal(1), "shipped")
    assert chosen(prices, "openai", "gpt-4.1-mini", "2025-03-01") == (Decimal("0.2"), "shipped")
    assert chosen(prices, "openai", "gpt-4.1-mini-2025-04-14", "2025-03-01") == (Decimal("0.21"), "shipped")
    # the exact row beats a longer-valid prefix row: a later gpt-4.1 price does not reach it
    assert chosen(prices, "openai", "gpt-4.1-mini-2025-04-14", "2026-07-01") == (Decimal("0.21"), "shipped")


def test_unknown_model_provider_or_missing_model_is_unpriced() -> None:
    prices = parse_prices(SHIPPED, "shipped", "test")
    assert chosen(prices, "openai", "o4-mini", "2026-01-01") is None
    assert chosen(prices, "azure_openai", "gpt-4.1", "2026-01-01") is None  # prices are per provider
    assert chosen(prices, "openai", None, "2026-01-01") is None
    assert chosen(prices, "openai", "gpt-4", "2026-01-01") is None  # a prefix of the row is no match


def test_override_precedence() -> None:
    shipped = parse_prices(SHIPPED, "shipped", "test")
    override = parse_prices(HEADER + "openai,gpt-4,prefix,2025-06-01,0.5,,2,USD,contract 42\n"
                            "anthropic,claude-sonnet-4-5,prefix,2025-01-01,1.2,0.1,6,EUR,negotiated\n",
                            "override", "mine")
    prices = [*shipped, *override]
    # an override beats every shipped row it matches, even a more specific or later one
    assert chosen(prices, "openai", "gpt-4.1-mini-2025-04-14", "2026-07-01") == (Decimal("0.5"), "override")
    assert chosen(prices, "openai", "gpt-4.1", "2026-07-01") == (Decimal("0.5"), "override")
    # ... but only from its own valid_from: before it the shipped price stands
    assert chosen(prices, "openai", "gpt-4.1", "2025-03-01") == (Decimal(1), "shipped")
    # the same key in both files: the override row, with its own currency
    found = select(prices, "anthropic", "claude-sonnet-4-5-20250929", at("2025-03-01"))
    assert found is not None
    assert (found.input, found.currency, found.origin) == (Decimal("1.2"), "EUR", "override")


def test_cost_is_exact_decimal() -> None:
    price = parse_prices(SHIPPED, "shipped", "test")[0]  # 1 / 0.25 / 4 per million
    usage = Usage(input_tokens=1_000_003, cached_input_tokens=3, output_tokens=7, reasoning_tokens=5,
                  usage_source="object")
    # (1_000_000 x 1 + 3 x 0.25 + 7 x 4) / 1e6
    assert cost(price, usage) == Decimal("1.00002875")
    assert cost(price, NO_USAGE) is None


def test_cost_without_a_cached_price_uses_the_input_price() -> None:
    price = parse_prices(SHIPPED, "shipped", "test")[1]  # 0.2, no cached price, 0.8
    usage = Usage(100, 40, 10, 0, "object")
    assert cost(price, usage) == (Decimal(100) * Decimal("0.2") + Decimal(10) * Decimal("0.8")) / 1_000_000


def test_cost_of_huge_counts_stays_exact() -> None:
    row = "openai,m,exact,2025-01-01,0.123456789,,999999999,USD,u\n"
    price = parse_prices(HEADER + row, "shipped", "t")[0]
    usage = Usage(2**63 - 1, 0, 2**63 - 1, 0, "object")
    with localcontext() as ctx:
        ctx.prec = 80
        most = Decimal(2**63 - 1)
        expected = (most * Decimal("0.123456789") + most * Decimal(999999999)) / 10**6
    assert cost(price, usage) == expected
    assert expected == Decimal("9223372028770091665567.704473447103723")
    assert str(cost(price, usage)).count("E") == 0


@pytest.mark.parametrize(("body", "message"), [
    ("provider,model\nopenai,x\n", "line 1: the header must be"),
    ("openai,gpt,exact,2025-01-01,1,,4,USD\n", "expected 9 columns"),
    ("openai,gpt,fuzzy,2025-01-01,1,,4,USD,u\n", "match must be exact or prefix"),
    ("openai,gpt,exact,2025-01-01,1,,4,usd,u\n", "currency must be"),
    ("openai,gpt,exact,2025-13-01,1,,4,USD,u\n", "valid_from must be"),
    ("openai,gpt,exact,2025-01-01T00:00:00,1,,4,USD,u\n", "needs a UTC offset"),
    ("openai,gpt,exact,2025-01-01,-1,,4,USD,u\n", "input must be between"),
    ("openai,gpt,exact,2025-01-01,abc,,4,USD,u\n", "input must be a decimal number"),
    ("openai,gpt,exact,2025-01-01,1,NaN,4,USD,u\n", "cached_input must be a finite"),
    ("openai,gpt,exact,2025-01-01,1,,Infinity,USD,u\n", "output must be a finite"),
    ("openai,gpt,exact,2025-01-01,0.0000000001,,4,USD,u\n", "more than 9 decimal places"),
    ("openai,gpt,exact,2025-01-01,1e12,,4,USD,u\n", "between 0 and"),
    ("openai,,exact,2025-01-01,1,,4,USD,u\n", "model must be"),
    ("openai,gpt,exact,2025-01-01,1,,4,USD,u\nopenai,gpt,exact,2025-01-01,2,,4,USD,u\n", "line 3: the same"),
])
def test_a_bad_price_file_is_one_line_naming_the_line(body: str, message: str) -> None:
    text = body if body.startswith("provider,model\n") else HEADER + body
    with pytest.raises(ConfigError, match=message) as caught:
        parse_prices(text, "override", "mine.csv")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("mine.csv")


def test_oversized_file_and_too_many_rows_are_refused() -> None:
    with pytest.raises(ConfigError, match="over 1048576 bytes"):
        parse_prices("#" * (1 << 20) + "x", "override", "big")
    rows = "".join(f"openai,m{i},exact,2025-01-01,1,,1,USD,u\n" for i in range(10_001))
    with pytest.raises(ConfigError, match="more than 10000 price rows"):
        parse_prices(HEADER + rows, "override", "many")


def test_empty_file_has_no_prices() -> None:
    assert parse_prices("# nothing yet\n\n", "override", "empty") == []
