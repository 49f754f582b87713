"""Pull sources by name, and their arguments as plain JSON.

A scheduler describes a pull in plain JSON (an Airflow trigger's keyword arguments are stored
in its database; a script may read them from a file): the source's registered
:attr:`~echo_connhandler.pull.Source.name` and its keyword arguments
(:meth:`~echo_connhandler.pull.Source.arguments`: dates as ISO 8601 text, durations as
seconds, which every source's constructor accepts). :func:`build_source` turns that back into
the source. The package's sources are registered when :mod:`echo_connhandler.pull` is
imported; a source of your own is registered with :func:`register_source` (a class decorator)::

    from echo_connhandler import HttpHandler
    from echo_connhandler.pull import Source, register_source

    @register_source
    class StatusPagesSource(Source):
        name = "status_pages"
        handler_class = HttpHandler
        ...
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from echo_connhandler._handler import HttpHandler
from echo_connhandler.pull._plan import Source

__all__ = [
    "build_source",
    "json_arguments",
    "register_source",
    "registered_sources",
    "source_class",
]

SourceT = TypeVar("SourceT", bound=type[Source])

#: A source's name: lower-case words joined by ``_`` (it travels in JSON and in log lines).
_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

_SOURCES: dict[str, type[Source]] = {}


def register_source(cls: SourceT) -> SourceT:
    """Register ``cls`` under its :attr:`~echo_connhandler.pull.Source.name`; returns it.

    Refused (``TypeError``/``ValueError`` naming the class and the cause): a class that is not a
    concrete :class:`~echo_connhandler.pull.Source`, a name that is missing, inherited or not
    lower-case words joined by ``_``, a ``handler_class`` that is no
    :class:`~echo_connhandler.HttpHandler`, and a name another class holds. Registering the
    same class again does nothing.
    """
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise TypeError(f"register_source takes a Source subclass, got {cls!r}")
    where = f"{cls.__module__}.{cls.__qualname__}"
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise TypeError(f"{where} cannot be registered: it does not implement {missing}")
    # Its own name, never an inherited one: two sources must not answer to one name.
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{where}.name must be set on the class itself, as lower-case words joined by '_' "
            f"(e.g. 'ccee_datastore'), got {name!r}"
        )
    handler_class = getattr(cls, "handler_class", None)
    if not (isinstance(handler_class, type) and issubclass(handler_class, HttpHandler)):
        raise TypeError(
            f"{where}.handler_class must be an HttpHandler subclass, got {handler_class!r}"
        )
    held = _SOURCES.get(name)
    if held is not None and held is not cls:
        raise ValueError(
            f"pull source name {name!r} is taken by {held.__module__}.{held.__qualname__}; "
            f"give {where} another name"
        )
    _SOURCES[name] = cls
    return cls


def registered_sources() -> dict[str, type[Source]]:
    """Every registered source class by name (a copy, sorted by name)."""
    return dict(sorted(_SOURCES.items()))


def source_class(name: str) -> type[Source]:
    """The source class registered as ``name`` (``ValueError`` listing the known names)."""
    try:
        return _SOURCES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_SOURCES)) or "none"
        raise ValueError(f"unknown pull source {name!r}; registered: {known}") from None


def build_source(name: str, arguments: Mapping[str, Any]) -> Source:
    """The source ``name`` built from its keyword arguments (plain JSON values or Python ones).

    An argument the source does not take is a ``TypeError`` naming the source and the
    argument; a bad value is the source's own ``ValueError``.
    """
    cls = source_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(arguments) - set(parameters)) if not takes_any else []
    if unknown:
        raise TypeError(
            f"pull source {name!r} ({cls.__name__}) takes no argument {', '.join(unknown)}"
        )
    return cls(**arguments)


def _json_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, datetime | date):  # pendulum's DateTime too
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_json_value(v, where) for v in value)
    if isinstance(value, list | tuple | range):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where}: {type(value).__name__} is no plain JSON value; use text, numbers, lists, "
        "mappings, dates or durations"
    )


def json_arguments(arguments: Mapping[str, Any], what: str = "argument") -> dict[str, Any]:
    """``arguments`` as plain JSON values: dates and datetimes as ISO 8601 text, durations as
    seconds, sets as sorted lists; ``TypeError``/``ValueError`` naming ``what`` and the key for
    anything else (an object, ``nan``)."""
    return {str(k): _json_value(v, f"{what} {k!r}") for k, v in arguments.items()}
