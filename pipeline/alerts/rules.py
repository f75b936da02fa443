"""Alert rules: which change events an operator wants to hear about, and where they go.

A rule (one ``[[alerts]]`` table of the config) matches a change event (docs/change-events.md)
on its ``kind``, ``to_status``, source, provider, model, team and a minimum request count;
every criterion left out matches anything, and a list matches any of its values. The team of an
event is found as spend finds a batch's (``spend.team_key``, docs/spend.md): its batch's metadata
value under that key, else the source's tag of that name, else ``unattributed`` (:func:`team_of`).
Pure: no I/O, no settings; the secrets a destination needs are named here (an environment
variable or a file) and read by the service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.core.models import CHANGE_KINDS
from pipeline.core.validate import require, secret_refs

UNATTRIBUTED = "unattributed"
DESTINATIONS = ("slack", "webhook")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MATCH_KEYS = ("kind", "to_status", "source", "provider", "model", "team")
RULE_KEYS = {"name", "destination", "url_env", "url_file", "signing_key_env", "signing_key_file",
             "min_requests", "all_failed", "digest_after", "digest_window", "digest_list", *MATCH_KEYS}


@dataclass(frozen=True, slots=True)
class Secretref:
    """Where a secret is: the NAME of an environment variable, or a file's path (never the value)."""

    env: str = ""
    file: str = ""

    def __bool__(self) -> bool:
        return bool(self.env or self.file)


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule. A burst (more than ``digest_after`` alerts of this rule within
    ``digest_window`` seconds) is sent as digests listing at most ``digest_list`` batches each."""

    name: str
    destination: str  # "slack" (an incoming webhook) or "webhook" (Standard Webhooks signed JSON)
    url: Secretref
    signing_key: Secretref = field(default_factory=Secretref)  # webhook only
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)  # criterion -> accepted values
    min_requests: int = 0
    all_failed: bool = False  # only batches that ended with every request failed
    digest_after: int = 20
    digest_window: float = 60.0
    digest_list: int = 20

    def matches(self, event: Mapping[str, Any], team: str) -> bool:
        """Whether ``event`` (a change event as published) is one this rule alerts on."""
        snap = event.get("snapshot") or {}
        seen = {"kind": event.get("kind"), "to_status": event.get("to_status"),
                "source": event.get("source"), "provider": event.get("provider"),
                "model": snap.get("model"), "team": team}
        if any(seen[key] not in values for key, values in self.match.items()):
            return False
        total = snap.get("requests_total") or 0
        if total < self.min_requests:
            return False
        return not self.all_failed or (total > 0 and (snap.get("requests_failed") or 0) >= total)


def team_of(event: Mapping[str, Any], source_tags: Mapping[str, Mapping[str, str]], team_key: str) -> str:
    """The team an event belongs to: its batch's metadata ``team_key``, else its source's tag
    ``team_key``, else :data:`UNATTRIBUTED` (never dropped)."""
    metadata = (event.get("snapshot") or {}).get("metadata") or {}
    team = metadata.get(team_key) if isinstance(metadata, Mapping) else None
    if isinstance(team, str) and team:
        return team
    return source_tags.get(str(event.get("source")), {}).get(team_key) or UNATTRIBUTED


def parse_rules(tables: object) -> tuple[Rule, ...]:
    """The ``[[alerts]]`` tables, checked: one :class:`ConfigError` line naming the first problem."""
    if tables is None:
        return ()
    require(isinstance(tables, list), "alerts", "must be an array of tables ([[alerts]])")
    assert isinstance(tables, list)
    rules = tuple(_rule(i, t) for i, t in enumerate(tables))
    names = [r.name for r in rules]
    dup = next((n for n in names if names.count(n) > 1), None)
    require(dup is None, "alerts", f"two rules are named {dup!r}")
    return rules


def _rule(index: int, table: object) -> Rule:
    where = f"alerts[{index}]"
    require(isinstance(table, dict), where, "must be a table")
    assert isinstance(table, dict)
    unknown = sorted(set(table) - RULE_KEYS)
    require(not unknown, f"{where}.{unknown[0] if unknown else ''}",
            f"unknown key (known: {', '.join(sorted(RULE_KEYS))})")
    name = table.get("name")
    require(isinstance(name, str) and NAME.fullmatch(name) is not None, f"{where}.name",
            "required: 1-64 letters, digits, '_', '.' or '-'")
    destination = table.get("destination")
    require(destination in DESTINATIONS, f"{where}.destination", f"must be one of {', '.join(DESTINATIONS)}")
    url = _secretref(table, where, "url")
    require(bool(url), where, "set url_env or url_file (the destination's URL is a secret)")
    key = _secretref(table, where, "signing_key")
    require(destination != "webhook" or bool(key), where,
            "a webhook destination needs signing_key_env or signing_key_file")
    require(destination != "slack" or not key, where, "a slack destination takes no signing key")
    match = {k: _values(table[k], f"{where}.{k}") for k in MATCH_KEYS if k in table}
    bad_kind = sorted(match.get("kind", frozenset()) - set(CHANGE_KINDS))
    require(not bad_kind, f"{where}.kind", f"unknown kind {bad_kind[0] if bad_kind else ''!r} "
            f"(known: {', '.join(CHANGE_KINDS)})")
    return Rule(name=str(name), destination=str(destination), url=url, signing_key=key, match=match,
                min_requests=_number(table, where, "min_requests", int, 0, 0, 10**9),
                all_failed=_flag(table, where, "all_failed"),
                digest_after=_number(table, where, "digest_after", int, 20, 1, 100_000),
                digest_window=_number(table, where, "digest_window", float, 60.0, 1.0, 86_400.0),
                digest_list=_number(table, where, "digest_list", int, 20, 1, 1_000))


def _secretref(table: Mapping[str, Any], where: str, stem: str) -> Secretref:
    return Secretref(*secret_refs(where, table, stem))


def _values(value: object, where: str) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    require(bool(items) and all(isinstance(v, str) and v for v in items), where,
            "must be a non-empty string or a list of them")
    return frozenset(str(v) for v in items)


def _flag(table: Mapping[str, Any], where: str, key: str) -> bool:
    value = table.get(key, False)
    require(isinstance(value, bool), f"{where}.{key}", "must be true or false")
    return bool(value)


def _number(table: Mapping[str, Any], where: str, key: str, kind: type[int] | type[float],
            default: float, low: float, high: float) -> Any:
    value = table.get(key, default)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    ok = numeric and (kind is float or isinstance(value, int))
    require(ok, f"{where}.{key}", f"must be {'an integer' if kind is int else 'a number'}")
    require(low <= value <= high, f"{where}.{key}", f"must be between {low:g} and {high:g}")
    return kind(value)


__all__ = ["UNATTRIBUTED", "ConfigError", "Rule", "Secretref", "parse_rules", "team_of"]
