"""The deployment files as the tests read them: docker-compose.yml with its variables interpolated
as Compose does, a ``.env`` file read as Compose reads it, the image's environment from the
Dockerfile, and the Grafana dashboard with the ClickHouse plugin's and Grafana's macros expanded
for a concrete time range.

Interpolation follows the Compose Specification ("Interpolation", as compose-go implements it):
values (never keys) of the parsed file, after YAML anchors and merges; ``$VAR`` and ``${VAR}``
(unset: ''), ``${VAR:-default}`` / ``${VAR-default}`` (unset or empty / unset), ``${VAR:?msg}`` /
``${VAR?msg}`` (an error naming VAR and msg), ``${VAR:+alt}`` / ``${VAR+alt}``, ``$$`` for a
literal ``$``, and defaults that hold further ``${...}``.

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
DOCKERFILE = ROOT / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fleet.json"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


class InterpolationError(ValueError):
    """What ``docker compose`` refuses to start with: a required variable without a value."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """One value with Compose's variable substitution."""
    out, i = [], 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        i = dollar + 1
        if text.startswith("$", i):
            out.append("$")
            i += 1
        elif text.startswith("{", i):
            end = _closing_brace(text, i)
            out.append(_braced(text[i + 1:end], env))
            i = end + 1
        elif found := NAME.match(text, i):
            out.append(env.get(found.group(0), ""))
            i = found.end()
        else:
            out.append("$")
    return "".join(out)


def _closing_brace(text: str, opening: int) -> int:
    depth = 0
    for at in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0:
            return at
    raise InterpolationError(f"invalid interpolation format for {text!r}: unclosed '${{'")


def _braced(inner: str, env: Mapping[str, str]) -> str:
    found = BRACED.fullmatch(inner)
    if found is None:
        raise InterpolationError(f"invalid interpolation format: ${{{inner}}}")
    name, op, arg = found.group("name"), found.group("op"), found.group("arg") or ""
    value = env.get(name)
    present = value is not None and (value != "" or not (op or "").startswith(":"))
    if op in (":-", "-"):
        return cast(str, value) if present else interpolate(arg, env)
    if op in (":?", "?"):
        if not present:
            raise InterpolationError(f"required variable {name} is missing a value: {interpolate(arg, env)}")
        return cast(str, value)
    if op in (":+", "+"):
        return interpolate(arg, env) if present else ""
    return value or ""


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of a parsed compose file interpolated (keys are left as written)."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml parsed (YAML anchors and ``<<`` merges resolved), then interpolated."""
    return cast(dict[str, Any], interpolate_tree(load_compose_raw(), env or {}))


def load_compose_raw() -> dict[str, Any]:
    """docker-compose.yml as written (variables not interpolated), for the schema check."""
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def read_dotenv(path: Path) -> dict[str, str]:
    """A ``.env`` file as Compose reads it for interpolation: ``KEY=VALUE`` lines (``export``
    allowed), ``#`` comments, values unquoted (an inline `` #`` starts a comment), in single quotes
    (literal) or double quotes (``\\n`` escapes); values may use variables defined above them."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or NAME.fullmatch(key.strip()) is None:
            raise InterpolationError(f"{path}: unexpected line {line!r}")
        found[key.strip()] = _dotenv_value(value.strip(), found)
    return found


def _dotenv_value(value: str, defined: Mapping[str, str]) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return interpolate(value[1:-1].replace("\\n", "\n").replace('\\"', '"'), defined)
    return interpolate(value.split(" #", 1)[0].strip(), defined)


def dockerfile_stages() -> list[list[str]]:
    """Instructions per build stage (continuation lines joined, comments dropped)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#") or (line.startswith("ARG") and not stages):
            continue
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def image_env() -> dict[str, str]:
    """The ``ENV`` of the image's runtime stage (``KEY=VALUE`` pairs), as a container starts with."""
    env: dict[str, str] = {}
    for line in dockerfile_stages()[-1]:
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key, _, value = pair.partition("=")
                env[key] = value.strip('"')
    return env


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
