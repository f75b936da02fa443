"""The deployment files as the tests read them: docker-compose.yml with its variables interpolated
as Compose does (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``), and the Grafana
dashboard with the ClickHouse plugin's and Grafana's macros expanded for a concrete time range.

The macro expansions follow the grafana-clickhouse-datasource plugin v4 (``pkg/macros``):
``$__timeFilter(c)`` -> ``c >= toDateTime(from) AND c <= toDateTime(to)`` in unix seconds,
``$__timeInterval(c)`` -> ``toStartOfInterval(toDateTime(c), INTERVAL n second)``, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fleet.json"
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (the forms this repo uses); an unset ``${VAR}`` is ''."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group("name"), match.group("op"), match.group("default") or ""
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        return value or ""

    return VARIABLE.sub(one, text)


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml parsed after interpolation (YAML anchors and ``<<`` merges resolved)."""
    return cast(dict[str, Any], yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env or {})))


def load_compose_raw() -> dict[str, Any]:
    """docker-compose.yml as written (variables not interpolated), for the schema check."""
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def load_dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], orjson.loads(DASHBOARD.read_bytes()))


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime
    interval_seconds: int


MACRO_CALL = re.compile(r"\$__(timeFilter_ms|timeFilter|timeInterval_ms|timeInterval|dateFilter)\(([^()]*)\)")
MACRO_VALUE = re.compile(r"\$__(fromTime_ms|toTime_ms|fromTime|toTime|interval_s|from|to|interval)\b")


def expand(sql: str, when: TimeRange, variables: Mapping[str, str]) -> str:
    """The SQL the plugin sends for ``when``; dashboard variables (``$x``, ``${x}``) substituted."""
    start, end = int(when.start.timestamp()), int(when.end.timestamp())
    start_ms, end_ms = int(when.start.timestamp() * 1000), int(when.end.timestamp() * 1000)
    n = max(when.interval_seconds, 1)

    def call(match: re.Match[str]) -> str:
        name, column = match.group(1), match.group(2).strip()
        return {
            "timeFilter": f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})",
            "timeFilter_ms": f"{column} >= fromUnixTimestamp64Milli({start_ms}) "
                             f"AND {column} <= fromUnixTimestamp64Milli({end_ms})",
            "dateFilter": f"{column} >= toDate('{when.start:%Y-%m-%d}') "
                          f"AND {column} <= toDate('{when.end:%Y-%m-%d}')",
            "timeInterval": f"toStartOfInterval(toDateTime({column}), INTERVAL {n} second)",
            "timeInterval_ms": f"toStartOfInterval(toDateTime64({column}, 3), "
                               f"INTERVAL {n * 1000} millisecond)",
        }[name]

    def value(match: re.Match[str]) -> str:
        return {
            "fromTime": f"toDateTime({start})", "toTime": f"toDateTime({end})",
            "fromTime_ms": f"fromUnixTimestamp64Milli({start_ms})",
            "toTime_ms": f"fromUnixTimestamp64Milli({end_ms})",
            "interval_s": str(n), "from": str(start_ms), "to": str(end_ms), "interval": f"{n}s",
        }[match.group(1)]

    out = MACRO_VALUE.sub(value, MACRO_CALL.sub(call, sql))
    for name, text in variables.items():
        out = out.replace(f"${{{name}}}", text).replace(f"${name}", text)
    return out


def dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each templating variable's current (default) value."""
    return {v["name"]: str(v["current"]["value"]) for v in dashboard.get("templating", {}).get("list", [])}


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, raw SQL) of every query of every panel, rows included."""
    panels = list(dashboard["panels"])
    panels += [p for row in dashboard["panels"] for p in row.get("panels", [])]
    return [(p["title"], t["rawSql"]) for p in panels for t in p.get("targets", [])]
