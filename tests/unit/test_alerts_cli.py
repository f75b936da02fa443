"""``batchscope alerts test RULE`` against a local receiver, and the config errors of alerts: one
line each, never the destination's URL or signing key."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from batchscope.cli import main
from pipeline.alerts.messages import signing_key
from pipeline.core.webhooks import verify
from tests.loopback import serving_in_thread

KEY = "whsec_" + base64.b64encode(b"a-signing-key-of-32-bytes-long!!").decode()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[web.Request], list[bytes]]]:
    """A webhook receiver on its own thread (the CLI runs its own event loop)."""
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.Response(status=200)

    with serving_in_thread({"/hook": hook}) as url:
        yield url + "/hook", seen, bodies


def config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "batchscope.toml"
    path.write_text('[[alerts]]\nname = "failures"\ndestination = "webhook"\nurl_env = "HOOK_URL"\n'
                    f'signing_key_env = "HOOK_KEY"\nto_status = ["failed", "expired"]\n{extra}')
    return str(path)


Received = tuple[str, list[web.Request], list[bytes]]


def test_alerts_test_sends_a_signed_sample(tmp_path: Path, receiver: Received,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    url, seen, bodies = receiver
    monkeypatch.setenv("HOOK_URL", url)
    monkeypatch.setenv("HOOK_KEY", KEY)
    assert main(["--config", config(tmp_path), "alerts", "test", "failures"]) == 0
    out = capsys.readouterr()
    assert "delivered a sample alert" in out.out
    (request,) = seen
    h = request.headers
    assert verify([signing_key(KEY)], h, bodies[0], now=time.time()).msg_id == h["webhook-id"]
    assert url not in out.out + out.err
    assert KEY not in out.out + out.err


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["alerts", "test"], {}, "alerts test: name the rule to test"),
    (["alerts", "test", "nope"], {}, "alerts: no rule named 'nope' (configured: failures)"),
    (["alerts"], {"HOOK_URL": ""}, "alerts[0].url_env: environment variable HOOK_URL is not set or empty"),
    (["alerts"], {"HOOK_URL": "ftp://x"}, "alerts[0].url: must be an http(s) URL"),
    (["alerts"], {"HOOK_KEY": "whsec_***"},
     "alerts rule 'failures': the signing key: a webhook secret is not whsec_"),
])
def test_alerts_errors_are_one_line_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], argv: list[str],
                                                    env: dict[str, str], message: str) -> None:
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/secret-path")
    monkeypatch.setenv("HOOK_KEY", KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["--config", config(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchscope: config error: {message}")
    assert len(err.strip().splitlines()) == 1
    assert "secret-path" not in err
    assert KEY not in err
