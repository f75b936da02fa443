"""Shared by the provider golden tests: run one provider's normaliser on one object."""

from __future__ import annotations

from typing import Any

from pipeline.core.models import Snapshot
from pipeline.providers import adapter

OBSERVED = "2026-11-29T12:00:00.000Z"


def run(provider: str, obj: dict[str, Any], source: str = "acct") -> Snapshot:
    return adapter(provider).normalise(obj, source, OBSERVED)


def counts(snap: Snapshot) -> tuple[int | None, int | None, int | None]:
    return snap.requests_total, snap.requests_completed, snap.requests_failed
