"""How the simulator pages a list endpoint, per the adapter's paging style, newest first.

Cursor paging (``limit`` + ``after`` / ``after_id``, and Anthropic's ``before_id``) with
``first_id``/``last_id``/``has_more``; Mistral's 0-based ``page`` + ``page_size`` with ``total``;
page tokens (opaque: the last id of the previous page, base64) with ``nextPageToken`` /
``nextToken``; one page for Groq and Together. A bad parameter is a :class:`BadParam` (400).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pipeline.providers.base import Adapter
from pipeline.providers.paging import CursorPaging, PagePaging, TokenPaging
from simulator.fleet import SimBatch

Page = tuple[list[SimBatch], dict[str, Any]]


class BadParam(ValueError):
    """A list parameter the API refuses (400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def list_page(a: Adapter, visible: list[SimBatch], ids: dict[str, str], query: dict[str, str]) -> Page:
    """The batches of one list page and the envelope fields around them, per the adapter's paging
    (newest first); a bad parameter is a :class:`BadParam` (400)."""
    paging = a.paging
    wire = [ids[b.id] for b in visible]
    if isinstance(paging, CursorPaging):
        return _cursor_page(paging, visible, wire, query)
    if isinstance(paging, PagePaging):
        page, size = _int(query, "page", 0, 0, 10**9), _int(query, "page_size", 100, 1, paging.max_limit)
        return visible[page * size:(page + 1) * size], {"total": len(visible)}
    if isinstance(paging, TokenPaging):
        return _token_page(paging, visible, wire, query)
    return visible, ({} if a.items_key is None else {"has_more": False})


def _int(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParam(name, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadParam(name, f"{name} must be between {low} and {high}")
    return value


def _cursor_page(paging: CursorPaging, visible: list[SimBatch], wire: list[str],
                 query: dict[str, str]) -> Page:
    limit = _int(query, "limit", 20, 1, paging.max_limit)
    start, end = 0, None
    if after := query.get(paging.cursor_param):
        if after not in wire:
            raise BadParam(paging.cursor_param, f"No batch found with id '{after}'.")
        start = wire.index(after) + 1
    elif (before := query.get("before_id")) is not None:
        if before not in wire:
            raise BadParam("before_id", f"No batch found with id '{before}'.")
        end = wire.index(before)
        start = max(0, end - limit)
    stop = min(start + limit, len(visible) if end is None else end)
    page = wire[start:stop]
    return visible[start:stop], {"first_id": page[0] if page else None, "last_id": page[-1] if page else None,
                                 "has_more": stop < len(visible) if end is None else start > 0}


def _token_page(paging: TokenPaging, visible: list[SimBatch], wire: list[str], query: dict[str, str]) -> Page:
    """Page tokens are opaque cursors (the last id of the previous page, base64)."""
    size = _int(query, paging.size_param, 50, 1, paging.max_limit)
    start = 0
    if token := query.get(paging.cursor_param):
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadParam(paging.cursor_param, "invalid page token") from None
        if after not in wire:
            raise BadParam(paging.cursor_param, "invalid page token")
        start = wire.index(after) + 1
    page = visible[start:start + size]
    more = start + size < len(visible)
    token_out = base64.urlsafe_b64encode(wire[start + size - 1].encode()).decode() if more else None
    return page, ({paging.next_field: token_out} if token_out else {})
