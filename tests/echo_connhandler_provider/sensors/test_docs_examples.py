"""The DAG examples of docs/airflow/sensors.md run, for real, against the sandbox.

Every ```python block of the page whose first line is ``# example: <name>`` is a complete DAG
file. The test parses them with Airflow's ``DagBag``, then runs the sensors and operators of each
DAG in order in the test process (templates rendered with the context of the last complete data
interval, XComs passed from task to task through ``ti.xcom_pull``, ``poke_interval`` shortened).
For an asset with a watcher, the watcher's trigger is rebuilt from its serialised arguments and
must fire exactly once for a publication made with ``Sandbox.ccee_publish``.
"""

from __future__ import annotations

import asyncio
import os
import re
import runpy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG, Asset, BaseOperator
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize
from airflow.serialization.encoders import coerce_to_core_timetable

from echo_connhandler import utc_moment
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.operators import CceeDatastoreOperator, EchoHttpOperator
from echo_connhandler_provider.sensors import CceeDatasetUpdatedSensor, EchoHttpSensor
from echo_connhandler_provider.triggers import CceePublicationTrigger

PAGE = Path(__file__).resolve().parents[3] / "docs" / "airflow" / "sensors.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"# example: ([\w-]+)\n")
CONNECTIONS = {"sandbox_ccee": "ccee_json", "sandbox_http": "echo_http_json"}
RUN_AFTER = pendulum.datetime(2025, 2, 10, 12, tz="UTC")


def examples() -> dict[str, str]:
    found: dict[str, str] = {}
    for block in BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        marker = MARKER.match(block)
        if marker:
            assert marker.group(1) not in found
            found[marker.group(1)] = block
    return found


def test_every_sensor_and_the_trigger_have_an_example() -> None:
    text = "\n".join(examples().values())
    for name in ("EchoHttpSensor(", "CceeDatasetUpdatedSensor(", "CceePublicationTrigger("):
        assert name in text


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "lake"
    folder.mkdir()
    monkeypatch.setenv("DATA_LAKE", str(folder))
    return folder


@pytest.fixture
def sandbox_connections(conns: Any) -> None:
    for conn_id, source in CONNECTIONS.items():
        conns.define(conn_id, os.environ[f"AIRFLOW_CONN_{source.upper()}"])


@pytest.fixture
def files(tmp_path: Path, lake: Path) -> dict[str, Path]:
    folder = tmp_path / "dags"
    folder.mkdir()
    written = {}
    for name, code in examples().items():
        written[name] = folder / f"{name}.py"
        written[name].write_text(code, encoding="utf-8")
    return written


class TaskInstance:
    """What the examples' templates and reschedule mode read of ``ti``."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.results[task_ids]

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return None


def _context(dag: DAG, task: BaseOperator, results: dict[str, Any]) -> dict[str, Any]:
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(
        run_after=RUN_AFTER
    )
    start, end = interval.start, interval.end
    return {
        "dag": dag,
        "task": task,
        "ti": TaskInstance(results),
        "params": dict(task.params),
        "data_interval_start": start,
        "data_interval_end": end,
        "logical_date": start,
        "ds": start.strftime("%Y-%m-%d"),
        "ts": start.isoformat(),
    }


@pytest.mark.parametrize("name", ["http_sensor", "ccee_wait_then_pull"])
def test_dag_example_runs(
    name: str, sb: Sandbox, sandbox_connections: None, files: dict[str, Path], lake: Path
) -> None:
    bag = DagBag(dag_folder=str(files[name]), safe_mode=False)
    assert bag.import_errors == {}
    (dag,) = bag.dags.values()
    results: dict[str, Any] = {}
    for task in dag.topological_sort():
        assert isinstance(
            task,
            EchoHttpSensor | CceeDatasetUpdatedSensor | EchoHttpOperator | CceeDatastoreOperator,
        ), task
        assert task.deferrable is False
        if isinstance(task, EchoHttpSensor | CceeDatasetUpdatedSensor):
            task.poke_interval = 0.05
        context = _context(dag, task, results)
        task.render_template_fields(context)  # type: ignore[arg-type]
        results[task.task_id] = task.execute(context)  # type: ignore[arg-type]
    if name == "ccee_wait_then_pull":
        found = results["wait_for_pld"]
        assert [r["year"] for r in found["resources"]] == [2025]
        summary = results["pull_pld"]
        assert summary["source_ids"] == found["resource_ids"]
        assert summary["rows"] > 0
        assert Path(summary["output"]).is_relative_to(lake)
    else:
        assert results["wait_for_types"]["status_code"] == 200
        assert results["read_types"]["status_code"] == 200


def _package_shows(sb: Sandbox) -> int:
    requests = sb.faults("ccee").stats["requests"]
    return sum(n for path, n in requests.items() if path.endswith("/package_show"))


async def _polls(sb: Sandbox, polls: int) -> None:
    """Until the trigger has polled ``polls`` more times."""
    start = _package_shows(sb)
    while _package_shows(sb) < start + polls:  # noqa: ASYNC110 - the sandbox's counters
        await asyncio.sleep(0.01)


async def test_asset_watcher_example_fires_once_per_publication(
    sb: Sandbox, sandbox_connections: None, files: dict[str, Path]
) -> None:
    bag = DagBag(dag_folder=str(files["ccee_publication_asset"]), safe_mode=False)
    assert bag.import_errors == {}
    assert list(bag.dags) == ["ccee_pld_on_publication"]
    namespace = runpy.run_path(str(files["ccee_publication_asset"]))
    asset = namespace["pld_published"]
    assert isinstance(asset, Asset)
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()  # type: ignore[union-attr]
    assert classpath.endswith("CceePublicationTrigger")
    kwargs = {**deserialize(serialize(kwargs)), "poke_interval": 0.05}
    trigger: CceePublicationTrigger = import_string(classpath)(**kwargs)
    gen = trigger.run()
    pending = asyncio.ensure_future(anext(gen))
    await _polls(sb, 2)  # the current publication is the starting point: no event
    assert not pending.done()
    published = sb.ccee_publish("pld_horario")["pld_horario"]
    event = await asyncio.wait_for(pending, timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(published, "time")
    following = asyncio.ensure_future(anext(gen))
    await _polls(sb, 3)
    assert not following.done(), "one publication, one event"
    following.cancel()
    with pytest.raises(asyncio.CancelledError):
        await following
    assert utc_moment(published, "time") <= datetime.now(UTC)
