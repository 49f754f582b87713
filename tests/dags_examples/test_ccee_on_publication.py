"""``dags_examples/ccee_on_publication.py``: parsed by Airflow, then its pieces run for real.

The DAG is scheduled on an asset whose watcher (``CceePublicationTrigger``) fires once per new
CCEE publication of ``pld_horario``; its tasks read the triggering asset events. ``dag.test()``
cannot give a run ``triggering_asset_events``, so the run is made of its real pieces:

1. the watcher's trigger, rebuilt from its serialised kwargs (as the triggerer does; only its
   30 s ``poke_interval`` shortened), polls the sandbox, and fires for a publication made with
   ``Sandbox.ccee_publish``;
2. its event becomes the asset event Airflow records (``extra={"from_trigger": True,
   "payload": ...}``, see ``airflow.models.trigger``), JSON round-tripped as the database
   stores it, and the run's ``triggering_asset_events`` (Airflow's own accessor);
3. the ``published_resources`` task runs on it (``execute``, as in the worker);
4. ``pull_published`` is rendered (its ``resource_ids`` is the upstream XCom, the output the
   lake Variable and ``dag_run.run_after``), defers, its trigger runs, and it resumes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import Asset, AssetAll
from airflow.sdk.api.datamodels._generated import (
    AssetEventDagRunReference,
    AssetReferenceAssetEventDagRun,
)
from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable
from airflow.sdk.definitions.xcom_arg import XComArg
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor, VariableAccessor
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize
from airflow.serialization.serialized_objects import DagSerialization
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from echo_connhandler import utc_moment
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.operators import CceeDatastoreOperator
from echo_connhandler_provider.triggers import CceePublicationTrigger

DAG_ID = "ccee_on_publication"
ASSET_NAME = "ccee_pld_horario"
ASSET_URI = "ccee://dadosabertos.ccee.org.br/pld_horario"
TRIGGER_CLASSPATH = "echo_connhandler_provider.triggers.ccee.CceePublicationTrigger"


def _asset(dag: Any) -> Asset:
    """The one asset the DAG is scheduled on (``schedule=[asset]``: all of one asset)."""
    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    condition = dag.timetable.asset_condition
    assert isinstance(condition, AssetAll)
    (asset,) = condition.objects
    assert isinstance(asset, Asset)
    return asset


def test_parses_with_the_expected_tasks(load_dag: Any, check_by_id_only: Any) -> None:
    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert set(dag.task_ids) == {"published_resources", "pull_published"}
    resources = dag.get_task("published_resources")
    pull = dag.get_task("pull_published")
    assert isinstance(resources, PythonOperator)  # the @task
    assert type(pull) is CceeDatastoreOperator
    assert pull.conn_id == "ccee_default"
    assert pull.deferrable is True
    assert isinstance(pull.resource_ids, XComArg)
    assert pull.resource_ids.operator is resources
    assert pull.output_path == (
        "{{ var.value.echo_data_lake }}/ccee/pld_horario_published/"
        "{{ dag_run.run_after | ts_nodash }}.parquet"
    )
    assert resources.downstream_task_ids == {"pull_published"}
    assert pull.upstream_task_ids == {"published_resources"}
    assert dag.catchup is False

    # Scheduled on the asset, watched by a CCEE publication trigger on ccee_default.
    asset = _asset(dag)
    assert (asset.name, asset.uri) == (ASSET_NAME, ASSET_URI)
    (watcher,) = asset.watchers
    assert watcher.name == "ccee_pld_horario_publications"
    assert isinstance(watcher.trigger, CceePublicationTrigger)
    assert isinstance(watcher.trigger, BaseEventTrigger)
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == TRIGGER_CLASSPATH
    assert kwargs["dataset"] == "pld_horario"
    assert kwargs["conn_id"] == "ccee_default"
    assert kwargs["poke_interval"] == 30
    # What the dag-processor writes for the scheduler and triggerer keeps the watcher.
    serialized = json.dumps(DagSerialization.to_dict(dag), default=str)
    assert TRIGGER_CLASSPATH in serialized
    assert ASSET_URI in serialized


# -- the run, piece by piece ---------------------------------------------------------------------
def _package_shows(sb: Sandbox) -> int:
    requests = sb.faults("ccee").stats["requests"]
    return sum(n for path, n in requests.items() if path.endswith("/package_show"))


async def _event_for_a_publication(trigger: CceePublicationTrigger, sb: Sandbox) -> TriggerEvent:
    """The trigger's first event: none while it polls the current publication, one for the
    publication made once it has its starting point."""
    gen = trigger.run()
    pending = asyncio.ensure_future(anext(gen))
    start = _package_shows(sb)
    while _package_shows(sb) < start + 2:
        assert not pending.done(), f"fired without a new publication: {pending.result()}"
        await asyncio.sleep(0.01)
    assert not pending.done(), f"fired without a new publication: {pending.result()}"
    sb.ccee_publish("pld_horario")
    try:
        return await asyncio.wait_for(pending, timeout=30)
    finally:
        await gen.aclose()


def _asset_event(asset: Asset, payload: Any, timestamp: datetime) -> Any:
    """The asset event Airflow records for a watcher's trigger event, as a task reads it."""
    extra = json.loads(json.dumps({"from_trigger": True, "payload": payload}))  # a JSON column
    reference = AssetEventDagRunReference(
        asset=AssetReferenceAssetEventDagRun(name=asset.name, uri=asset.uri, extra={}),
        extra=extra,
        source_task_id=None,
        source_dag_id=None,
        source_run_id=None,
        source_map_index=None,
        source_aliases=[],
        timestamp=timestamp,
    )
    return AssetEventDagRunReferenceResult.from_asset_event_dag_run_reference(reference)


class TaskInstance:
    """What rendering an XComArg reads of ``ti``: the upstream tasks' return values."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def xcom_pull(self, task_ids: str, key: str = "return_value", **kwargs: Any) -> Any:
        assert key == "return_value"
        return self.results[task_ids]


async def test_a_publication_runs_the_pull_of_what_was_published(
    load_dag: Any,
    sb: Sandbox,
    connections: Any,
    lake: Path,
    rows_in: Any,
    ccee_api: Any,
    assert_no_secret: Any,
) -> None:
    dag = load_dag(DAG_ID)
    asset = _asset(dag)

    # 1. The watcher's trigger, as the triggerer builds it (poke_interval shortened).
    classpath, kwargs = asset.watchers[0].trigger.serialize()
    assert_no_secret(kwargs)
    kwargs = {**deserialize(serialize(kwargs)), "poke_interval": 0.05}
    watcher: CceePublicationTrigger = import_string(classpath)(**kwargs)
    event = await _event_for_a_publication(watcher, sb)
    payload = event.payload
    newest = max(ccee_api("package_show", id="pld_horario")["resources"], key=lambda r: r["name"])
    assert payload["dataset"] == "pld_horario"
    assert payload["resource_ids"] == [newest["id"]]
    assert utc_moment(payload["last_modified"], "time") == utc_moment(
        newest["last_modified"], "time"
    )

    # 2. The run's triggering asset events: that one event.
    run_after = pendulum.now("UTC")
    events = TriggeringAssetEventsAccessor.build([_asset_event(asset, payload, run_after)])

    # 3. published_resources, on those events.
    resources_task = dag.get_task("published_resources")
    context: dict[str, Any] = {
        "dag": dag,
        "params": {},
        "triggering_asset_events": events,
        "dag_run": SimpleNamespace(run_after=run_after),
        "var": {"value": VariableAccessor(deserialize_json=False)},
    }
    results: dict[str, Any] = {}
    context.update(task=resources_task, ti=TaskInstance(results))
    resources_task.render_template_fields(context)
    results["published_resources"] = resources_task.execute(context)
    assert results["published_resources"] == [newest["id"]]

    # 4. pull_published: rendered, deferred, its trigger run, resumed.
    pull = dag.get_task("pull_published")
    context.update(task=pull, ti=TaskInstance(results))
    pull.render_template_fields(context)
    assert pull.resource_ids == [newest["id"]]
    output = lake / "ccee" / "pld_horario_published" / f"{run_after:%Y%m%dT%H%M%S}.parquet"
    assert pull.output_path == str(output)
    with pytest.raises(TaskDeferred) as deferred:
        pull.execute(context)
    assert deferred.value.method_name == "execute_complete"
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath.endswith(".PullTrigger")
    assert_no_secret(kwargs)
    pull_trigger = import_string(classpath)(**deserialize(serialize(kwargs)))
    gen = pull_trigger.run()
    try:
        pulled = await asyncio.wait_for(anext(gen), timeout=60)
    finally:
        await gen.aclose()
    summary = pull.execute_complete(context, event=deserialize(serialize(pulled.payload)))

    assert summary["output"] == str(output)
    assert summary["format"] == "parquet"
    assert summary["source_ids"] == [newest["id"]]
    total = ccee_api("datastore_search", resource_id=newest["id"], limit=0)["total"]
    assert summary["rows"] == total > 0
    assert rows_in(output, "parquet") == summary["rows"]


def test_published_resources_merges_events_and_rejects_an_empty_one(load_dag: Any) -> None:
    """Two publications in one run: their resources once each, sorted; an event without
    resource ids fails the task (never a silent empty pull)."""
    dag = load_dag(DAG_ID)
    asset = _asset(dag)
    published_resources = dag.get_task("published_resources").python_callable
    now = pendulum.now("UTC")
    first = _asset_event(asset, {"resource_ids": ["b", "a"]}, now)
    second = _asset_event(asset, {"resource_ids": ["a"]}, now)
    events = TriggeringAssetEventsAccessor.build([first, second])
    assert published_resources(triggering_asset_events=events) == ["a", "b"]
    empty = TriggeringAssetEventsAccessor.build([_asset_event(asset, {"resource_ids": []}, now)])
    with pytest.raises(ValueError, match="no resource ids"):
        published_resources(triggering_asset_events=empty)
