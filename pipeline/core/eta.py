"""When a batch is expected to end, from what one observation says: the poller's refresh schedule
and the status view's ETA read it alike."""

from __future__ import annotations


def expected_end(now: float, expires_at: float | None, started_at: float | None,
                 done: int | None, total: int | None) -> float | None:
    """The earliest end the snapshot suggests (unix seconds): its expiry, or the instant its
    request counts reach the total at the rate seen since it started; None when neither is known."""
    ends = [] if expires_at is None else [expires_at]
    if started_at is not None and done and total and 0 < done <= total and now > started_at:
        ends.append(started_at + (now - started_at) * total / done)
    return min(ends, default=None)
