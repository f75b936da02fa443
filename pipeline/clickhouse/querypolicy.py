"""What the query endpoint lets through: pure checks, no I/O.

A read is checked on ClickHouse's own parse of it (``parseQueryToJSON``, which also refuses more
than one statement): it must be a SELECT (WITH, UNION, INTERSECT, EXCEPT included) or SHOW
TABLES, with no INTO OUTFILE, no FORMAT, and no call of a function that reaches the filesystem or
the network. The read-only session (``readonly=1``) stops table functions such as ``file()``,
``url()`` or ``s3()``, but not the scalar ``file()``, which chDB lets read any file; so every
table function except the pure generators below is refused by name wherever it appears, and so
are the scalar functions that read files or call out.

The one write is the documented downstream acknowledgement, matched whole by a regular
expression: ``INSERT INTO [db.]batch_output_acks [(columns)] VALUES`` followed by rows of
literals only (strings, numbers, NULL), one statement. Its session also refuses expressions in
VALUES data, so a literal is all ClickHouse would accept there anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from pipeline.core.errors import BatchscopeError

ACK_TABLE = "batch_output_acks"
READ_ROOTS = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTablesQuery"})
# Table functions that only generate rows; every other one the engine knows is refused.
GENERATORS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
                        "primes", "values", "null", "view", "format", "generaterandom"})
# Scalar functions that read files, reach other hosts or call an AI provider over the network.
SCALAR_IO = frozenset({"file", "hascolumnintable", "showcertificate", "getclienthttpheader"})
ALLOWED = ("the running pipeline's endpoint runs SELECT and SHOW TABLES, and with --write only "
           f"INSERT INTO {ACK_TABLE} [(columns)] VALUES (literals), ...; for anything else stop the "
           "pipeline: `batchscope query --write` then opens the database directly")

_WS = r"[ \t\r\n]"
_IDENT = r"(?:[A-Za-z_][A-Za-z0-9_]*|`[A-Za-z_][A-Za-z0-9_]*`)"
# Atomic and possessive, as ClickHouse's lexer is: inside a string '' is always a quote, never an
# end and a start (and no input can make the match backtrack through every split).
_LITERAL = r"(?>'(?:[^'\\]|\\.|'')*+'|[-+]?[0-9]++(?:\.[0-9]*+)?(?:[eE][-+]?[0-9]++)?|NULL)"
_ROW = rf"\({_WS}*{_LITERAL}(?:{_WS}*,{_WS}*{_LITERAL})*{_WS}*\)"
ACK_INSERT = re.compile(
    rf"{_WS}*INSERT{_WS}+INTO{_WS}+(?:(?P<db>{_IDENT}){_WS}*\.{_WS}*)?`?{ACK_TABLE}`?{_WS}*"
    rf"(?:\({_WS}*{_IDENT}(?:{_WS}*,{_WS}*{_IDENT})*{_WS}*\){_WS}*)?"
    rf"VALUES{_WS}*{_ROW}(?:{_WS}*,{_WS}*{_ROW})*{_WS}*;?{_WS}*",
    re.IGNORECASE | re.ASCII | re.DOTALL)
INSERT_START = re.compile(rf"{_WS}*INSERT{_WS}", re.IGNORECASE | re.ASCII)


class Refused(BatchscopeError):
    """The endpoint does not run this statement: one line says what it allows."""


def is_ack_insert(sql: str, database: str) -> bool:
    """True for the acknowledgement insert, literals only, into the configured database's table."""
    match = ACK_INSERT.fullmatch(sql)
    return match is not None and match.group("db") in (None, database, f"`{database}`")


def check_write(sql: str, database: str, *, write: bool) -> bool:
    """True when ``sql`` is the one write allowed (and ``write`` was asked for); raises
    :class:`Refused` for any other INSERT; False for everything else (checked as a read)."""
    if is_ack_insert(sql, database):
        if not write:
            raise Refused("refused: the query is read-only; add --write to record an acknowledgement")
        return True
    if INSERT_START.match(sql):
        raise Refused(f"refused: {ALLOWED}")
    return False


def check_read(parsed: str, denied: Iterable[str], *, params: bool = False) -> None:
    """Raise :class:`Refused` unless ``parsed`` (``parseQueryToJSON``'s output) is a plain read.
    ``params``: parameters come with it, which must then be bound server side, to ``{name:Type}``
    placeholders (with none, clickhouse-connect would format them into the SQL text after this
    check)."""
    try:
        tree = orjson.loads(parsed)
    except orjson.JSONDecodeError:
        raise Refused("refused: the statement is nested too deeply to check") from None
    if not isinstance(tree, dict) or tree.get("type") not in READ_ROOTS:
        kind = tree.get("type", "?") if isinstance(tree, dict) else "?"
        raise Refused(f"refused: {kind} is not a read; {ALLOWED}")
    if "out_file" in tree:
        raise Refused("refused: INTO OUTFILE would write a file on the pipeline's machine")
    if "format_ast" in tree:
        raise Refused("refused: FORMAT is chosen by the client; use --format table|json|csv")
    if params and b'"type":"QueryParameter"' not in orjson.dumps(tree):
        raise Refused("refused: --param needs {name:Type} placeholders in the SQL")
    blocked = frozenset(denied)
    for name in function_names(tree):
        if name.lower() in blocked or name.lower().startswith("ai"):
            raise Refused(f"refused: {name}() reads files or reaches the network; the endpoint runs "
                          "no function that does")


def denied_functions(table_functions: Iterable[str]) -> frozenset[str]:
    """Every function name refused: the engine's table functions except the generators, and the
    scalar functions in :data:`SCALAR_IO` (all lower case)."""
    return frozenset(n.lower() for n in table_functions) - GENERATORS | SCALAR_IO


def function_names(tree: Any) -> Iterator[str]:
    """Every function a parsed statement calls, at any depth: calls, table functions and the
    names given to ``APPLY``. Iterative, so a deep statement cannot exhaust the stack."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "Function" and isinstance(node.get("name"), str):
                yield node["name"]
            if isinstance(node.get("func_name"), str):
                yield node["func_name"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
