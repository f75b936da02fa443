"""``batchscope normalise``: one snapshot per batch as JSON lines; bad input exits 2 with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.providers import PROVIDERS
from tests.unit.providers.test_properties import VALID

LIST_BODIES: dict[str, Any] = {
    "openai": {"object": "list", "data": VALID["openai"] * 2, "has_more": False},
    "azure_openai": {"object": "list", "data": VALID["azure_openai"] * 2, "has_more": False},
    "groq": {"object": "list", "data": VALID["groq"] * 2},
    "orq": {"object": "list", "data": VALID["orq"], "has_more": False},
    "anthropic": {"data": VALID["anthropic"], "has_more": False, "first_id": None, "last_id": None},
    "mistral": {"object": "list", "data": VALID["mistral"] * 2, "total": 2},
    "together": VALID["together"] * 2,
    "gemini": {"operations": VALID["gemini"]},
    "vertex": {"batchPredictionJobs": VALID["vertex"] * 2, "nextPageToken": ""},
    "bedrock": {"invocationJobSummaries": VALID["bedrock"] * 2},
}


def run_cli(tmp_path: Path, provider: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHSCOPE_")}
    return subprocess.run([sys.executable, "-m", "batchscope.cli", "normalise", "--provider", provider,
                           "--source", "cli-src"], input=stdin, cwd=tmp_path, capture_output=True,
                          timeout=60, env=env, check=False)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_list_response_gives_one_line_per_batch(tmp_path: Path, provider: str) -> None:
    body = LIST_BODIES[provider]
    done = run_cli(tmp_path, provider, orjson.dumps(body))
    assert (done.returncode, done.stderr) == (0, b"")
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    batches = body if isinstance(body, list) else next(v for v in body.values() if isinstance(v, list))
    assert len(lines) == len(batches)
    assert all(s["provider"] == provider and s["source"] == "cli-src" for s in lines)
    assert all(s["observed_at"].endswith("Z") and s["batch_id"] for s in lines)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "together", "gemini", "bedrock"])
def test_one_object(tmp_path: Path, provider: str) -> None:
    done = run_cli(tmp_path, provider, orjson.dumps(VALID[provider][0]))
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1


@pytest.mark.parametrize(("provider", "stdin", "says"), [
    ("openai", b"not json", b"not valid JSON"),
    ("openai", b"", b"not valid JSON"),
    ("openai", b'"text"', b"expected a JSON object or array"),
    ("openai", b'{"status": "completed"}', b"'id' missing"),
    ("mistral", b'{"object": "list", "data": [{"id": "j", "status": 5}]}', b"'status' missing"),
    ("anthropic", b'{"id": "m", "processing_status": "ended", "request_counts": {"errored": "x"}}',
     b"request_counts.errored"),
    ("together", b'[{"id": "t", "status": "COMPLETED", "created_at": "yesterday"}]', b"ISO 8601"),
    ("gemini", b'{"operations": "none"}', b"list response is not a JSON object with a 'operations' array"),
    ("vertex", b'{"name": "x", "state": "JOB_STATE_RUNNING", "completionStats": []}', b"completionStats"),
    ("bedrock", b'{"jobArn": "a", "status": "Completed", "totalRecordCount": -1}', b"negative"),
    ("orq", b'{"id": "o", "status": "completed", "createdAt": true}', b"created_at"),
    ("azure_openai", b'{"id": "a", "status": "completed", "metadata": [1]}', b"metadata"),
    ("groq", b'[{"id": "g"}]', b"'status' missing"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, provider: str, stdin: bytes, says: bytes) -> None:
    done = run_cli(tmp_path, provider, stdin)
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.count(b"\n") == 1
    assert b"Traceback" not in done.stderr
    assert says in done.stderr
    assert done.stderr.startswith(b"batchscope: invalid input: ")


def test_unknown_provider_is_an_argument_error(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "cohere", b"{}")
    assert done.returncode == 2
    assert done.stderr.count(b"\n") == 1
    assert b"invalid choice" in done.stderr


def test_a_bare_array_works_for_every_provider(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "mistral", orjson.dumps(VALID["mistral"] * 3))
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 3
