"""A Bazefield site's 10-minute time series for each day, into gzipped JSON Lines.

Each daily run (days in ``America/Sao_Paulo``) pulls the turbines' active power and wind speed
(average and maximum) for its data interval and writes
``<data lake>/bazefield/site_10min/<ds>.jsonl.gz``. The pull is deferred: the triggerer logs in
once, splits the day into requests within Bazefield's limits and writes the rows in order.

By id only: the ``bazefield_default`` connection (type ``bazefield``: an API key, or user and
password) and the Airflow Variable ``echo_data_lake``. The object ids are those of the site.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from echo_connhandler_provider.operators import BazefieldTimeseriesOperator

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"

SITE_TURBINES = ["1001", "1002", "1003", "1004"]

with DAG(
    dag_id="bazefield_site_timeseries",
    description="A Bazefield site's 10-minute series of the day (deferred pull)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    # Runs cover whole intervals (data_interval_start/end), which the pull reads.
    schedule=CronDataIntervalTimetable("@daily", timezone="America/Sao_Paulo"),
    start_date=pendulum.datetime(2026, 1, 1, tz="America/Sao_Paulo"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "bazefield", "example"],
):
    BazefieldTimeseriesOperator(
        task_id="pull_site_10min",
        conn_id="bazefield_default",
        objects=SITE_TURBINES,
        points=["ActivePower", "WindSpeed"],
        aggregates=["Average", "Max"],
        interval="10m",
        time_zone="America/Sao_Paulo",
        output=LAKE + "/bazefield/site_10min/{{ data_interval_start | ds }}.jsonl.gz",
        deferrable=True,
        retries=2,
    )
