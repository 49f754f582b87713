"""The pull operators against the sandbox over real sockets, deferred and in the worker.

Deferred: ``execute`` raises ``TaskDeferred`` once with a ``PullTrigger`` for the whole pull;
the trigger is rebuilt from its serialisation (as the triggerer does), run to its one event,
and ``execute_complete`` gets the event's payload (passed through Airflow's serde, as the
payload goes through the database). In the worker: ``execute`` runs the same engine. Both ways
must write identical files, equal to what the services' own handlers read.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import (
    ApiError,
    BazeHttpHandler,
    CceeHttpHandler,
    DataConsistencyError,
    OnsHttpHandler,
)
from echo_connhandler.pull import build_source
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider import _jobs as trigger_module
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, OnsHook
from echo_connhandler_provider.operators import (
    BazefieldTimeseriesOperator,
    CceeDatastoreOperator,
    OnsSagerReportOperator,
    OnsSinapseExportOperator,
    PullOperator,
)
from echo_connhandler_provider.triggers import PullTrigger

SECRETS = [
    DEMO_CREDENTIALS["bazefield"]["password"],
    DEMO_CREDENTIALS["bazefield"]["api_key"],
    DEMO_CREDENTIALS["ons"]["password"],
]
SUMMARY_KEYS = {
    "output",
    "format",
    "rows",
    "chunks",
    "bytes",
    "seconds",
    "retries",
    "chunks_resumed",
    "source_ids",
    "source_versions",
    "columns",
    "files",
    "tolerated",
    "stage",
    "phases",
}
BAZE_API = "BazeField.Services/api"


def _context(start: str = "2024-01-01", end: str = "2024-01-03") -> dict[str, Any]:
    """What the operators read from a task's context: the run's data interval."""
    return {
        "data_interval_start": pendulum.parse(start),
        "data_interval_end": pendulum.parse(end),
    }


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def _first_event(trigger: PullTrigger) -> Any:
    events = trigger.run()
    try:
        return await anext(events)
    finally:
        await events.aclose()


def run_deferred(op: PullOperator, context: dict[str, Any]) -> Any:
    """Defer, rebuild the trigger from its serialisation, run it, resume with its event."""
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)  # type: ignore[arg-type]
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert isinstance(deferred.trigger, PullTrigger)
    classpath, kwargs = deferred.trigger.serialize()
    text = json.dumps(kwargs)  # plain JSON values only
    _no_secret(text)
    stored = deserialize(serialize(kwargs))  # what the triggerer reads back
    trigger = import_string(classpath)(**stored)
    assert trigger.serialize() == (classpath, kwargs)
    event = asyncio.run(_first_event(trigger))
    payload = deserialize(serialize(event.payload))
    _no_secret(json.dumps(payload))
    return op.execute_complete(context, event=payload)  # type: ignore[arg-type]


def _same_pull(
    deferred: dict[str, Any], worker: dict[str, Any], *, same_bytes: bool = True
) -> None:
    """Two summaries of the same pull into different outputs."""
    assert set(deferred) == set(worker) == SUMMARY_KEYS
    keys = ["format", "rows", "chunks", "chunks_resumed", "source_ids"]
    for key in keys + (["bytes"] if same_bytes else []):
        assert deferred[key] == worker[key], key
    assert deferred["chunks_resumed"] == 0


# -- CCEE ----------------------------------------------------------------------------------------
def _ccee_expected(conns: Any, dataset: str, years: list[int]) -> list[dict[str, Any]]:
    """What the handler's own verified pager reads, resource by resource."""
    hook = CceeHook("ccee_json")
    try:
        ccee = hook.get_conn()
        by_year = {r.year: r for r in ccee.resources(dataset)}
        return [rec for y in years for rec in ccee.iter_datastore_records(by_year[y].id)]
    finally:
        hook.close()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _ccee_op(task_id: str, output: Path, *, deferrable: bool, **kwargs: Any) -> Any:
    defaults: dict[str, Any] = {
        "conn_id": "ccee_json",
        "dataset": "pld_media_diaria",
        "years": [2023, 2024],
        "page_size": 500,
    }
    return CceeDatastoreOperator(
        task_id=task_id, output=str(output), deferrable=deferrable, **{**defaults, **kwargs}
    )


def test_ccee_deferred_and_worker_write_the_sandbox_rows(
    conns: Any, sb: Sandbox, tmp_path: Path
) -> None:
    """Both ways give the same JSON Lines file: every row of two years, in order, once."""
    expected = _ccee_expected(conns, "pld_media_diaria", [2023, 2024])
    assert len(expected) == 365 * 4 + 366 * 4
    context = _context()
    deferred = run_deferred(_ccee_op("d", tmp_path / "d.jsonl", deferrable=True), context)
    worker = _ccee_op("w", tmp_path / "w.jsonl", deferrable=False).execute(context)
    _same_pull(deferred, worker)
    assert deferred["rows"] == len(expected)
    assert deferred["chunks"] == 3 + 3  # pages of 500 rows per resource
    assert deferred["format"] == "jsonl"
    assert deferred["output"] == str(tmp_path / "d.jsonl")
    assert len(deferred["source_ids"]) == 2
    rows = _read_jsonl(tmp_path / "d.jsonl")
    assert rows == expected
    assert rows[0]["DIA"] == "2023-01-01"
    assert rows[-1]["DIA"] == "2024-12-31"
    assert len({(r["_id"], r["MES_REFERENCIA"]) for r in rows}) == len(rows)
    assert (tmp_path / "d.jsonl").read_bytes() == (tmp_path / "w.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "w.jsonl"]  # no checkpoint


def test_ccee_csv_with_filters_and_fields(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """filters and fields reach the service; a CSV holds only the chosen columns and rows."""
    kwargs: dict[str, Any] = {
        "dataset": "pld_horario",
        "years": 2024,
        "filters": {"SUBMERCADO": "SUL", "DIA": "2024-02-29"},
        "fields": ["_id", "DIA", "HORA", "PLD_HORA"],
        "page_size": 10,
        "format": "csv",
    }
    context = _context()
    deferred = run_deferred(_ccee_op("d", tmp_path / "d.out", deferrable=True, **kwargs), context)
    worker = _ccee_op("w", tmp_path / "w.out", deferrable=False, **kwargs).execute(context)
    _same_pull(deferred, worker)
    assert deferred["rows"] == 24
    assert deferred["chunks"] == 3
    assert deferred["format"] == "csv"
    rows = list(csv.DictReader(io.StringIO((tmp_path / "d.out").read_text("utf-8"))))
    assert list(rows[0]) == ["_id", "DIA", "HORA", "PLD_HORA"]
    assert [int(r["HORA"]) for r in rows] == list(range(24))
    assert {r["DIA"] for r in rows} == {"2024-02-29"}
    assert (tmp_path / "d.out").read_bytes() == (tmp_path / "w.out").read_bytes()


def test_ccee_concurrency_defaults_to_the_connection_option(
    conns: Any, sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """concurrency=None takes the connection's ``concurrency`` extra; a value overrides it."""
    seen: list[int] = []
    real = trigger_module.run_pull

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["concurrency"])
        return await real(*args, **kwargs)

    monkeypatch.setattr(trigger_module, "run_pull", spy)
    context = _context()
    run_deferred(_ccee_op("d", tmp_path / "d.jsonl", deferrable=True, years=[2024]), context)
    _ccee_op("w", tmp_path / "w.jsonl", deferrable=False, years=[2024]).execute(context)
    _ccee_op("c", tmp_path / "c.jsonl", deferrable=False, years=[2024], concurrency=3).execute(
        context
    )
    # ccee_json sets concurrency 2: the deferred pull's two runs (the triggerer's fetch, the
    # task's finish), the worker's run, then the value given
    assert seen == [2, 2, 2, 3]


def test_ccee_templated_fields_render(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """dataset, years (rendered as text) and output are templated."""
    op = CceeDatastoreOperator(
        task_id="t",
        conn_id="ccee_json",
        dataset="{{ params.dataset }}",
        years="{{ params.year }}",
        output=str(tmp_path / "{{ params.dataset }}_{{ params.year }}.jsonl"),
        deferrable=False,
        params={"dataset": "pld_media_diaria", "year": 2022},
    )
    assert {"dataset", "years", "filters", "output_path", "conn_id"} <= set(op.template_fields)
    context = {**_context(), "params": {"dataset": "pld_media_diaria", "year": 2022}}
    op.render_template_fields(context)  # type: ignore[arg-type]
    assert op.dataset == "pld_media_diaria"
    assert op.years == "2022"
    summary = op.execute(context)  # type: ignore[arg-type]
    assert summary["rows"] == 365 * 4
    assert summary["output"] == str(tmp_path / "pld_media_diaria_2022.jsonl")


@pytest.mark.parametrize(
    ("kwargs", "error", "match", "status"),
    [
        ({"dataset": "no_such_dataset", "years": None}, "ApiError", "HTTP 404.*Not found", 404),
        ({"years": [1999]}, "ValueError", r"no datastore resource for 1999", None),
        ({"filters": {"NO_SUCH_COLUMN": "x"}}, "ApiError", "NO_SUCH_COLUMN", 409),
    ],
)
def test_ccee_failing_pull_raises_the_library_error_both_ways(
    conns: Any,
    sb: Sandbox,
    tmp_path: Path,
    kwargs: dict[str, Any],
    error: str,
    match: str,
    status: int | None,
) -> None:
    """A failing pull comes back as an error event; execute_complete raises the same error
    type, with the message, as the worker path does; no output is left behind."""
    context = _context()
    op = _ccee_op("d", tmp_path / "d.jsonl", deferrable=True, **kwargs)
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    event = asyncio.run(_first_event(trigger)).payload
    assert event["status"] == "error"
    assert event["error_type"] == error
    assert event.get("status_code") == status
    assert set(event) <= {"status", "error_type", "message", "status_code"}
    with pytest.raises(Exception, match=match) as resumed:
        op.execute_complete(context, event=event)
    assert type(resumed.value).__name__ == error
    with pytest.raises(Exception, match=match) as direct:
        _ccee_op("w", tmp_path / "w.jsonl", deferrable=False, **kwargs).execute(context)
    assert type(direct.value) is type(resumed.value)
    assert str(resumed.value) == event["message"]
    if status is not None:
        assert resumed.value.status_code == direct.value.status_code == status  # type: ignore[attr-defined]
    assert not (tmp_path / "d.jsonl").exists()


def test_ccee_bad_arguments_fail_before_deferring(conns: Any, tmp_path: Path) -> None:
    """Arguments the source refuses fail in execute, before any deferral or request."""
    op = CceeDatastoreOperator(
        task_id="t", conn_id="ccee_json", output=str(tmp_path / "x.jsonl"), deferrable=True
    )
    with pytest.raises(ValueError, match="give dataset"):
        op.execute(_context())
    op = CceeDatastoreOperator(
        task_id="y", conn_id="ccee_json", dataset="pld_horario", years="", output="x.jsonl"
    )
    with pytest.raises(ValueError, match="years is empty"):
        op.execute(_context())
    with pytest.raises(ValueError, match="concurrency"):
        CceeDatastoreOperator(task_id="c", dataset="d", output="x.jsonl", concurrency=0)


def test_deferred_output_must_be_a_string(conns: Any, tmp_path: Path) -> None:
    """A trigger stores only plain values: an object output is refused when deferring."""

    class Remote:
        fs = object()
        path = "bucket/key.jsonl"

    op = CceeDatastoreOperator(
        task_id="t", conn_id="ccee_json", dataset="pld_media_diaria", output=Remote()
    )
    op.deferrable = True
    with pytest.raises(TypeError, match="path or URL string"):
        op.execute(_context())


def test_resume_without_event_or_with_unknown_error(tmp_path: Path) -> None:
    """No event is an error; an error type outside the library becomes a RuntimeError."""
    op = CceeDatastoreOperator(task_id="t", dataset="x", output=str(tmp_path / "x.jsonl"))
    with pytest.raises(RuntimeError, match="without a trigger event"):
        op.execute_complete({})
    event = {"status": "error", "error_type": "SomethingElse", "message": "boom"}
    with pytest.raises(RuntimeError, match=r"^SomethingElse: boom$"):
        op.execute_complete({}, event=event)
    event = {"status": "error", "error_type": "ApiError", "message": "api says no"}
    with pytest.raises(ApiError, match="api says no"):
        op.execute_complete({}, event=event)


# -- Bazefield -----------------------------------------------------------------------------------
OBJECTS = ["1001", "1002"]
POINTS = ["ActivePower", "WindSpeed"]
AGGREGATES = ["Average", "Max"]


def _baze_raw(start: str, end: str) -> dict[str, Any]:
    """The whole range in one direct call (the answer to compare the pull with)."""
    hook = BazefieldHook("bazefield_key_json")
    try:
        baze = hook.get_conn()
        assert isinstance(baze, BazeHttpHandler)
        body = {
            "ObjectIds": OBJECTS,
            "Points": POINTS,
            "Aggregates": AGGREGATES,
            "From": start,
            "To": end,
            "Interval": "1h",
        }
        result: dict[str, Any] = baze.post(
            f"{BAZE_API}/objects/timeseries/aggregated", json=body
        ).json()
        return result
    finally:
        hook.close()


def _baze_op(task_id: str, output: Path, *, deferrable: bool, **kwargs: Any) -> Any:
    return BazefieldTimeseriesOperator(
        task_id=task_id,
        conn_id="bazefield_json",
        objects=OBJECTS,
        points=POINTS,
        aggregates=AGGREGATES,
        output=str(output),
        deferrable=deferrable,
        window=timedelta(days=1),
        points_per_request=1,
        **kwargs,
    )


def test_bazefield_pull_over_the_data_interval(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """start/end default to the data interval; both ways write the service's values."""
    context = _context("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z")
    deferred = run_deferred(_baze_op("d", tmp_path / "d.jsonl", deferrable=True), context)
    worker = _baze_op("w", tmp_path / "w.jsonl", deferrable=False).execute(context)
    _same_pull(deferred, worker)
    steps = 48
    assert deferred["rows"] == len(OBJECTS) * len(POINTS) * len(AGGREGATES) * steps
    assert deferred["chunks"] == 2 * 2  # 2 one-day windows x 2 groups of one point
    assert (tmp_path / "d.jsonl").read_bytes() == (tmp_path / "w.jsonl").read_bytes()
    rows = _read_jsonl(tmp_path / "d.jsonl")
    keys = {(r["object"], r["point"], r["aggregate"], r["timestamp_utc"]) for r in rows}
    assert len(keys) == len(rows)
    assert {r["timestamp_utc"][:10] for r in rows} == {"2024-01-01", "2024-01-02"}

    raw = _baze_raw("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z")
    expected: dict[tuple[str, str, str, int], Any] = {}
    for object_id in OBJECTS:
        for point in POINTS:
            for series in raw["objects"][object_id]["points"][point]:
                for item in series["timeSeries"]:
                    expected[(object_id, point, series["aggregate"], item["t"])] = item["v"]
    assert len(expected) == len(rows)
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        t = int(pendulum.parse(row["timestamp_utc"]).timestamp() * 1000)  # type: ignore[union-attr]
        value = expected[(row["object"], row["point"], row["aggregate"], t)]
        assert row["value"] == value or row["value_text"] == value
    assert (rows[0]["object"], rows[0]["point"], rows[0]["aggregate"]) == (
        "1001",
        "ActivePower",
        "Average",
    )
    assert rows[0]["timestamp_utc"].startswith("2024-01-01T00:00:00")
    assert (rows[-1]["object"], rows[-1]["point"], rows[-1]["aggregate"]) == (
        "1002",
        "WindSpeed",
        "Max",
    )
    assert rows[-1]["timestamp_utc"].startswith("2024-01-02T23:00:00")


def test_bazefield_window_is_sent_as_seconds_and_rebuilt(conns: Any, tmp_path: Path) -> None:
    """The trigger stores the window in seconds and dates as ISO strings (plain JSON)."""
    op = _baze_op(
        "d", tmp_path / "d.jsonl", deferrable=True, start="2024-01-01", end="2024-01-02T06:00:00Z"
    )
    with pytest.raises(TaskDeferred) as info:
        op.execute(_context())
    _, kwargs = info.value.trigger.serialize()
    assert "conn_type" not in kwargs  # the source's handler says it
    assert kwargs["source"] == "bazefield_timeseries"
    source_kwargs = kwargs["arguments"]
    assert source_kwargs["window"] == 86400.0
    assert source_kwargs["start"] == "2024-01-01"
    assert source_kwargs["end"] == "2024-01-02T06:00:00+00:00"
    source = build_source("bazefield_timeseries", source_kwargs)
    assert source.identity()["window_s"] == 86400.0
    assert source.identity()["start"] == "2024-01-01T00:00:00Z"


def test_bazefield_max_missing_steps_passes_through_both_ways(
    conns: Any, sb: Sandbox, tmp_path: Path
) -> None:
    """max_missing_steps reaches the source, deferred or not: 0 (the default) refuses a gap,
    None accepts any (None is not dropped as "unset"), N accepts up to N per series and
    window; the steps accepted are in the summary's ``tolerated``."""
    sb.faults("bazefield").misbehave("drop_object", object="1002", at="2024-01-01T09:00:00Z")
    context = _context("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")
    for deferrable in (True, False):
        strict = _baze_op("s", tmp_path / f"strict-{deferrable}.jsonl", deferrable=deferrable)
        assert strict.max_missing_steps == 0
        with pytest.raises(DataConsistencyError, match="max_missing_steps"):
            run_deferred(strict, context) if deferrable else strict.execute(context)
        assert not (tmp_path / f"strict-{deferrable}.jsonl").exists()
    # 1002 is absent from every answer of the one-day window: 2 points x 2 aggregates series,
    # each lacking its 24 steps.
    full = len(OBJECTS) * len(POINTS) * len(AGGREGATES) * 24
    for tolerance in (None, 24):
        summaries = [
            run_deferred(
                _baze_op(
                    "d",
                    tmp_path / f"d-{tolerance}.jsonl",
                    deferrable=True,
                    max_missing_steps=tolerance,
                ),
                context,
            ),
            _baze_op(
                "w",
                tmp_path / f"w-{tolerance}.jsonl",
                deferrable=False,
                max_missing_steps=tolerance,
            ).execute(context),
        ]
        for summary in summaries:
            assert summary["tolerated"] == {"missing_steps": 96}
            assert summary["rows"] == full - 96
    too_few = _baze_op("t", tmp_path / "t.jsonl", deferrable=False, max_missing_steps=23)
    with pytest.raises(DataConsistencyError, match="at most 23 accepted"):
        too_few.execute(context)
    with pytest.raises(ValueError, match=r"^max_missing_steps must be an integer >= 0 or None"):
        _baze_op("b", tmp_path / "b.jsonl", deferrable=False, max_missing_steps=-1).execute(context)


def test_bazefield_unknown_object_is_an_api_error(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """Bazefield's error inside an HTTP 200 fails the task as ApiError, both ways."""
    context = _context()
    kwargs: dict[str, Any] = {"objects": ["999999"]}
    op = BazefieldTimeseriesOperator(
        task_id="d",
        conn_id="bazefield_key_json",
        points=POINTS,
        aggregates=AGGREGATES,
        output=str(tmp_path / "d.jsonl"),
        deferrable=True,
        **kwargs,
    )
    with pytest.raises(ApiError, match="999999"):
        run_deferred(op, context)
    op.deferrable = False
    with pytest.raises(ApiError, match="999999"):
        op.execute(context)


def test_bazefield_without_data_interval_needs_start_and_end(tmp_path: Path) -> None:
    """A run without a data interval (and no start/end) fails before deferring."""
    op = BazefieldTimeseriesOperator(
        task_id="t",
        objects=OBJECTS,
        points=POINTS,
        aggregates=AGGREGATES,
        output=str(tmp_path / "x.jsonl"),
        deferrable=True,
    )
    with pytest.raises(ValueError, match="give start and end"):
        op.execute({"data_interval_start": None, "data_interval_end": None})


# -- ONS -----------------------------------------------------------------------------------------
def _ons_export(conn_id: str, first: str, last: str) -> bytes:
    hook = OnsHook(conn_id)
    try:
        ons = hook.get_conn()
        assert isinstance(ons, OnsHttpHandler)
        if ons.props.login_target == "SAGER":
            return ons.export_sager_report(first, last)
        return ons.export_sinapse(first, last)
    finally:
        hook.close()


def _xlsx_cells(content: bytes) -> list[tuple[Any, ...]]:
    assert content.startswith(b"PK")
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    try:
        return [tuple(row) for row in workbook.active.iter_rows(values_only=True)]
    finally:
        workbook.close()


@pytest.fixture
def feb_context() -> dict[str, Any]:
    return _context("2024-01-15T00:00:00Z", "2024-03-01T00:00:00Z")


def test_ons_sager_report_files(
    conns: Any, sb: Sandbox, tmp_path: Path, feb_context: dict[str, Any]
) -> None:
    """One .xlsx per month of the data interval, the same bytes as direct exports."""
    deferred = run_deferred(
        OnsSagerReportOperator(
            task_id="d", conn_id="ons_sager_json", output=str(tmp_path / "d"), deferrable=True
        ),
        feb_context,
    )
    worker = OnsSagerReportOperator(
        task_id="w", conn_id="ons_sager_json", output=str(tmp_path / "w"), deferrable=False
    ).execute(feb_context)
    # An .xlsx carries its creation time: compare the cells, not the bytes.
    _same_pull(deferred, worker, same_bytes=False)
    assert deferred["format"] == "files"
    assert deferred["chunks"] == 2
    names = ["sager_20240115_20240201.xlsx", "sager_20240201_20240301.xlsx"]
    assert deferred["files"] == [str(tmp_path / "d" / n) for n in names]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == names
    periods = [("2024-01-15", "2024-01-31"), ("2024-02-01", "2024-02-29")]
    for name, (first, last) in zip(names, periods, strict=True):
        cells = _xlsx_cells((tmp_path / "d" / name).read_bytes())
        assert cells == _xlsx_cells((tmp_path / "w" / name).read_bytes())
        assert cells == _xlsx_cells(_ons_export("ons_sager_json", first, last))
        assert cells[0][0] == "Data"
        days = {row[0].date() for row in cells[1:]}
        assert min(days).isoformat() == first
        assert max(days).isoformat() == last


def test_ons_sinapse_export_files(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """Explicit start/end (templated text), split none, a custom file name."""
    context = _context()
    kwargs: dict[str, Any] = {
        "conn_id": "ons_sinapse_json",
        "start": "{{ params.start }}",
        "end": "2024-02-01",
        "split": "none",
        "file_name": "sinapse_{start:%Y%m}.csv",
        "params": {"start": "2024-01-01"},
    }
    ops = [
        OnsSinapseExportOperator(
            task_id=name, output=str(tmp_path / name), deferrable=(name == "d"), **kwargs
        )
        for name in ("d", "w")
    ]
    rendered = {**context, "params": {"start": "2024-01-01"}}
    for op in ops:
        op.render_template_fields(rendered)  # type: ignore[arg-type]
        assert op.start == "2024-01-01"
    deferred = run_deferred(ops[0], rendered)
    worker = ops[1].execute(rendered)
    _same_pull(deferred, worker)
    assert deferred["chunks"] == 1
    content = (tmp_path / "d" / "sinapse_202401.csv").read_bytes()
    assert content == (tmp_path / "w" / "sinapse_202401.csv").read_bytes()
    assert content == _ons_export("ons_sinapse_json", "2024-01-01", "2024-01-31")
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][0] == "Número"
    assert len(rows) > 1


def test_ons_days_follow_the_dag_timezone(tmp_path: Path) -> None:
    """A data interval at local midnights of the DAG's timezone means those local days."""
    with DAG(
        "ons_local_days",
        schedule="@daily",
        start_date=pendulum.datetime(2024, 1, 1, tz="America/Sao_Paulo"),
    ):
        op = OnsSinapseExportOperator(task_id="t", output=str(tmp_path / "d"))
    context = _context("2024-01-01T03:00:00Z", "2024-01-02T03:00:00Z")
    kwargs = op.source_kwargs(context)  # type: ignore[arg-type]
    assert (kwargs["start"], kwargs["end"]) == (date(2024, 1, 1), date(2024, 1, 2))
    utc = OnsSinapseExportOperator(task_id="u", output=str(tmp_path / "u"))
    kwargs = utc.source_kwargs(_context("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"))  # type: ignore[arg-type]
    assert kwargs["start"] == pendulum.datetime(2024, 1, 1)  # no DAG: left to the source


def test_ons_sager_with_a_sinapse_connection_fails(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """The wrong login target is the source's ValueError, raised again on resume."""
    op = OnsSagerReportOperator(
        task_id="d",
        conn_id="ons_sinapse_json",
        start="2024-01-01",
        end="2024-01-02",
        output=str(tmp_path / "d"),
        deferrable=True,
    )
    with pytest.raises(ValueError, match="login_target='SAGER'"):
        run_deferred(op, _context())


def test_unknown_sources_are_reported() -> None:
    """A source name the library has not registered is a clear ValueError naming it."""
    with pytest.raises(ValueError, match="unknown pull source 'not_registered'"):
        build_source("not_registered", {})


def test_ccee_handler_type(conns: Any) -> None:
    """The CCEE operator reads a ccee connection (its hook gives a CceeHttpHandler)."""
    op = CceeDatastoreOperator(task_id="t", dataset="x", output="x.jsonl")
    assert op.conn_type == "ccee"
    assert op.conn_id == "ccee_default"
    assert trigger_module.HOOKS["ccee"].handler_class is CceeHttpHandler
