"""The webhook settings (pipeline/config.py): each source's secret reference, path and provider
checked with one line that never shows the secret; two secrets at once for a rotation."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pipeline.config import Secrets, load_settings
from pipeline.core.errors import ConfigError

OLD = "whsec_" + base64.b64encode(b"old-webhook-secret").decode()
NEW = "whsec_" + base64.b64encode(b"new-webhook-secret").decode()


def settings_file(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "batchscope.toml"
    path.write_text(f"""
[[sources]]
name = "oa"
provider = "openai"
{source}
""", encoding="utf-8")
    return path


def test_secrets_are_read_only_when_asked_and_two_are_taken(tmp_path: Path) -> None:
    path = settings_file(tmp_path, 'webhook_secret_env = "WHSEC"')
    quiet = load_settings(path, {})
    assert quiet.sources[0].webhooks
    assert quiet.sources[0].webhook_secret is None
    assert quiet.sources[0].hook_path == "/webhooks/oa"
    read = load_settings(path, {"WHSEC": f"{NEW} {OLD}"}, secrets=Secrets.WEBHOOK_SECRETS)
    assert read.sources[0].webhook_secret is not None
    assert read.sources[0].webhook_secret.reveal() == f"{NEW} {OLD}"
    secret_file = tmp_path / "whsec"
    secret_file.write_text(OLD + "\n", encoding="utf-8")
    path = settings_file(tmp_path, f'webhook_secret_file = "{secret_file}"\nwebhook_path = "/hooks/oa-1"')
    from_file = load_settings(path, {}, secrets=Secrets.WEBHOOK_SECRETS).sources[0]
    assert from_file.webhook_secret is not None
    assert (from_file.webhook_secret.reveal(), from_file.hook_path) == (OLD, "/hooks/oa-1")


@pytest.mark.parametrize(("source", "env", "message"), [
    ('webhook_secret_env = "WHSEC"', {"WHSEC": "whsec_not base64!"}, "not shown"),
    ('webhook_secret_env = "WHSEC"', {"WHSEC": f"{OLD} {NEW} {OLD}"}, "holds 3 secrets"),
    ('webhook_secret_env = "WHSEC"', {}, "is not set"),
    ('webhook_secret_env = "WHSEC"\nwebhook_secret_file = "/x"', {}, "not both"),
    ('webhook_secret_env = "WHSEC"\nwebhook_path = "no-slash"', {}, "webhook_path"),
])
def test_bad_webhook_settings_are_one_line(tmp_path: Path, source: str, env: dict[str, str],
                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(settings_file(tmp_path, source), env, secrets=Secrets.WEBHOOK_SECRETS)
    assert "\n" not in str(caught.value)
    assert "not base64!" not in str(caught.value)


def test_a_provider_without_webhooks_and_a_path_taken_twice(tmp_path: Path) -> None:
    path = tmp_path / "batchscope.toml"
    path.write_text('[[sources]]\nname = "an"\nprovider = "anthropic"\nwebhook_secret_env = "W"\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="sends no webhooks"):
        load_settings(path, {})
    path.write_text('[[sources]]\nname = "a"\nprovider = "openai"\nwebhook_secret_env = "W"\n'
                    'webhook_path = "/h"\n[[sources]]\nname = "b"\nprovider = "gemini"\n'
                    'webhook_secret_env = "W"\nwebhook_path = "/h"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="two sources take webhooks on '/h'"):
        load_settings(path, {})
