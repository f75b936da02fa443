"""Alert rules (parsing, matching, teams), their messages and signatures, and the burst digests."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.alerts.digest import Bursts
from pipeline.alerts.messages import (
    Alert,
    Digest,
    signed_headers,
    signing_key,
    slack_alert,
    slack_digest,
    webhook_alert,
    webhook_digest,
)
from pipeline.alerts.rules import UNATTRIBUTED, Rule, parse_rules, team_of
from pipeline.core.errors import ConfigError
from pipeline.core.webhooks import verify

SLACK = {"name": "failures", "destination": "slack", "url_env": "SLACK_URL"}


def event(kind: str = "status_changed", to_status: str | None = "failed", *, source: str = "acct",
          provider: str = "openai", model: str = "gpt-4o-mini", total: int = 10, failed: int = 2,
          metadata: dict[str, str] | None = None, event_id: str = "e1") -> dict[str, Any]:
    snap = {"model": model, "requests_total": total, "requests_failed": failed, "requests_completed": 3,
            "metadata": metadata or {}, "expires_at": "2026-12-03T10:00:00.000Z"}
    return {"event_id": event_id, "kind": kind, "to_status": to_status, "source": source,
            "provider": provider, "batch_id": "batch_1", "at": "2026-12-03T09:00:00.000Z",
            "snapshot": snap}


def rule(**table: Any) -> Rule:
    return parse_rules([{**SLACK, **table}])[0]


def test_a_rule_without_criteria_matches_every_event() -> None:
    assert rule().matches(event(), "ml")
    assert rule().matches(event("progress", None), "ml")


def test_each_criterion_narrows_and_a_list_accepts_any_of_its_values() -> None:
    r = rule(kind="status_changed", to_status=["failed", "expired"], provider="openai", team="ml")
    assert r.matches(event(to_status="expired"), "ml")
    assert not r.matches(event(to_status="completed"), "ml")
    assert not r.matches(event(provider="mistral"), "ml")
    assert not r.matches(event(), "search")
    assert not r.matches(event("expiry_risk", None), "ml")


def test_min_requests_and_all_failed() -> None:
    assert not rule(min_requests=50).matches(event(total=10), "ml")
    assert rule(min_requests=10).matches(event(total=10), "ml")
    everything = rule(to_status="completed", all_failed=True)
    assert everything.matches(event(to_status="completed", total=5, failed=5), "ml")
    assert not everything.matches(event(to_status="completed", total=5, failed=4), "ml")
    assert not everything.matches(event(to_status="completed", total=0, failed=0), "ml")


def test_the_team_is_the_batch_metadata_then_the_source_tag_then_unattributed() -> None:
    tags = {"acct": {"team": "platform"}}
    assert team_of(event(metadata={"team": "ml"}), tags, "team") == "ml"
    assert team_of(event(metadata={"owner": "ml"}), tags, "owner") == "ml"
    assert team_of(event(), tags, "team") == "platform"
    assert team_of(event(source="other"), tags, "team") == UNATTRIBUTED


@pytest.mark.parametrize(("table", "message"), [
    ({"name": "x y"}, "alerts[0].name: required"),
    ({"destination": "email"}, "alerts[0].destination: must be one of slack, webhook"),
    ({"url_env": ""}, "alerts[0]: set url_env or url_file"),
    ({"url_file": "/run/secrets/slack"}, "alerts[0]: set url_env or url_file, not both"),
    ({"url_env": "https://hooks.slack.com/services/T0/B0/xyz"},
     "alerts[0].url_env: must be the NAME of an environment variable (the value given is not shown)"),
    ({"destination": "webhook"}, "alerts[0]: a webhook destination needs signing_key_env"),
    ({"kind": "explode"}, "alerts[0].kind: unknown kind 'explode'"),
    ({"to_status": []}, "alerts[0].to_status: must be a non-empty string or a list of them"),
    ({"min_requests": -1}, "alerts[0].min_requests: must be between 0 and"),
    ({"digest_window": "soon"}, "alerts[0].digest_window: must be a number"),
    ({"all_failed": "yes"}, "alerts[0].all_failed: must be true or false"),
    ({"when": "always"}, "alerts[0].when: unknown key"),
])
def test_a_bad_rule_is_one_line_naming_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules([{**SLACK, **table}])
    assert str(err.value).startswith(message)
    assert "hooks.slack.com" not in str(err.value)


def test_rule_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="two rules are named 'failures'"):
        parse_rules([SLACK, SLACK])


def test_an_alert_is_signed_as_the_standard_webhooks_test_vector_says() -> None:
    """The example of the Standard Webhooks specification (and its libraries' tests), through the
    alerts' own headers; a receiver's verification (pipeline.core.webhooks) accepts them."""
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    headers = signed_headers(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify([key], headers, body, now=1614265330.0).msg_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_a_malformed_signing_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as err:
        signing_key("whsec_not*base64")
    assert "not*base64" not in str(err.value)
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        signing_key("whsec_c2hvcnQ=")


def test_the_slack_message_names_the_batch_source_team_status_counts_and_console() -> None:
    msg = slack_alert(Alert("failures", event(), "ml"))
    text = str(msg)
    for part in ("batch_1", "acct (openai)", "ml", "failed", "3 done, 2 failed of 10",
                 "https://platform.openai.com/batches/batch_1", "event `e1`"):
        assert part in text
    no_console = str(slack_alert(Alert("failures", event(provider="mistral"), "ml")))
    assert "Open in console" not in no_console


def test_provider_text_cannot_inject_slack_markup() -> None:
    text = str(slack_alert(Alert("failures", event(model="<!channel> & co"), "ml")))
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; &amp; co" in text


def test_the_webhook_body_carries_the_event_and_its_id() -> None:
    body = webhook_alert(Alert("failures", event(), "ml"))
    assert body["event_id"] == "e1"
    assert body["event"]["batch_id"] == "batch_1"
    assert body["team"] == "ml"


def alerts(n: int, rule_name: str = "failures") -> list[Alert]:
    return [Alert(rule_name, event(event_id=f"e{i}", source=f"s{i % 2}"), "ml") for i in range(n)]


def test_a_digest_lists_the_first_batches_the_total_and_the_breakdown() -> None:
    digest = Digest("failures", tuple(alerts(30)), listed=5)
    slack = str(slack_digest(digest))
    assert "30 alerts of rule `failures`" in slack
    assert "and 25 more" in slack
    assert "s0: failed: 15" in slack
    body = webhook_digest(digest)
    assert body["total"] == 30
    assert body["event_ids"] == ["e0", "e1", "e2", "e3", "e4"]
    assert {"source": "s1", "status": "failed", "count": 15} in body["breakdown"]


def test_a_burst_sends_the_first_alerts_alone_and_the_rest_as_one_digest() -> None:
    r = rule(digest_after=3, digest_window=10.0)
    bursts = Bursts((r,))
    sent = [a for i, a in enumerate(alerts(500)) if bursts.admit(a, now=i * 0.02)]  # 500 in 10 s
    assert [a.event_id for a in sent] == ["e0", "e1", "e2"]
    assert bursts.due(9.9) == []
    assert len(bursts.held()) == 497
    (digest,) = bursts.due(10.0)
    assert len(digest.alerts) == 497
    assert digest.alerts[0].event_id == "e3"
    assert bursts.held() == []
    assert bursts.admit(alerts(1)[0], now=10.5)  # a new window


def test_an_alert_after_a_window_with_held_alerts_joins_its_digest_until_it_is_sent() -> None:
    r = rule(digest_after=1, digest_window=10.0)
    bursts = Bursts((r,))
    a, b, c = alerts(3)
    assert bursts.admit(a, 0.0)
    assert not bursts.admit(b, 1.0)
    assert not bursts.admit(c, 12.0)  # the digest of b is not out yet: c must not overtake it
    (digest,) = bursts.due(12.0)
    assert [x.event_id for x in digest.alerts] == ["e1", "e2"]


def test_each_rule_has_its_own_window() -> None:
    rules = (rule(digest_after=1), parse_rules([{**SLACK, "name": "other", "digest_after": 1}])[0])
    bursts = Bursts(rules)
    assert bursts.admit(alerts(1)[0], 0.0)
    assert bursts.admit(alerts(1, "other")[0], 0.0)
    assert not bursts.admit(alerts(1)[0], 0.1)
    assert bursts.next_due() == 60.0
