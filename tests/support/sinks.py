"""The poller's publisher in tests: keeps what it is given."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.models import Envelope


class CaptureSink:
    """Keeps each published page; ``fail_first`` is raised by the first publish (which keeps
    nothing); ``then`` runs after each page kept."""

    def __init__(self, *, fail_first: Exception | None = None,
                 then: Callable[[], None] | None = None) -> None:
        self.pages: list[list[Envelope]] = []
        self._fail = fail_first
        self._then = then

    async def publish(self, envelopes: list[Envelope]) -> None:
        if self._fail is not None:
            fail, self._fail = self._fail, None
            raise fail
        self.pages.append(list(envelopes))
        if self._then is not None:
            self._then()

    @property
    def envelopes(self) -> list[Envelope]:
        return [e for page in self.pages for e in page]

    @property
    def ids(self) -> list[str]:
        """The provider ids of the envelopes (not the vanishes), in publish order."""
        return [str(e.payload["id"]) for e in self.envelopes if not e.vanished]

    @property
    def vanished(self) -> list[str]:
        """The batch ids published as vanished (``Envelope.vanish``), in publish order."""
        return [str(e.batch_id) for e in self.envelopes if e.vanished]

    def clear(self) -> None:
        self.pages.clear()
