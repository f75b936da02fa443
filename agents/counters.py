"""What the agents count, for the worker's ``/metrics`` and the run's progress line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Counters:
    normalised: int = 0
    changes: int = 0
    dead_letters: int = 0
    sunk: int = 0
    stale_acks: int = 0  # acknowledgements of records from an older generation, refused
    rewinds: int = 0  # partitions read again from a record dropped at a rebalance
    changelog_failed: int = 0  # track states the broker did not take into the table's changelog
    made_hits: int = 0  # snapshot records the track agent or sink took as made (agents.parsed.MadeRecords)
    made_misses: int = 0  # ... and looked up there in vain, so read

    def metrics(self) -> dict[str, float]:
        """The counters as Prometheus gauges (``pipeline_*``)."""
        return {f"pipeline_{name}": float(getattr(self, name)) for name in self.__slots__}
