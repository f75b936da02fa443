"""Raw envelopes of a simulated fleet observed along its lifecycles, and the changes they imply.

Shared by the broker benchmark and the track-recovery test: each batch is observed when it
enters each status and halfway to the next one (request counts move), in time order per batch,
interleaved across batches as a poller would publish them.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise, zip_longest

from pipeline.models import ChangeEvent, Envelope
from pipeline.normalise import normalise
from pipeline.simulator import SimBatch, build_fleet, openai_object
from pipeline.timeutil import from_unix, iso_ms
from pipeline.transitions import BatchState, Rules, apply

EPOCH = 1_790_000_000.0  # 2026-09-21: a fixed clock, so the workload is a pure function of its seed
POLL_LAG = 7.0


def observation_times(batch: SimBatch) -> list[float]:
    """Simulated times at which one batch is observed: each entry into a status and a midpoint."""
    times = [batch.created]
    for (_, start), (_, end) in pairwise(batch.timeline):
        times += [(start + end) / 2, end]
    return times


def batch_envelopes(batch: SimBatch, source: str) -> list[Envelope]:
    return [Envelope(source, "openai", iso_ms(from_unix(EPOCH + t + POLL_LAG)),
                     openai_object(batch, t, EPOCH)) for t in observation_times(batch)]


def envelopes(batches: int, seed: int = 11, source: str = "load") -> list[Envelope]:
    """Every observation of ``batches`` batches, round-robin across batches."""
    per_batch = [batch_envelopes(b, source) for b in build_fleet(seed, batches, source)]
    return [e for row in zip_longest(*per_batch) for e in row if e is not None]


def expected_changes(observed: list[Envelope], rules: Rules) -> Iterator[ChangeEvent]:
    """The change events the track agent must emit for these envelopes, delivered in order."""
    states: dict[str, BatchState] = {}
    for envelope in observed:
        snap = normalise(envelope)
        states[snap.key], events = apply(states.get(snap.key), snap, rules)
        yield from events
