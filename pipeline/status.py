"""``batchscope status``: a terminal dashboard of the fleet, built from saved queries.

Counts by source, provider and status; active batches with a progress bar and ETA; batches at
risk of expiring; stalled batches. Rendering is pure: :func:`render` takes the query results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.store import Params, QueryResult

BAR = 20
ACTIVE_LIMIT = 20

COUNTS_SQL = """SELECT source, provider, status, count() AS batches
FROM batch_current GROUP BY source, provider, status ORDER BY source, provider, status"""

ACTIVE_SQL = f"""SELECT source, batch_id, status,
    coalesce(requests_completed, 0) + coalesce(requests_failed, 0) AS processed, requests_total,
    if(processed = 0 OR in_progress_at IS NULL OR coalesce(requests_total, 0) = 0, NULL,
       toInt64(dateDiff('second', in_progress_at, now64(3)) * (requests_total - processed) / processed))
       AS eta_seconds
FROM batch_current WHERE NOT terminal
ORDER BY created_at, source, batch_id LIMIT {ACTIVE_LIMIT}"""

Fetch = Callable[[str], QueryResult]
FetchSaved = Callable[[str, Params], QueryResult]


@dataclass(frozen=True, slots=True)
class Fleet:
    counts: QueryResult
    active: QueryResult
    at_risk: QueryResult
    stalled: QueryResult


def collect(fetch: Fetch, fetch_saved: FetchSaved) -> Fleet:
    return Fleet(fetch(COUNTS_SQL), fetch(ACTIVE_SQL), fetch_saved("at_risk", {}), fetch_saved("stalled", {}))


def bar(done: int, total: int | None) -> str:
    """``[#####...............]  25%``; unknown totals show an empty bar."""
    if not total:
        return "[" + "?" * BAR + "]    ?"
    frac = min(max(done / total, 0.0), 1.0)
    filled = int(frac * BAR)
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {frac * 100:3.0f}%"


def eta(seconds: int | None) -> str:
    if seconds is None:
        return "ETA ?"
    minutes, _ = divmod(max(int(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}h{minutes:02d}m" if hours else f"ETA {minutes}m"


def render(fleet: Fleet) -> str:
    lines = ["FLEET (source / provider / status: batches)"]
    lines += [f"  {s:<20} {p:<14} {st:<12} {n:>7}" for s, p, st, n in fleet.counts.rows] or ["  (no batches)"]
    total = sum(int(r[3]) for r in fleet.counts.rows)
    lines.append(f"  {'total':<48} {total:>7}")
    lines.append(f"\nACTIVE (oldest {ACTIVE_LIMIT})")
    for source, batch_id, status, done, req_total, left in fleet.active.rows:
        lines.append(f"  {source:<12} {batch_id:<28} {status:<12} {bar(int(done), req_total)}  {eta(left)}")
    if not fleet.active.rows:
        lines.append("  (none)")
    lines += section("AT RISK OF EXPIRING", fleet.at_risk, ("source", "batch_id", "status", "expires_at"))
    lines += section("STALLED", fleet.stalled, ("source", "batch_id", "processed", "stalled_minutes"))
    return "\n".join(lines) + "\n"


def section(title: str, result: QueryResult, columns: tuple[str, ...]) -> list[str]:
    lines = [f"\n{title} ({len(result.rows)})"]
    for row in result.rows[:ACTIVE_LIMIT]:
        named = dict(zip(result.columns, row, strict=False))  # an empty result may carry no columns
        lines.append("  " + "  ".join(str(named.get(c)) for c in columns))
    return lines if result.rows else [*lines, "  (none)"]
