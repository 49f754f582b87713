"""The one reading of moments and durations (echo_connhandler._time)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pendulum
import pytest

from echo_connhandler import iso_utc, parse_duration, parse_moment, utc_moment


def test_parse_moment_reads_dates_and_datetimes() -> None:
    assert parse_moment(" 2024-01-02 ", "start") == date(2024, 1, 2)
    assert parse_moment("2024-01-02T03:00:00Z", "start") == datetime(2024, 1, 2, 3, tzinfo=UTC)
    assert parse_moment(date(2024, 1, 2), "start") == date(2024, 1, 2)


@pytest.mark.parametrize("value", ["not a date", "2024-13-01", "20240101x", 20240101, None])
def test_parse_moment_names_the_argument(value: object) -> None:
    with pytest.raises(ValueError, match=r"^start: expected a date, a datetime or an ISO-8601"):
        parse_moment(value, "start")


def test_utc_moment_naive_is_utc_and_dates_are_midnight() -> None:
    assert utc_moment("2024-01-02T03:00:00", "t") == datetime(2024, 1, 2, 3, tzinfo=UTC)
    assert utc_moment(date(2024, 1, 2), "t") == datetime(2024, 1, 2, tzinfo=UTC)
    minus3 = timezone(timedelta(hours=-3))
    assert utc_moment(datetime(2024, 1, 2, 0, tzinfo=minus3), "t") == datetime(
        2024, 1, 2, 3, tzinfo=UTC
    )


def test_utc_moment_of_pendulum_survives_arithmetic() -> None:
    """pendulum's DateTime (Airflow's data intervals) with a stdlib UTC loses it on ``+``: the
    result is a plain datetime, so sums stay aware."""
    moment = utc_moment(pendulum.datetime(2024, 1, 2, tz="America/Sao_Paulo"), "t")
    assert type(moment) is datetime
    later = moment + timedelta(hours=1)
    assert later.tzinfo is not None
    assert iso_utc(later) == "2024-01-02T04:00:00+00:00"


def test_parse_duration() -> None:
    assert parse_duration(90, "window") == timedelta(seconds=90)
    assert parse_duration(timedelta(hours=1), "window") == timedelta(hours=1)
    for bad in ("1h", True, float("inf")):
        with pytest.raises(ValueError, match=r"^window: expected a timedelta or a number"):
            parse_duration(bad, "window")
