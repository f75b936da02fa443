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


def _stdlib_dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_plain, separators=(",", ":")).encode()


ORJSON = Codec("orjson", orjson.loads, orjson.dumps)
STDLIB = Codec("json", json.loads, _stdlib_dumps)
CODECS = {c.name: c for c in (ORJSON, STDLIB)}
