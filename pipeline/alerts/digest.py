"""Bursts become digests: more than ``digest_after`` alerts of one rule within ``digest_window``
seconds are not sent one by one (500 batches failing after a bad deploy are one message, not
500).

Per rule, a window opens with the first alert and lasts ``digest_window`` seconds. Its first
``digest_after`` alerts go out alone as they come; the rest are held, and when the window ends
they go out as one :class:`~pipeline.alerts.messages.Digest`. So a rule sends at most
``digest_after + 1`` messages per window. Pure, the clock handed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.alerts.messages import Alert, Digest
from pipeline.alerts.rules import Rule


@dataclass(slots=True)
class Window:
    opened: float
    sent: int = 0
    held: list[Alert] = field(default_factory=list)


class Bursts:
    """Every rule's current window."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self._rules = {r.name: r for r in rules}
        self._windows: dict[str, Window] = {}

    def admit(self, alert: Alert, now: float) -> bool:
        """True: send ``alert`` now, alone. False: it is held for its window's digest."""
        rule = self._rules[alert.rule]
        window = self._windows.get(alert.rule)
        if window is None or now >= window.opened + rule.digest_window:
            if window is not None and window.held:  # its digest is due first: keep the order
                window.held.append(alert)
                return False
            window = self._windows[alert.rule] = Window(now)
        if window.sent < rule.digest_after and not window.held:
            window.sent += 1
            return True
        window.held.append(alert)
        return False

    def due(self, now: float) -> list[Digest]:
        """The digests of the windows that have ended, their windows closed."""
        out = []
        for name, window in list(self._windows.items()):
            rule = self._rules[name]
            if now >= window.opened + rule.digest_window:
                if window.held:
                    out.append(Digest(name, tuple(window.held), rule.digest_list))
                del self._windows[name]
        return out

    def held(self) -> list[Alert]:
        """Every alert held for a digest not yet due (their records are not committed)."""
        return [a for w in self._windows.values() for a in w.held]

    def next_due(self) -> float | None:
        """When the next window with held alerts ends."""
        ends = [w.opened + self._rules[n].digest_window for n, w in self._windows.items() if w.held]
        return min(ends, default=None)
