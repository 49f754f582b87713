"""Checks each yearly CCEE ``pld_horario`` file as soon as the yearly pull has written it.

Scheduled on the asset ``ccee_pld_horario_yearly_parquet``, the outlet of
``ccee_pld_horario_yearly``'s pull: each successful pull adds an asset event, which runs this
DAG. The event's ``extra`` is the pull's summary: the output (a path, or an ``s3://`` URL), its
format, rows and bytes, and the CCEE resources read with their versions. The task reads the file
named there, through the same storage as the pull (a local path or any fsspec URL), and fails
if it is not Parquet, is missing, is not that size, or holds another number of rows than the
pull wrote; else it logs it and returns what it checked (its XCom: the last file's ``output``,
``format``, ``rows`` and ``bytes``, as a pull's summary names them, and ``resources``, the
event's ``source_ids``; and ``checked``, every file of the run).

Nothing to configure: no connection (the file is reached as the pull reached it) and no
Variable (the path is in the event).
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

#: The asset the yearly pull produces (defined the same in ``ccee_pld_horario_yearly``).
PLD_YEARLY = Asset(name="ccee_pld_horario_yearly_parquet", uri="x-echo-lake://ccee/pld_horario")

log = logging.getLogger(__name__)

with DAG(
    dag_id="ccee_pld_horario_check",
    description="Check each yearly pld_horario Parquet file the pull produced (asset-scheduled)",
    # The module's docstring on the DAG's page (Details / Docs) of the UI.
    doc_md=__doc__,
    schedule=[PLD_YEARLY],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["echo", "ccee", "asset", "example"],
):

    @task
    def check_pulled_files(triggering_asset_events: Any = None) -> dict[str, Any]:
        """Each file the triggering asset events name: there, that size, that many rows."""
        import pyarrow.parquet as pq

        from echo_connhandler.pull import storage_for

        events = list(triggering_asset_events[PLD_YEARLY])
        if not events:
            raise ValueError("this run has no event of the asset: nothing to check")
        checked = []
        for event in events:
            extra = event.extra
            output, fmt = extra["output"], extra["format"]
            if fmt != "parquet":
                raise ValueError(f"{output}: expected a Parquet file, the pull wrote {fmt}")
            storage, path = storage_for(output)
            if not storage.exists(path):
                raise FileNotFoundError(f"{output}: the pull's file is missing")
            size = storage.size(path)
            with storage.open_read(path) as handle:
                rows = int(pq.ParquetFile(handle).metadata.num_rows)
            if (rows, size) != (extra["rows"], extra["bytes"]):
                raise ValueError(
                    f"{output}: {rows} rows and {size} bytes, but the pull wrote "
                    f"{extra['rows']} rows and {extra['bytes']} bytes"
                )
            log.info("%s: %d rows, %d bytes, as the pull wrote them", output, rows, size)
            checked.append(
                {"output": output, "rows": rows, "bytes": size, "resources": extra["source_ids"]}
            )
        # Several events when the pull ran again before this DAG did: each file was checked.
        return {**checked[-1], "format": "parquet", "checked": checked}

    check_pulled_files()
