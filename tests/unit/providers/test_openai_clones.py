"""Azure OpenAI, Groq and orq.ai: the OpenAI object with their own quirks."""

from __future__ import annotations

from typing import Any

from pipeline.core.models import Snapshot
from pipeline.core.secret import Secret
from pipeline.providers import adapter
from tests.unit.providers.helpers import OBSERVED, counts, run
from tests.unit.providers.test_openai import DOC_EXAMPLE

# The user's seed document: orq.ai TypeScript SDK ``ListBatchesData`` (camelCase), verbatim.
SEED: dict[str, Any] = {
    "id": "<id>", "object": "batch", "endpoint": "<value>", "errors": {}, "inputFileId": "<id>",
    "completionWindow": "<value>", "status": "<value>", "outputFileId": None, "errorFileId": None,
    "createdAt": 831022, "inProgressAt": None, "expiresAt": 657464, "finalizingAt": 834818,
    "completedAt": 686338, "failedAt": 261017, "expiredAt": 392771, "cancellingAt": 473381,
    "cancelledAt": 346485, "requestCounts": {"total": 69517, "completed": 188348, "failed": 626734},
}


def test_orq_seed_object_reaches_every_field() -> None:
    snap = run("orq", {**SEED, "metadata": {"team": "x", "n": 2}})
    assert snap == Snapshot(
        source="acct", provider="orq", batch_id="<id>", status="unknown", provider_status="<value>",
        observed_at=OBSERVED, endpoint="<value>", completion_window="<value>",
        created_at="1970-01-10T14:50:22.000Z", in_progress_at=None,
        finalizing_at="1970-01-10T15:53:38.000Z", completed_at="1970-01-08T22:38:58.000Z",
        failed_at="1970-01-04T00:30:17.000Z", expired_at="1970-01-05T13:06:11.000Z",
        cancelling_at="1970-01-06T11:29:41.000Z", cancelled_at="1970-01-05T00:14:45.000Z",
        expires_at="1970-01-08T14:37:44.000Z", requests_total=69517, requests_completed=188348,
        requests_failed=626734, input_file_id="<id>", output_file_id=None, error_file_id=None,
        errors=[], metadata={"team": "x", "n": "2"}, provider_extra={"object": "batch"},
    )


def test_orq_wire_form_equals_sdk_form() -> None:
    wire = {"id": "b", "object": "batch", "status": "in_progress", "input_file_id": "f",
            "created_at": 1711471533, "request_counts": {"total": 2, "completed": 1, "failed": 0}}
    sdk = {"id": "b", "object": "batch", "status": "in_progress", "inputFileId": "f",
           "createdAt": 1711471533, "requestCounts": {"total": 2, "completed": 1, "failed": 0}}
    assert run("orq", wire) == run("orq", sdk)
    assert counts(run("orq", sdk)) == (2, 1, 0)


def test_orq_snake_case_wins_over_camel_case_twin() -> None:
    snap = run("orq", {"id": "b", "status": "completed", "input_file_id": "wire", "inputFileId": "sdk"})
    assert snap.input_file_id == "wire"


def test_orq_lists_from_the_router() -> None:
    a = adapter("orq")
    assert (a.default_base_url, a.list_path) == ("https://api.orq.ai/v3/router", "/batches")
    assert a.batch_objects({"object": "list", "data": [SEED], "has_more": False}) == [SEED]


def test_azure_endpoint_gets_the_v1_prefix_and_api_key_header() -> None:
    snap = run("azure_openai", {**DOC_EXAMPLE, "endpoint": "/chat/completions",
                                "errors": {"data": [{"code": "token_limit_exceeded", "message": "m"}]}})
    assert snap.provider == "azure_openai"
    assert snap.endpoint == "/v1/chat/completions"
    assert snap.errors[0]["code"] == "token_limit_exceeded"
    a = adapter("azure_openai")
    assert a.auth(Secret("k")) == {"api-key": "k"}
    assert a.list_params(20) == {"api-version": "2024-10-21", "limit": "20"}
    assert run("azure_openai", DOC_EXAMPLE).endpoint == "/v1/completions"


def test_groq_is_one_page_with_a_long_window() -> None:
    snap = run("groq", {**DOC_EXAMPLE, "completion_window": "7d"})
    assert (snap.provider, snap.completion_window) == ("groq", "7d")
    a = adapter("groq")
    assert a.next_params(a.list_params(100), {"data": [DOC_EXAMPLE], "has_more": True}) is None
    assert a.default_base_url == "https://api.groq.com/openai/v1"
