"""Lineage of a real run: Airflow's OpenLineage provider, its file transport, the sandbox.

A DAG of pulls (CCEE in the worker and deferred, an ONS export of files) and requests
(``EchoHttpOperator`` in the worker and deferred) runs with ``dag.test()`` in a child Python
process: Airflow's plugins (the OpenLineage listener among them) are loaded once per process and
read ``[openlineage]`` then, so the configured transport needs a process of its own, as a
worker has. The tasks run there as in a worker (the in-process Execution API; a deferred task's
trigger in line, then ``execute_complete``), the listener writes each event as one JSON line,
and the test reads them back: inputs, outputs, facets, and no secret.

The rest of the suite runs with the provider installed but not configured (no transport):
:func:`test_not_configured_changes_nothing` checks that a pull then works as before and reads
nothing for lineage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pendulum
import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider import _lineage
from echo_connhandler_provider.operators import CceeDatastoreOperator

DAG_ID = "lineage_check"
#: The OpenLineage namespace of the jobs (Airflow's ``[openlineage] namespace``).
JOB_NAMESPACE = "echo-tests"
#: Generous: the child imports Airflow, checks the metadata DB and runs five tasks.
CHILD_TIMEOUT_S = 600

#: The DAG the child process runs; ``{out}`` is the test's output folder.
DAG_FILE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset

from echo_connhandler_provider.operators import (
    CceeDatastoreOperator,
    EchoHttpOperator,
    OnsSagerReportOperator,
)

OUT = {out!r}

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    CceeDatastoreOperator(
        task_id="ccee_worker",
        conn_id="ccee_json",
        dataset="pld_media_diaria",
        years=[2024],
        page_size=500,
        output=OUT + "/ccee_worker.parquet",
        deferrable=False,
    )
    CceeDatastoreOperator(
        task_id="ccee_deferred",
        conn_id="ccee_json",
        dataset="pld_media_diaria",
        years=[2023, 2024],
        fields=["_id", "DIA", "SUBMERCADO", "PLD_MEDIA_DIA"],
        page_size=500,
        output=OUT + "/ccee_deferred.csv",
        deferrable=True,
        # Named after its URI: unique to this test's folder (a name is unique among assets).
        outlets=[Asset("file://" + OUT + "/ccee_deferred.csv")],
    )
    OnsSagerReportOperator(
        task_id="ons_files",
        conn_id="ons_sager_json",
        start="2024-01-15",
        end="2024-03-01",
        output=OUT + "/sager",
        deferrable=False,
    )
    EchoHttpOperator(
        task_id="http_worker",
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        query={{"culture": "en"}},
        output=OUT + "/allocation_types.json",
        deferrable=False,
    )
    EchoHttpOperator(
        task_id="http_deferred",
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        deferrable=True,
    )
"""

#: What the child runs: the DAG with ``dag.test()``, then what the metadata DB says of it, as
#: JSON into the file ``argv[3]`` (its stdout mixes the lines of the listener's processes).
CHILD = """
import json, sys

from airflow.utils import db

db.upgradedb()

from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert bag.import_errors == {}, bag.import_errors
dag = bag.dags[sys.argv[2]]
for task in dag.tasks:
    task.retries = 0
dr = dag.test()
# The DAG run's own events go through the listener's process pool: wait for them to be written.
from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

get_openlineage_listener().before_stopping(component=None)
with create_session() as session:
    tis = session.scalars(
        select(TaskInstance).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id
        )
    ).all()
    events = session.scalars(
        select(AssetEvent).where(
            AssetEvent.source_dag_id == dag.dag_id, AssetEvent.source_run_id == dr.run_id
        )
    ).all()
    result = {
        "state": str(dr.state),
        "states": {ti.task_id: str(ti.state) for ti in tis},
        "asset_events": [
            {"task_id": e.source_task_id, "uri": e.asset.uri, "extra": e.extra} for e in events
        ],
    }
with open(sys.argv[3], "w", encoding="utf-8") as out:
    json.dump(result, out)
"""


def _namespace(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def _run_in_child(tmp_path: Path) -> dict[str, Any]:
    """The DAG run in a child process with the file transport: its result, its events (in the
    order written), the raw events file, the folder of its outputs and the child's log."""
    out = tmp_path / "out"
    out.mkdir()
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(
        DAG_FILE.format(out=str(out), dag_id=DAG_ID), encoding="utf-8"
    )
    events_file = tmp_path / "openlineage.jsonl"
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,  # the session's AIRFLOW_HOME and the sandbox connections (AIRFLOW_CONN_*)
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": JOB_NAMESPACE,
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(  # noqa: S603 (this interpreter, a fixed script)
        [sys.executable, "-c", CHILD, str(dags), DAG_ID, str(result_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    log = done.stdout + done.stderr
    (tmp_path / "child.log").write_text(log, encoding="utf-8")  # kept for a failure's reader
    assert done.returncode == 0, log[-6000:]
    result = json.loads(result_file.read_text(encoding="utf-8"))
    raw = events_file.read_text(encoding="utf-8") if events_file.exists() else ""
    # One event per line: split on newlines only (str.splitlines also splits on characters
    # that JSON strings may hold as they are, such as U+2028).
    events = [json.loads(line) for line in raw.split("\n") if line.strip()]
    return {"result": result, "events": events, "raw": raw, "out": out, "log": log}


def _task_events(events: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["job"]["name"] == f"{DAG_ID}.{task_id}"]


def _complete(events: list[dict[str, Any]], task_id: str) -> dict[str, Any]:
    (complete,) = [e for e in _task_events(events, task_id) if e["eventType"] == "COMPLETE"]
    return complete


def test_a_real_run_reports_lineage_and_asset_events(
    conns: Any, sb: Sandbox, tmp_path: Path, assert_no_secret: Callable[[Any], None]
) -> None:
    """One run (a child process: about 10 s) checked three ways: lineage, secrets, assets."""
    lineage_run = _run_in_child(tmp_path)
    _check_lineage(lineage_run, sb)
    # No credential, token or session id of the sandbox in any event.
    assert lineage_run["raw"]
    assert_no_secret(lineage_run["raw"])
    _check_asset_event(lineage_run, assert_no_secret)


def _check_lineage(lineage_run: dict[str, Any], sb: Sandbox) -> None:
    """What each task read and wrote, as the worker reported it."""
    result, events, out = lineage_run["result"], lineage_run["events"], lineage_run["out"]
    assert result["state"] == "success", (result, lineage_run["log"][-6000:])
    tasks = ["ccee_worker", "ccee_deferred", "ons_files", "http_worker", "http_deferred"]
    assert result["states"] == dict.fromkeys(tasks, "success")
    assert {e["job"]["namespace"] for e in events if "job" in e} == {JOB_NAMESPACE}
    ccee, ons = _namespace(sb.urls.ccee), _namespace(sb.urls.ons_sager)
    baze = _namespace(sb.urls.bazefield)

    # CCEE in the worker: one resource in, one Parquet file out, its schema and statistics.
    complete = _complete(events, "ccee_worker")
    (inp,) = complete["inputs"]
    assert inp["namespace"] == ccee
    assert len(inp["name"]) == 36  # the CKAN resource id (a UUID)
    assert inp["facets"]["version"]["datasetVersion"]  # the resource's last_modified
    assert inp["inputFacets"]["inputStatistics"]["rowCount"] == 366 * 4
    (output,) = complete["outputs"]
    path = out / "ccee_worker.parquet"
    assert (output["namespace"], output["name"]) == ("file", str(path))
    stats = output["outputFacets"]["outputStatistics"]
    assert stats == {**stats, "rowCount": 366 * 4, "size": path.stat().st_size}
    fields = output["facets"]["schema"]["fields"]
    names = [f["name"] for f in fields]
    assert names[0] == "_id"
    assert {"DIA", "SUBMERCADO", "PLD_MEDIA_DIA"} <= set(names)
    assert [f["ordinal_position"] for f in fields] == list(range(1, len(fields) + 1))
    assert {f["name"]: f["type"] for f in fields}["_id"] == "int"

    # CCEE deferred: reported once, by the worker after execute_complete (a START as the task
    # starts, another as it resumes; one COMPLETE, last, with what the resumed task wrote).
    deferred = _task_events(events, "ccee_deferred")
    assert [e["eventType"] for e in deferred] == ["START", "START", "COMPLETE"]
    complete = deferred[-1]
    assert len(complete["inputs"]) == 2  # two resources: 2023 and 2024
    assert {i["namespace"] for i in complete["inputs"]} == {ccee}
    for inp in complete["inputs"]:
        assert "inputStatistics" not in inp.get("inputFacets", {})  # rows are of both
    (output,) = complete["outputs"]
    path = out / "ccee_deferred.csv"
    assert (output["namespace"], output["name"]) == ("file", str(path))
    rows = len(path.read_text("utf-8").splitlines()) - 1  # the header
    assert rows == 365 * 4 + 366 * 4
    stats = output["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"]) == (rows, path.stat().st_size)
    fields = output["facets"]["schema"]["fields"]
    assert [f["name"] for f in fields] == ["_id", "DIA", "SUBMERCADO", "PLD_MEDIA_DIA"]

    # ONS: the export's endpoint in (the URL's path), the folder of files out.
    complete = _complete(events, "ons_files")
    (inp,) = complete["inputs"]
    assert inp["namespace"] == ons
    assert inp["name"].startswith(urlsplit(sb.urls.ons_sager).path.rstrip("/") + "/")
    assert inp["inputFacets"]["inputStatistics"]["fileCount"] == 2
    (output,) = complete["outputs"]
    folder = out / "sager"
    assert (output["namespace"], output["name"]) == ("file", str(folder))
    sizes = sum(p.stat().st_size for p in folder.iterdir())
    stats = output["outputFacets"]["outputStatistics"]
    assert (stats["fileCount"], stats["size"]) == (2, sizes)
    assert "rowCount" not in stats
    assert "schema" not in output.get("facets", {})

    # Requests: the endpoint in (no query), the body's file out when there is one.
    endpoint = urlsplit(sb.urls.bazefield).path.rstrip("/") + "/BazeField.Services/api/"
    for task_id in ("http_worker", "http_deferred"):
        (inp,) = _complete(events, task_id)["inputs"]
        assert (inp["namespace"], inp["name"]) == (baze, endpoint + "allocationTypes")
        assert inp["inputFacets"]["inputStatistics"]["size"] > 0
    assert _complete(events, "http_deferred")["outputs"] == []
    complete = _complete(events, "http_worker")
    path = out / "allocation_types.json"
    assert complete["inputs"][0]["inputFacets"]["inputStatistics"]["size"] == path.stat().st_size
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(path))
    assert output["outputFacets"]["outputStatistics"]["size"] == path.stat().st_size


def _check_asset_event(
    lineage_run: dict[str, Any], assert_no_secret: Callable[[Any], None]
) -> None:
    """The outlet's asset event, written after the task resumed, carries the pull's summary."""
    out = lineage_run["out"]
    (event,) = lineage_run["result"]["asset_events"]
    path = out / "ccee_deferred.csv"
    assert event["task_id"] == "ccee_deferred"
    assert event["uri"] == "file://" + str(path)
    extra = event["extra"]
    assert extra["output"] == str(path)
    assert extra["format"] == "csv"
    assert extra["rows"] == len(path.read_text("utf-8").splitlines()) - 1
    assert extra["bytes"] == path.stat().st_size
    assert extra["chunks"] == 3 + 3
    assert extra["files"] == []
    assert len(extra["source_ids"]) == 2
    assert set(extra["source_versions"]) == set(extra["source_ids"])
    assert_no_secret(extra)


def test_not_configured_changes_nothing(
    conns: Any, sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed, not configured (this suite): no lineage, no connection read for it; the
    pull's result is as before, and its lineage can still be built (outputs only)."""
    monkeypatch.delenv("AIRFLOW__OPENLINEAGE__TRANSPORT", raising=False)
    assert _lineage.lineage_enabled() is False
    read: list[Any] = []
    monkeypatch.setattr(
        "echo_connhandler_provider.operators.pull.connection_base_url",
        lambda *args: read.append(args),
    )
    op = CceeDatastoreOperator(
        task_id="t",
        conn_id="ccee_json",
        dataset="pld_media_diaria",
        years=[2024],
        page_size=500,
        output=str(tmp_path / "x.jsonl"),
        deferrable=False,
    )
    context = {
        "data_interval_start": pendulum.datetime(2024, 1, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2025, 1, 1, tz="UTC"),
    }
    summary = op.execute(context)  # type: ignore[arg-type]
    assert summary["rows"] == 366 * 4
    assert read == []
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage is not None
    assert lineage.inputs == []  # the connection was not read: no service to name
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("file", str(tmp_path / "x.jsonl"))


def test_configured_reads_the_base_url_without_credentials(
    conns: Any, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a transport configured, the operator keeps the connection's base URL for its
    inputs: scheme, host, port and path only, whatever the connection holds."""
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "console"}))
    assert _lineage.lineage_enabled() is True
    base = _lineage.connection_base_url("ons", "ons_sager_uri")  # user:password@ in a URI
    assert base == sb.urls.ons_sager.rstrip("/")
    assert DEMO_CREDENTIALS["ons"]["password"] not in str(base)
    assert _lineage.connection_base_url("ccee", "no_such_connection") is None
