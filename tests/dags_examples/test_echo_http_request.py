"""``dags_examples/echo_http_request.py``: parsed by Airflow, then run with ``dag.test()``.

One deferred request through the ``echo_http_default`` connection (Bazefield's allocation
types on the sandbox), its JSON list as XCom, counted by the next task.
"""

from __future__ import annotations

from typing import Any

import httpx
import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import CronDataIntervalTimetable

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.operators import EchoHttpOperator

DAG_ID = "echo_http_request"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert set(dag.task_ids) == {"get_allocation_types", "count_allocation_types"}
    request = dag.get_task("get_allocation_types")
    count = dag.get_task("count_allocation_types")
    assert type(request) is EchoHttpOperator
    assert request.conn_id == "echo_http_default"
    assert request.endpoint == "allocationTypes"
    assert request.deferrable is True
    assert isinstance(count, PythonOperator)  # the @task
    assert request.downstream_task_ids == {"count_allocation_types"}
    assert count.upstream_task_ids == {"get_allocation_types"}
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"  # @daily
    assert str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False


def test_runs_against_the_sandbox(
    load_dag: Any, run_dag: Any, sb: Sandbox, assert_no_secret: Any
) -> None:
    dag = load_dag(DAG_ID)
    run = run_dag(dag, logical_date=pendulum.datetime(2026, 3, 10, 12, tz="UTC"))

    assert run.state == "success", run.states
    assert run.states == {"get_allocation_types": "success", "count_allocation_types": "success"}
    assert (run.data_interval_start, run.data_interval_end) == (
        pendulum.datetime(2026, 3, 9, tz="UTC"),
        pendulum.datetime(2026, 3, 10, tz="UTC"),
    )
    # The request was deferred: its trigger ran (in line), with no credential in its kwargs.
    (trigger,) = run.triggers_of("get_allocation_types")
    assert trigger.classpath.endswith(".RequestTrigger")
    assert_no_secret(trigger.kwargs)
    assert run.triggers_of("count_allocation_types") == []

    # The XCom is the filtered response: the service's list, as read directly.
    api_key = DEMO_CREDENTIALS["bazefield"]["api_key"]
    direct = httpx.get(
        f"{sb.urls.bazefield}/BazeField.Services/api/allocationTypes",
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
    )
    expected = direct.json()["allocationTypes"]
    assert expected
    assert run.xcoms["get_allocation_types"] == expected
    assert run.xcoms["count_allocation_types"] == len(expected)
