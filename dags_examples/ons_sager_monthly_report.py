"""The ONS SAGER general report of each month (.xlsx, as delivered), in the worker.

Each monthly run (months in ``America/Sao_Paulo``) exports its month's report and writes it
into ``<data lake>/ons/sager/``. SAGER answers one report per request, so this pull is short and
runs in the worker (``deferrable=False``).

By id only: the ``ons_sager`` connection (type ``ons``, ``login_target`` SAGER: the ONS user and
password) and the Airflow Variable ``echo_data_lake``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from echo_connhandler_provider.operators import OnsSagerReportOperator

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"

with DAG(
    dag_id="ons_sager_monthly_report",
    description="The SAGER general report of the month (.xlsx)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    # Runs cover whole intervals (data_interval_start/end), which the pull reads.
    schedule=CronDataIntervalTimetable("@monthly", timezone="America/Sao_Paulo"),
    start_date=pendulum.datetime(2026, 1, 1, tz="America/Sao_Paulo"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ons", "example"],
):
    OnsSagerReportOperator(
        task_id="export_sager_report",
        conn_id="ons_sager",
        tipo_relatorio=1,
        output=LAKE + "/ons/sager",
        deferrable=False,
        retries=2,
    )
