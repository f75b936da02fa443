"""The worker's garbage-collector tuning (agents.runner.tune_gc): start-up objects frozen, the young
pass every GC_YOUNG allocations, the older generations' ratios kept."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agents.runner import GC_YOUNG, tune_gc


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_start_up_objects_are_frozen_and_the_young_pass_is_rarer() -> None:
    gc.set_threshold(700, 10, 10)
    kept: list[list[int]] = [[] for _ in range(100)]  # container objects alive at start-up
    tune_gc()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (GC_YOUNG, 10, 10)


@pytest.mark.usefixtures("restored")
def test_cycles_are_still_collected() -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the collector still runs; only its young pass is rarer
