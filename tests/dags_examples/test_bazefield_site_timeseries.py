"""``dags_examples/bazefield_site_timeseries.py``: parsed by Airflow, run with ``dag.test()``.

The daily run (days in ``America/Sao_Paulo``) pulls the site's 10-minute series of its day,
deferred, into ``<lake>/bazefield/site_10min/<ds>.jsonl.gz``.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable

from echo_connhandler_provider.operators import BazefieldTimeseriesOperator

DAG_ID = "bazefield_site_timeseries"
TURBINES = ["1001", "1002", "1003", "1004"]
SP = "America/Sao_Paulo"


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert dag.task_ids == ["pull_site_10min"]
    pull = dag.get_task("pull_site_10min")
    assert type(pull) is BazefieldTimeseriesOperator
    assert pull.conn_id == "bazefield_default"
    assert pull.objects == TURBINES
    assert pull.points == ["ActivePower", "WindSpeed"]
    assert pull.aggregates == ["Average", "Max"]
    assert pull.interval == "10m"
    assert pull.time_zone == SP
    # start/end are not given: the run's data interval is the day pulled.
    assert pull.start is None
    assert pull.end is None
    assert pull.output_path == (
        "{{ var.value.echo_data_lake }}/bazefield/site_10min/{{ data_interval_start | ds }}"
        ".jsonl.gz"
    )
    assert pull.deferrable is True
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"  # @daily
    assert str(dag.timetable.timezone) == SP
    assert dag.catchup is False


def test_runs_against_the_sandbox(
    load_dag: Any, run_dag: Any, lake: Path, rows_in: Any, assert_no_secret: Any
) -> None:
    dag = load_dag(DAG_ID)
    run = run_dag(dag, logical_date=pendulum.datetime(2026, 3, 10, 12, tz=SP))

    assert run.state == "success", run.states
    assert run.states == {"pull_site_10min": "success"}
    day_start = pendulum.datetime(2026, 3, 9, tz=SP)
    assert (run.data_interval_start, run.data_interval_end) == (day_start, day_start.add(days=1))
    (trigger,) = run.triggers_of("pull_site_10min")
    assert trigger.classpath.endswith(".PullTrigger")
    assert trigger.kwargs["source"] == "bazefield_timeseries"
    assert_no_secret(trigger.kwargs)

    summary = run.xcoms["pull_site_10min"]
    output = lake / "bazefield" / "site_10min" / "2026-03-09.jsonl.gz"
    assert summary["output"] == str(output)
    assert summary["format"] == "jsonl.gz"
    assert rows_in(output, "jsonl.gz") == summary["rows"]
    # One row per turbine, point, aggregate and 10-minute step of the local day.
    assert summary["rows"] == len(TURBINES) * 2 * 2 * 144
    rows = [json.loads(line) for line in gzip.decompress(output.read_bytes()).splitlines()]
    per_series = Counter((r["object"], r["point"], r["aggregate"]) for r in rows)
    assert per_series == {
        (obj, point, agg): 144
        for obj in TURBINES
        for point in ("ActivePower", "WindSpeed")
        for agg in ("Average", "Max")
    }
    local_times = sorted({r["local_time"] for r in rows})
    assert local_times[0] == "2026-03-09T00:00:00-03:00"
    assert local_times[-1] == "2026-03-09T23:50:00-03:00"
    assert len(local_times) == 144
