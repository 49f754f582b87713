"""A generic request through an ``echo_http`` connection: Bazefield's allocation types.

``EchoHttpOperator`` sends one request with the connection's retries, authentication and secret
redaction; here it reads a small JSON list, checks it and returns it as the task's XCom, which the
next task reads. Any REST API works the same way with its own ``echo_http`` connection.

By id only: the ``echo_http_default`` connection (type ``echo_http``: Base URL and, here, an API
key sent as ``Authorization: Bearer``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, task

from echo_connhandler_provider.operators import EchoHttpOperator

with DAG(
    dag_id="echo_http_request",
    description="One request through an echo_http connection, its JSON as XCom",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    # Runs cover whole intervals (data_interval_start/end), which the pull reads.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["echo", "http", "example"],
):
    allocation_types = EchoHttpOperator(
        task_id="get_allocation_types",
        conn_id="echo_http_default",
        endpoint="allocationTypes",
        headers={"Accept": "application/json"},
        response_check=lambda response: "allocationTypes" in response.json(),
        response_filter=lambda response: response.json()["allocationTypes"],
        deferrable=True,
        # A GET may be sent again. The retry also covers a race of Airflow 3.3's scheduler,
        # which can mark a deferred task failed ("task state changed externally") when its
        # trigger fires within a second or two of the deferral (seen once in the demo).
        retries=2,
        retry_delay=timedelta(seconds=10),
    )

    @task
    def count_allocation_types(types: list[dict[str, Any]]) -> int:
        """How many allocation types the API knows (a stand-in for real downstream work)."""
        print(f"{len(types)} allocation types: {', '.join(str(t.get('name')) for t in types)}")
        return len(types)

    count_allocation_types(allocation_types.output)
