"""What a pull is made of: columns, chunks, a plan, and the sources that plan and fetch them."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from echo_connhandler._handler import HttpHandler

__all__ = ["Chunk", "Column", "ColumnType", "FilePart", "Plan", "Rows", "Source"]

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

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-able parameters that define this pull: two pulls with the same identity (and
        output) share a checkpoint, any difference gives another."""

    @abc.abstractmethod
    async def plan(self, handler: HttpHandler) -> Plan:
        """The chunks to fetch (may ask the service, e.g. for a total)."""

    @abc.abstractmethod
    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> Rows | FilePart:
        """One chunk's rows (decoded off the event loop) or file."""

    def describe(self) -> str:
        """A short name for log lines."""
        return type(self).__name__
