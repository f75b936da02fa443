"""Hand-moved clocks for code that takes ``clock=`` (a zero-argument callable giving seconds)."""

from __future__ import annotations


class FakeClock:
    """Moves only when a test sets ``now``; calling it gives ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SimClock(FakeClock):
    """A :class:`FakeClock` for ``Simulator(clock=...)``: one of its seconds is ``speed`` simulated
    seconds."""

    def __init__(self, speed: float, now: float = 1000.0) -> None:
        super().__init__(now)
        self.speed = speed

    def advance_sim(self, sim_seconds: float) -> None:
        self.now += sim_seconds / self.speed
