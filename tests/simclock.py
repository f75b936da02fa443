"""A hand-moved clock for ``Simulator(clock=...)`` in tests."""

from __future__ import annotations


class SimClock:
    """Moves only when told; one of its seconds is ``speed`` simulated seconds."""

    def __init__(self, speed: float, now: float = 1000.0) -> None:
        self.speed = speed
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance_sim(self, sim_seconds: float) -> None:
        self.now += sim_seconds / self.speed
