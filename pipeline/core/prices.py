"""The dated batch price table: parsing a price file, choosing the price of a batch, its cost.

Pure (no I/O): :mod:`pipeline.clickhouse.spend` reads the files and loads the rows into
ClickHouse, whose ``batch_spend`` view applies :func:`select`'s rule in SQL (sql/005). Money is
:class:`~decimal.Decimal` throughout, never a float. Format and rules: docs/spend.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation, localcontext

from pipeline.core.errors import ConfigError
from pipeline.core.usage import Usage

COLUMNS = ("provider", "model", "match", "valid_from", "input", "cached_input", "output", "currency",
           "source_url")
MATCHES = ("exact", "prefix")
ORIGINS = ("shipped", "override")
MAX_FILE_BYTES = 1 << 20  # a price file over 1 MiB is refused
MAX_ROWS = 10_000
MAX_TEXT = 512  # provider, model and source_url, in characters
MAX_PRICE = Decimal(999_999_999)  # per million tokens: Decimal(18, 9) in ClickHouse
PRICE_EXPONENT = -9  # at most 9 decimal places
PER = Decimal(1_000_000)
CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Price:
    """One row: the batch prices per million tokens of a provider's model from ``valid_from``."""

    provider: str
    model: str
    match: str
    valid_from: datetime
    input: Decimal
    cached_input: Decimal | None
    output: Decimal
    currency: str
    source_url: str
    origin: str = "shipped"

    def matches(self, provider: str, model: str | None, created_at: datetime) -> bool:
        if provider != self.provider or model is None or self.valid_from > created_at:
            return False
        return model == self.model if self.match == "exact" else model.startswith(self.model)

    @property
    def rank(self) -> tuple[bool, bool, int, datetime]:
        """Higher wins: an override, then an exact match, then the longer prefix, then the later
        ``valid_from`` (the ``argMax`` key of the ``batch_spend`` view)."""
        return self.origin == "override", self.match == "exact", len(self.model), self.valid_from


def select(prices: Iterable[Price], provider: str, model: str | None, created_at: datetime) -> Price | None:
    """The price that applies to a batch of ``provider``/``model`` created at ``created_at``, or
    ``None``: the batch is unpriced (never zero cost)."""
    found = [p for p in prices if p.matches(provider, model, created_at)]
    return max(found, key=lambda p: p.rank) if found else None


def cost(price: Price, usage: Usage) -> Decimal | None:
    """What a batch's tokens cost at ``price``, exactly; ``None`` without usage. ``input_tokens``
    includes the cached ones, priced at ``cached_input`` (the input price when there is none)."""
    if usage.usage_source == "none" or usage.input_tokens is None or usage.output_tokens is None:
        return None
    cached = usage.cached_input_tokens or 0
    cached_price = price.input if price.cached_input is None else price.cached_input
    with localcontext() as ctx:
        ctx.prec = 80  # exact: tokens < 2**64, prices with 9 decimals
        total = ((usage.input_tokens - cached) * price.input + cached * cached_price
                 + usage.output_tokens * price.output)
        return total / PER


def parse_prices(text: str, origin: str, where: str) -> list[Price]:
    """The rows of a price file (CSV with the :data:`COLUMNS` header; ``#`` lines are comments).
    Anything wrong is a :class:`ConfigError` naming ``where`` and the line."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: over {MAX_FILE_BYTES} bytes")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    header_line, header = lines[0][0], next(csv.reader([lines[0][1]]))
    if tuple(h.strip() for h in header) != COLUMNS:
        raise ConfigError(f"{where} line {header_line}: the header must be {','.join(COLUMNS)}")
    if len(lines) - 1 > MAX_ROWS:
        raise ConfigError(f"{where}: more than {MAX_ROWS} price rows")
    rows = [(n, next(csv.reader(io.StringIO(line)))) for n, line in lines[1:]]
    prices = [_row(cells, origin, f"{where} line {n}") for n, cells in rows]
    seen: dict[tuple[str, str, str, datetime], int] = {}
    for (n, _), p in zip(rows, prices, strict=True):
        key = (p.provider, p.model, p.match, p.valid_from)
        if key in seen:
            raise ConfigError(f"{where} line {n}: the same provider, model, match and valid_from as "
                              f"line {seen[key]}")
        seen[key] = n
    return prices


def _row(cells: list[str], origin: str, where: str) -> Price:
    if len(cells) != len(COLUMNS):
        raise ConfigError(f"{where}: expected {len(COLUMNS)} columns, got {len(cells)}")
    provider, model, match, valid_from, inp, cached, out, currency, url = (c.strip() for c in cells)
    for name, value in (("provider", provider), ("model", model)):
        if not value or len(value) > MAX_TEXT or not value.isprintable():
            raise ConfigError(f"{where}: {name} must be 1 to {MAX_TEXT} printable characters")
    if match not in MATCHES:
        raise ConfigError(f"{where}: match must be exact or prefix, not {match[:20]!r}")
    if not CURRENCY.fullmatch(currency):
        raise ConfigError(f"{where}: currency must be a three-letter ISO 4217 code such as USD")
    if len(url) > MAX_TEXT or not url.isprintable():
        raise ConfigError(f"{where}: source_url must be at most {MAX_TEXT} printable characters")
    return Price(provider, model, match, _date(valid_from, where), _money(inp, "input", where),
                 _money(cached, "cached_input", where) if cached else None, _money(out, "output", where),
                 currency, url, origin)


def _money(text: str, name: str, where: str) -> Decimal:
    """A price per million tokens: a plain decimal, 0 to :data:`MAX_PRICE`, at most 9 places."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{where}: {name} must be a decimal number, got {text[:20]!r}") from None
    exponent = value.as_tuple().exponent
    if not value.is_finite() or not isinstance(exponent, int):
        raise ConfigError(f"{where}: {name} must be a finite decimal number")
    if value < 0 or value > MAX_PRICE:
        raise ConfigError(f"{where}: {name} must be between 0 and {MAX_PRICE}")
    if exponent < PRICE_EXPONENT and value != value.quantize(Decimal(1).scaleb(PRICE_EXPONENT)):
        raise ConfigError(f"{where}: {name} has more than {-PRICE_EXPONENT} decimal places")
    return value


def _date(text: str, where: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time with its offset, as UTC."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: valid_from must be YYYY-MM-DD or an ISO 8601 time, "
                          f"got {text[:40]!r}") from None
    if found.tzinfo is None:
        raise ConfigError(f"{where}: valid_from {text[:40]!r} needs a UTC offset (or Z)")
    if found.year < 1970:
        raise ConfigError(f"{where}: valid_from must be 1970 or later")
    return found.astimezone(UTC)
