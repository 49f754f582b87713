"""Fixtures of the example DAG tests: the real files of ``dags_examples/``, parsed and run.

* The session's private ``AIRFLOW_HOME`` (set by tests/conftest.py) with a migrated metadata
  database (``airflow db migrate`` once per session, in process): ``dag.test()`` needs it.
* The sandbox (seed 42, as ``python -m deploy.local_airflow demo``), and the deployment's own
  connection definitions (``deploy.local_airflow.connections_for``) as ``AIRFLOW_CONN_<ID>``
  JSON; the Variable ``echo_data_lake`` (``AIRFLOW_VAR_ECHO_DATA_LAKE``) is a fresh folder.
* ``load_dag``: a file parsed with Airflow's ``DagBag`` (no import error, exactly one DAG).
* ``check_by_id_only``: the file names connections by id only, and outputs under the lake.
* ``run_dag``: ``dag.test()`` of a parsed DAG (triggers run inline, as Airflow does there),
  with each task's final state, XCom and the triggers it deferred to.
* ``rows_in``: the rows of an output file, read back in its format.

Helpers are fixtures (the suite is collected with ``--import-mode=importlib``: test modules do
not import this conftest).
"""

from __future__ import annotations

import ast
import asyncio
import csv
import gzip
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from deploy.local_airflow import connections_for
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

#: The folder of the example DAGs (the DAGs folder of the local deployment).
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags_examples"
#: The connection ids the example DAGs use, and nothing else.
CONN_IDS = frozenset(
    {"ccee_default", "bazefield_default", "ons_sager", "ons_sinapse", "echo_http_default"}
)
#: How every output of the examples starts: the data lake Variable, read when the task runs.
LAKE_TEMPLATE = "{{ var.value.echo_data_lake }}/"
#: A trigger run inline by ``dag.test()`` that has not fired after this long fails its task
#: (instead of polling for hours: the sensor's timeout is 12 h).
INLINE_TRIGGER_TIMEOUT_S = 60.0
#: Keyword arguments that would put a host or a credential into a DAG file.
_FORBIDDEN_KEYWORDS = frozenset(
    {"host", "login", "password", "api_key", "token", "base_url", "auth_url", "profile_url"}
)

#: Warnings of Airflow's own imports while a task runs in process, not of the code under test:
#: the in-process Execution API imports ``starlette.testclient`` (which warns without httpx2).
_FOREIGN_WARNINGS = ("ignore::starlette.exceptions.StarletteDeprecationWarning",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Ignore ``_FOREIGN_WARNINGS`` in the tests of this folder only."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            for spec in _FOREIGN_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


# -- Airflow and the sandbox ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated metadata database: ``airflow db migrate``, once per session, in process."""
    from airflow.utils import db

    db.upgradedb()


@pytest.fixture
def airflow_dags(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The migrated database, and ``dags_examples/`` as the DAGs folder: the ``dags-folder``
    bundle that ``dag.test()`` parses and writes to the database, as in the deployment."""
    from airflow import settings

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(DAGS_FOLDER))
    return DAGS_FOLDER


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The three emulators, started once for the session (seed 42, as the deployment)."""
    with Sandbox(SandboxConfig(seed=42)) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session's sandbox; faults, counters and CCEE publications reset after each test."""
    yield sandbox
    sandbox.reset()


def conn_env(body: dict[str, Any]) -> str:
    """A REST API connection body (``connections_for``) as an ``AIRFLOW_CONN_*`` JSON value."""
    fields = {k: v for k, v in body.items() if k != "connection_id"}
    if isinstance(fields.get("extra"), str):
        fields["extra"] = json.loads(fields["extra"])
    return json.dumps(fields)


@pytest.fixture
def connections(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The deployment's connections on the sandbox, as ``AIRFLOW_CONN_<ID>``: id -> body."""
    bodies = {body["connection_id"]: body for body in connections_for(sb)}
    assert set(bodies) == CONN_IDS
    for conn_id, body in bodies.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_env(body))
    return bodies


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Airflow Variable ``echo_data_lake``: an empty folder of this test."""
    folder = tmp_path / "lake"
    folder.mkdir()
    monkeypatch.setenv("AIRFLOW_VAR_ECHO_DATA_LAKE", str(folder))
    return folder


# -- parsing -------------------------------------------------------------------------------------
@pytest.fixture
def load_dag() -> Callable[[str], Any]:
    """``load_dag(name)``: ``dags_examples/<name>.py`` parsed by Airflow's ``DagBag`` (as the
    dag-processor does): no import error, exactly one DAG, whose id is the file's name."""
    from airflow.dag_processing.dagbag import DagBag

    def load(name: str) -> Any:
        path = DAGS_FOLDER / f"{name}.py"
        assert path.is_file(), path
        bag = DagBag(dag_folder=str(path), safe_mode=False)
        assert bag.import_errors == {}
        assert list(bag.dags) == [name]
        dag = bag.dags[name]
        assert Path(dag.fileloc) == path
        return dag

    return load


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


@pytest.fixture
def check_by_id_only() -> Callable[[Any], None]:
    """``check_by_id_only(dag)``: what ``dags_examples/`` promises of every example.

    The file defines no connection (no ``host=``/``login=``/``password=``/... argument, no
    ``http(s)://`` text outside docstrings, none of the sandbox's credentials); every task that
    has a ``conn_id`` names one of the deployment's ids; every pull's output is templated from
    ``var.value.echo_data_lake`` (never a fixed path).
    """

    def check(dag: Any) -> None:
        source = Path(dag.fileloc).read_text(encoding="utf-8")
        tree = ast.parse(source)
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword):
                assert node.arg not in _FORBIDDEN_KEYWORDS, f"{node.arg}= in {dag.fileloc}"
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                assert "http://" not in node.value, node.value
                assert "https://" not in node.value, node.value
                assert "127.0.0.1" not in node.value, node.value
        for service in DEMO_CREDENTIALS.values():
            for value in service.values():
                assert value not in source
        for task in dag.tasks:
            conn_id = getattr(task, "conn_id", None)
            if conn_id is not None or hasattr(task, "output_path"):
                assert conn_id in CONN_IDS, (task.task_id, conn_id)
            output = getattr(task, "output_path", None)
            if output is not None:
                assert isinstance(output, str), (task.task_id, output)
                assert output.startswith(LAKE_TEMPLATE), (task.task_id, output)

    return check


# -- running -------------------------------------------------------------------------------------
@dataclass
class InlineTrigger:
    """A trigger ``dag.test()`` ran in line: its class path, kwargs and first event."""

    task_id: str
    classpath: str
    kwargs: dict[str, Any]
    payload: Any = None


@dataclass
class DagTestRun:
    """What ``run_dag`` returns: the run, and per task its final state and XCom."""

    state: str
    run_id: str
    data_interval_start: datetime
    data_interval_end: datetime
    states: dict[str, str]
    xcoms: dict[str, Any]
    triggers: list[InlineTrigger] = field(default_factory=list)

    def triggers_of(self, task_id: str) -> list[InlineTrigger]:
        return [t for t in self.triggers if t.task_id == task_id]


def _bounded(trigger: Any, timeout: float) -> None:
    """Make ``trigger.run()`` give up (an error, the task fails) after ``timeout`` seconds."""
    original = trigger.run

    async def run() -> AsyncIterator[Any]:
        async with asyncio.timeout(timeout):
            async for event in original():
                yield event

    trigger.run = run


@pytest.fixture
def run_dag(
    airflow_dags: Path, connections: Any, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., DagTestRun]:
    """``run_dag(dag, logical_date=None, conf=None)``: ``dag.test()`` against the sandbox.

    Tasks run in this process through Airflow's in-process Execution API; a deferred task's
    trigger runs in line (as ``dag.test()`` does), recorded with its event. Retries are set to 0
    (a failed try would otherwise wait ``retry_delay``, 5 minutes, before the run ends), and a
    trigger that has not fired within ``INLINE_TRIGGER_TIMEOUT_S`` fails its task.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.sdk.definitions import dag as dag_module
    from airflow.utils.session import create_session
    from sqlalchemy import select

    seen: list[InlineTrigger] = []
    original = dag_module._run_inline_trigger

    def recording(trigger: Any, task_sdk_ti: Any) -> Any:
        classpath, kwargs = trigger.serialize()
        record = InlineTrigger(task_sdk_ti.task_id, classpath, dict(kwargs))
        seen.append(record)
        _bounded(trigger, INLINE_TRIGGER_TIMEOUT_S)
        event = original(trigger, task_sdk_ti)
        record.payload = None if event is None else event.payload
        return event

    monkeypatch.setattr(dag_module, "_run_inline_trigger", recording)

    def run(
        dag: Any, logical_date: datetime | None = None, conf: dict[str, Any] | None = None
    ) -> DagTestRun:
        for task in dag.tasks:
            task.retries = 0
        seen.clear()
        kwargs: dict[str, Any] = {} if logical_date is None else {"logical_date": logical_date}
        if conf is not None:
            kwargs["run_conf"] = conf  # as the Trigger dialog sends its params
        dr = dag.test(**kwargs)
        with create_session() as session:
            tis = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id
                )
            ).all()
            states = {ti.task_id: str(ti.state) for ti in tis}
            xcoms = {
                x.task_id: XComModel.deserialize_value(x)
                for x in session.scalars(
                    XComModel.get_many(run_id=dr.run_id, dag_ids=dag.dag_id, key="return_value")
                )
            }
        return DagTestRun(
            state=str(dr.state),
            run_id=dr.run_id,
            data_interval_start=dr.data_interval_start,
            data_interval_end=dr.data_interval_end,
            states=states,
            xcoms=xcoms,
            triggers=list(seen),
        )

    return run


# -- outputs -------------------------------------------------------------------------------------
def _text(path: Path) -> str:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b", f"{path} is not gzip"
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


@pytest.fixture
def rows_in() -> Callable[[Path, str], int]:
    """``rows_in(path, format)``: the rows of a pull's output file, read back in its format
    (``parquet``, ``jsonl[.gz]``, ``csv[.gz]``); every JSON line must parse."""

    def count(path: Path, fmt: str) -> int:
        assert path.is_file(), path
        if fmt == "parquet":
            import pyarrow.parquet as pq

            raw = path.read_bytes()
            assert raw[:4] == raw[-4:] == b"PAR1", f"{path} is not Parquet"
            return int(pq.read_metadata(path).num_rows)
        if fmt in ("jsonl", "jsonl.gz"):
            lines = [line for line in _text(path).splitlines() if line.strip()]
            for line in lines:
                assert isinstance(json.loads(line), dict), line
            return len(lines)
        if fmt in ("csv", "csv.gz"):
            rows = list(csv.reader(io.StringIO(_text(path))))
            assert rows, f"{path} has no header"
            return len(rows) - 1
        raise AssertionError(f"unexpected format {fmt!r}")

    return count


@pytest.fixture
def ccee_api(sb: Sandbox) -> Iterator[Callable[..., Any]]:
    """``ccee_api(action, **params)``: the ``result`` of a CKAN action of the sandbox's CCEE,
    read directly (a browser-like client, after the portal's warm-up page)."""
    import httpx

    with httpx.Client(base_url=sb.urls.ccee, headers={"User-Agent": "Mozilla/5.0"}) as client:
        client.get("/").raise_for_status()

        def call(action: str, **params: Any) -> Any:
            reply = client.get(f"/api/3/action/{action}", params=params)
            reply.raise_for_status()
            return reply.json()["result"]

        yield call
