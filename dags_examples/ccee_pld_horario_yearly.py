"""CCEE hourly PLD (``pld_horario``) of one year into Parquet, once a year, in the triggerer.

Each yearly run pulls its year's resource (the run's data interval: ``[Jan 1, Jan 1 + 1 year)``)
and writes ``<data lake>/ccee/pld_horario/<year>.parquet`` atomically. The pull is deferred:
pages are fetched by the triggerer with bounded concurrency and checkpointed, so a restarted
triggerer fetches only the pages still missing.

Connections and settings, by id only (the same DAG runs against the sandbox and the real
service): the ``ccee_default`` connection (type ``ccee``) and the Airflow Variable
``echo_data_lake`` (a folder or an ``s3://`` URL that the worker and the triggerer both reach).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from echo_connhandler_provider.operators import CceeDatastoreOperator

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"

with DAG(
    dag_id="ccee_pld_horario_yearly",
    description="CCEE hourly PLD of the year into Parquet (deferred pull)",
    # Runs cover whole intervals (data_interval_start/end), which the pull reads.
    schedule=CronDataIntervalTimetable("@yearly", timezone="UTC"),
    start_date=pendulum.datetime(2021, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ccee", "example"],
):
    CceeDatastoreOperator(
        task_id="pull_pld_horario",
        conn_id="ccee_default",
        dataset="pld_horario",
        years="{{ data_interval_start.year }}",
        output=LAKE + "/ccee/pld_horario/{{ data_interval_start.year }}.parquet",
        deferrable=True,
        retries=2,
    )
