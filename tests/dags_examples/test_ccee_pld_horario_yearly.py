"""``dags_examples/ccee_pld_horario_yearly.py``: parsed by Airflow, then run with ``dag.test()``.

The yearly run pulls its year's ``pld_horario`` resource, deferred, into
``<lake>/ccee/pld_horario/<year>.parquet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable

from echo_connhandler_provider.operators import CceeDatastoreOperator

DAG_ID = "ccee_pld_horario_yearly"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert dag.task_ids == ["pull_pld_horario"]
    pull = dag.get_task("pull_pld_horario")
    assert type(pull) is CceeDatastoreOperator
    assert pull.conn_id == "ccee_default"
    assert pull.dataset == "pld_horario"
    assert pull.years == "{{ data_interval_start.year }}"
    assert pull.output_path == (
        "{{ var.value.echo_data_lake }}/ccee/pld_horario/{{ data_interval_start.year }}.parquet"
    )
    assert pull.deferrable is True
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 1 1 *"  # @yearly
    assert str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False


def test_runs_against_the_sandbox(
    load_dag: Any,
    run_dag: Any,
    lake: Path,
    rows_in: Any,
    ccee_api: Any,
    assert_no_secret: Any,
) -> None:
    dag = load_dag(DAG_ID)
    # A run in 2025 covers the year 2024 (a leap year: 8784 hours).
    run = run_dag(dag, logical_date=pendulum.datetime(2025, 6, 15, tz="UTC"))

    assert run.state == "success", run.states
    assert run.states == {"pull_pld_horario": "success"}
    assert (run.data_interval_start, run.data_interval_end) == (
        pendulum.datetime(2024, 1, 1, tz="UTC"),
        pendulum.datetime(2025, 1, 1, tz="UTC"),
    )
    (trigger,) = run.triggers_of("pull_pld_horario")
    assert trigger.classpath.endswith(".PullTrigger")
    assert trigger.kwargs["source_kwargs"] == {"dataset": "pld_horario", "years": [2024]}
    assert_no_secret(trigger.kwargs)

    resources = ccee_api("package_show", id="pld_horario")["resources"]
    (resource,) = [r for r in resources if r["name"].endswith("2024")]
    total = ccee_api("datastore_search", resource_id=resource["id"], limit=0)["total"]

    summary = run.xcoms["pull_pld_horario"]
    output = lake / "ccee" / "pld_horario" / "2024.parquet"
    assert summary["output"] == str(output)
    assert summary["format"] == "parquet"
    assert summary["source_ids"] == [resource["id"]]
    assert summary["rows"] == total == 8784 * 4  # hours x submarkets
    assert rows_in(output, "parquet") == summary["rows"]
    assert sorted(p.name for p in output.parent.iterdir()) == ["2024.parquet"]  # atomic: no temp
