"""When the poller refreshes each active batch, and how: pure functions over plain numbers.

Discovery lists the newest pages every ``poll_interval``. An active batch is refreshed at least
every ``active_interval``, and sooner as it nears its expected end: the earlier of its
``expires_at`` and the end its request counts project (the rate since ``in_progress_at``). The
wait before the next refresh is half the time left to that end, between the two intervals, so a
batch is refreshed at the poll interval around its expected end (and past it) and rarely while
it is far from it. A batch in a status that normally moves within minutes (``validating``,
``finalizing``, ``cancelling``) is refreshed at the poll interval when it enters it, then after
half the time it has spent in it so far (a stuck one backs off to the active interval).
Terminal batches are never refreshed (the poller does not ask); every ``sweep`` seconds one
discovery lists to the end of the list, so that those the provider stopped returning are found
(:meth:`pipeline.polling.tracker.Tracker.gone`).

The batches due for a refresh are fetched by whichever is cheaper: more list pages (one call each,
covering every batch on them) or one GET per batch (:func:`pages_to_list`). Page estimates come
from the batches' order in the list (newest first); an estimate only changes the cost, never
what is refreshed: a due batch the listing did not return is fetched by its own GET.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

SOON = frozenset({"validating", "finalizing", "cancelling"})  # canonical statuses that move in minutes


@dataclass(frozen=True, slots=True)
class Cadence:
    poll: float  # seconds between discoveries; the refresh interval near an expected end
    active: float  # the longest wait between two refreshes of an active batch
    sweep: float = 0.0  # seconds between listings to the list's end (0: only the first)

    def __post_init__(self) -> None:
        if not 0 < self.poll <= self.active:
            raise ValueError("the poll interval must be positive and at most the active interval")


def next_refresh(status: str, now: float, end: float | None, cadence: Cadence,
                 since: float | None = None) -> float:
    """When an active batch observed at ``now`` is next due (``since``: when it entered ``status``)."""
    if status in SOON:
        spent = 0.0 if since is None else now - since
        return now + min(cadence.active, max(cadence.poll, spent / 2))
    if end is None:
        return now + cadence.active
    return now + min(cadence.active, max(cadence.poll, (end - now) / 2))


def pages_to_list(listed: int, due_pages: Iterable[int]) -> int:
    """How many list pages in all (at least the ``listed`` already fetched) refresh the due
    batches at the fewest calls, given the 0-based page each due batch is expected on: every
    further page costs one call, every due batch beyond the last page listed one GET."""
    counts = Counter(due_pages)
    beyond = sum(n for page, n in counts.items() if page >= listed)
    best, best_cost = listed, beyond
    for pages in range(listed + 1, max(counts, default=-1) + 2):
        beyond -= counts.get(pages - 1, 0)
        if (cost := pages - listed + beyond) < best_cost:
            best, best_cost = pages, cost
    return best
