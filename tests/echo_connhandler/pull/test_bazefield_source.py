"""The Bazefield time-series source with the pull engine, against the sandbox over real sockets.

Outputs are compared with single direct requests of the same range (flattened here, by the test's
own code), the plan with the request limits, and every output format with the JSON Lines rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from echo_connhandler import (
    ApiError,
    BazeHttpHandler,
    CceeHttpHandler,
    DataConsistencyError,
    HttpConnProperties,
)
from echo_connhandler.pull import BazefieldTimeseriesSource, Plan, run_pull
from echo_connhandler.pull._bazefield import timeseries_rows
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
TIMESERIES = "BazeField.Services/api/objects/timeseries/aggregated"
KEY = ("object", "point", "aggregate", "timestamp_utc")
COLUMNS = [
    "object",
    "point",
    "aggregate",
    "timestamp_utc",
    "local_time",
    "quality",
    "value",
    "value_text",
]
#: Several windows (7 h of 10 min, the last one shorter), 2 point groups, 3 object groups.
SPLIT: dict[str, Any] = {
    "objects": ["1001", 1002, "2001"],
    "points": ["ActivePower", "WindSpeed", "AmbientTemperature"],
    "aggregates": ["Average", "Max"],
    "start": "2024-01-01T00:00:00Z",
    "end": "2024-01-03T00:00:00Z",
    "interval": "10m",
    "window": timedelta(hours=7),
    "points_per_request": 2,
    "max_values_per_request": 300,
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=7)) as running:
        yield running


def _baze(sb: Sandbox, host: str | None = None) -> BazeHttpHandler:
    props = HttpConnProperties(
        host=host or sb.urls.bazefield, api_key=DEMO_CREDENTIALS["bazefield"]["api_key"]
    )
    return BazeHttpHandler(props, skip_connect=True, **FAST)


def _requests(sb: Sandbox) -> int:
    return sb.faults("bazefield").stats["requests"].get("/" + TIMESERIES.lower(), 0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


async def _direct(sb: Sandbox, source: BazefieldTimeseriesSource) -> list[dict[str, Any]]:
    """The whole range in one request, flattened here (independently of the source's parser)."""
    body: dict[str, Any] = {
        "ObjectIds": source.objects,
        "Points": source.points,
        "Aggregates": source.aggregates,
        "From": source.identity()["start"],
        "To": source.identity()["end"],
        "Interval": source.interval,
    }
    if source.time_zone:
        body["TimeZone"] = source.time_zone
    async with _baze(sb) as handler:
        data = (await handler.async_post(TIMESERIES, json=body)).json()
    rows = []
    for object_id in source.objects:
        for point in source.points:
            for series in data["objects"][object_id]["points"][point]:
                for item in series["timeSeries"]:
                    v = item["v"]
                    numeric = isinstance(v, int | float)
                    rows.append(
                        {
                            "object": object_id,
                            "point": point,
                            "aggregate": series["aggregate"],
                            "timestamp_utc": _iso(datetime.fromtimestamp(item["t"] / 1000, UTC)),
                            "local_time": item["t_local"],
                            "quality": item["q"],
                            "value": float(v) if numeric else None,
                            "value_text": None if numeric else v,
                        }
                    )
    return rows


def _order(source: BazefieldTimeseriesSource, row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        source.objects.index(row["object"]),
        source.points.index(row["point"]),
        source.aggregates.index(row["aggregate"]),
        row["timestamp_utc"],
    )


def _read(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The output parsed back, with the CSV's text and Parquet's timestamps as in JSON Lines."""
    if fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            row["timestamp_utc"] = row["timestamp_utc"].replace(tzinfo=UTC).isoformat()
        return rows
    raw = gzip.decompress(path.read_bytes()) if fmt.endswith(".gz") else path.read_bytes()
    text = raw.decode("utf-8")
    if fmt.startswith("jsonl"):
        return [json.loads(line) for line in text.splitlines()]
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == COLUMNS
    rows = []
    for row in reader:
        parsed: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
        parsed["quality"] = None if parsed["quality"] is None else int(parsed["quality"])
        parsed["value"] = None if parsed["value"] is None else float(parsed["value"])
        rows.append(parsed)
    return rows


async def _pull(sb: Sandbox, source: BazefieldTimeseriesSource, output: Path) -> dict[str, Any]:
    async with _baze(sb) as handler:
        summary = await run_pull(handler, source, output, concurrency=4)
    return dict(summary)


async def _plan(sb: Sandbox, source: BazefieldTimeseriesSource) -> Plan:
    async with _baze(sb) as handler:
        return await source.plan(handler)


async def test_split_pull_equals_one_direct_request(sb: Sandbox, tmp_path: Path) -> None:
    """7 windows x 3 object groups x 2 point groups: the rows of one direct request, each once,
    every series from start to end - interval, chunk after chunk in plan order."""
    source = BazefieldTimeseriesSource(**SPLIT)
    plan = await _plan(sb, source)
    assert len(plan.chunks) == 7 * 3 * 2
    expected = await _direct(sb, source)
    sb.reset()
    summary = await _pull(sb, source, tmp_path / "x.jsonl")
    got = _read(tmp_path / "x.jsonl", "jsonl")

    steps = 2 * 24 * 6
    assert summary["rows"] == len(got) == 3 * 3 * 2 * steps == len(expected)
    assert summary["chunks"] == len(plan.chunks) == _requests(sb)
    assert summary["source_ids"] == ["1001", "1002", "2001"]
    assert len({tuple(r[k] for k in KEY) for r in got}) == len(got)
    assert sorted(got, key=lambda r: _order(source, r)) == sorted(
        expected, key=lambda r: _order(source, r)
    )
    assert any(r["value_text"] is not None and r["value"] is None for r in got)  # "NaN", ...
    for object_id in source.objects:
        for point in source.points:
            for aggregate in source.aggregates:
                times = [
                    r["timestamp_utc"]
                    for r in got
                    if (r["object"], r["point"], r["aggregate"]) == (object_id, point, aggregate)
                ]
                assert times[0] == "2024-01-01T00:00:00+00:00"
                assert times[-1] == "2024-01-02T23:50:00+00:00"  # end - interval
                assert len(times) == steps

    # The output is the chunks in plan order, each sorted and within its own window.
    offset = 0
    for chunk in plan.chunks:
        params = chunk.params
        count = len(params["objects"]) * len(params["points"]) * 2 * _steps(params, 600)
        part = got[offset : offset + count]
        offset += count
        assert part == sorted(part, key=lambda r: _order(source, r))
        assert {r["object"] for r in part} == set(params["objects"])
        assert {r["point"] for r in part} == set(params["points"])
        low, high = _moment(params["from"]), _moment(params["to"])
        assert all(low <= datetime.fromisoformat(r["timestamp_utc"]) < high for r in part)
    assert offset == len(got)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _steps(params: Any, step_s: int) -> int:
    seconds = (_moment(params["to"]) - _moment(params["from"])).total_seconds()
    return int(-(-seconds // step_s))


async def test_plan_respects_every_limit_and_windows_meet(sb: Sandbox) -> None:
    source = BazefieldTimeseriesSource(**SPLIT)
    plan = await _plan(sb, source)
    windows: list[tuple[str, str]] = []
    for chunk in plan.chunks:
        params = chunk.params
        assert len(params["points"]) <= 2
        values = len(params["objects"]) * len(params["points"]) * 2 * _steps(params, 600)
        assert values <= 300
        assert _moment(params["to"]) - _moment(params["from"]) <= timedelta(hours=7)
        window = (params["from"], params["to"])
        if not windows or windows[-1] != window:
            windows.append(window)
    # Windows in time order, each starting where the last ended: no gap, no overlap.
    assert windows[0][0] == "2024-01-01T00:00:00Z"
    assert windows[-1][1] == "2024-01-03T00:00:00Z"
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    assert len(windows) == 7  # 6 windows of 7 h, then 6 h
    # Within a window: object groups, then point groups; every pair exactly once.
    first = [c.params for c in plan.chunks if c.params["from"] == windows[0][0]]
    assert [(p["objects"], p["points"]) for p in first] == [
        (objects, points)
        for objects in (["1001"], ["1002"], ["2001"])
        for points in (["ActivePower", "WindSpeed"], ["AmbientTemperature"])
    ]
    assert len({c.key for c in plan.chunks}) == len(plan.chunks)


async def test_default_limits_make_full_requests_the_sandbox_accepts(sb: Sandbox) -> None:
    """90 days at 10 min: windows of at most 30 days and 30 points, at most 100 000 values."""
    source = BazefieldTimeseriesSource(
        objects=[1001, 1002, 1003, 1004],
        points=["ActivePower", "WindSpeed", "RotorSpeed"],
        aggregates=["Average", "Min", "Max"],
        start=datetime(2024, 1, 1),
        end=datetime(2024, 3, 31),
        interval="10m",
    )
    plan = await _plan(sb, source)
    for chunk in plan.chunks:
        params = chunk.params
        assert _moment(params["to"]) - _moment(params["from"]) <= timedelta(days=30)
        values = len(params["objects"]) * len(params["points"]) * 3 * _steps(params, 600)
        assert values <= 100_000
    assert len(plan.chunks) == 3 * 2  # 3 windows of 30 days x (2 objects x 3 points) twice
    async with _baze(sb) as handler:
        rows = (await source.fetch(handler, plan.chunks[0], plan)).rows()
    assert len(rows) == 2 * 3 * 3 * 30 * 144


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"start": "2024-01-01T00:05:00Z", "window": timedelta(minutes=95)}, id="odd"),
        pytest.param(
            {
                "interval": "1d",
                "time_zone": "America/Sao_Paulo",
                "start": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-3))),
                "end": "2024-03-01T03:00:00+00:00",
                "window": timedelta(days=7),
            },
            id="days-local",
        ),
        pytest.param(
            {
                "interval": "2d",
                "time_zone": "America/Sao_Paulo",
                "start": "2024-01-01T12:00:00Z",
                "end": "2024-03-01T00:00:00Z",
                "window": timedelta(days=9),
            },
            id="two-days-unaligned",
        ),
        pytest.param({"interval": "01:00:00", "time_zone": "UTC"}, id="timespan"),
        pytest.param(
            {
                "interval": "1d",
                "time_zone": "E. South America Standard Time",  # a Windows id: local midnights
                "start": "2024-01-01T03:00:00Z",
                "end": "2024-03-01T03:00:00Z",
                "window": timedelta(days=7),
            },
            id="days-windows-zone-id",
        ),
    ],
)
async def test_windows_never_repeat_or_lose_a_timestamp(
    sb: Sandbox, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    source = BazefieldTimeseriesSource(**{**SPLIT, **overrides})
    expected = await _direct(sb, source)
    await _pull(sb, source, tmp_path / "x.jsonl")
    got = _read(tmp_path / "x.jsonl", "jsonl")
    assert len({tuple(r[k] for k in KEY) for r in got}) == len(got)
    assert sorted(got, key=lambda r: _order(source, r)) == sorted(
        expected, key=lambda r: _order(source, r)
    )


async def test_day_steps_are_local_midnights(sb: Sandbox, tmp_path: Path) -> None:
    source = BazefieldTimeseriesSource(
        objects=[1001],
        points=["ActivePower"],
        aggregates=["Average"],
        start="2024-01-01T00:00:00-03:00",
        end="2024-02-01T00:00:00-03:00",
        interval="1d",
        time_zone="America/Sao_Paulo",
        window=timedelta(days=10),
    )
    summary = await _pull(sb, source, tmp_path / "x.jsonl")
    assert summary["chunks"] == 4
    got = _read(tmp_path / "x.jsonl", "jsonl")
    assert [r["timestamp_utc"] for r in got] == [
        _iso(datetime(2024, 1, day, 3, tzinfo=UTC)) for day in range(1, 32)
    ]
    assert got[0]["local_time"] == "2024-01-01T00:00:00-03:00"


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "csv.gz", "parquet"])
async def test_every_format_parses_back_to_the_same_rows(
    sb: Sandbox, tmp_path: Path, fmt: str
) -> None:
    source = BazefieldTimeseriesSource(**{**SPLIT, "end": "2024-01-02T00:00:00Z"})
    await _pull(sb, source, tmp_path / "reference.jsonl")
    reference = _read(tmp_path / "reference.jsonl", "jsonl")
    assert any(r["value_text"] is not None for r in reference)
    summary = await _pull(sb, source, tmp_path / f"x.{fmt}")
    assert summary["format"] == fmt
    got = _read(tmp_path / f"x.{fmt}", fmt)
    assert got == reference
    if fmt == "parquet":
        types = {f.name: str(f.type) for f in pq.read_schema(tmp_path / "x.parquet")}
        assert types == {
            "object": "string",
            "point": "string",
            "aggregate": "string",
            "timestamp_utc": "timestamp[us]",
            "local_time": "string",
            "quality": "int64",
            "value": "double",
            "value_text": "string",
        }


async def test_a_server_error_in_http_200_propagates(sb: Sandbox, tmp_path: Path) -> None:
    source = BazefieldTimeseriesSource(**{**SPLIT, "objects": ["1001", "99999"]})
    with pytest.raises(ApiError, match="99999"):
        await _pull(sb, source, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


async def test_requests_are_retried_as_idempotent(sb: Sandbox, tmp_path: Path) -> None:
    source = BazefieldTimeseriesSource(**{**SPLIT, "end": "2024-01-01T12:00:00Z"})
    await _pull(sb, source, tmp_path / "reference.jsonl")
    sb.faults("bazefield").script("timeseries/aggregated", status=503, times=2)
    summary = await _pull(sb, source, tmp_path / "x.jsonl")
    assert summary["retries"] == 2
    assert _read(tmp_path / "x.jsonl", "jsonl") == _read(tmp_path / "reference.jsonl", "jsonl")


async def test_host_given_as_the_api_root(sb: Sandbox, tmp_path: Path) -> None:
    source = BazefieldTimeseriesSource(**{**SPLIT, "end": "2024-01-01T06:00:00Z"})
    async with _baze(sb, f"{sb.urls.bazefield}/BazeField.Services/api") as handler:
        summary = await run_pull(handler, source, tmp_path / "x.jsonl")
    assert summary["rows"] == 3 * 3 * 2 * 36


async def test_another_handler_is_refused(tmp_path: Path) -> None:
    handler = CceeHttpHandler(HttpConnProperties(host="http://127.0.0.1:9"), skip_connect=True)
    with pytest.raises(TypeError, match="BazeHttpHandler"):
        await run_pull(handler, BazefieldTimeseriesSource(**SPLIT), tmp_path / "x.jsonl")


def test_identity_is_json_with_iso_dates() -> None:
    source = BazefieldTimeseriesSource(
        **{
            **SPLIT,
            "start": datetime(2024, 1, 1),  # naive: UTC
            "end": datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=-3))),
        }
    )
    identity = source.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["start"] == "2024-01-01T00:00:00Z"
    assert identity["end"] == "2024-01-02T03:00:00Z"
    assert identity["objects"] == ["1001", "1002", "2001"]
    assert identity["window_s"] == 7 * 3600
    # the tolerance decides whether a pull succeeds: a stricter rerun gets its own checkpoint
    assert identity["max_missing_steps"] == 0
    lenient = BazefieldTimeseriesSource(**{**SPLIT, "max_missing_steps": None}).identity()
    assert lenient == {**BazefieldTimeseriesSource(**SPLIT).identity(), "max_missing_steps": None}


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"objects": []}, "objects"),
        ({"objects": "1001"}, "objects"),
        ({"objects": ["1001", 1001]}, "objects"),
        ({"objects": [True]}, "objects"),
        ({"objects": [-1]}, "objects"),
        ({"points": []}, "points"),
        ({"points": ["ActivePower", " "]}, "points"),
        ({"points": [1]}, "points"),
        ({"aggregates": []}, "aggregates"),
        ({"aggregates": None}, "aggregates"),
        ({"start": "yesterday"}, "start"),
        ({"start": 1704067200000}, "start"),
        ({"end": "*"}, "end"),
        ({"start": "2024-01-03T00:00:00Z"}, "start must be before end"),
        ({"end": "2024-01-01T00:00:00Z"}, "start must be before end"),
        ({"end": datetime(2023, 12, 31, 21, tzinfo=timezone(timedelta(hours=-3)))}, "before end"),
        ({"interval": "1x"}, "interval"),
        ({"interval": "30s"}, "interval"),
        ({"interval": ""}, "interval"),
        ({"interval": 600}, "interval"),
        ({"time_zone": " "}, "time_zone"),
        ({"window": timedelta(minutes=5)}, "window"),
        ({"window": "1h"}, "window"),
        ({"points_per_request": 0}, "points_per_request"),
        ({"points_per_request": True}, "points_per_request"),
        ({"max_values_per_request": 0}, "max_values_per_request"),
        ({"max_values_per_request": 1}, "max_values_per_request"),  # 2 aggregates
        ({"max_missing_steps": -1}, "max_missing_steps"),
        ({"max_missing_steps": True}, "max_missing_steps"),
        ({"max_missing_steps": 1.5}, "max_missing_steps"),
        ({"max_missing_steps": "3"}, "max_missing_steps"),
        # whole days are local midnights: the zone must be known
        ({"interval": "1d", "time_zone": "Mars/Olympus"}, "time_zone 'Mars/Olympus'"),
    ],
)
def test_bad_arguments_are_named(overrides: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BazefieldTimeseriesSource(**{**SPLIT, **overrides})


def test_answer_parsing_counts_gaps_and_keeps_raw_values() -> None:
    """With any gap accepted: missing objects, points and aggregates count as missing steps;
    values outside [From, To) are dropped; names match ignoring case; non-numeric values are
    kept as text; an aggregate not asked for comes last."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=2)
    t0 = int(start.timestamp() * 1000)
    hour = 3_600_000
    payload = {
        "objects": {
            "1001": {
                "points": {
                    "activepower": [
                        {
                            "aggregate": "MAX",
                            "timeSeries": [{"t": t0, "t_local": "x", "q": 0, "v": 2}],
                        },
                        {
                            "aggregate": "Average",
                            "timeSeries": [
                                {"t": t0 + 2 * hour, "t_local": "late", "q": 0, "v": 9},
                                {"t": t0 + hour, "t_local": "b", "q": "1", "v": "NaN"},
                                {"t": t0, "t_local": "a", "q": 0, "v": "12.5"},
                            ],
                        },
                        {"aggregate": "Other", "timeSeries": [{"t": t0 + hour, "v": None}]},
                    ]
                }
            },
            "1002": {"points": {}},
        }
    }
    args: tuple[Any, ...] = (
        payload,
        ["1001", "1002", "1003"],
        ["ActivePower", "WindSpeed"],
        ["Average", "Max"],
        start,
        end,
    )
    page = timeseries_rows(*args, step_s=3600, max_missing_steps=None)
    rows = page.rows
    assert [(r["aggregate"], r["timestamp_utc"], r["value"], r["value_text"]) for r in rows] == [
        ("Average", "2024-01-01T00:00:00+00:00", 12.5, None),
        ("Average", "2024-01-01T01:00:00+00:00", None, "NaN"),
        ("Max", "2024-01-01T00:00:00+00:00", 2.0, None),
        ("Other", "2024-01-01T01:00:00+00:00", None, None),
    ]
    assert {r["object"] for r in rows} == {"1001"}
    assert {r["point"] for r in rows} == {"ActivePower"}
    assert rows[1]["quality"] == 1
    assert rows[3]["local_time"] is None
    # 3 objects x 2 points x 2 aggregates x 2 steps, of which 3 came
    assert page.counts == {"missing_steps": 3 * 2 * 2 * 2 - 3}
    # The default accepts no gap, and names the first series that has one.
    with pytest.raises(
        DataConsistencyError,
        match=r"object 1001 point ActivePower aggregate Max has 1 of the 2 steps of window "
        r"\[2024-01-01T00:00:00Z, 2024-01-01T02:00:00Z\) \(1 missing: first missing "
        r"2024-01-01T01:00:00Z\); 11 series of this window miss too many steps \(21 missing",
    ):
        timeseries_rows(*args, step_s=3600)
    # At most 1 missing step per series and window: 1001 ActivePower passes, WindSpeed not.
    with pytest.raises(
        DataConsistencyError,
        match=r"object 1001 point WindSpeed aggregate "
        r"Average has 0 of the 2 steps .* the point is absent from the answer",
    ):
        timeseries_rows(*args, step_s=3600, max_missing_steps=1)
    empty = timeseries_rows(
        {"objects": {}},
        ["1001"],
        ["P"],
        ["Average"],
        start,
        end,
        step_s=3600,
        max_missing_steps=None,
    )
    assert empty.rows == []
    assert empty.counts == {"missing_steps": 2}
    with pytest.raises(ValueError, match="objects"):
        timeseries_rows(
            {"responseStatus": {}}, ["1001"], ["P"], ["Average"], start, end, step_s=3600
        )


@pytest.mark.parametrize(
    ("step_s", "time_zone", "t", "grid"),
    [
        (3600, None, datetime(2024, 1, 1, 0, 30, tzinfo=UTC), "multiples of the interval"),
        (600, None, datetime(2024, 1, 1, 0, 0, 0, 1000, tzinfo=UTC), "multiples of the interval"),
        # whole days are local midnights: UTC midnight is 21:00 in São Paulo
        (86400, "America/Sao_Paulo", datetime(2024, 1, 2, tzinfo=UTC), "local midnights"),
    ],
)
def test_a_timestamp_off_the_step_grid_is_refused(
    step_s: int, time_zone: str | None, t: datetime, grid: str
) -> None:
    start = datetime(2024, 1, 1, 3, tzinfo=UTC) if time_zone else datetime(2024, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=2)
    item = {"t": int(t.timestamp() * 1000), "v": 1}
    payload = {"objects": {"1": {"points": {"P": [{"aggregate": "A", "timeSeries": [item]}]}}}}
    with pytest.raises(
        DataConsistencyError,
        match=rf"object 1 point P aggregate A: timestamp {t.isoformat().replace('+00:00', 'Z')} "
        rf"is not on the {step_s} s step grid of window .*\({grid}",
    ):
        timeseries_rows(
            payload,
            ["1"],
            ["P"],
            ["A"],
            start,
            end,
            step_s=step_s,
            time_zone=time_zone,
            max_missing_steps=None,
        )
