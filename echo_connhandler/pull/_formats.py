"""Output formats: JSON Lines, CSV (either gzip-compressed), Parquet.

Each chunk is encoded on its own into a *part* (bytes, or a Parquet file), off the event loop;
the parts are joined in plan order at the end. JSON Lines and CSV parts are plain byte runs (a
CSV part has no header: the header is written once, first), and gzip parts are gzip *members*:
a file of several members is a valid gzip file (RFC 1952), so parts join by concatenation.
Parquet parts share one schema, built from the plan's columns; joining copies their row groups
into one file, one part in memory at a time.

Every row is checked against the columns, the same way for every format
(:func:`normalise_rows`, docs/pulls.md, "Column types"): a field the plan does not know is an
error that names it, never a silently dropped column; a value that does not fit its column's
type (text in a numeric column) is a :class:`ColumnTypeError`, never written as it is to one
format while another refuses it; a list or an object in a text column is written as JSON text.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from operator import itemgetter
from typing import Any, Literal

from echo_connhandler._json import dumps_compact
from echo_connhandler.pull._plan import Column, Rows

__all__ = [
    "FORMATS",
    "ColumnTypeError",
    "OutputFormat",
    "UnknownFieldError",
    "check_rows",
    "encode_part",
    "format_for",
    "header_part",
    "normalise_rows",
]

OutputFormat = Literal["jsonl", "jsonl.gz", "csv", "csv.gz", "parquet"]
"""The output formats of a pull of rows."""
FORMATS: tuple[str, ...] = ("jsonl", "jsonl.gz", "csv", "csv.gz", "parquet")
"""Every :data:`OutputFormat`, in the order the docs list them."""
#: Output name endings and the format they mean (longest first).
_SUFFIXES = (
    (".jsonl.gz", "jsonl.gz"),
    (".ndjson.gz", "jsonl.gz"),
    (".csv.gz", "csv.gz"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
)
_GZIP_LEVEL = 6


def format_for(output: str, given: str | None) -> OutputFormat:
    """The format asked for, or the one the output's name ends with; a clear error otherwise."""
    if given is not None:
        if given not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {given!r}")
        return given  # type: ignore[return-value]
    lowered = output.lower()
    for suffix, name in _SUFFIXES:
        if lowered.endswith(suffix):
            return name  # type: ignore[return-value]
    raise ValueError(
        f"cannot tell the format from the output name {output!r}: end it with .jsonl, .csv, "
        ".parquet (or .jsonl.gz, .csv.gz), or pass format="
    )


class UnknownFieldError(ValueError):
    """A row has a field that the plan's columns do not know."""


def check_rows(rows: Rows, columns: Sequence[Column], where: str) -> None:
    """Raise :class:`UnknownFieldError` naming the first field the columns do not know."""
    known = {c.name for c in columns}
    names = tuple(c.name for c in columns)
    for row in rows:
        if tuple(row) == names:  # the usual case (CKAN records): nothing more to check
            continue
        if not row.keys() <= known:
            unknown = sorted(set(row) - known)
            raise UnknownFieldError(
                f"{where}: field {unknown[0]!r} is not in the output's columns "
                f"({', '.join(sorted(known))}); it would be lost"
            )


class ColumnTypeError(ValueError):
    """A value does not fit its column's type (text in a numeric column, a bad date)."""


_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")
#: A number written as text (``"1.25"``, ``"-3e2"``), spaces around allowed.
NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: What Parquet's int64 holds; a float64 holds every integer up to 2**53 exactly.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_FLOAT_INT = 2**53


def _fits(kind: str, value: Any) -> bool:
    """Whether a non-null ``value`` can be written to a column of logical type ``kind``."""
    if kind == "int":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return _INT64_MIN <= value <= _INT64_MAX
        if isinstance(value, float):
            return value.is_integer() and _INT64_MIN <= value <= _INT64_MAX
        return (
            isinstance(value, str)
            and _INTEGER_TEXT.fullmatch(value) is not None
            and _INT64_MIN <= int(value) <= _INT64_MAX
        )
    if kind == "float":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return abs(value) <= _EXACT_FLOAT_INT  # a float64 holds it exactly
        if isinstance(value, float):
            return True
        return isinstance(value, str) and (
            NUMBER_TEXT.fullmatch(value) is not None
            or value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity")
        )
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return True
        # A date, written YYYY-MM-DD: a time of day would be lost in Parquet's date32.
        text = value.strip() if isinstance(value, str) else ""
        if _ISO_DATE.fullmatch(text) is None:
            return False
        try:
            date.fromisoformat(text)
        except ValueError:
            return False
        return True
    if kind == "timestamp":
        if isinstance(value, datetime):
            return True
        if not isinstance(value, str):
            return False
        try:
            datetime.fromisoformat(value.strip())
        except ValueError:
            return False
        return True
    return True  # text (scalars are written as text, lists and objects as JSON) and json


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _values(rows: Rows, name: str) -> list[Any]:
    """A column's values (C-level iteration: a page's check stays cheap)."""
    try:
        return list(map(itemgetter(name), rows))
    except KeyError:  # some rows lack the column: it is written as null there
        return [row.get(name) for row in rows]


def _in_range(values: list[Any], kind: str, types: set[type]) -> bool:
    """Whether a column's ints fit what is written for them (int64; float64 exactly)."""
    if int not in types or kind not in ("int", "float"):
        return True
    ints = values if types == {int} else [v for v in values if type(v) is int]
    low, high = (_INT64_MIN, _INT64_MAX) if kind == "int" else (-_EXACT_FLOAT_INT, _EXACT_FLOAT_INT)
    return bool(low <= min(ints) and max(ints) <= high)


def _all_iso(values: list[Any], types: set[type]) -> bool:
    """Whether every value of a column of text is an ISO date-time (C-level parsing; False
    sends the column to the value-by-value check, which names the bad value)."""
    if not types <= {str, type(None)}:
        return False
    try:
        for _ in map(datetime.fromisoformat, [v for v in values if v is not None]):
            pass
    except ValueError:
        return False
    return True


def normalise_rows(rows: Rows, columns: Sequence[Column], where: str) -> Rows:
    """The rows to encode, the same for every format: unknown fields and values that do not
    fit their column's type raise (naming the chunk, the column, the row's ``_id`` when it has
    one, and the value); a list or an object in a text column becomes JSON text."""
    check_rows(rows, columns, where)
    converted: list[str] = []
    for column in columns:
        name, kind = column.name, column.type
        if kind == "json":
            continue
        values = _values(rows, name)
        types = set(map(type, values))
        if kind == "text":
            if any(issubclass(t, dict | list) for t in types):
                converted.append(name)
            continue
        if (types <= _FAST_OK[kind] and _in_range(values, kind, types)) or (
            kind == "timestamp" and _all_iso(values, types)
        ):
            continue
        for row in rows:
            value = row.get(name)
            if value is not None and not _fits(kind, value):
                key = row.get("_id")
                at = f" (row _id {key})" if key is not None else ""
                raise ColumnTypeError(
                    f"{where}: column {name!r} is {kind} but a value{at} is {_shown(value)}: "
                    "the service's data does not fit the type it declares; nothing was written"
                )
    if not converted:
        return rows
    return [{**row, **{n: _cell(row.get(n)) for n in converted}} for row in rows]


#: Types whose values always fit a column of each logical type (the fast path).
_FAST_OK: dict[str, set[type]] = {
    "int": {int, type(None)},
    "float": {float, int, type(None)},
    "bool": {bool, type(None)},
    "timestamp": {type(None)},
    "date": {type(None)},
}


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _jsonl(rows: Rows, names: Sequence[str]) -> bytes:
    """One line per row, keys in column order, written into one buffer as they are encoded
    (a list of lines kept ~4 KiB of heap per line with orjson: docs/performance.md)."""
    ordered = tuple(names)
    buffer = io.BytesIO()
    for row in rows:
        # A row whose keys already are the columns, in order, is encoded as it is.
        document = row if tuple(row) == ordered else {n: row.get(n) for n in ordered}
        buffer.write(dumps_compact(document))
        buffer.write(b"\n")
    return buffer.getvalue()


def _csv(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def header_part(columns: Sequence[Column], fmt: OutputFormat) -> bytes:
    """What the output starts with: the CSV header row (gzip-compressed for csv.gz), else none."""
    if not fmt.startswith("csv"):
        return b""
    header = _csv([[c.name for c in columns]])
    return gzip.compress(header, _GZIP_LEVEL, mtime=0) if fmt.endswith(".gz") else header


def encode_part(rows: Rows, columns: Sequence[Column], fmt: OutputFormat) -> bytes:
    """One chunk's rows as a JSON Lines or CSV part (a gzip member for the ``.gz`` formats)."""
    names = [c.name for c in columns]
    if fmt.startswith("jsonl"):
        data = _jsonl(rows, names)
    elif fmt.startswith("csv"):
        data = _csv([_cell(row.get(n)) for n in names] for row in rows)
    else:
        raise ValueError(f"{fmt} parts are written by the Parquet writer")
    return gzip.compress(data, _GZIP_LEVEL, mtime=0) if fmt.endswith(".gz") and data else data
