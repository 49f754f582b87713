"""The package's one reading of moments and durations given as values or as text.

Arguments reach the library as Python values (a ``date``, a ``datetime``, a ``timedelta``) or as
plain JSON (ISO 8601 text, seconds): an Airflow trigger's keyword arguments, a rendered template,
a checkpoint. Every module reads them here, so that one rule holds everywhere: ``YYYY-MM-DD`` is
a date, other ISO 8601 text a datetime, and where a moment in UTC is needed a naive value is UTC
(as CKAN writes its timestamps: docs/services/ccee.md, "Timestamps and publications") and a
date is its UTC midnight.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta

__all__ = ["iso_utc", "parse_duration", "parse_moment", "utc_moment"]

_DAY_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_moment(value: object, what: str) -> date | datetime:
    """A date or datetime from itself or ISO 8601 text (``YYYY-MM-DD`` gives a date).

    ``ValueError`` naming ``what`` for anything else (text that is no ISO 8601 moment, a
    number, None).
    """
    if isinstance(value, datetime | date):  # pendulum's DateTime too
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if _DAY_TEXT.fullmatch(text):
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"{what}: expected a date, a datetime or an ISO-8601 string, got {value!r}")


def utc_moment(value: object, what: str) -> datetime:
    """An aware UTC datetime from a datetime, a date or ISO 8601 text (see the module).

    A naive value is UTC; a date is its UTC midnight; an aware value is converted to UTC.
    """
    moment = parse_moment(value, what)
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    # A plain datetime, never a subclass: pendulum's DateTime (Airflow's data intervals) loses
    # a stdlib tzinfo in arithmetic (``+ timedelta`` gives a naive value).
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
    )


def iso_utc(moment: datetime) -> str:
    """``moment`` as ISO 8601 text in UTC (``+00:00``): what the package writes to JSON."""
    return moment.astimezone(UTC).isoformat()


def parse_duration(value: object, what: str) -> timedelta:
    """A timedelta from itself or a finite number of seconds (its JSON form)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return timedelta(seconds=value)
    raise ValueError(f"{what}: expected a timedelta or a number of seconds, got {value!r}")
