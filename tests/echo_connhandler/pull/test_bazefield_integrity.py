"""A Bazefield pull refuses wrong time series: against the misbehaving sandbox, over real sockets.

Each misbehaviour below was written as a successful output before the answers were checked
against the plan (issue 15, "Bazefield time series"): labels at the interval's end (138 of 144
rows), an object missing from one window (120 of 144), ``t`` in epoch seconds (0 rows), every
value twice (288 rows). Now each fails with ``DataConsistencyError`` and nothing reaches the
output's name; a gap accepted knowingly (``max_missing_steps``) is counted in the summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler import BazeHttpHandler, DataConsistencyError, HttpConnProperties
from echo_connhandler.pull import BazefieldTimeseriesSource, PullSummary, run_pull, summary_line
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
#: One day at 10 minutes in windows of 4 h: 6 windows of 24 steps, one request each.
DAY: dict[str, Any] = {
    "objects": ["1001"],
    "points": ["ActivePower"],
    "aggregates": ["Average"],
    "start": "2024-01-01T00:00:00Z",
    "end": "2024-01-02T00:00:00Z",
    "interval": "10m",
    "window": timedelta(hours=4),
}
#: The window that holds 09:00 (the one ``drop_object`` empties with ``at``).
THIRD = r"\[2024-01-01T08:00:00Z, 2024-01-01T12:00:00Z\)"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=7)) as running:
        yield running


def _baze(sb: Sandbox) -> BazeHttpHandler:
    props = HttpConnProperties(
        host=sb.urls.bazefield, api_key=DEMO_CREDENTIALS["bazefield"]["api_key"]
    )
    return BazeHttpHandler(props, skip_connect=True, **FAST)


async def _pull(
    sb: Sandbox, output: Path, *, concurrency: int = 1, decode: str = "thread", **overrides: Any
) -> PullSummary:
    source = BazefieldTimeseriesSource(**{**DAY, **overrides})
    async with _baze(sb) as handler:
        return await run_pull(
            handler,
            source,
            output,
            concurrency=concurrency,
            decode=decode,  # type: ignore[arg-type]
        )


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


MISBEHAVIOURS = [
    pytest.param(
        "label_interval_end",
        {},
        {},
        r"^Bazefield time series: window \[2024-01-01T00:00:00Z, 2024-01-01T04:00:00Z\): every "
        r"series lacks its first step \(2024-01-01T00:00:00Z\) and has a value at the window's "
        r"end: the server labels steps by the interval's end instead of its start \(object 1001 "
        r"point ActivePower aggregate Average has 23 of 24 steps\); nothing was written$",
        id="label_interval_end",
    ),
    pytest.param(
        "drop_object",
        {"object": "1001", "at": "2024-01-01T09:00:00Z"},
        {},
        r"^Bazefield time series: object 1001 point ActivePower aggregate Average has 0 of the 24 "
        rf"steps of window {THIRD} \(24 missing: the object is absent from the answer\); 1 series "
        r"of this window miss too many steps \(24 missing in all; max_missing_steps: any missing "
        r"step fails\)\. Nothing was written; gaps are real in SCADA data: accept them knowingly "
        r"with max_missing_steps$",
        id="drop_object",
    ),
    pytest.param(
        "epoch_seconds",
        {},
        {},
        r"^Bazefield time series: object 1001 point ActivePower aggregate Average: t = 1704067200 "
        r"lies outside window \[2024-01-01T00:00:00Z, 2024-01-01T04:00:00Z\), but as epoch "
        r"seconds it would be 2024-01-01T00:00:00Z: the server sends t in epoch seconds, not "
        r"milliseconds; nothing was written$",
        id="epoch_seconds",
    ),
    pytest.param(
        "duplicate_timestamps",
        {},
        {},
        r"^Bazefield time series: object 1001 point ActivePower aggregate Average: timestamp "
        r"2024-01-01T00:00:00Z appears twice in window \[2024-01-01T00:00:00Z, "
        r"2024-01-01T04:00:00Z\): the server repeats values; nothing was written$",
        id="duplicate_timestamps",
    ),
    # A shift, seconds or repeats are not gaps: no tolerance accepts them.
    pytest.param(
        "label_interval_end",
        {},
        {"max_missing_steps": None},
        r"the server labels steps by the interval's end instead of its start",
        id="label_interval_end-any-gap-accepted",
    ),
    pytest.param(
        "epoch_seconds",
        {},
        {"max_missing_steps": None},
        r"the server sends t in epoch seconds, not milliseconds",
        id="epoch_seconds-any-gap-accepted",
    ),
    pytest.param(
        "duplicate_timestamps",
        {},
        {"max_missing_steps": None},
        r"appears twice in window",
        id="duplicate_timestamps-any-gap-accepted",
    ),
    # Decoded in a worker process, the error is the same.
    pytest.param(
        "drop_object",
        {"object": "1001", "at": "2024-01-01T09:00:00Z"},
        {"decode": "process"},
        rf"object 1001 point ActivePower aggregate Average has 0 of the 24 steps of window {THIRD}",
        id="drop_object-process",
    ),
]


@pytest.mark.parametrize(("kind", "options", "overrides", "message"), MISBEHAVIOURS)
async def test_a_misbehaving_server_fails_the_pull_and_writes_nothing(
    sb: Sandbox,
    tmp_path: Path,
    kind: str,
    options: dict[str, Any],
    overrides: dict[str, Any],
    message: str,
) -> None:
    sb.faults("bazefield").misbehave(kind, **options)
    output = tmp_path / "x.jsonl"
    with pytest.raises(DataConsistencyError, match=message):
        await _pull(sb, output, **overrides)
    assert not output.exists()
    assert not list(tmp_path.glob("x.jsonl.tmp*"))


async def test_the_sandboxs_normal_data_has_no_gap(sb: Sandbox, tmp_path: Path) -> None:
    """Non-numeric values ("NaN", "Bad", ...) are values, not gaps: the default pull passes."""
    summary = await _pull(
        sb,
        tmp_path / "x.jsonl",
        concurrency=4,
        objects=["1001", "1002", "2900"],
        points=["ActivePower", "WindSpeed", "AmbientTemperature"],
        aggregates=["Average", "Max"],
        end="2024-01-15T00:00:00Z",
        window=timedelta(days=2),
    )
    rows = _rows(tmp_path / "x.jsonl")
    assert summary["rows"] == len(rows) == 3 * 3 * 2 * 14 * 144
    assert summary["tolerated"] == {}
    assert any(row["value_text"] is not None for row in rows)


async def test_a_dropped_object_accepted_knowingly_is_counted(sb: Sandbox, tmp_path: Path) -> None:
    two = {"objects": ["1001", "1002"]}
    reference = await _pull(sb, tmp_path / "reference.jsonl", **two)
    assert reference["tolerated"] == {}
    sb.faults("bazefield").misbehave("drop_object", object="1002", at="2024-01-01T09:00:00Z")

    # 24 steps per series and window: 23 is not enough, and the error says what was allowed.
    with pytest.raises(
        DataConsistencyError,
        match=rf"object 1002 point ActivePower aggregate Average has 0 of the 24 steps of window "
        rf"{THIRD} .*max_missing_steps: at most 23 accepted per series and window\)",
    ):
        await _pull(sb, tmp_path / "strict.jsonl", max_missing_steps=23, **two)
    assert not (tmp_path / "strict.jsonl").exists()

    expected = [
        row
        for row in _rows(tmp_path / "reference.jsonl")
        if not (row["object"] == "1002" and "T08:00" <= row["timestamp_utc"][10:16] < "T12:00")
    ]
    assert len(expected) == 2 * 144 - 24
    for tolerance in (24, None):
        output = tmp_path / f"accepted-{tolerance}.jsonl"
        summary = await _pull(sb, output, concurrency=3, max_missing_steps=tolerance, **two)
        assert summary["tolerated"] == {"missing_steps": 24}
        assert summary["rows"] == len(expected)
        assert _rows(output) == expected
        assert "24 missing steps accepted" in summary_line(summary)


async def test_a_gap_in_every_window_is_counted_per_series_and_window(
    sb: Sandbox, tmp_path: Path
) -> None:
    """``max_missing_steps`` bounds each series (object x point x aggregate) in each window, not
    the window as a whole: an object absent from a window misses 24 steps in each of its two
    series, and 24 accepts both; the count is the sum."""
    sb.faults("bazefield").misbehave("drop_object", object="1002")  # the first window
    summary = await _pull(
        sb,
        tmp_path / "x.jsonl",
        objects=["1001", "1002"],
        points=["ActivePower", "WindSpeed"],
        max_missing_steps=24,
    )
    # 1002 lacks both points in the first window: 2 series x 24 steps, each within 24.
    assert summary["tolerated"] == {"missing_steps": 48}
    assert summary["rows"] == 2 * 2 * 144 - 48
