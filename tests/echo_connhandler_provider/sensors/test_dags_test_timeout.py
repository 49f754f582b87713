"""Deferrable sensors that are never satisfied end by their ``timeout`` under ``airflow dags
test`` too, the way a user first tries a DAG: the real CLI, in a subprocess, against the sandbox.

That runner executes a trigger inline with no deferral timeout and resumes the task with the
event alone (no ``started_at``): before the triggers carried their deadline, an
``EchoHttpSensor`` with ``timeout=5`` polled 51 times in 60 s and a
``CceeDatasetUpdatedSensor`` ran past 120 s. The deployed path (Airflow's deferral timeout) is
covered by the deployment tests and tests/echo_connhandler_provider/sensors/test_http_sensor.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from echo_connhandler.sandbox import Sandbox

DAG_FILE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from echo_connhandler_provider.sensors import CceeDatasetUpdatedSensor, EchoHttpSensor

    with DAG(
        dag_id="never_satisfied",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
    ):
        EchoHttpSensor(
            task_id="http_sensor",
            conn_id="sandbox_ccee",
            conn_type="ccee",
            endpoint="api/3/action/package_show",
            query={"id": "no_such_dataset"},  # CKAN answers 404: "not yet", forever
            deferrable=True,
            poke_interval=1,
            timeout=4,
        )
        CceeDatasetUpdatedSensor(
            task_id="ccee_sensor",
            conn_id="sandbox_ccee",
            dataset="pld_horario",
            updated_after="2090-01-01T00:00:00",  # no publication is ever that late
            deferrable=True,
            poke_interval=1,
            timeout=4,
        )
    """
)


def _airflow(
    args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def dags_test_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], float]:
    home = tmp_path_factory.mktemp("dags-test-home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "never_satisfied.py").write_text(DAG_FILE, encoding="utf-8")
    with Sandbox() as sb:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW_CONN_SANDBOX_CCEE=json.dumps({"conn_type": "ccee", "host": sb.urls.ccee}),
        )
        migrated = _airflow(["db", "migrate"], env, timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        started = time.monotonic()
        # Before the fix this never ended: the subprocess timeout is the test's own bound.
        result = _airflow(["dags", "test", "never_satisfied"], env, timeout=240)
        return result, time.monotonic() - started


def test_both_sensors_fail_by_their_timeout_under_dags_test(
    dags_test_run: tuple[subprocess.CompletedProcess[str], float],
) -> None:
    result, seconds = dags_test_run
    output = result.stdout + result.stderr
    assert output.count("AirflowSensorTimeout") >= 2, output[-4000:]
    assert "the sensor's timeout has passed" in output
    # Each sensor ends soon after its 4 s (plus Airflow's start-up), not after minutes.
    assert seconds < 120, seconds
    assert "Sensor has timed out" in output
    for task_id in ("http_sensor", "ccee_sensor"):
        assert task_id in output
