"""ONS SINAPSE requests of each week exported as CSV (as delivered), in the triggerer.

Each weekly run (weeks in ``America/Sao_Paulo``) exports the week's SINAPSE requests into
``<data lake>/ons/sinapse/`` (one file per calendar month the week touches). Deferred: the
triggerer holds the OAuth2 token, refreshes it when it expires, and writes each file atomically.

By id only: the ``ons_sinapse`` connection (type ``ons``, ``login_target`` SINAPSE, and the
profile to select) and the Airflow Variable ``echo_data_lake``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from echo_connhandler_provider.operators import OnsSinapseExportOperator

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"

with DAG(
    dag_id="ons_sinapse_export",
    description="The week's SINAPSE requests as CSV (deferred pull)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    # Runs cover whole intervals (data_interval_start/end), which the pull reads.
    schedule=CronDataIntervalTimetable("@weekly", timezone="America/Sao_Paulo"),
    start_date=pendulum.datetime(2026, 1, 4, tz="America/Sao_Paulo"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ons", "example"],
):
    OnsSinapseExportOperator(
        task_id="export_sinapse_requests",
        conn_id="ons_sinapse",
        output=LAKE + "/ons/sinapse",
        file_name="sinapse_{start:%Y%m%d}_{last:%Y%m%d}.csv",
        deferrable=True,
        retries=2,
    )
