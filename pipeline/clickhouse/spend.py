"""Spend in ClickHouse: load the price table, the sources' teams and the team key (sql/005).

:func:`load` reads the shipped price file (``pipeline/data/prices.csv``) and the operator's
``[spend] prices_file``, and replaces the ``prices``, ``source_teams`` and ``spend_settings``
tables with them; ``batchscope migrate``, ``batchscope run`` and ``batchscope prices load`` call
it. The ``batch_spend`` view reads them. Money stays :class:`~decimal.Decimal` end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.clickhouse.store import QueryResult, Store
from pipeline.config import Settings
from pipeline.core.errors import ConfigError
from pipeline.core.prices import MAX_FILE_BYTES, Price, parse_prices
from pipeline.providers import PROVIDERS

SHIPPED = "prices.csv"
PRICE_COLUMNS = ["provider", "model", "match", "valid_from", "input", "cached_input", "output", "currency",
                 "source_url", "origin"]

# What `batchscope status` shows: spend of the batches created today and this month (UTC), by
# currency; unpriced batches and batches without usage are counted, never costed as zero.
SPEND_SQL = """SELECT currency,
    sumIf(cost, created_at >= toStartOfDay(now64(3, 'UTC'))) AS today,
    sum(cost) AS month,
    countIf(NOT priced) AS unpriced_batches,
    countIf(usage_source = 'none') AS batches_without_usage
FROM batch_spend WHERE created_at >= toStartOfMonth(now64(3, 'UTC'))
GROUP BY currency ORDER BY currency"""


@dataclass(frozen=True, slots=True)
class Loaded:
    shipped: int
    override: int

    def line(self) -> str:
        total = self.shipped + self.override
        return f"loaded {total} price row(s): {self.shipped} shipped, {self.override} override"


def shipped_prices() -> list[Price]:
    text = resources.files("pipeline").joinpath("data", SHIPPED).read_text(encoding="utf-8")
    return parse_prices(text, "shipped", f"shipped {SHIPPED}")


def override_prices(path: str) -> list[Price]:
    """The operator's price file; a missing, unreadable, oversized or malformed file is one line."""
    if not path:
        return []
    where = f"spend.prices_file {path}"
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: over {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    prices = parse_prices(text, "override", where)
    for price in prices:
        if price.provider not in PROVIDERS:
            raise ConfigError(f"{where}: unknown provider {price.provider[:40]!r} "
                              f"(known: {', '.join(PROVIDERS)})")
    return prices


def all_prices(settings: Settings) -> list[Price]:
    return [*shipped_prices(), *override_prices(settings.spend.prices_file)]


def price_row(p: Price) -> list[Any]:
    return [p.provider, p.model, p.match, p.valid_from, p.input, p.cached_input, p.output, p.currency,
            p.source_url, p.origin]


def source_teams(settings: Settings) -> list[list[str]]:
    key = settings.spend.team_key
    return [[s.name, s.tags[key]] for s in settings.sources if s.tags.get(key)]


def load(store: Store, settings: Settings) -> Loaded:
    """Replace the price table, the sources' teams and the team key with what the settings say.
    The files are read and checked before any table is touched."""
    prices = all_prices(settings)
    teams = source_teams(settings)
    db = store.database
    store.command(f"TRUNCATE TABLE IF EXISTS {db}.prices")
    if prices:
        store.insert_rows(f"{db}.prices", [price_row(p) for p in prices], PRICE_COLUMNS)
    store.command(f"TRUNCATE TABLE IF EXISTS {db}.source_teams")
    if teams:
        store.insert_rows(f"{db}.source_teams", teams, ["source", "team"])
    store.command(f"TRUNCATE TABLE IF EXISTS {db}.spend_settings")
    store.insert_rows(f"{db}.spend_settings", [[settings.spend.team_key]], ["team_key"])
    override = sum(p.origin == "override" for p in prices)
    return Loaded(len(prices) - override, override)


def money(value: object) -> str:
    """A Decimal amount for a terminal: two places (rounded half-even, for display only), or
    ``-`` when there is none."""
    if value is None:
        return "-"
    return f"{Decimal(str(value)).quantize(Decimal('0.01')):,}"


def render_spend(result: QueryResult) -> list[str]:
    """The SPEND section of ``batchscope status``: today and this month, per currency."""
    lines = ["\nSPEND (batches created today / this month, UTC)"]
    for currency, today, month, unpriced, without in result.rows:
        lines.append(f"  {currency or '(unpriced)':<10} today {money(today):>14}  month {money(month):>14}"
                     f"  unpriced batches {int(unpriced)}  without usage {int(without)}")
    return lines if result.rows else [*lines, "  (none)"]
