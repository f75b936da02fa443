"""Anthropic Message Batches: processing_status, the cancel and expiry rules, RFC 3339 micros."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.models import Snapshot
from pipeline.core.secret import Secret
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run

T = "2024-08-20T18:37:24.100435Z"
DOC_EXAMPLE: dict[str, Any] = {
    "archived_at": T, "cancel_initiated_at": None, "created_at": T, "ended_at": None,
    "expires_at": "2024-08-21T18:37:24.100435Z", "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
    "processing_status": "in_progress",
    "request_counts": {"canceled": 10, "errored": 30, "expired": 10, "processing": 100, "succeeded": 50},
    "results_url": None, "type": "message_batch",
}


def ended(**counts_: int) -> dict[str, Any]:
    base = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
    return {**DOC_EXAMPLE, "processing_status": "ended", "ended_at": "2024-08-21T01:02:03.456789Z",
            "request_counts": {**base, **counts_}}


def test_documented_example() -> None:
    assert run("anthropic", DOC_EXAMPLE) == Snapshot(
        source="acct", provider="anthropic", batch_id="msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        status="in_progress", provider_status="in_progress", observed_at=OBSERVED,
        created_at="2024-08-20T18:37:24.100Z", expires_at="2024-08-21T18:37:24.100Z",
        requests_total=200, requests_completed=50, requests_failed=30,
        requests_extra={"processing": 100, "canceled": 10, "expired": 10},
        provider_extra={"archived_at": T, "results_url": None, "type": "message_batch"},
    )


def test_canceling_sets_cancelling_at() -> None:
    snap = run("anthropic", {**DOC_EXAMPLE, "processing_status": "canceling", "cancel_initiated_at": T})
    assert (snap.status, snap.cancelling_at) == ("cancelling", "2024-08-20T18:37:24.100Z")


def test_ended_after_cancel_is_cancelled_even_if_some_succeeded() -> None:
    snap = run("anthropic", {**ended(succeeded=5, canceled=5), "cancel_initiated_at": T})
    assert (snap.status, snap.cancelled_at, snap.completed_at) == (
        "cancelled", "2024-08-21T01:02:03.456Z", None)


def test_ended_with_nothing_succeeded_and_some_expired_is_expired() -> None:
    snap = run("anthropic", ended(errored=2, expired=3))
    assert (snap.status, snap.expired_at) == ("expired", "2024-08-21T01:02:03.456Z")


def test_ended_with_every_request_errored_is_failed() -> None:
    snap = run("anthropic", ended(errored=4))
    assert (snap.status, snap.failed_at) == ("failed", "2024-08-21T01:02:03.456Z")
    assert counts(snap) == (4, 0, 4)


@pytest.mark.parametrize("kw", [{"succeeded": 3, "errored": 1}, {"succeeded": 1, "expired": 2}, {}])
def test_other_ended_batches_are_completed(kw: dict[str, int]) -> None:
    snap = run("anthropic", ended(**kw))
    assert (snap.status, snap.completed_at) == ("completed", "2024-08-21T01:02:03.456Z")


def test_unknown_processing_status_and_null_counts() -> None:
    snap = run("anthropic", {**DOC_EXAMPLE, "processing_status": "archiving", "request_counts": None})
    assert (snap.status, snap.provider_status) == ("unknown", "archiving")
    assert counts(snap) == (None, None, None)


def test_headers_and_paging() -> None:
    a = adapter("anthropic")
    assert a.auth(Secret("sk")) == {"x-api-key": "sk", "anthropic-version": "2023-06-01"}
    body = {"data": [DOC_EXAMPLE], "has_more": True, "first_id": "x", "last_id": "msgbatch_1"}
    assert a.next_params(a.list_params(5000), body) == {"limit": "1000", "after_id": "msgbatch_1"}
    assert a.list_path == "/messages/batches"
