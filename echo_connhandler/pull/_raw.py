"""Chunks kept as delivered: what a checkpoint records to decode a body later, elsewhere.

``run_pull(stage="fetch")`` (an Airflow trigger: it only waits on the network) writes each
:class:`~echo_connhandler.pull.RawPage`'s body as it came, and records how to decode it: the
source's decode function by name, its arguments, and the answer's status, content type, method
and URL (redacted) so that a body that turns out wrong still gives the library's typed error
naming the request. A later run of the same pull (the task, resumed in a worker) rebuilds the
:class:`RawPage` from that record and decodes it there (docs/airflow/deferrable-pulls.md, "What
runs where").

A checkpoint is not trusted: the function it names is only looked up in the module of the
source's own class (or of a base class that is a source), never imported from anywhere else.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import httpx

from echo_connhandler._exceptions import DataConsistencyError
from echo_connhandler._secrets import redact_url
from echo_connhandler.pull._plan import RawPage, Source

__all__ = ["raw_description", "raw_page"]


def _to_json(value: Any) -> Any:
    """``value`` as JSON that gives it back exactly (tuples, dates and datetimes tagged)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, tuple):
        return {"$tuple": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {"$dict": {str(k): _to_json(v) for k, v in value.items()}}
    raise TypeError(
        f"a decode argument of {type(value).__name__} cannot be kept in a checkpoint; a "
        "RawPage's args must be plain values (text, numbers, tuples, lists, dates, mappings)"
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        if tag == "$datetime":
            return datetime.fromisoformat(inner)
        if tag == "$date":
            return date.fromisoformat(inner)
        if tag == "$tuple":
            return tuple(_from_json(v) for v in inner)
        if tag == "$dict":
            return {k: _from_json(v) for k, v in inner.items()}
        raise ValueError(f"unknown tag {tag!r}")
    return value


def _source_modules(source: Source) -> set[str]:
    return {cls.__module__ for cls in type(source).__mro__ if issubclass(cls, Source)}


def raw_description(page: RawPage, source: Source) -> dict[str, Any]:
    """What a checkpoint records of ``page`` so that :func:`raw_page` can rebuild it."""
    decode = page.decode
    module, qualname = getattr(decode, "__module__", ""), getattr(decode, "__qualname__", "")
    if module not in _source_modules(source) or "." in qualname or "<" in qualname:
        raise TypeError(
            f"{source.describe()}: a RawPage's decode must be a module-level function of the "
            f"source's own module to be decoded later, got {module}:{qualname}"
        )
    response = page.response
    request = response.request
    return {
        "decode": f"{module}:{qualname}",
        "args": _to_json(page.args),
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "method": request.method,
        "url": redact_url(str(request.url)),
    }


def raw_page(description: Mapping[str, Any], content: bytes, source: Source) -> RawPage:
    """The :class:`RawPage` a checkpoint recorded (``content``: its verified body)."""
    try:
        module, qualname = str(description["decode"]).split(":")
        if module not in _source_modules(source) or "." in qualname:
            raise ValueError(f"{module}:{qualname} is not a function of the source's module")
        decode = getattr(importlib.import_module(module), qualname)
        if not callable(decode):
            raise ValueError(f"{module}:{qualname} is not callable")
        args = _from_json(description["args"])
        request = httpx.Request(str(description["method"]), str(description["url"]))
        response = httpx.Response(
            int(description["status"]),
            headers={"content-type": str(description.get("content_type") or "")},
            content=content,
            request=request,
        )
    except (KeyError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise DataConsistencyError(
            f"{source.describe()}: a chunk kept as delivered cannot be decoded from its "
            f"checkpoint record ({type(exc).__name__}: {exc})"
        ) from None
    return RawPage(response, decode, tuple(args) if isinstance(args, list | tuple) else ())
