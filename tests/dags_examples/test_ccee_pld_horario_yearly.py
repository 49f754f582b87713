"""``dags_examples/ccee_pld_horario_yearly.py``: parsed by Airflow, then run with ``dag.test()``.

The yearly run pulls its year's ``pld_horario`` resource, deferred, into
``<lake>/ccee/pld_horario/<year>.parquet``: the ``year`` param's, or the data interval's when
the param is empty (a scheduled run, or a manual one left as the Trigger dialog shows it).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import CronDataIntervalTimetable

from echo_connhandler_provider.operators import CceeDatastoreOperator

DAG_ID = "ccee_pld_horario_yearly"
YEAR = "{{ params.year if params.year is not none else data_interval_start.year }}"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert dag.task_ids == ["pull_pld_horario"]
    pull = dag.get_task("pull_pld_horario")
    assert type(pull) is CceeDatastoreOperator
    assert pull.conn_id == "ccee_default"
    assert pull.dataset == "pld_horario"
    assert pull.years == YEAR
    assert (
        pull.output_path == "{{ var.value.echo_data_lake }}/ccee/pld_horario/" + YEAR + ".parquet"
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
    assert trigger.kwargs["arguments"] == {"dataset": "pld_horario", "years": [2024]}
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


def test_year_param_shows_in_the_trigger_dialog(load_dag: Any) -> None:
    """The Trigger dialog's form is the DAG's serialized params: an optional integer ``year``,
    empty by default, described; a year that is not a number is refused before any run."""
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    dag = load_dag(DAG_ID)
    serialized = DagSerialization.to_dict(dag)["dag"]["params"]
    (name, param), *_ = serialized
    assert name == "year"
    assert param["default"] is None
    assert "Empty" in param["description"]
    schema = DagSerialization.deserialize(param["schema"])
    assert schema == {"type": ["null", "integer"], "minimum": 2000, "title": "Year"}

    def validated(year: Any) -> dict[str, Any]:
        params = copy.deepcopy(dag.params)
        params["year"] = year  # what the Trigger dialog's conf does to the DAG's params
        return dict(params.validate())

    assert validated(2023) == {"year": 2023}
    assert validated(None) == {"year": None}
    for wrong in ("last", 1999, 2024.5):
        with pytest.raises(ParamValidationError):
            validated(wrong)


def test_a_manual_run_pulls_the_year_given(
    load_dag: Any, run_dag: Any, lake: Path, rows_in: Any, ccee_api: Any
) -> None:
    """A manual run with ``year`` pulls that year whatever its data interval."""
    dag = load_dag(DAG_ID)
    run = run_dag(dag, logical_date=pendulum.datetime(2025, 6, 15, tz="UTC"), conf={"year": 2022})

    assert run.state == "success", run.states
    (trigger,) = run.triggers_of("pull_pld_horario")
    assert trigger.kwargs["arguments"] == {"dataset": "pld_horario", "years": [2022]}
    resources = ccee_api("package_show", id="pld_horario")["resources"]
    (resource,) = [r for r in resources if r["name"].endswith("2022")]
    summary = run.xcoms["pull_pld_horario"]
    output = lake / "ccee" / "pld_horario" / "2022.parquet"
    assert summary["output"] == str(output)
    assert summary["source_ids"] == [resource["id"]]
    assert rows_in(output, "parquet") == summary["rows"] == 8760 * 4  # hours x submarkets
