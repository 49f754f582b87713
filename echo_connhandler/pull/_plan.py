"""What a pull is made of: columns, chunks, a plan, and the sources that plan and fetch them."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx

from echo_connhandler._exceptions import ApiError, UnexpectedContentError

if TYPE_CHECKING:
    from echo_connhandler._handler import HttpHandler

__all__ = [
    "Chunk",
    "ChunkDone",
    "Column",
    "ColumnType",
    "DecodedPage",
    "FilePart",
    "PageContentError",
    "Plan",
    "RawPage",
    "Rows",
    "Source",
]

ColumnType = Literal["int", "float", "text", "bool", "timestamp", "date", "json"]
"""Logical column types; each output format maps them (Parquet: int64, float64, string, ...)."""
COLUMN_TYPES: tuple[str, ...] = ("int", "float", "text", "bool", "timestamp", "date", "json")

Rows = list[dict[str, Any]]
"""The rows of one chunk, decoded (off the event loop) by the source."""


@dataclass(frozen=True, slots=True)
class Column:
    """One output column: its name and logical type (the service's own types where it has them)."""

    name: str
    type: ColumnType = "text"

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r}")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One request of a pull. ``key`` identifies it across runs (the checkpoint's unit)."""

    index: int
    key: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "params": dict(self.params)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Chunk:
        return cls(int(raw["index"]), str(raw["key"]), dict(raw.get("params") or {}))


@dataclass(frozen=True, slots=True)
class DecodedPage:
    """A chunk's rows with what the engine checks across chunks and reports.

    A :class:`RawPage`'s ``decode`` (or :meth:`Source.fetch`) may return one instead of plain
    rows. ``first_key`` and ``last_key`` (JSON-able) are the chunk's first and last keys in the
    order the service sorts them: the engine keeps them in the checkpoint and gives them to
    :meth:`Source.check_next` for every pair of neighbouring chunks, so pages that overlap or
    repeat are caught even across a resume. ``counts`` are irregularities the user accepted
    knowingly (``{"missing_steps": 6}``): summed into ``PullSummary["tolerated"]``, never silent.
    """

    rows: Rows
    first_key: Any = None
    last_key: Any = None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """A finished chunk as :meth:`Source.check_next` sees it (from this run or the checkpoint)."""

    chunk: Chunk
    rows: int
    first_key: Any = None
    last_key: Any = None


@dataclass(frozen=True, slots=True)
class RawPage:
    """A chunk's answer, to be decoded into rows by ``decode(response.content, *args)``.

    The engine runs ``decode`` and the encoding of its rows together, off the event loop: in
    the pull's worker thread, or with ``run_pull(decode="process")`` in a worker process
    (docs/performance.md, "Decoding in a worker process"), so ``decode`` is a module-level
    function (pickled by name) that reads only the body's bytes and ``args`` (plain values).
    The response stays here: a :class:`PageContentError` from ``decode`` becomes the library's
    typed error, built from it.
    """

    response: httpx.Response
    decode: Callable[..., Rows | DecodedPage]
    args: tuple[Any, ...] = ()

    def rows(self) -> Rows:
        """The rows, decoded in this process (for a script or a test that fetches one chunk)."""
        try:
            decoded = self.decode(self.response.content, *self.args)
        except PageContentError as exc:
            raise exc.for_response(self.response) from None
        return decoded.rows if isinstance(decoded, DecodedPage) else decoded


class PageContentError(ValueError):
    """Raised by a :class:`RawPage`'s ``decode`` for a body that is not what was expected.

    It carries only a message (a worker process knows no secret to redact); the engine turns
    it into :class:`~echo_connhandler.UnexpectedContentError` (or, with ``api=True``,
    :class:`~echo_connhandler.ApiError`) built from the response it kept.
    """

    def __init__(self, message: str, *, api: bool = False) -> None:
        super().__init__(message)
        self.api = api

    def __reduce__(self) -> tuple[Any, ...]:
        return (_page_content_error, (str(self), self.api))

    def for_response(self, response: httpx.Response) -> UnexpectedContentError | ApiError:
        """The library's error for this problem of ``response``."""
        if self.api:
            return ApiError.from_response(response, str(self))
        return UnexpectedContentError.from_response(response, str(self))


def _page_content_error(message: str, api: bool) -> PageContentError:
    return PageContentError(message, api=api)


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file as the service delivered it (a SAGER .xlsx, a SINAPSE CSV), and where it belongs.

    ``name`` is the file's name in the output folder (rendered from the source's template).
    """

    name: str
    content: bytes


@dataclass(frozen=True)
class Plan:
    """The chunks of a pull in output order, the columns, and the ids of what is read."""

    chunks: Sequence[Chunk]
    columns: Sequence[Column] = ()
    source_ids: Sequence[str] = ()
    #: Facts the plan was made from (e.g. CKAN ``total`` per resource), checked while fetching.
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "chunks": [c.to_json() for c in self.chunks],
            "columns": [[c.name, c.type] for c in self.columns],
            "source_ids": list(self.source_ids),
            "facts": dict(self.facts),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Plan:
        return cls(
            chunks=[Chunk.from_json(c) for c in raw["chunks"]],
            columns=[Column(str(n), t) for n, t in raw.get("columns") or []],
            source_ids=[str(s) for s in raw.get("source_ids") or []],
            facts=dict(raw.get("facts") or {}),
        )


class Source(abc.ABC):
    """What to pull from one service: planned once, then fetched chunk by chunk.

    A source knows the service (endpoints, limits, paging); the engine knows concurrency,
    formats, storage and checkpoints. ``kind`` says what :meth:`fetch` returns: ``"rows"``
    (a list of dicts with the plan's columns) or ``"files"`` (a :class:`FilePart`).
    """

    kind: ClassVar[Literal["rows", "files"]] = "rows"
    #: The source's name in the registry (:func:`~echo_connhandler.pull.register_source`): what
    #: a scheduler's plain-JSON description of a pull names it by (``ccee_datastore``).
    name: ClassVar[str] = ""
    #: The handler class the source reads through (the engine refuses another).
    handler_class: ClassVar[type[HttpHandler]]

    _arguments: dict[str, Any]
    _positional: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> Source:
        # The keyword arguments are kept as given, so that arguments() can describe the source
        # as plain JSON (a trigger's kwargs) without every source writing that out again.
        source = super().__new__(cls)
        source._arguments = dict(kwargs)
        source._positional = bool(args)
        return source

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments that build this source again, as plain JSON values (dates as
        ISO 8601 text, durations as seconds): ``type(source)(**source.arguments())`` and
        :func:`~echo_connhandler.pull.build_source` give the same pull."""
        from echo_connhandler.pull._registry import json_arguments

        if self._positional:
            raise TypeError(
                f"{type(self).__name__} was given positional arguments: only a source built "
                "with keyword arguments can describe itself as plain JSON"
            )
        return json_arguments(self._arguments, f"{type(self).__name__} argument")

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-able parameters that define this pull: two pulls with the same identity (and
        output) share a checkpoint, any difference gives another."""

    @abc.abstractmethod
    async def plan(self, handler: HttpHandler) -> Plan:
        """The chunks to fetch (may ask the service, e.g. for a total)."""

    @abc.abstractmethod
    async def fetch(
        self, handler: HttpHandler, chunk: Chunk, plan: Plan
    ) -> RawPage | DecodedPage | Rows | FilePart:
        """One chunk: its answer to decode (:class:`RawPage`, decoded and encoded off the event
        loop), its rows (plain or as a :class:`DecodedPage`), or its file."""

    def check_next(self, previous: ChunkDone, current: ChunkDone) -> None:  # noqa: B027
        """Raise :class:`~echo_connhandler.DataConsistencyError` when ``current`` cannot follow
        ``previous`` (neighbours in plan order): pages that overlap or repeat. Called by the
        engine for every pair, in plan order, resumed chunks included. By default: nothing."""

    async def check_versions(self, handler: HttpHandler, plan: Plan) -> None:  # noqa: B027
        """Raise :class:`~echo_connhandler.DataConsistencyError` when what the plan read has
        changed on the service since it was planned (a republished resource). Called before a
        checkpoint is resumed and before the output is assembled. By default: nothing."""

    def describe(self) -> str:
        """A short name for log lines."""
        return type(self).__name__
