"""How each provider pages its list endpoint: query parameters for a page, and the stop rule.

A paging strategy is pure: given the parameters of the page just read and its decoded body, it
returns the parameters of the next page, or ``None`` when the listing is complete.
:class:`PageGuard` stops a listing that goes round, whatever the strategy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

Params = dict[str, str]


class Paging(Protocol):
    def first(self, limit: int) -> Params: ...

    def next(self, params: Params, body: Any, items: list[dict[str, Any]]) -> Params | None: ...


@dataclass(frozen=True, slots=True)
class CursorPaging:
    """OpenAI style: ``limit`` + ``after=<id of the last item>``, continue while ``has_more``."""

    cursor_param: str = "after"
    max_limit: int = 100

    def first(self, limit: int) -> Params:
        return {"limit": str(max(1, min(limit, self.max_limit)))}

    def next(self, params: Params, body: Any, items: list[dict[str, Any]]) -> Params | None:
        if not isinstance(body, dict) or body.get("has_more") is not True or not items:
            return None
        last = body.get("last_id") or items[-1].get("id")
        if not isinstance(last, str) or not last or last == params.get(self.cursor_param):
            return None
        return {**params, self.cursor_param: last}


@dataclass(frozen=True, slots=True)
class PagePaging:
    """Mistral: 0-based ``page`` and ``page_size``; the envelope's ``total`` says when to stop."""

    max_limit: int = 100

    def first(self, limit: int) -> Params:
        return {"page": "0", "page_size": str(max(1, min(limit, self.max_limit)))}

    def next(self, params: Params, body: Any, items: list[dict[str, Any]]) -> Params | None:
        page, size = int(params.get("page", "0")), int(params.get("page_size", "100"))
        total = body.get("total") if isinstance(body, dict) else None
        seen = (page + 1) * size
        if not items or (type(total) is int and seen >= total) or len(items) < size:
            return None
        return {**params, "page": str(page + 1)}


@dataclass(frozen=True, slots=True)
class TokenPaging:
    """Google and AWS style: a page size and an opaque token, continue while a token comes back."""

    size_param: str = "pageSize"
    cursor_param: str = "pageToken"
    next_field: str = "nextPageToken"
    max_limit: int = 100

    def first(self, limit: int) -> Params:
        return {self.size_param: str(max(1, min(limit, self.max_limit)))}

    def next(self, params: Params, body: Any, items: list[dict[str, Any]]) -> Params | None:
        token = body.get(self.next_field) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or token == params.get(self.cursor_param):
            return None
        return {**params, self.cursor_param: token}


@dataclass(frozen=True, slots=True)
class SinglePage:
    """Groq and Together: no paging documented; one request returns the whole listing."""

    def first(self, limit: int) -> Params:
        return {}

    def next(self, params: Params, body: Any, items: list[dict[str, Any]]) -> Params | None:
        return None


def stable(paging: Paging) -> bool:
    """Whether a batch that joins or leaves the list while it is walked cannot push another off
    the pages read: true of id cursors (the next page starts after the last id read) and of one
    page; not of page numbers (a removal lifts the next page's first batch onto a page already
    read) nor of opaque page tokens (nothing says what they hold)."""
    return isinstance(paging, CursorPaging | SinglePage)


@dataclass(frozen=True, slots=True)
class Loop:
    """Why a listing was stopped before its end: ``kind`` is the error class it is counted under."""

    kind: str
    reason: str


@dataclass(slots=True)
class PageGuard:
    """One listing's memory: the page parameters requested and the batch ids listed.

    A provider whose cursors cycle (A, B, A), or whose pages never end (a new cursor or page
    number each time, the same items: Mistral pages without ``total``), would otherwise cost up to
    the page limit in requests every cycle. The listing stops at a cursor or page token already
    requested and at a page that adds no batch id not already listed.
    """

    requested: set[frozenset[tuple[str, str]]] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)

    def check(self, params: Params, ids: Iterable[str | None], following: Params) -> Loop | None:
        """After the page read with ``params`` (its batch ids: ``ids``): None when the page
        ``following`` may be requested, else why the listing stops."""
        self.requested.add(frozenset(params.items()))
        new = {i for i in ids if i is not None} - self.ids
        self.ids |= new
        if frozenset(following.items()) in self.requested:
            return Loop("paging_cursor_repeated", "the next page's cursor or token was already requested")
        if not new:
            return Loop("paging_no_new_id", "a page added no batch id not already listed")
        return None
