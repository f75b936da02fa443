"""The simulated fleet: each batch's lifecycle (a timeline of canonical statuses with simulated
times) and request counts, a pure function of the seed and the source's name."""

from __future__ import annotations

import random
from dataclasses import dataclass

MINUTE = 60.0
WINDOW = 24 * 3600.0  # every simulated batch has the 24 h completion window
CREATION_SPAN = 4 * 3600.0  # batches are created over 4 simulated hours, half before start
DAY = 24 * 3600.0
HISTORY = (2 * DAY, 28 * DAY)  # history batches: created over 28 days ending 2 days before the span
MODELS = ("gpt-4o-mini", "gpt-4.1", "o4-mini", "text-embedding-3-small")
ENDPOINTS = ("/v1/chat/completions", "/v1/chat/completions", "/v1/responses", "/v1/embeddings")
OUTCOMES = (("completed", 70), ("completed_all_failed", 4), ("failed", 8),
            ("expired", 6), ("cancelled", 12))
VALIDATION_ERRORS = ("invalid_json_line", "duplicate_custom_id", "model_mismatch", "empty_file")


@dataclass(frozen=True, slots=True)
class SimBatch:
    """One batch's whole life, as offsets in simulated seconds from the simulator's epoch."""

    id: str
    index: int
    created: float
    timeline: tuple[tuple[str, float], ...]
    total: int
    failed: int
    model: str
    endpoint: str
    error_code: str | None

    @property
    def final_status(self) -> str:
        return self.timeline[-1][0]

    def status_at(self, t: float) -> str | None:
        current = None
        for status, at in self.timeline:
            if at > t:
                break
            current = status
        return current

    def progress_at(self, t: float) -> tuple[int, int]:
        """(completed, failed) request counts at simulated time ``t``."""
        times = dict(self.timeline)
        start, end = times.get("in_progress"), _first(times, "finalizing", "expired", "cancelling")
        if start is None or t < start:
            return 0, 0
        done_total = self.total if self.final_status == "completed" else int(self.total * 0.6)
        frac = 1.0 if end is None or t >= end else (t - start) / max(end - start, 1.0)
        failed = int(self.failed * frac)
        return int(done_total * frac) - failed, failed


def _first(times: dict[str, float], *names: str) -> float | None:
    return next((times[n] for n in names if n in times), None)


def build_fleet(seed: int, count: int, source: str, *, history: int = 0,
                span: float = CREATION_SPAN) -> list[SimBatch]:
    """``count`` batches created over ``span`` simulated seconds centred on the start; the first
    ``history`` of them instead over the 28 days that end 2 days before that span (so they are
    terminal history by then), oldest first. Without history the fleet depends on the seed only."""
    rng = random.Random(f"{seed}/{source}")  # simulation, not security
    return [_batch(rng, i, source, _created(rng.uniform(0.0, 1.0), i, history, span)) for i in range(count)]


def _created(u: float, index: int, history: int, span: float) -> float:
    if index >= history:
        return -span / 2 + u * span
    age, length = HISTORY
    return -span / 2 - age - length * (1 - (index + u) / history)


def _batch(rng: random.Random, index: int, source: str, created: float) -> SimBatch:
    outcome = rng.choices([o for o, _ in OUTCOMES], weights=[w for _, w in OUTCOMES])[0]
    total = rng.randint(10, 50_000)
    validated = created + rng.uniform(1, 10) * MINUTE
    timeline: list[tuple[str, float]] = [("validating", created)]
    failed = 0
    if outcome == "failed":
        timeline.append(("failed", validated))
    elif outcome == "expired":
        timeline += [("in_progress", validated), ("expired", created + WINDOW)]
    elif outcome == "cancelled":
        cancel_at = validated + rng.uniform(0, 60) * MINUTE
        timeline += [("in_progress", validated), ("cancelling", cancel_at),
                     ("cancelled", cancel_at + rng.uniform(1, 10) * MINUTE)]
    else:
        finalizing = validated + rng.uniform(10, 120) * MINUTE
        failed = total if outcome == "completed_all_failed" else int(total * rng.choice((0, 0, 0.01, 0.1)))
        timeline += [("in_progress", validated), ("finalizing", finalizing),
                     ("completed", finalizing + rng.uniform(1, 10) * MINUTE)]
    return SimBatch(
        id=f"batch_{source}_{index:06d}", index=index, created=created, timeline=tuple(timeline),
        total=total, failed=failed, model=rng.choice(MODELS), endpoint=rng.choice(ENDPOINTS),
        error_code=rng.choice(VALIDATION_ERRORS) if outcome == "failed" else None,
    )
