"""An asset scheduled on CCEE publications: each new publication of ``pld_horario`` runs a pull.

``CceePublicationTrigger`` watches the dataset from the triggerer (one small ``package_show``
every ``poke_interval``) and fires once per new publication (a later ``last_modified``), never on
an unchanged poll, and not again for the same publication after a triggerer restart (it keeps
what it announced in the asset's state store). Each event creates an asset event, which runs
this DAG; its tasks read the event's payload and pull exactly the resources that were published
into ``<data lake>/ccee/pld_horario_published/<run time>.parquet``.

By id only: the ``ccee_default`` connection (type ``ccee``) and the Airflow Variable
``echo_data_lake``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from echo_connhandler_provider.operators import CceeDatastoreOperator
from echo_connhandler_provider.triggers import CceePublicationTrigger

#: The data lake (a folder, or an s3:// URL both the worker and the triggerer reach): the
#: Airflow Variable ``echo_data_lake``, read when the task runs.
LAKE = "{{ var.value.echo_data_lake }}"

pld_horario = Asset(
    name="ccee_pld_horario",
    uri="ccee://dadosabertos.ccee.org.br/pld_horario",
    watchers=[
        AssetWatcher(
            name="ccee_pld_horario_publications",
            trigger=CceePublicationTrigger(
                dataset="pld_horario", conn_id="ccee_default", poke_interval=30
            ),
        )
    ],
)

with DAG(
    dag_id="ccee_on_publication",
    description="Pull what CCEE publishes, when it publishes it (asset watcher)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    schedule=[pld_horario],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ccee", "asset", "example"],
):

    @task
    def published_resources(triggering_asset_events: Any = None) -> list[str]:
        """The resources of the publication(s) that started this run (the trigger's payload)."""
        events = triggering_asset_events[pld_horario]
        ids = [rid for event in events for rid in event.extra["payload"]["resource_ids"]]
        if not ids:
            raise ValueError(f"the asset events carry no resource ids: {events!r}")
        return sorted(set(ids))

    CceeDatastoreOperator(
        task_id="pull_published",
        conn_id="ccee_default",
        resource_ids=published_resources(),
        output=LAKE + "/ccee/pld_horario_published/{{ dag_run.run_after | ts_nodash }}.parquet",
        deferrable=True,
        retries=2,
    )
