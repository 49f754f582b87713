"""The parts of the deployment runner that need no deployment: readiness by heartbeats, the
exception of a task log, the DAG bundles setting, the command line's entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deploy.airflow_home import DEFAULT_DAG_BUNDLE, dag_bundles_setting
from deploy.demo import exception_message
from deploy.rest_api import HEARTBEATING_COMPONENTS, components_not_ready

ROOT = Path(__file__).resolve().parents[2]
STARTED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _health(**components: tuple[str | None, datetime | None]) -> dict[str, Any]:
    """A ``/api/v2/monitor/health`` answer (Airflow 3.3's shape)."""
    answer: dict[str, Any] = {"metadatabase": {"status": "healthy"}}
    for name, (status, beat) in components.items():
        answer[name] = {
            "status": status,
            f"latest_{name}_heartbeat": beat.isoformat() if beat else None,
        }
    return answer


def test_ready_once_every_component_heartbeated_since_the_start() -> None:
    later = STARTED + timedelta(seconds=3)
    health = _health(**{name: ("healthy", later) for name in HEARTBEATING_COMPONENTS})
    assert components_not_ready(health, STARTED) == []


def test_not_ready_while_a_component_has_not_heartbeated() -> None:
    later = STARTED + timedelta(seconds=3)
    health = _health(
        scheduler=("healthy", later),
        dag_processor=("unhealthy", None),  # no job yet
        triggerer=(None, None),  # Airflow's answer when no triggerer ever ran
    )
    assert components_not_ready(health, STARTED) == ["dag_processor", "triggerer"]
    assert components_not_ready({"metadatabase": {"status": "healthy"}}, STARTED) == list(
        HEARTBEATING_COMPONENTS
    )


def test_a_heartbeat_of_an_earlier_run_does_not_count() -> None:
    """On a reused AIRFLOW_HOME, a process of the previous run stopped a few seconds ago is
    still healthy by Airflow's threshold: only a heartbeat since this start counts."""
    before = STARTED - timedelta(seconds=5)
    health = _health(**{name: ("healthy", before) for name in HEARTBEATING_COMPONENTS})
    assert components_not_ready(health, STARTED) == list(HEARTBEATING_COMPONENTS)
    assert components_not_ready(health, before) == []


def test_the_exception_of_a_task_log_from_its_structured_entries() -> None:
    """The API's log entries hold a failure's exception in ``error_detail``; a plain line
    ``Type: message`` is the fallback."""
    entries: list[dict[str, Any]] = [
        {"event": "Pulling", "level": "info"},
        {
            "event": "Task failed with exception",
            "level": "error",
            "error_detail": [
                {"exc_type": "ValueError", "exc_value": "an earlier one", "frames": []},
                {"exc_type": "DataConsistencyError", "exc_value": "page 3 does not follow"},
            ],
        },
    ]
    assert exception_message(entries, "DataConsistencyError") == "page 3 does not follow"
    assert exception_message(entries, "KeyError") == ""
    plain = [{"event": "x"}, {"event": "DataConsistencyError: rows repeat\nmore"}]
    assert exception_message(plain, "DataConsistencyError") == "rows repeat"


def test_dag_bundles_setting_keeps_the_dags_folder_and_adds_folders(tmp_path: Path) -> None:
    bundles = json.loads(dag_bundles_setting({"drills": tmp_path}))
    assert bundles == [
        {
            "name": DEFAULT_DAG_BUNDLE,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        {
            "name": "drills",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(tmp_path)},
        },
    ]
    with pytest.raises(ValueError, match="bundle of the DAGs folder"):
        dag_bundles_setting({DEFAULT_DAG_BUNDLE: tmp_path})


def test_the_command_line_entry_point_is_unchanged() -> None:
    """``python -m deploy.local_airflow`` (``make demo`` / ``make airflow``) still offers the
    two commands, and the names other code imports from it are still there."""
    import deploy.local_airflow as entry

    done = subprocess.run(
        [sys.executable, "-m", "deploy.local_airflow", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "{demo,up}" in done.stdout
    for name in entry.__all__:
        assert hasattr(entry, name), name
