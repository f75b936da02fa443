"""The adapter shape every provider module fills in, and what all of them share.

An :class:`Adapter` is plain data plus pure functions: where to list and fetch, how to page,
which headers authenticate a request, how to find the batch objects in a list response, how to
read an error body, and how to normalise one batch object into a canonical snapshot. The poller
does the I/O; nothing here touches the network or logs a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from pipeline.core.errors import InvalidRecord
from pipeline.core.models import Snapshot, oversized_id
from pipeline.core.secret import Secret
from pipeline.providers.paging import Paging, Params

# What makes a failed request worth retrying (docs/providers.md, "Retries").
SPEND_LIMIT_MARKERS = ("insufficient_quota", "spend limit", "billing", "quota exceeded",
                       "exceeded your current quota", "credit balance")
RETRIABLE_STATUSES = frozenset({408, 409, 429, 529})

Normaliser = Callable[[dict[str, Any], str, str], Snapshot]
Auth = Callable[[Secret], dict[str, str]]
IdReader = Callable[[dict[str, Any]], object]
MAX_MESSAGE = 200


def is_retriable(status: int, said: str = "") -> bool:
    """Whether a failed request may be retried; ``said`` is the error's code and message."""
    if status in (401, 403):
        return False
    if status == 429:
        text = said.lower()
        return not any(marker in text for marker in SPEND_LIMIT_MARKERS)
    return status in RETRIABLE_STATUSES or 500 <= status <= 599


@dataclass(frozen=True, slots=True)
class ProviderError:
    """What a provider's error body says, and whether the shared retry policy retries it."""

    status: int
    kind: str | None
    message: str
    retriable: bool


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    list_path: str
    get_path: str  # with ``{id}``
    paging: Paging
    items_key: str | None  # the list envelope's array; None: the body is a bare array
    auth: Auth
    normalise: Normaliser
    default_base_url: str | None = None  # None: per account (Azure resource, region, project)
    base_url_hint: str = ""  # the shape of a base URL, shown when one is required and missing
    fixed_params: tuple[tuple[str, str], ...] = ()
    signing: str | None = None  # "sigv4": headers alone cannot authenticate (AWS)
    id_safe: str = ""  # characters of a batch id left unquoted in its URL ("/": resource names)
    raw_id: IdReader | None = None  # None: the object's ``id``

    def batch_id(self, obj: dict[str, Any]) -> str | None:
        """The id of a raw batch object as the normaliser puts it in ``snapshot.batch_id`` (and
        as :meth:`batch_path` takes it), without normalising; None when it has none, or one over
        :data:`~pipeline.core.models.MAX_BATCH_ID` bytes (the normaliser rejects the object)."""
        found = obj.get("id") if self.raw_id is None else self.raw_id(obj)
        return found if type(found) is str and found and not oversized_id(found) else None

    def list_params(self, limit: int) -> Params:
        return {**dict(self.fixed_params), **self.paging.first(limit)}

    def next_params(self, params: Params, body: Any) -> Params | None:
        return self.paging.next(params, body, self.items(body))

    def batch_path(self, batch_id: str) -> str:
        return self.get_path.format(id=quote(batch_id, safe=self.id_safe))

    def list_entries(self, body: Any) -> tuple[list[dict[str, Any]], int]:
        """The batch objects of one list response, and how many of its entries are not objects
        (skipped: every caller skips them); a body that is not a list response is an
        :class:`InvalidRecord`."""
        key = self.items_key
        found = body
        if key is not None:  # an empty Google list response is ``{}``
            found = (body.get(key) if body else []) if isinstance(body, dict) else None
        if not isinstance(found, list):
            what = "a JSON array" if key is None else f"a JSON object with a {key!r} array"
            raise InvalidRecord(f"list response is not {what}")
        objects = [o for o in found if isinstance(o, dict)]
        return objects, len(found) - len(objects)

    def items(self, body: Any) -> list[dict[str, Any]]:
        """The batch objects of one list response (:meth:`list_entries`)."""
        return self.list_entries(body)[0]

    def is_list(self, body: Any) -> bool:
        """Is a decoded body a list response (rather than one batch object)?"""
        if isinstance(body, list):
            return True
        return self.items_key is not None and isinstance(body, dict) and self.items_key in body

    def batch_objects(self, body: Any) -> list[dict[str, Any]]:
        """The batches in a decoded body: a list response, a bare array, or one batch object."""
        if isinstance(body, list):  # Together's list response, or batches collected by hand
            return [o for o in body if isinstance(o, dict)]
        if self.is_list(body):
            return self.items(body)
        if isinstance(body, dict):
            return [body]
        raise InvalidRecord(f"expected a JSON object or array, got {type(body).__name__}")

    def read_error(self, status: int, body: bytes) -> ProviderError:
        return read_error(status, body)


def _field(body: Any, key: str) -> Any:
    if not isinstance(body, dict):
        raise InvalidRecord(f"list response: expected a JSON object with {key!r}")
    return body.get(key)


def bearer(secret: Secret) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret.reveal()}"}


def header(name: str, **fixed: str) -> Auth:
    """An auth function that sends the secret in header ``name`` (plus fixed headers)."""
    extra = {k.replace("_", "-"): v for k, v in fixed.items()}

    def auth(secret: Secret) -> dict[str, str]:
        return {name: secret.reveal(), **extra}

    return auth


def no_headers(secret: Secret) -> dict[str, str]:
    return {}


def read_error(status: int, body: bytes) -> ProviderError:
    """OpenAI ``{error: {message, type, code}}``, Anthropic ``{type: error, error: {type, message}}``,
    Google ``{error: {code, message, status}}``, Mistral/AWS ``{message, type}`` or ``{detail}``."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    inner = obj.get("error") if isinstance(obj, dict) else None
    src = inner if isinstance(inner, dict) else obj if isinstance(obj, dict) else {}
    message = src.get("message") or src.get("detail") or (inner if isinstance(inner, str) else None)
    kind = src.get("code") or src.get("type") or src.get("status")
    text = message if isinstance(message, str) else body[:MAX_MESSAGE].decode("utf-8", "replace")
    kind_text = str(kind) if isinstance(kind, str | int) and not isinstance(kind, bool) else None
    retriable = is_retriable(status, f"{kind_text or ''} {text}")
    return ProviderError(status, kind_text, text[:MAX_MESSAGE] or f"HTTP {status}", retriable)
