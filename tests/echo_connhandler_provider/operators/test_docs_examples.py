"""The DAG examples of docs/airflow/operators.md run, for real, against the sandbox.

Every ```python block of the page whose first line is ``# example: <name>`` is a complete DAG
file. The test writes each one to a DAG folder, parses the folder with Airflow's ``DagBag`` (as
the dag-processor does), then runs every task in the test process: templates rendered with the
context of the DAG's last complete data interval, then ``task.execute(context)``, as the operator
tests do. The connections the examples name (``sandbox_ccee``, ``sandbox_bazefield``,
``sandbox_ons_sager``, ``sandbox_ons_sinapse``, ``sandbox_http``) are ``AIRFLOW_CONN_*``
variables pointing at the sandbox; ``DATA_LAKE`` is a temporary folder, under which every output
must appear, not empty.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG, BaseOperator
from airflow.serialization.encoders import coerce_to_core_timetable

from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.operators import (
    BazefieldTimeseriesOperator,
    CceeDatastoreOperator,
    EchoHttpOperator,
    OnsSagerReportOperator,
    OnsSinapseExportOperator,
    PullOperator,
)

PAGE = Path(__file__).resolve().parents[3] / "docs" / "airflow" / "operators.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"# example: ([\w-]+)\n")
#: The examples' connection ids -> the conftest connection they copy.
CONNECTIONS = {
    "sandbox_ccee": "ccee_json",
    "sandbox_bazefield": "bazefield_json",
    "sandbox_ons_sager": "ons_sager_json",
    "sandbox_ons_sinapse": "ons_sinapse_json",
    "sandbox_http": "echo_http_json",
}
#: When the runs happen: each DAG runs its last complete data interval before this moment.
RUN_AFTER = pendulum.datetime(2025, 2, 10, 12, tz="UTC")


def examples() -> dict[str, str]:
    """The page's runnable blocks, by name."""
    found: dict[str, str] = {}
    for block in BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        marker = MARKER.match(block)
        if marker:
            assert marker.group(1) not in found, f"two examples named {marker.group(1)}"
            found[marker.group(1)] = block
    return found


def test_every_operator_has_an_example() -> None:
    """Each operator of the page appears in at least one block that runs."""
    text = "\n".join(examples().values())
    for operator in (
        CceeDatastoreOperator,
        BazefieldTimeseriesOperator,
        OnsSagerReportOperator,
        OnsSinapseExportOperator,
        EchoHttpOperator,
    ):
        assert f"{operator.__name__}(" in text, f"no runnable example of {operator.__name__}"


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the examples write under (their ``DATA_LAKE``)."""
    folder = tmp_path / "lake"
    folder.mkdir()
    monkeypatch.setenv("DATA_LAKE", str(folder))
    return folder


@pytest.fixture
def sandbox_connections(conns: Any) -> None:
    """The examples' connection ids, as the conftest's sandbox connections (JSON); the
    variables are removed after the test (``conns.define`` sets them with monkeypatch)."""
    for conn_id, source in CONNECTIONS.items():
        conns.define(conn_id, os.environ[f"AIRFLOW_CONN_{source.upper()}"])


@pytest.fixture
def dag_bag(tmp_path: Path, lake: Path) -> dict[str, DAG]:
    """The examples parsed by Airflow's DagBag: example name -> its DAG."""
    folder = tmp_path / "dags"
    folder.mkdir()
    blocks = examples()
    for name, code in blocks.items():
        (folder / f"{name}.py").write_text(code, encoding="utf-8")
    bag = DagBag(dag_folder=str(folder), safe_mode=False)
    assert bag.import_errors == {}
    by_file = {Path(dag.fileloc).stem: dag for dag in bag.dags.values()}
    assert set(by_file) == set(blocks), "every example defines one DAG"
    assert len(bag.dags) == len(blocks)
    return by_file


def _context(dag: DAG, task: BaseOperator) -> dict[str, Any]:
    """What a scheduled run of the DAG's last complete period gives its tasks (the part the
    operators and the examples' templates read)."""
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(
        run_after=RUN_AFTER
    )
    start, end = interval.start, interval.end
    return {
        "dag": dag,
        "task": task,
        "params": dict(task.params),
        "run_id": f"scheduled__{start.isoformat()}",
        "logical_date": start,
        "data_interval_start": start,
        "data_interval_end": end,
        "ds": start.strftime("%Y-%m-%d"),
        "ds_nodash": start.strftime("%Y%m%d"),
        "ts": start.isoformat(),
        "ts_nodash": start.strftime("%Y%m%dT%H%M%S"),
    }


def _written(path: str, lake: Path) -> list[Path]:
    """The files an output names (a file, or a folder's files), each under the lake."""
    target = Path(path)
    assert target.is_relative_to(lake), f"{path} is not under DATA_LAKE"
    assert target.exists(), f"{path} was not written"
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    assert files, f"{path} holds no file"
    return files


def _check_result(task: BaseOperator, result: Any, lake: Path) -> list[Path]:
    """The task's XCom describes outputs that exist under the lake and are not empty."""
    if isinstance(task, PullOperator):
        assert result["chunks"] > 0
        assert result["chunks_resumed"] == 0
        if result["format"] == "files":
            files = [p for f in result["files"] for p in _written(f, lake)]
            assert len(files) == len(result["files"]) == result["chunks"]
        else:
            assert result["rows"] > 0
            files = _written(result["output"], lake)
        assert sum(p.stat().st_size for p in files) == result["bytes"]
    else:
        assert isinstance(task, EchoHttpOperator)
        if task.response_filter is not None:
            assert result, f"{task.task_id}: the filtered XCom is empty"
            return []
        assert result["status_code"] == 200
        if result["output"] is None:
            assert result["body"], f"{task.task_id}: no body in the XCom"
            return []
        files = _written(result["output"], lake)
        assert files[0].stat().st_size == result["bytes"]
    for path in files:
        assert path.stat().st_size > 0, f"{path} is empty"
    return files


@pytest.mark.parametrize("name", sorted(examples()))
def test_example_runs(
    name: str,
    sb: Sandbox,
    sandbox_connections: None,
    dag_bag: dict[str, DAG],
    lake: Path,
) -> None:
    """Parse the example, run each of its tasks in the worker, check what it wrote."""
    dag = dag_bag[name]
    assert dag.tasks
    written: list[Path] = []
    for task in dag.tasks:
        assert isinstance(task, PullOperator | EchoHttpOperator), task
        assert task.deferrable is False, f"{task.task_id}: examples run in the worker"
        context = _context(dag, task)
        task.render_template_fields(context)  # type: ignore[arg-type]
        result = task.execute(context)  # type: ignore[arg-type]
        written += _check_result(task, result, lake)
    leftovers = [p for p in lake.rglob("*") if p.is_file() and p not in written]
    assert leftovers == [], "no checkpoint or temporary file is left"
