"""CCEE hourly PLD (``pld_horario``) of one year into Parquet, once a year, in the triggerer.

Each yearly run pulls its year's resource (the run's data interval: ``[Jan 1, Jan 1 + 1 year)``)
and writes ``<data lake>/ccee/pld_horario/<year>.parquet`` atomically. The pull is deferred:
pages are fetched by the triggerer with bounded concurrency and checkpointed, so a restarted
triggerer fetches only the pages still missing.

Connections and settings, by id only (the same DAG runs against the sandbox and the real
service): the ``ccee_default`` connection (type ``ccee``) and the Airflow Variable
``echo_data_lake`` (a folder or an ``s3://`` URL that the worker and the triggerer both reach).

Which year: the run's ``year`` param when given, else the year of its data interval. A
scheduled run leaves it empty (the year that has just ended); the Trigger dialog shows the field
empty too: leave it so for the last complete year, or type a year to pull that one (again).

The pull's outlet is the asset ``ccee_pld_horario_yearly_parquet``: each successful run adds an
asset event whose ``extra`` is the pull's summary (output, format, rows, bytes, chunks, the
resources read and their versions), shown in the Assets view. ``ccee_pld_horario_check`` runs on
it and checks the file.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from echo_connhandler_provider.operators import CceeDatastoreOperator

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"
#: The year pulled: the ``year`` param, or the data interval's year when the param is empty.
YEAR = "{{ params.year if params.year is not none else data_interval_start.year }}"
#: What the pull produces, whatever the year and the lake: the asset ``ccee_pld_horario_check``
#: is scheduled on (defined the same there). The event's extra says which file it was.
PLD_YEARLY = Asset(name="ccee_pld_horario_yearly_parquet", uri="x-echo-lake://ccee/pld_horario")

with DAG(
    dag_id="ccee_pld_horario_yearly",
    description="CCEE hourly PLD of the year into Parquet (deferred pull)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    # Runs cover whole intervals (data_interval_start/end), which the pull reads.
    schedule=CronDataIntervalTimetable("@yearly", timezone="UTC"),
    start_date=pendulum.datetime(2021, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ccee", "example"],
    params={
        "year": Param(
            None,
            type=["null", "integer"],
            minimum=2000,
            title="Year",
            description=(
                "The year to pull (e.g. 2024). Empty: the year of the run's data interval, "
                "i.e. for a scheduled run or a manual one the last complete year."
            ),
        )
    },
):
    CceeDatastoreOperator(
        task_id="pull_pld_horario",
        conn_id="ccee_default",
        dataset="pld_horario",
        years=YEAR,
        output=LAKE + "/ccee/pld_horario/" + YEAR + ".parquet",
        deferrable=True,
        retries=2,
        outlets=[PLD_YEARLY],
    )
