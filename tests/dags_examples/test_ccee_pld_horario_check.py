"""``dags_examples/ccee_pld_horario_check.py``: the yearly pull's asset event, then its consumer.

The yearly pull runs (``dag.test()``, deferred) and its outlet's asset event is read back from
the metadata database: its ``extra`` is the pull's summary. The consumer then runs as the
scheduler would start it for that event: ``dag.test()`` creates a manual run, to which the test
attaches the event as consumed (what an asset-triggered run holds), so that the task's
``triggering_asset_events`` has it. It passes on the real file, and fails when the file is
missing or the event says another number of rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import Asset

from echo_connhandler_provider.operators.pull import asset_extra

DAG_ID = "ccee_pld_horario_check"
PRODUCER = "ccee_pld_horario_yearly"
ASSET = Asset(name="ccee_pld_horario_yearly_parquet", uri="x-echo-lake://ccee/pld_horario")


def test_parses_scheduled_on_the_yearly_pulls_asset(load_dag: Any, check_by_id_only: Any) -> None:
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    dag = load_dag(DAG_ID)
    check_by_id_only(dag)
    assert dag.task_ids == ["check_pulled_files"]
    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    (asset,) = dag.timetable.asset_condition.objects
    assert asset == ASSET
    pull = load_dag(PRODUCER).get_task("pull_pld_horario")
    assert pull.outlets == [ASSET]
    assert dag.catchup is False


@pytest.fixture
def consumed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Ids of asset events the next ``dag.test()`` run consumes (set by the test)."""
    from airflow.models import dagrun as dagrun_module
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    ids: list[int] = []
    original = dagrun_module.get_or_create_dagrun

    def with_events(**kwargs: Any) -> Any:
        dr = original(**kwargs)
        session = kwargs["session"]
        events = session.scalars(select(AssetEvent).where(AssetEvent.id.in_(ids))).all()
        dr.consumed_asset_events.extend(events)
        session.commit()
        return dr

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", with_events)
    return ids


def _asset_events(dag_id: str, run_id: str) -> list[Any]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(
                AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id
            )
        ).all()
        return [(e.id, e.asset.name, e.asset.uri, dict(e.extra)) for e in events]


def _event_with(extra: dict[str, Any]) -> int:
    """A new event of the asset with this extra (as another run of the pull would add)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.name == ASSET.name)).one()
        event = AssetEvent(asset_id=asset.id, extra=extra)
        session.add(event)
        session.flush()
        return int(event.id)


def test_checks_the_file_the_pull_produced(
    load_dag: Any,
    run_dag: Any,
    lake: Path,
    consumed: list[int],
    rows_in: Callable[[Path, str], int],
    assert_no_secret: Any,
) -> None:
    producer = run_dag(load_dag(PRODUCER), logical_date=pendulum.datetime(2025, 6, 15, tz="UTC"))
    assert producer.state == "success", producer.states
    summary = producer.xcoms["pull_pld_horario"]
    output = lake / "ccee" / "pld_horario" / "2024.parquet"

    # The pull's asset event, as the Assets view shows it: the summary, plain JSON.
    ((event_id, name, uri, extra),) = _asset_events(PRODUCER, producer.run_id)
    assert (name, uri) == (ASSET.name, ASSET.uri)
    assert extra == asset_extra(summary)
    assert extra["output"] == str(output)
    assert extra["rows"] == rows_in(output, "parquet") == 8784 * 4
    assert extra["bytes"] == output.stat().st_size
    assert set(extra["source_versions"]) == set(extra["source_ids"]) == set(summary["source_ids"])
    assert_no_secret(extra)
    json.dumps(extra)

    consumer = load_dag(DAG_ID)
    consumed[:] = [event_id]
    run = run_dag(consumer)
    assert run.state == "success", run.states
    checked = {
        "output": str(output),
        "rows": 8784 * 4,
        "bytes": output.stat().st_size,
        "resources": summary["source_ids"],
    }
    # As a pull's summary names them: the demo's table shows the file and its rows.
    assert run.xcoms["check_pulled_files"] == {**checked, "format": "parquet", "checked": [checked]}

    # An event that says another row count: the check fails.
    consumed[:] = [_event_with({**extra, "rows": extra["rows"] + 1})]
    assert run_dag(consumer).states == {"check_pulled_files": "failed"}

    # The file gone: the check fails.
    consumed[:] = [event_id]
    output.unlink()
    assert run_dag(consumer).states == {"check_pulled_files": "failed"}
