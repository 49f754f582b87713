"""Wait until CCEE publishes the hourly PLD after the day ended, then pull what was published.

Each daily run (days in ``America/Sao_Paulo``) first waits, in the triggerer, until a resource
of ``pld_horario`` has a ``last_modified`` later than the end of the run's data interval (CCEE
republishes the current year's resource as new days are priced). The sensor returns the
resources that changed; the pull then reads exactly those into
``<data lake>/ccee/pld_horario_daily/<ds>.csv.gz``, also in the triggerer.

By id only: the ``ccee_default`` connection (type ``ccee``) and the Airflow Variable
``echo_data_lake``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from echo_connhandler_provider.operators import CceeDatastoreOperator
from echo_connhandler_provider.sensors import CceeDatasetUpdatedSensor

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"

with DAG(
    dag_id="ccee_wait_then_pull",
    description="Wait for CCEE's publication of the day, then pull it (deferred)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    # Runs cover whole days (data_interval_end is the moment the publication must follow).
    schedule=CronDataIntervalTimetable("@daily", timezone="America/Sao_Paulo"),
    start_date=pendulum.datetime(2026, 1, 1, tz="America/Sao_Paulo"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ccee", "sensor", "example"],
):
    wait_for_publication = CceeDatasetUpdatedSensor(
        task_id="wait_for_publication",
        conn_id="ccee_default",
        dataset="pld_horario",
        # updated_after defaults to the run's data_interval_end.
        poke_interval=30,
        timeout=timedelta(hours=12),
        deferrable=True,
    )
    pull_published = CceeDatastoreOperator(
        task_id="pull_published",
        conn_id="ccee_default",
        # The sensor's XCom: the resources published after the interval ended.
        resource_ids="{{ ti.xcom_pull(task_ids='wait_for_publication')['resource_ids'] }}",
        output=LAKE + "/ccee/pld_horario_daily/{{ data_interval_start | ds }}.csv.gz",
        deferrable=True,
        retries=2,
    )
    wait_for_publication >> pull_published
