"""``dags_examples/ons_sinapse_export.py``: parsed by Airflow, run with ``dag.test()``.

The weekly run (weeks in ``America/Sao_Paulo``, Sunday to Sunday) exports the week's SINAPSE
requests as CSV, deferred, into ``<lake>/ons/sinapse/``: one file per calendar month the week
touches.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable

from echo_connhandler_provider.operators import OnsSinapseExportOperator

DAG_ID = "ons_sinapse_export"
SP = "America/Sao_Paulo"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert dag.task_ids == ["export_sinapse_requests"]
    export = dag.get_task("export_sinapse_requests")
    assert type(export) is OnsSinapseExportOperator
    assert export.conn_id == "ons_sinapse"
    assert export.output_path == "{{ var.value.echo_data_lake }}/ons/sinapse"
    assert export.file_name == "sinapse_{start:%Y%m%d}_{last:%Y%m%d}.csv"
    assert export.split == "month"
    assert export.start is None
    assert export.end is None
    assert export.deferrable is True
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * 0"  # @weekly
    assert str(dag.timetable.timezone) == SP
    assert dag.catchup is False


def test_runs_against_the_sandbox(
    load_dag: Any, run_dag: Any, lake: Path, assert_no_secret: Any
) -> None:
    dag = load_dag(DAG_ID)
    # The week of Sunday 2026-03-29 to Sunday 2026-04-05 touches two months.
    run = run_dag(dag, logical_date=pendulum.datetime(2026, 4, 6, 12, tz=SP))

    assert run.state == "success", run.states
    assert run.states == {"export_sinapse_requests": "success"}
    week = pendulum.datetime(2026, 3, 29, tz=SP)
    assert (run.data_interval_start, run.data_interval_end) == (week, week.add(weeks=1))
    (trigger,) = run.triggers_of("export_sinapse_requests")
    assert trigger.classpath.endswith(".PullTrigger")
    assert_no_secret(trigger.kwargs)

    # Whole local days: the interval's 03:00 UTC bounds are the local midnights.
    assert trigger.kwargs["arguments"]["start"] == "2026-03-29"
    assert trigger.kwargs["arguments"]["end"] == "2026-04-05"

    summary = run.xcoms["export_sinapse_requests"]
    folder = lake / "ons" / "sinapse"
    march = folder / "sinapse_20260329_20260331.csv"
    april = folder / "sinapse_20260401_20260404.csv"
    assert summary["output"] == str(folder)
    assert summary["format"] == "files"
    assert summary["files"] == [str(march), str(april)]
    assert sorted(folder.iterdir()) == [march, april]  # atomic: no temporary file left
    assert summary["bytes"] == march.stat().st_size + april.stat().st_size

    for path, first, last in (
        (march, "2026-03-29", "2026-03-31"),
        (april, "2026-04-01", "2026-04-04"),
    ):
        header, *rows = list(
            csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter=";")
        )
        assert header[:2] == ["Número", "Data de Abertura"]
        assert rows, f"{path.name} has no request"
        # Every request opened on a day of that file's part of the week.
        opened = {datetime.strptime(row[1], "%d/%m/%Y %H:%M").date().isoformat() for row in rows}
        assert first <= min(opened), (path.name, sorted(opened))
        assert max(opened) <= last, (path.name, sorted(opened))
