"""Parquet parts and their assembly (``pyarrow``, the ``parquet`` extra).

The schema comes from the plan's columns (the service's own types where it gives them, such as
CKAN ``fields``), so every part has the same one, whatever its rows hold: a chunk whose values
are all null still writes an ``int64`` column where the plan says ``int``.

Timestamps are written without a time zone (``timestamp[us]``): a value with an offset (``Z``,
``-03:00``) is converted to UTC; a naive value (CKAN's ``timestamp`` fields have no offset) is
written as it is, the wall-clock time the service published (docs/pulls.md, "Column types").
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from echo_connhandler.pull._plan import Column, Rows

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["assemble_parquet", "parquet_part", "require_pyarrow"]


def require_pyarrow() -> None:
    """Import pyarrow now, with an error that says which extra installs it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Parquet output needs pyarrow: pip install 'echo-connhandler-provider[parquet]'"
        ) from exc


def _arrow_type(column: Column) -> pa.DataType:
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "text": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us"),
        "date": pa.date32(),
        "json": pa.string(),
    }[column.type]


def schema_of(columns: Sequence[Column]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(c.name, _arrow_type(c)) for c in columns])


def _to_float(value: Any) -> Any:
    return float(value) if isinstance(value, str) and value.strip() else value


def _array(column: Column, values: list[Any]) -> pa.Array:
    import pyarrow as pa

    kind = column.type
    if kind == "timestamp":
        return _timestamps(column, values)
    if kind == "date":
        text = pa.array([None if v is None else str(v)[:10] for v in values], pa.string())
        try:
            return text.cast(pa.timestamp("s")).cast(pa.date32())
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ValueError(f"column {column.name!r} (date): {exc}") from exc
    if kind == "json":
        values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    elif kind == "float":
        values = [_to_float(v) for v in values]
    elif kind == "int":
        values = [int(v) if isinstance(v, str) and v.strip() else v for v in values]
    elif kind == "text":
        values = [v if v is None or isinstance(v, str) else str(v) for v in values]
    try:
        return pa.array(values, _arrow_type(column))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise ValueError(f"column {column.name!r} ({kind}): {exc}") from exc


def _timestamps(column: Column, values: list[Any]) -> pa.Array:
    """ISO text to ``timestamp[us]``: naive values as they are, values with an offset in UTC."""
    import pyarrow as pa

    text = pa.array([None if v is None else str(v) for v in values], pa.string())
    try:  # the usual cases first, vectorised: all naive, or all with an offset
        return text.cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, ValueError):
        pass
    try:
        return text.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, ValueError):
        pass
    parsed: list[datetime | None] = []
    for value in values:  # a mix of both: one by one
        if value is None:
            parsed.append(None)
            continue
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(
                f"column {column.name!r} (timestamp): {str(value)[:40]!r} is not an ISO date-time"
            ) from None
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        parsed.append(moment)
    return pa.array(parsed, pa.timestamp("us"))


def parquet_part(rows: Rows, columns: Sequence[Column]) -> bytes:
    """One chunk's rows as a Parquet file with the plan's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [_array(c, [row.get(c.name) for row in rows]) for c in columns]
    table = pa.Table.from_arrays(arrays, schema=schema_of(columns))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def assemble_parquet(
    parts: Iterable[BinaryIO],
    columns: Sequence[Column],
    out: BinaryIO,
    rows: Sequence[int] | None = None,
) -> None:
    """Copy the parts' row groups, in order, into one Parquet file (one part in memory); with
    ``rows``, each part must hold the number of rows recorded for it."""
    import pyarrow.parquet as pq

    schema = schema_of(columns)
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for number, part in enumerate(parts):
            table = pq.read_table(part)
            if rows is not None and table.num_rows != rows[number]:
                raise ValueError(
                    f"Parquet part {number} holds {table.num_rows} rows, {rows[number]} recorded"
                )
            if not table.schema.equals(schema):
                raise ValueError(f"Parquet part {number} does not have the plan's schema")
            writer.write_table(table)
