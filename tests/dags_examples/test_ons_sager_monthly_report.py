"""``dags_examples/ons_sager_monthly_report.py``: parsed by Airflow, run with ``dag.test()``.

The monthly run (months in ``America/Sao_Paulo``) exports its month's SAGER general report
(.xlsx, as delivered) into ``<lake>/ons/sager/``, in the worker (not deferred).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
import pendulum
from airflow.sdk import CronDataIntervalTimetable

from echo_connhandler_provider.operators import OnsSagerReportOperator

DAG_ID = "ons_sager_monthly_report"
SP = "America/Sao_Paulo"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert dag.task_ids == ["export_sager_report"]
    export = dag.get_task("export_sager_report")
    assert type(export) is OnsSagerReportOperator
    assert export.conn_id == "ons_sager"
    assert export.tipo_relatorio == 1
    assert export.output_path == "{{ var.value.echo_data_lake }}/ons/sager"
    assert export.start is None
    assert export.end is None
    assert export.deferrable is False
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 1 * *"  # @monthly
    assert str(dag.timetable.timezone) == SP
    assert dag.catchup is False


def test_runs_against_the_sandbox(load_dag: Any, run_dag: Any, lake: Path) -> None:
    dag = load_dag(DAG_ID)
    run = run_dag(dag, logical_date=pendulum.datetime(2026, 3, 10, 12, tz=SP))

    assert run.state == "success", run.states
    assert run.states == {"export_sager_report": "success"}
    month = pendulum.datetime(2026, 2, 1, tz=SP)
    assert (run.data_interval_start, run.data_interval_end) == (month, month.add(months=1))
    assert run.triggers == []  # in the worker: nothing deferred

    summary = run.xcoms["export_sager_report"]
    folder = lake / "ons" / "sager"
    report = folder / "sager_20260201_20260301.xlsx"
    assert summary["output"] == str(folder)
    assert summary["format"] == "files"
    assert summary["files"] == [str(report)]
    assert sorted(folder.iterdir()) == [report]  # written atomically: no temporary file left
    raw = report.read_bytes()
    assert raw[:2] == b"PK"  # an .xlsx is a zip
    assert summary["bytes"] == len(raw)

    workbook = openpyxl.load_workbook(report, read_only=True)
    try:
        assert workbook.sheetnames == ["Relatorio"]
        header, *rows = list(workbook["Relatorio"].iter_rows(values_only=True))
    finally:
        workbook.close()
    assert header[0] == "Data"
    assert "Geração Verificada (MWmed)" in header  # tipo_relatorio=1: the general report
    # Every local day of February 2026, and only those (not shifted by the UTC offset).
    days = {row[0].date() for row in rows}
    assert days == {month.add(days=n).date() for n in range(28)}
