"""tests.support.workload.pages: the poller's pages of a simulated fleet (no Kafka, no timing)."""

from __future__ import annotations

from collections import defaultdict

from pipeline.core.models import TERMINAL
from pipeline.core.normalise import normalise
from pipeline.core.transitions import Rules
from tests.support.workload import expected_changes, pages


def test_pages_are_full_at_most_and_share_one_source_and_observed_at() -> None:
    observed = pages(300, sources=3, page=20)
    assert observed
    assert all(0 < len(p) <= 20 for p in observed)
    for page in observed:
        assert len({(e.source, e.provider, e.observed_at) for e in page}) == 1
        assert len({e.key for e in page}) == len(page)  # a batch at most once a page
    assert {p[0].source for p in observed} == {"load-1", "load-2", "load-3"}


def test_each_batch_is_observed_in_time_order_until_it_is_published_terminal_once() -> None:
    observed = pages(200, page=25, hours=48.0)  # long enough for every batch to end
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for page in observed:
        for e in page:
            snap = normalise(e)
            seen[snap.key].append((snap.observed_at, snap.status))
    assert len(seen) == 200
    for history in seen.values():
        times = [t for t, _ in history]
        assert times == sorted(times)
        assert len(set(times)) == len(times)
        statuses = [s for _, s in history]
        assert statuses[-1] in TERMINAL
        assert not any(s in TERMINAL for s in statuses[:-1])  # settled: never published again


def test_busy_hours_cut_the_tail_and_the_changes_follow_the_pages() -> None:
    short, full = pages(200, hours=1.0), pages(200, hours=48.0)
    assert 0 < len(short) < len(full)
    flat = [e for p in short for e in p]
    changes = list(expected_changes(flat, Rules(progress_min_interval=0.0)))
    assert sum(1 for c in changes if c.kind == "discovered") == len({e.key for e in flat})


def test_pages_are_a_pure_function_of_their_arguments() -> None:
    assert [[e.payload for e in p] for p in pages(50)] == [[e.payload for e in p] for p in pages(50)]
