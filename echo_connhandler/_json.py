"""JSON for the hot paths of pulls: orjson when installed (the ``fast`` extra), else the stdlib.

Decoding a CKAN page of 32 000 rows and encoding it as JSON Lines are most of a pull's CPU time
(docs/performance.md). orjson does both several times faster and, because each call is shorter,
holds the GIL for less time, so an event loop that shares the process (a triggerer's) is stalled
less by the decoding thread. Both produce the same values; the output differs only in spacing
(none, in both) and in how non-ASCII text is escaped (UTF-8 as is, in both).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["FAST_JSON", "dumps_compact", "loads"]

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the extra
    orjson = None  # type: ignore[assignment]

#: Whether orjson is in use.
FAST_JSON = orjson is not None

_STDLIB_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _orjson_default(value: Any) -> str:
    return str(value)


def loads(data: bytes | str) -> Any:
    """Parse JSON text."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def _dumps_orjson(value: Any) -> bytes:
    assert orjson is not None
    return orjson.dumps(value, default=_orjson_default)


def _dumps_stdlib(value: Any) -> bytes:
    return _STDLIB_ENCODE(value).encode("utf-8")


#: ``value`` as compact UTF-8 JSON (no spaces, non-ASCII kept), unknown types as ``str()``.
dumps_compact: Callable[[Any], bytes] = _dumps_orjson if orjson is not None else _dumps_stdlib
