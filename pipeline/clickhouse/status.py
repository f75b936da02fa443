"""``batchscope status``: a terminal dashboard of the fleet, built from saved queries.

Counts by source, provider and status; active batches with a progress bar and ETA; batches at
risk of expiring; stalled batches; spend today and this month. Rendering is pure: :func:`render`
takes the query results.

The ETA projects the rate seen so far (processed requests over the time since the batch started)
onto the requests left. A batch started at ``in_progress_at``, or, for the providers that give no
start time (Anthropic, Gemini, Bedrock, Together), at ``created_at``: their ETA counts any queueing
as working time, so it errs long. Ids wider than their column (a Bedrock job ARN) are cut in the
middle, keeping the head and the tail that tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.clickhouse.spend import SPEND_SQL, render_spend
from pipeline.clickhouse.store import Params, QueryResult
from pipeline.core.eta import expected_end

BAR = 20
ACTIVE_LIMIT = 20
SOURCE_WIDTH = 12
ID_WIDTH = 28
STATUS_WIDTH = 12
ELLIPSIS = "…"

COUNTS_SQL = """SELECT source, provider, status, count() AS batches
FROM batch_current GROUP BY source, provider, status ORDER BY source, provider, status"""

ACTIVE_SQL = f"""SELECT source, batch_id, status,
    coalesce(requests_completed, 0) + coalesce(requests_failed, 0) AS processed, requests_total,
    toUnixTimestamp64Milli(in_progress_at) / 1000 AS in_progress_unix,
    toUnixTimestamp64Milli(created_at) / 1000 AS created_unix,
    toUnixTimestamp64Milli(now64(3)) / 1000 AS now_unix
FROM batch_current WHERE NOT terminal
    AND (source, batch_id) NOT IN (SELECT source, batch_id FROM batch_changes WHERE kind = 'vanished')
ORDER BY created_at, source, batch_id LIMIT {ACTIVE_LIMIT}"""

Fetch = Callable[[str], QueryResult]
FetchSaved = Callable[[str, Params], QueryResult]


@dataclass(frozen=True, slots=True)
class Fleet:
    counts: QueryResult
    active: QueryResult
    at_risk: QueryResult
    stalled: QueryResult
    spend: QueryResult | None = None  # spend today and this month (pipeline.clickhouse.spend)


def collect(fetch: Fetch, fetch_saved: FetchSaved) -> Fleet:
    return Fleet(fetch(COUNTS_SQL), fetch(ACTIVE_SQL), fetch_saved("at_risk", {}), fetch_saved("stalled", {}),
                 fetch(SPEND_SQL))


def bar(done: int, total: int | None) -> str:
    """``[#####...............]  25%``; unknown totals show an empty bar."""
    if not total:
        return "[" + "?" * BAR + "]    ?"
    frac = min(max(done / total, 0.0), 1.0)
    filled = int(frac * BAR)
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {frac * 100:3.0f}%"


def eta_seconds(now: float, started_at: float | None, done: int, total: int | None) -> float | None:
    """Seconds until the processed count reaches the total at the rate seen since the start;
    None while there is no rate (nothing processed yet, no start time, no total)."""
    end = expected_end(now, None, started_at, done, total)
    return None if end is None else end - now


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA ?"
    minutes, _ = divmod(max(int(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}h{minutes:02d}m" if hours else f"ETA {minutes}m"


def middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` (1 or more) characters: a longer one keeps its head and its
    tail around '…', the tail the larger half (where ids differ: an ARN's job id, a batch suffix)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (width - 1 - head):]


def cell(value: object, width: int) -> str:
    """One fixed-width column: the value cut in the middle when longer, padded when shorter."""
    return middle("NULL" if value is None else str(value), width).ljust(width)


def render(fleet: Fleet) -> str:
    lines = ["FLEET (source / provider / status: batches)"]
    lines += [f"  {cell(s, 20)} {cell(p, 14)} {cell(st, 12)} {n:>7}" for s, p, st, n in fleet.counts.rows]
    lines += [] if fleet.counts.rows else ["  (no batches)"]
    total = sum(int(r[3]) for r in fleet.counts.rows)
    lines.append(f"  {'total':<48} {total:>7}")
    lines.append(f"\nACTIVE (oldest {ACTIVE_LIMIT})")
    lines += [active_line(row) for row in fleet.active.rows] or ["  (none)"]
    lines += section("AT RISK OF EXPIRING", fleet.at_risk, ("source", "batch_id", "status", "expires_at"))
    lines += section("STALLED", fleet.stalled, ("source", "batch_id", "processed", "stalled_minutes"))
    lines += [] if fleet.spend is None else render_spend(fleet.spend)
    return "\n".join(lines) + "\n"


def active_line(row: tuple[Any, ...]) -> str:
    """One row of :data:`ACTIVE_SQL`: the batch started when it went in progress, or, when its
    provider does not say, when it was created."""
    source, batch_id, status, done, total, in_progress_at, created_at, now = row
    processed, requests = int(done), None if total is None else int(total)
    started = in_progress_at if in_progress_at is not None else created_at
    left = eta_seconds(float(now), None if started is None else float(started), processed, requests)
    return (f"  {cell(source, SOURCE_WIDTH)} {cell(batch_id, ID_WIDTH)} {cell(status, STATUS_WIDTH)} "
            f"{bar(processed, requests)}  {eta(left)}")


def section(title: str, result: QueryResult, columns: tuple[str, ...]) -> list[str]:
    """A titled list of ``columns``: source and batch id at the widths of the active list."""
    lines = [f"\n{title} ({len(result.rows)})"]
    widths = {"source": SOURCE_WIDTH, "batch_id": ID_WIDTH, "status": STATUS_WIDTH}
    for row in result.rows[:ACTIVE_LIMIT]:
        named = dict(zip(result.columns, row, strict=False))  # an empty result may carry no columns
        cells = [cell(named.get(c), widths[c]) if c in widths else str(named.get(c)) for c in columns]
        lines.append("  " + " ".join(cells).rstrip())
    return lines if result.rows else [*lines, "  (none)"]
