"""Bazefield aggregated time series: windows of time x groups of objects and points.

Bazefield has no paging (docs/services/bazefield.md, "Time series"): one call returns every value
of its objects x points x aggregates x time steps, and public clients keep a call within about
30 days and 30 points; the sandbox refuses a call of more than 100 000 values. The plan splits
``[start, end)`` into windows of a whole number of time steps (so that windows meet exactly: no
timestamp twice, none missing), then each window into groups of objects and points, so that every
request stays within ``window`` (30 days by default), ``points_per_request`` points and
``max_values_per_request`` values. Chunks come in order: window, then object group, then point
group. Each answer is decoded in a thread into flat rows (docs/services/bazefield.md, "Pulling
time series") and checked against the plan, which knows every step each object, point and
aggregate must have in each window: duplicate timestamps, timestamps off the step grid, epoch
seconds and labels at the interval's end are refused, and missing steps fail the pull unless
accepted knowingly with ``max_missing_steps`` (then counted in the summary's ``tolerated``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from echo_connhandler._bazefield import BazeHttpHandler, bazefield_api_root
from echo_connhandler._exceptions import DataConsistencyError
from echo_connhandler._handler import HttpHandler, expect_json, is_html
from echo_connhandler._json import loads
from echo_connhandler._time import parse_duration, utc_moment
from echo_connhandler.pull._formats import NUMBER_TEXT
from echo_connhandler.pull._plan import (
    Chunk,
    Column,
    DecodedPage,
    PageContentError,
    Plan,
    RawPage,
    Rows,
    Source,
)
from echo_connhandler.pull._registry import register_source

__all__ = ["TIMESERIES_COLUMNS", "BazefieldTimeseriesSource", "timeseries_rows"]

#: The endpoint, relative to the API root.
TIMESERIES_PATH = "objects/timeseries/aggregated"
#: Default longest window of one request (public clients use about 30 days).
DEFAULT_WINDOW = timedelta(days=30)

TIMESERIES_COLUMNS: tuple[Column, ...] = (
    Column("object", "text"),
    Column("point", "text"),
    Column("aggregate", "text"),
    Column("timestamp_utc", "timestamp"),
    Column("local_time", "text"),
    Column("quality", "int"),
    Column("value", "float"),
    Column("value_text", "text"),
)

_INTERVAL = re.compile(r"^(\d+)\s*(s|m|min|h|d)$", re.IGNORECASE)
_TIMESPAN = re.compile(r"^(\d+):(\d{2}):(\d{2})$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def interval_seconds(interval: str) -> int:
    """``Interval`` text (``10m``, ``1h``, ``1d``, ``00:10:00``) in seconds; ValueError if bad."""
    if not isinstance(interval, str):
        raise ValueError(f"interval must be text such as '10m', '1h' or '1d', got {interval!r}")
    text = interval.strip()
    match = _INTERVAL.fullmatch(text)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    else:
        span = _TIMESPAN.fullmatch(text)
        if not span:
            raise ValueError(
                f"interval must be <n>s, <n>m, <n>h, <n>d or HH:MM:SS (e.g. '10m', '1h', '1d'), "
                f"got {interval!r}"
            )
        hours, minutes, secs = (int(part) for part in span.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds < 60:
        raise ValueError(f"interval must be at least one minute, got {interval!r}")
    return seconds


def _moment(name: str, value: object) -> datetime:
    """A datetime (naive = UTC), a date (its UTC midnight) or ISO-8601 text, in UTC."""
    return utc_moment(value, name)


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _names(name: str, values: object, *, ids: bool = False) -> list[str]:
    """A non-empty list of distinct, non-blank names (object ids may be integers)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list, got {values!r}")
    result: list[str] = []
    for item in values:
        if ids and isinstance(item, int) and not isinstance(item, bool):
            if item < 0:
                raise ValueError(f"{name}: object ids must not be negative, got {item!r}")
            text = str(item)
        elif isinstance(item, str) and item.strip():
            text = item.strip()
        else:
            kind = "non-blank text or integers" if ids else "non-blank text"
            raise ValueError(f"{name} must hold {kind}, got {item!r}")
        if text in result:
            raise ValueError(f"{name}: {text!r} is given twice")
        result.append(text)
    if not result:
        raise ValueError(f"{name} must not be empty")
    return result


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _groups(items: Sequence[str], most: int) -> list[list[str]]:
    """``items`` in order, in as few groups of at most ``most`` as possible, of balanced sizes."""
    count = math.ceil(len(items) / most)
    size = math.ceil(len(items) / count)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


#: Windows zone ids (sent to Bazefield as is) and their IANA zone, for whole-day steps.
_WINDOWS_ZONES = {
    "e. south america standard time": "America/Sao_Paulo",
    "sa eastern standard time": "America/Fortaleza",
    "utc": "UTC",
    "gmt standard time": "Europe/London",
}


def _known_zone(name: str | None) -> tzinfo | None:
    """The zone ``name`` (an IANA name or one of the Windows ids above); UTC for None; None
    when it is neither."""
    if not name:
        return UTC
    try:
        return ZoneInfo(_WINDOWS_ZONES.get(name.strip().casefold(), name.strip()))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _zone(name: str | None) -> tzinfo:
    """The zone of whole-day steps (local midnights): ``name``'s, UTC when it is unknown (the
    constructor refuses an unknown zone with whole-day steps)."""
    return _known_zone(name) or UTC


def _grid(
    start: datetime, end: datetime, step_s: int, zone_name: str | None
) -> tuple[list[int], int]:
    """The service's time steps in ``[start, end)`` in epoch ms, and the first step at or after
    ``end`` (where a series labelled by the interval's end puts its last value).

    Below a day (and for steps that are not whole days) the grid is every multiple of the
    interval since 1970-01-01T00:00Z; whole days are local midnights of ``zone_name``, every
    ``interval`` days from the first one at or after ``start`` (docs/services/bazefield.md,
    "Time series")."""
    start_ms = (start - _EPOCH) // timedelta(milliseconds=1)
    end_ms = math.ceil((end - _EPOCH) / timedelta(milliseconds=1))
    if step_s % 86400:
        step_ms = step_s * 1000
        first = -(-start_ms // step_ms) * step_ms
        steps = list(range(first, end_ms, step_ms))
        following = first + len(steps) * step_ms
        return steps, following
    zone = _zone(zone_name)
    days = step_s // 86400
    local_day = start.astimezone(zone).date()
    if datetime.combine(local_day, datetime.min.time(), tzinfo=zone) < start:
        local_day += timedelta(days=days)
    steps = []
    while True:
        moment = datetime.combine(local_day, datetime.min.time(), tzinfo=zone)
        instant = (moment.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)
        if instant >= end_ms:
            return steps, instant
        steps.append(instant)
        local_day += timedelta(days=days)


@register_source
class BazefieldTimeseriesSource(Source):
    """Rows of Bazefield aggregated time series, one per object, point, aggregate and time step.

    Args:
        objects: object ids (``"1001"`` or ``1001``), in output order.
        points: point names (``"ActivePower"``), in output order.
        aggregates: aggregate names (``"Average"``, ``"Min"``, ...), in output order.
        start: the first instant, a datetime (naive ones are UTC) or ISO-8601 text.
        end: the end of the range ``[start, end)``, excluded; as ``start``.
        interval: the time step, ``<n>m``, ``<n>h``, ``<n>d`` or ``HH:MM:SS`` (at least 1 min).
        time_zone: sent as ``TimeZone`` (an IANA name or a Windows id) when given: ``t_local``
            and whole-day steps follow it.
        window: the longest time span of one request (a timedelta or seconds; default 30
            days), rounded down to whole steps.
        points_per_request: the most points in one request (public clients use 30).
        max_values_per_request: the most values (objects x points x aggregates x steps) in one
            request; the sandbox refuses more than 100 000.
        max_missing_steps: the gaps accepted knowingly, counted per series and window: each
            object, point and aggregate may lack at most this many of its time steps in each
            request window (an object or point absent from an answer lacks all of them).
            ``0`` (the default): any missing step fails the pull with
            :class:`~echo_connhandler.DataConsistencyError`; ``None``: any number is accepted.
            Accepted gaps are counted in the summary (``tolerated["missing_steps"]``), never
            silent. Part of :meth:`identity`: a checkpoint holds chunks accepted under its own
            tolerance, which a stricter rerun must not inherit.

    Every answer is checked against the plan (docs/services/bazefield.md, "What a pull
    checks"): each series has exactly the steps of its window, no timestamp twice, none off the
    step grid; timestamps in epoch seconds or labelled by the interval's end are refused.
    """

    name = "bazefield_timeseries"
    handler_class = BazeHttpHandler
    kind = "rows"

    def __init__(
        self,
        *,
        objects: Sequence[str | int],
        points: Sequence[str],
        aggregates: Sequence[str],
        start: datetime | str,
        end: datetime | str,
        interval: str = "1h",
        time_zone: str | None = None,
        window: timedelta | float | None = None,
        points_per_request: int = 30,
        max_values_per_request: int = 100_000,
        max_missing_steps: int | None = 0,
    ) -> None:
        self.objects = _names("objects", objects, ids=True)
        self.points = _names("points", points)
        self.aggregates = _names("aggregates", aggregates)
        self.start = _moment("start", start)
        self.end = _moment("end", end)
        if self.start >= self.end:
            raise ValueError(
                f"start must be before end, got start={_iso_z(self.start)} end={_iso_z(self.end)}"
            )
        self.interval = interval.strip() if isinstance(interval, str) else interval
        self.step_s = interval_seconds(interval)
        if time_zone is not None and (not isinstance(time_zone, str) or not time_zone.strip()):
            raise ValueError(f"time_zone must be a zone name or None, got {time_zone!r}")
        self.time_zone = time_zone.strip() if time_zone is not None else None
        if self.step_s % 86400 == 0 and _known_zone(self.time_zone) is None:
            # Whole-day steps are the zone's local midnights: without the zone, neither the
            # windows nor the check of every answer's timestamps can be computed.
            raise ValueError(
                f"time_zone {self.time_zone!r} is neither an IANA zone name nor a known Windows "
                f"zone id; whole-day intervals ({self.interval}) need it to know local midnights"
            )
        if window is not None:
            # A timedelta, or its JSON form (seconds) as a trigger's arguments carry it.
            window = parse_duration(window, "window")
            if window.total_seconds() < self.step_s:
                raise ValueError(
                    f"window must hold at least one interval ({self.interval}), got {window}"
                )
        self.window = window
        self.points_per_request = _positive_int("points_per_request", points_per_request)
        self.max_values_per_request = _positive_int(
            "max_values_per_request", max_values_per_request
        )
        if max_missing_steps is not None and (
            isinstance(max_missing_steps, bool)
            or not isinstance(max_missing_steps, int)
            or max_missing_steps < 0
        ):
            raise ValueError(
                f"max_missing_steps must be an integer >= 0 or None (any number), "
                f"got {max_missing_steps!r}"
            )
        self.max_missing_steps = max_missing_steps
        if len(self.aggregates) > self.max_values_per_request:
            raise ValueError(
                f"max_values_per_request ({self.max_values_per_request}) is below the number of "
                f"aggregates ({len(self.aggregates)}): not even one value of each fits a request"
            )
        self._chunks = self._make_chunks()

    # -- the plan (pure: computed once, in the constructor) --------------------------------------
    def _steps_per_window(self) -> int:
        span = (self.window or DEFAULT_WINDOW).total_seconds()
        steps = max(1, int(span // self.step_s))
        return min(steps, self.max_values_per_request // len(self.aggregates))

    def _boundaries(self, steps: int) -> list[datetime]:
        """``start``, then every ``steps`` steps, then ``end``: windows of whole steps."""
        bounds = [self.start]
        if self.step_s % 86400 == 0:
            # Whole days: step in the zone's calendar, so windows begin on local midnights
            # when start does (the grid of day steps is local midnights).
            zone = _zone(self.time_zone)
            local = self.start.astimezone(zone)
            days = steps * self.step_s // 86400
            k = 1
            while True:
                moment = (local + timedelta(days=days * k)).astimezone(UTC)
                if moment >= self.end:
                    break
                bounds.append(moment)
                k += 1
        else:
            span = timedelta(seconds=steps * self.step_s)
            moment = self.start + span
            while moment < self.end:
                bounds.append(moment)
                moment += span
        bounds.append(self.end)
        return bounds

    def _make_chunks(self) -> list[Chunk]:
        steps = self._steps_per_window()
        per_step = len(self.aggregates) * steps
        most_points = min(self.points_per_request, self.max_values_per_request // per_step)
        point_groups = _groups(self.points, most_points)
        widest = max(len(g) for g in point_groups)
        most_objects = self.max_values_per_request // (per_step * widest)
        object_groups = _groups(self.objects, most_objects)
        bounds = self._boundaries(steps)
        chunks: list[Chunk] = []
        for begin, finish in itertools.pairwise(bounds):
            for o, object_group in enumerate(object_groups):
                for p, point_group in enumerate(point_groups):
                    chunks.append(
                        Chunk(
                            index=len(chunks),
                            key=f"{_iso_z(begin)}/{_iso_z(finish)}/o{o}/p{p}",
                            params={
                                "from": _iso_z(begin),
                                "to": _iso_z(finish),
                                "objects": object_group,
                                "points": point_group,
                            },
                        )
                    )
        return chunks

    # -- Source -----------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "points": self.points,
            "aggregates": self.aggregates,
            "start": _iso_z(self.start),
            "end": _iso_z(self.end),
            "interval": self.interval,
            "time_zone": self.time_zone,
            "window_s": None if self.window is None else self.window.total_seconds(),
            "points_per_request": self.points_per_request,
            "max_values_per_request": self.max_values_per_request,
            # Not the bytes of a successful pull, but whether it succeeds: a checkpoint's chunks
            # were accepted under this tolerance, and a stricter rerun must check them itself.
            "max_missing_steps": self.max_missing_steps,
        }

    def describe(self) -> str:
        return (
            f"Bazefield {len(self.objects)} objects x {len(self.points)} points "
            f"x {len(self.aggregates)} aggregates"
        )

    def body(self, chunk: Chunk) -> dict[str, Any]:
        """The JSON body of one chunk's request."""
        body: dict[str, Any] = {
            "ObjectIds": list(chunk.params["objects"]),
            "Points": list(chunk.params["points"]),
            "Aggregates": list(self.aggregates),
            "From": chunk.params["from"],
            "To": chunk.params["to"],
            "Interval": self.interval,
        }
        if self.time_zone is not None:
            body["TimeZone"] = self.time_zone
        return body

    async def plan(self, handler: HttpHandler) -> Plan:
        _baze(handler)
        return Plan(list(self._chunks), list(TIMESERIES_COLUMNS), list(self.objects))

    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> RawPage:
        baze = _baze(handler)
        response = await baze.async_post(_endpoint(baze.props.host), json=self.body(chunk))
        if is_html(response):
            expect_json(response)  # raises: an HTML page (login, maintenance), not JSON
        return RawPage(
            response,
            _response_rows,
            (
                list(chunk.params["objects"]),
                list(chunk.params["points"]),
                list(self.aggregates),
                _moment("from", chunk.params["from"]),
                _moment("to", chunk.params["to"]),
                self.step_s,
                self.time_zone,
                self.max_missing_steps,
            ),
        )


def _baze(handler: HttpHandler) -> BazeHttpHandler:
    if not isinstance(handler, BazeHttpHandler):
        raise TypeError(f"a Bazefield pull needs a BazeHttpHandler, got {type(handler).__name__}")
    return handler


def _endpoint(host: str) -> str:
    """The time-series endpoint relative to ``host`` (the tenant root or the API root)."""
    root = bazefield_api_root(host)
    prefix = root[len(host.rstrip("/")) :].strip("/")
    return f"{prefix}/{TIMESERIES_PATH}" if prefix else TIMESERIES_PATH


def _response_rows(
    content: bytes,
    objects: Sequence[str],
    points: Sequence[str],
    aggregates: Sequence[str],
    start: datetime,
    end: datetime,
    step_s: int,
    time_zone: str | None,
    max_missing_steps: int | None,
) -> DecodedPage:
    """One answer's rows (in a worker thread or process), checked against the plan."""
    try:
        payload = loads(content)
    except ValueError:
        raise PageContentError("expected JSON, got undecodable content") from None
    try:
        return timeseries_rows(
            payload,
            objects,
            points,
            aggregates,
            start,
            end,
            step_s=step_s,
            time_zone=time_zone,
            max_missing_steps=max_missing_steps,
        )
    except ValueError as exc:
        raise PageContentError(f"Bazefield time series: {exc}") from None


def _lookup(mapping: Mapping[str, Any], name: str) -> Any:
    """``mapping[name]``, else the entry whose key matches ``name`` ignoring case."""
    if name in mapping:
        return mapping[name]
    folded = name.casefold()
    for key, value in mapping.items():
        if str(key).casefold() == folded:
            return value
    return None


def _epoch_ms(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"timestamp t is not epoch milliseconds: {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and math.isfinite(raw):
        return round(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
        return int(raw)
    raise ValueError(f"timestamp t is not epoch milliseconds: {raw!r}")


def _value(raw: object) -> tuple[float | None, str | None]:
    """``(value, value_text)``: a finite number, or the raw value as text (``"NaN"``, ...)."""
    if raw is None:
        return None, None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        number = float(raw)
        if math.isfinite(number):
            return number, None
        return None, str(raw)
    if isinstance(raw, str):
        if NUMBER_TEXT.fullmatch(raw):
            number = float(raw)
            if math.isfinite(number):
                return number, None
        return None, raw
    return None, json.dumps(raw, ensure_ascii=False)


def _quality(raw: object) -> int | None:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
        return int(raw)
    return None


def _iso_ms(epoch_ms: int) -> str:
    return _iso_z(_EPOCH + timedelta(milliseconds=epoch_ms))


@dataclass(slots=True)
class _Series:
    """What one answer holds of one requested object, point and aggregate."""

    object: str
    point: str
    aggregate: str
    #: ``"object"``, ``"point"`` or ``"aggregate"`` when the answer leaves it out.
    absent: str | None = None
    #: The timestamps (epoch ms) in the window.
    present: set[int] = field(default_factory=set)
    #: A value sits at the first step at or after the window's end (dropped).
    at_end: bool = False

    def name(self) -> str:
        return f"object {self.object} point {self.point} aggregate {self.aggregate}"


def timeseries_rows(
    payload: Any,
    objects: Sequence[str],
    points: Sequence[str],
    aggregates: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    step_s: int,
    time_zone: str | None = None,
    max_missing_steps: int | None = 0,
) -> DecodedPage:
    """Flatten an ``objects/timeseries/aggregated`` answer into rows, checked against the plan.

    Rows come in the order of ``objects``, ``points`` and ``aggregates`` as requested (aggregates
    the server names otherwise come last, by name), then by time. Values outside ``[start, end)``
    are dropped (a server that treats ``To`` as inclusive would repeat them in the next window).

    Every series must hold exactly the steps of the window (:func:`_grid` of ``step_s`` and
    ``time_zone``): a timestamp off that grid or given twice raises
    :class:`~echo_connhandler.DataConsistencyError`, and so do timestamps in epoch seconds and
    a window whose every series is labelled by the interval's end (its first step missing, a
    value at the window's end). A requested series (object x point x aggregate) missing
    steps, or absent from the answer, fails when it misses more than ``max_missing_steps``
    (``None``: any number); the steps accepted as missing are returned as
    ``counts["missing_steps"]``. Raises ValueError when the answer does not have the documented
    shape.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"the answer is not a JSON object ({type(payload).__name__})")
    if "objects" not in payload and "Objects" not in payload:
        raise ValueError("the answer has no 'objects'")
    found = payload.get("objects", payload.get("Objects")) or {}
    if not isinstance(found, Mapping):
        raise ValueError("'objects' is not an object")
    start_ms = (start - _EPOCH) // timedelta(milliseconds=1)
    end_ms = math.ceil((end - _EPOCH) / timedelta(milliseconds=1))
    grid, following = _grid(start, end, step_s, time_zone)
    on_grid = set(grid)
    window = f"[{_iso_z(start)}, {_iso_z(end)})"
    order = {name.casefold(): index for index, name in enumerate(aggregates)}
    by_fold = {name.casefold(): name for name in aggregates}
    checked: list[_Series] = []
    unasked: set[str] = set()
    rows: Rows = []
    for object_id in objects:
        entry = _lookup(found, object_id)
        series_by_point = _lookup(entry, "points") if isinstance(entry, Mapping) else None
        for point in points:
            series_list = (
                _lookup(series_by_point, point) if isinstance(series_by_point, Mapping) else None
            )
            if not isinstance(series_list, Sequence) or isinstance(series_list, str):
                absent = "object" if not isinstance(series_by_point, Mapping) else "point"
                checked.extend(_Series(object_id, point, a, absent) for a in aggregates)
                continue
            keyed: list[tuple[tuple[int, str], str, Sequence[Any]]] = []
            for series in series_list:
                if not isinstance(series, Mapping):
                    raise ValueError(f"object {object_id} point {point}: a series is not an object")
                name = str(series.get("aggregate") or series.get("Aggregate") or "")
                values = series.get("timeSeries", series.get("TimeSeries")) or []
                if not isinstance(values, Sequence) or isinstance(values, str):
                    raise ValueError(f"object {object_id} point {point}: timeSeries is not a list")
                folded = name.casefold()
                rank = order.get(folded, len(aggregates))
                keyed.append(((rank, name), by_fold.get(folded, name), values))
            keyed.sort(key=lambda item: item[0])
            found_series: dict[str, _Series] = {}
            for _, aggregate, values in keyed:
                # Two series of one aggregate (names that differ only in case) share their
                # timestamps: a value in both is a duplicate.
                record = found_series.setdefault(aggregate, _Series(object_id, point, aggregate))
                series_rows: list[tuple[int, dict[str, Any]]] = []
                for item in values:
                    if not isinstance(item, Mapping):
                        raise ValueError(
                            f"object {object_id} point {point}: a value is not an object"
                        )
                    t = _epoch_ms(item.get("t"))
                    if not start_ms <= t < end_ms:
                        if start_ms <= t * 1000 < end_ms:
                            raise DataConsistencyError(
                                f"Bazefield time series: {record.name()}: t = {t} lies outside "
                                f"window {window}, but as epoch seconds it would be "
                                f"{_iso_ms(t * 1000)}: the server sends t in epoch seconds, "
                                "not milliseconds; nothing was written"
                            )
                        record.at_end = record.at_end or t == following
                        continue
                    if t not in on_grid:
                        raise DataConsistencyError(
                            f"Bazefield time series: {record.name()}: timestamp {_iso_ms(t)} "
                            f"is not on the {step_s} s step grid of window {window} "
                            f"({_grid_text(step_s, time_zone)}); nothing was written"
                        )
                    if t in record.present:
                        raise DataConsistencyError(
                            f"Bazefield time series: {record.name()}: timestamp {_iso_ms(t)} "
                            f"appears twice in window {window}: the server repeats values; "
                            "nothing was written"
                        )
                    record.present.add(t)
                    value, value_text = _value(item.get("v"))
                    local = item.get("t_local")
                    series_rows.append(
                        (
                            t,
                            {
                                "object": object_id,
                                "point": point,
                                "aggregate": aggregate,
                                "timestamp_utc": (_EPOCH + timedelta(milliseconds=t)).isoformat(),
                                "local_time": None if local is None else str(local),
                                "quality": _quality(item.get("q")),
                                "value": value,
                                "value_text": value_text,
                            },
                        )
                    )
                series_rows.sort(key=lambda pair: pair[0])
                rows.extend(row for _, row in series_rows)
            for aggregate in aggregates:
                asked = found_series.pop(aggregate, None)
                checked.append(asked or _Series(object_id, point, aggregate, "aggregate"))
            unasked.update(found_series)
    missing = _check_steps(checked, grid, window, max_missing_steps, unasked)
    return DecodedPage(rows, counts={"missing_steps": missing} if missing else {})


def _check_steps(
    checked: Sequence[_Series],
    grid: Sequence[int],
    window: str,
    max_missing_steps: int | None,
    unasked: set[str],
) -> int:
    """The steps missing from the requested series of one window; DataConsistencyError when a
    series misses more than ``max_missing_steps`` or the window is labelled by interval ends."""
    expected = len(grid)
    with_values = [s for s in checked if s.present or s.at_end]
    if grid and with_values and all(grid[0] not in s.present and s.at_end for s in with_values):
        # Not a gap but every series shifted by one step: refused whatever the tolerance, as
        # accepting it would shift the data (docs/services/bazefield.md, "What a pull checks").
        raise DataConsistencyError(
            f"Bazefield time series: window {window}: every series lacks its first step "
            f"({_iso_ms(grid[0])}) and has a value at the window's end: the server labels "
            f"steps by the interval's end instead of its start ({with_values[0].name()} has "
            f"{len(with_values[0].present)} of {expected} steps); nothing was written"
        )
    missing = sum(expected - len(s.present) for s in checked)
    if max_missing_steps is None:
        return missing
    over = [s for s in checked if expected - len(s.present) > max_missing_steps]
    if not over:
        return missing
    first = over[0]
    lacking = [t for t in grid if t not in first.present]
    if first.absent:
        why = f"the {first.absent} is absent from the answer"
        if first.absent == "aggregate" and unasked:
            why += f", which has aggregate(s) {', '.join(sorted(map(repr, unasked)))} not asked for"
    else:
        why = f"first missing {_iso_ms(lacking[0])}"
        if first.at_end and grid[0] in lacking:
            why += (
                "; a value sits at the window's end: does the server label steps by the "
                "interval's end?"
            )
    tolerance = (
        "any missing step fails"
        if max_missing_steps == 0
        else f"at most {max_missing_steps} accepted per series and window"
    )
    got = len(first.present)
    raise DataConsistencyError(
        f"Bazefield time series: {first.name()} has {got} of the {expected} steps of window "
        f"{window} ({expected - got} missing: {why}); {len(over)} series of this window miss "
        f"too many steps ({missing} missing in all; max_missing_steps: {tolerance}). Nothing "
        "was written; gaps are real in SCADA data: accept them knowingly with max_missing_steps"
    )


def _grid_text(step_s: int, time_zone: str | None) -> str:
    if step_s % 86400:
        return "multiples of the interval since 1970-01-01T00:00Z"
    return f"local midnights in {time_zone or 'UTC'}"
