"""The CCEE datastore tables of the sandbox, computed row by row (never materialised).

A table is one CKAN resource: one dataset and one year (docs/services/ccee.md, "CKAN helpers":
"datasets usually hold one resource per year"). Row ``i`` (0-based; ``_id = i + 1``) is period
``i // 4`` counted from January 1st, 00:00 of the year (an hour or a day depending on the dataset)
and submarket ``i % 4`` in the order SUDESTE, SUL, NORDESTE, NORTE. So rows are ordered by date,
hour and submarket, and any row is computed from its index alone. With ``ccee_rows_per_resource``
larger than the natural size the periods simply continue past the end of the year.

Queries (``datastore_search`` and the CSV dump) are answered without materialising the table:

* equality filters on ``_id``, ``SUBMERCADO``, ``MES_REFERENCIA``, the date column (``DIA`` or
  ``DATA``) and ``HORA`` with a single value (``SUBMERCADO`` also with a list) are solved
  arithmetically: the matching rows form a product "period range x submarket set", so ``total``
  and any page cost O(page size) even for millions of rows;
* other filters (value columns, lists of values on the time columns) and the full-text ``q`` scan
  the candidate rows lazily once per request: O(rows), fine at the natural size (~35 000 rows);
* ``sort`` by ``_id`` (asc or desc) is free; any other sort computes and sorts the candidate rows,
  refused (409) above :data:`MAX_SORT_ROWS` rows.
"""

from __future__ import annotations

import calendar
import json
import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from ._data import stable_uuid, unit

__all__ = [
    "DATASETS",
    "MAX_SORT_ROWS",
    "SUBMARKETS",
    "CceeValidationError",
    "Dataset",
    "Query",
    "Table",
]

SUBMARKETS: tuple[str, ...] = ("SUDESTE", "SUL", "NORDESTE", "NORTE")

#: Above this many candidate rows, a sort on anything but ``_id`` is refused.
MAX_SORT_ROWS = 500_000

Value = int | float | str
Record = dict[str, Value]


class CceeValidationError(ValueError):
    """A bad query, answered with CKAN's 409 ``Validation Error``."""


@dataclass(frozen=True)
class Dataset:
    """A CKAN dataset of the emulated portal."""

    name: str
    title: str
    resource_prefix: str
    hourly: bool
    date_column: str
    value_column: str
    notes: str

    @property
    def package_id(self) -> str:
        return stable_uuid("ccee-package", self.name)

    def resource_id(self, year: int) -> str:
        return stable_uuid("ccee-resource", self.name, year)

    def resource_name(self, year: int) -> str:
        return f"{self.resource_prefix}_{year}"

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """``(id, CKAN type)`` of every column, ``_id`` first."""
        columns = [("_id", "int"), ("MES_REFERENCIA", "text"), ("SUBMERCADO", "text")]
        columns.append((self.date_column, "text"))
        if self.hourly:
            columns.append(("HORA", "int"))
        columns.append((self.value_column, "numeric"))
        return tuple(columns)


DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            name="pld_horario",
            title="PLD Horário",
            resource_prefix="PLD_HORARIO",
            hourly=True,
            date_column="DIA",
            value_column="PLD_HORA",
            notes="Preço de Liquidação das Diferenças horário por submercado (R$/MWh). Sandbox.",
        ),
        Dataset(
            name="pld_media_diaria",
            title="PLD Média Diária",
            resource_prefix="PLD_MEDIA_DIARIA",
            hourly=False,
            date_column="DIA",
            value_column="PLD_MEDIA_DIA",
            notes="Média diária do PLD por submercado (R$/MWh). Sandbox.",
        ),
        Dataset(
            name="geracao_horaria_submercado",
            title="Geração Horária por Submercado",
            resource_prefix="GERACAO_HORARIA_SUBMERCADO",
            hourly=True,
            date_column="DATA",
            value_column="GERACAO_MWH",
            notes="Geração verificada horária por submercado (MWh). Sandbox.",
        ),
    )
}

_PLD_FLOOR, _PLD_CAP = 61.07, 716.80
_PLD_BASE = {"SUDESTE": 190.0, "SUL": 180.0, "NORDESTE": 150.0, "NORTE": 160.0}
_GENERATION_BASE = {"SUDESTE": 38000.0, "SUL": 12000.0, "NORDESTE": 15000.0, "NORTE": 8000.0}


def hourly_pld(seed: int, day: date, hour: int, submarket: str) -> float:
    """The sandbox PLD of one hour (R$/MWh), between the regulatory floor and cap."""
    season = 1.0 + 0.4 * math.sin(2 * math.pi * (day.timetuple().tm_yday - 120) / 365.0)
    daily = 1.0 + 0.25 * math.sin(2 * math.pi * (hour - 13) / 24.0)
    noise = 0.75 + 0.5 * unit(seed, "ccee-pld", day.isoformat(), hour, submarket)
    value = _PLD_BASE[submarket] * season * daily * noise
    return round(min(_PLD_CAP, max(_PLD_FLOOR, value)), 2)


def hourly_generation(seed: int, day: date, hour: int, submarket: str) -> float:
    """The sandbox generation of one hour and submarket (MWh)."""
    daily = 1.0 + 0.15 * math.sin(2 * math.pi * (hour - 9) / 24.0)
    noise = 0.9 + 0.2 * unit(seed, "ccee-generation", day.isoformat(), hour, submarket)
    return round(_GENERATION_BASE[submarket] * daily * noise, 3)


def _column_text(value: Value) -> str:
    return str(value)


@dataclass(frozen=True)
class Query:
    """A parsed ``datastore_search`` / dump query.

    ``filters`` maps a column to the accepted values (as text), ``q`` is a full-text query
    (a string, or a per-column mapping), ``sort`` is a list of ``(column, descending)``,
    ``fields`` the columns to return (``None``: all).
    """

    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    q: str | tuple[tuple[str, str], ...] | None = None
    sort: tuple[tuple[str, bool], ...] = ()
    fields: tuple[str, ...] | None = None


class RowIndex(Protocol):
    """An ordered selection of row indices, addressable by position."""

    def __len__(self) -> int: ...

    def at(self, position: int) -> int: ...


class _ListRows:
    def __init__(self, rows: list[int]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def at(self, position: int) -> int:
        return self._rows[position]


class _ProductRows:
    """Rows ``4 * t + s`` for ``t`` in a period range and ``s`` in a submarket list.

    Rows past the end of the table can only come from the last period of the range (the
    largest ``t``), so they sit at the end of the sequence and are cut off by ``__len__``.
    """

    def __init__(self, periods: range, submarkets: tuple[int, ...], row_count: int) -> None:
        self._periods = periods
        self._submarkets = submarkets
        length = len(periods) * len(submarkets)
        if length:
            last = periods[-1]
            length -= sum(1 for s in submarkets if 4 * last + s >= row_count)
        self._length = max(0, length)

    def __len__(self) -> int:
        return self._length

    def at(self, position: int) -> int:
        if not 0 <= position < self._length:
            raise IndexError(position)
        period, which = divmod(position, len(self._submarkets))
        return 4 * self._periods[period] + self._submarkets[which]


class _ReversedRows:
    def __init__(self, rows: RowIndex) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def at(self, position: int) -> int:
        return self._rows.at(len(self._rows) - 1 - position)


@dataclass(frozen=True)
class Table:
    """One datastore table (a dataset's resource for one year)."""

    dataset: Dataset
    year: int
    row_count: int
    seed: int

    @classmethod
    def natural(cls, dataset: Dataset, year: int, seed: int, rows: int | None) -> Table:
        """The table with ``rows`` rows, or its natural size when ``rows`` is None."""
        if rows is None:
            periods = 366 if calendar.isleap(year) else 365
            rows = periods * (24 if dataset.hourly else 1) * len(SUBMARKETS)
        return cls(dataset, year, rows, seed)

    @property
    def resource_id(self) -> str:
        return self.dataset.resource_id(self.year)

    @property
    def column_ids(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.dataset.columns)

    # ------------------------------------------------------------------ rows

    def _period(self, period: int) -> tuple[date, int]:
        if self.dataset.hourly:
            days, hour = divmod(period, 24)
        else:
            days, hour = period, 0
        return date(self.year, 1, 1) + timedelta(days=days), hour

    def record(self, row: int, fields: tuple[str, ...] | None = None) -> Record:
        """Row ``row`` (0-based) as a CKAN record, restricted to ``fields`` when given."""
        period, which = divmod(row, len(SUBMARKETS))
        day, hour = self._period(period)
        submarket = SUBMARKETS[which]
        dataset = self.dataset
        record: Record = {
            "_id": row + 1,
            "MES_REFERENCIA": f"{day.year}{day.month:02d}",
            "SUBMERCADO": submarket,
            dataset.date_column: day.isoformat(),
        }
        if dataset.hourly:
            record["HORA"] = hour
        if dataset.name == "pld_horario":
            value = hourly_pld(self.seed, day, hour, submarket)
        elif dataset.name == "pld_media_diaria":
            prices = [hourly_pld(self.seed, day, h, submarket) for h in range(24)]
            value = round(sum(prices) / 24.0, 2)
        else:
            value = hourly_generation(self.seed, day, hour, submarket)
        record[dataset.value_column] = value
        if fields is None:
            return record
        return {field: record[field] for field in fields}

    # ------------------------------------------------------------------ queries

    def validate(self, query: Query) -> None:
        """Raise :class:`CceeValidationError` for unknown columns."""
        known = set(self.column_ids)
        for column, _ in query.filters:
            if column not in known:
                raise CceeValidationError(f'field "{column}" not in table')
        for column, _ in query.sort:
            if column not in known:
                raise CceeValidationError(f'field "{column}" not in table')
        for column in query.fields or ():
            if column not in known:
                raise CceeValidationError(f'field "{column}" not in table')
        if isinstance(query.q, tuple):
            for column, _ in query.q:
                if column not in known:
                    raise CceeValidationError(f'field "{column}" not in table')

    def _period_bounds(self, first_day: date, last_day: date) -> tuple[int, int]:
        per_day = 24 if self.dataset.hourly else 1
        start = (first_day - date(self.year, 1, 1)).days * per_day
        end = ((last_day - date(self.year, 1, 1)).days + 1) * per_day
        return start, end

    def select(self, query: Query) -> RowIndex:
        """The rows matching ``query``, in the requested order."""
        self.validate(query)
        period_count = -(-self.row_count // len(SUBMARKETS))
        low, high = 0, period_count
        hour: int | None = None
        submarkets = tuple(range(len(SUBMARKETS)))
        residual: list[tuple[str, frozenset[str]]] = []
        date_column = self.dataset.date_column
        for column, values in query.filters:
            if column == "SUBMERCADO":
                wanted = set(values)
                submarkets = tuple(s for s in submarkets if SUBMARKETS[s] in wanted)
                continue
            if len(values) != 1:
                residual.append((column, frozenset(values)))
                continue
            value = values[0].strip()
            if column == "_id":
                row = int(value) - 1 if value.lstrip("-").isdigit() else -1
                if not 0 <= row < self.row_count:
                    return _ListRows([])
                period, which = divmod(row, len(SUBMARKETS))
                low, high = max(low, period), min(high, period + 1)
                submarkets = tuple(s for s in submarkets if s == which)
            elif column == "MES_REFERENCIA":
                if not (len(value) == 6 and value.isdigit() and 1 <= int(value[4:]) <= 12):
                    return _ListRows([])
                year, month = int(value[:4]), int(value[4:])
                last = calendar.monthrange(year, month)[1]
                start, end = self._period_bounds(date(year, month, 1), date(year, month, last))
                low, high = max(low, start), min(high, end)
            elif column == date_column:
                try:
                    day = date.fromisoformat(value)
                except ValueError:
                    return _ListRows([])
                start, end = self._period_bounds(day, day)
                low, high = max(low, start), min(high, end)
            elif column == "HORA" and self.dataset.hourly:
                if not value.isdigit() or not 0 <= int(value) <= 23:
                    return _ListRows([])
                if hour is not None and hour != int(value):
                    return _ListRows([])
                hour = int(value)
            else:
                residual.append((column, frozenset(values)))
        if high <= low or not submarkets:
            return _ListRows([])
        periods = range(low, high)
        if hour is not None:
            periods = range(low + (hour - low) % 24, high, 24)
        rows: RowIndex = _ProductRows(periods, submarkets, self.row_count)
        if residual or query.q is not None:
            rows = _ListRows(self._scan(rows, residual, query.q))
        return self._sorted(rows, query.sort)

    def _scan(
        self,
        rows: RowIndex,
        residual: list[tuple[str, frozenset[str]]],
        q: str | tuple[tuple[str, str], ...] | None,
    ) -> list[int]:
        matched: list[int] = []
        for position in range(len(rows)):
            row = rows.at(position)
            record = self.record(row)
            if any(_column_text(record[column]) not in values for column, values in residual):
                continue
            if isinstance(q, str):
                needle = q.lower()
                if not any(needle in _column_text(value).lower() for value in record.values()):
                    continue
            elif q is not None and not all(
                text.lower() in _column_text(record[column]).lower() for column, text in q
            ):
                continue
            matched.append(row)
        return matched

    def _sorted(self, rows: RowIndex, sort: tuple[tuple[str, bool], ...]) -> RowIndex:
        keys = list(sort)
        if keys and keys[0][0] == "_id":
            keys = keys[:1]  # _id is unique: later keys never matter
        if not keys or keys == [("_id", False)]:
            return rows
        if keys == [("_id", True)]:
            return _ReversedRows(rows)
        if len(rows) > MAX_SORT_ROWS:
            raise CceeValidationError(
                f"the sandbox sorts on columns other than _id only up to {MAX_SORT_ROWS} rows"
            )
        selected = [rows.at(position) for position in range(len(rows))]
        records = {row: self.record(row) for row in selected}
        # Stable sorts, least significant key first; ties keep _id order.
        for column, descending in reversed(keys):
            selected.sort(key=lambda row: records[row][column], reverse=descending)
        return _ListRows(selected)


# ---------------------------------------------------------------------- parameter parsing


def parse_filters(raw: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``filters``: a JSON object (string, or already decoded in a POST body)."""
    if raw is None or raw == "":
        return ()
    data: object = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CceeValidationError(f"filters: invalid JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise CceeValidationError("filters: must be a JSON object")
    parsed: list[tuple[str, tuple[str, ...]]] = []
    for column, value in data.items():
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(item, dict | list) for item in values):
            raise CceeValidationError(f"filters: bad value for field {column!r}")
        texts = tuple(
            ("true" if item else "false") if isinstance(item, bool) else str(item)
            for item in values
        )
        parsed.append((str(column), texts))
    return tuple(parsed)


def parse_q(raw: object) -> str | tuple[tuple[str, str], ...] | None:
    """``q``: a string, or a JSON object of per-column texts."""
    if raw is None or raw == "":
        return None
    data: object = raw
    if isinstance(raw, str) and raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CceeValidationError(f"q: invalid JSON object ({exc})") from exc
    if isinstance(data, dict):
        return tuple((str(column), str(text)) for column, text in data.items())
    return str(data)


def parse_sort(raw: object) -> tuple[tuple[str, bool], ...]:
    """``sort``: ``"COL [asc|desc], COL2 ..."`` (or a list of such strings)."""
    if raw is None or raw == "":
        return ()
    items = raw if isinstance(raw, list) else str(raw).split(",")
    parsed: list[tuple[str, bool]] = []
    for item in items:
        words = str(item).split()
        if not words:
            continue
        column = words[0].strip('"')
        direction = words[1].lower() if len(words) > 1 else "asc"
        if len(words) > 2 or direction not in ("asc", "desc"):
            raise CceeValidationError(f"sort: cannot parse {item!r}")
        parsed.append((column, direction == "desc"))
    return tuple(parsed)


def parse_fields(raw: object) -> tuple[str, ...] | None:
    """``fields``: comma-separated names, or a list."""
    if raw is None or raw == "":
        return None
    items = raw if isinstance(raw, list) else str(raw).split(",")
    fields = tuple(str(item).strip() for item in items if str(item).strip())
    return fields or None
