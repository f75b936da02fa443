"""JSON codecs for records on the wire: orjson (the pipeline's) and the stdlib (a benchmark baseline).

Both produce the same JSON for batchscope's records; dataclasses are encoded field by field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    loads: Callable[[bytes], Any]
    dumps: Callable[[Any], bytes]


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in fields(obj)}
    raise TypeError(f"cannot encode {type(obj).__name__}")


_join = b"".join


def orjson_dumps(obj: Any) -> bytes:
    """``orjson.dumps`` returned at its exact size: the pipeline's encoder for records on the wire.

    Since 3.12 orjson hands back its working buffer as the bytes object without shrinking it
    (at least 4 KB; 8 KB for a ~770-byte snapshot). A producer holds its records until they are
    sent, so every retained record then costs ten times its size, and the heap growth shows up as
    two page faults per record (about 4 µs of system time; see ``bench/RESULTS.md``, "Normaliser
    alone"). Copying into an exact-size object costs under 0.1 µs
    (``b"".join`` of two parts always copies; it is cheaper than ``bytes(memoryview(...))``).
    """
    return _join((orjson.dumps(obj), b""))


def _stdlib_dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_plain, separators=(",", ":")).encode()


ORJSON = Codec("orjson", orjson.loads, orjson_dumps)
STDLIB = Codec("json", json.loads, _stdlib_dumps)
CODECS = {c.name: c for c in (ORJSON, STDLIB)}
