"""``dags_examples/ccee_wait_then_pull.py``: parsed by Airflow, run with ``dag.test()``.

The daily run waits (deferred) until a ``pld_horario`` resource is modified after its data
interval's end, then pulls exactly the resources the sensor found (deferred too) into
``<lake>/ccee/pld_horario_daily/<ds>.csv.gz``.

The run is the current day's (its interval ends at the last midnight in São Paulo); the sandbox
publishes ``pld_horario`` just before, so the sensor's first poll already finds the
publication: no waiting for its 30 s ``poke_interval``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable
from airflow.serialization.encoders import coerce_to_core_timetable

from echo_connhandler import utc_moment
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.operators import CceeDatastoreOperator
from echo_connhandler_provider.sensors import CceeDatasetUpdatedSensor

DAG_ID = "ccee_wait_then_pull"
SP = "America/Sao_Paulo"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert set(dag.task_ids) == {"wait_for_publication", "pull_published"}
    wait = dag.get_task("wait_for_publication")
    pull = dag.get_task("pull_published")
    assert type(wait) is CceeDatasetUpdatedSensor
    assert wait.conn_id == "ccee_default"
    assert wait.dataset == "pld_horario"
    assert wait.updated_after is None  # the run's data_interval_end
    assert wait.deferrable is True
    assert wait.poke_interval == 30
    assert wait.timeout == timedelta(hours=12).total_seconds()
    assert type(pull) is CceeDatastoreOperator
    assert pull.conn_id == "ccee_default"
    assert pull.dataset is None
    assert pull.resource_ids == (
        "{{ ti.xcom_pull(task_ids='wait_for_publication')['resource_ids'] }}"
    )
    assert pull.output_path == (
        "{{ var.value.echo_data_lake }}/ccee/pld_horario_daily/{{ data_interval_start | ds }}"
        ".csv.gz"
    )
    assert pull.deferrable is True
    assert wait.downstream_task_ids == {"pull_published"}
    assert pull.upstream_task_ids == {"wait_for_publication"}
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"  # @daily
    assert str(dag.timetable.timezone) == SP
    assert dag.catchup is False


def test_runs_against_the_sandbox(
    load_dag: Any,
    run_dag: Any,
    sb: Sandbox,
    lake: Path,
    rows_in: Any,
    ccee_api: Any,
    assert_no_secret: Any,
) -> None:
    dag = load_dag(DAG_ID)
    logical_date = pendulum.now("UTC")
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(
        run_after=logical_date
    )
    # Nothing was modified after the interval's end yet: only the publication below passes.
    before = ccee_api("package_show", id="pld_horario")["resources"]
    assert all(utc_moment(r["last_modified"], "time") <= interval.end for r in before)
    published = sb.ccee_publish("pld_horario")["pld_horario"]
    newest = max(before, key=lambda r: r["name"])  # the newest year's resource

    run = run_dag(dag, logical_date=logical_date)

    assert run.state == "success", run.states
    assert run.states == {"wait_for_publication": "success", "pull_published": "success"}
    assert (run.data_interval_start, run.data_interval_end) == (interval.start, interval.end)
    assert interval.end == pendulum.instance(interval.end).in_tz(SP).start_of("day")

    # Both tasks deferred; the sensor waited for a publication after the interval's end.
    (sensor_trigger,) = run.triggers_of("wait_for_publication")
    assert sensor_trigger.classpath.endswith(".CceeDatasetUpdatedTrigger")
    assert utc_moment(sensor_trigger.kwargs["updated_after"], "time") == interval.end
    (pull_trigger,) = run.triggers_of("pull_published")
    assert pull_trigger.classpath.endswith(".PullTrigger")
    for trigger in (sensor_trigger, pull_trigger):
        assert_no_secret(trigger.kwargs)

    found = run.xcoms["wait_for_publication"]
    assert found["resource_ids"] == [newest["id"]]
    assert utc_moment(found["last_modified"], "time") == utc_moment(published, "time")

    summary = run.xcoms["pull_published"]
    ds = pendulum.instance(interval.start).in_tz(SP).to_date_string()
    output = lake / "ccee" / "pld_horario_daily" / f"{ds}.csv.gz"
    assert summary["output"] == str(output)
    assert summary["format"] == "csv.gz"
    assert summary["source_ids"] == found["resource_ids"]
    total = ccee_api("datastore_search", resource_id=newest["id"], limit=0)["total"]
    assert summary["rows"] == total > 0
    assert rows_in(output, "csv.gz") == summary["rows"]
