"""EchoHttpSensor against the sandbox over real sockets: poke, reschedule and deferred modes.

"Not yet" answers and errors come from the sandbox's scripted faults (a 404, a 500 on the next
requests of a path). Deferred runs are driven as Airflow drives them: ``execute`` raises
``TaskDeferred``, the trigger (rebuilt from its serialised kwargs) runs to its event, and
``execute_complete`` gets the event through Airflow's serde.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import HttpStatusError, HttpTransportError
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.sensors import EchoHttpSensor
from echo_connhandler_provider.triggers.http import EchoHttpSensorTrigger

SECRETS = [DEMO_CREDENTIALS["bazefield"]["api_key"], DEMO_CREDENTIALS["bazefield"]["password"]]
PATH = "allocationtypes"


def _sensor(**changes: Any) -> EchoHttpSensor:
    kwargs: dict[str, Any] = {
        "task_id": "wait",
        "conn_id": "echo_http_json",
        "endpoint": "allocationTypes",
        "poke_interval": 0.05,
        "timeout": 60,
        "deferrable": False,
        **changes,
    }
    return EchoHttpSensor(**kwargs)


def _no_secret(value: Any) -> None:
    text = json.dumps(value, default=str)
    for secret in SECRETS:
        assert secret not in text


def _requests(sb: Sandbox) -> int:
    requests = sb.faults("bazefield").stats["requests"]
    return sum(n for path, n in requests.items() if path.endswith(PATH))


async def _run_trigger(deferred: TaskDeferred) -> dict[str, Any]:
    """The deferred trigger, rebuilt from its kwargs as the triggerer does, run to its event."""
    classpath, kwargs = deferred.trigger.serialize()
    _no_secret(kwargs)
    trigger = import_string(classpath)(**deserialize(serialize(kwargs)))
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    payload: dict[str, Any] = deserialize(serialize(events[0].payload))
    _no_secret(payload)
    return payload


# ---------------------------------------------------------------------- arguments


def test_bad_arguments_fail_at_parse_time() -> None:
    with pytest.raises(ValueError, match="conn_type"):
        _sensor(conn_type="ftp")
    with pytest.raises(ValueError, match=r"share \[404\]"):
        _sensor(response_ok=[200, 404])
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        _sensor(max_consecutive_errors=0)
    with pytest.raises(TypeError, match="not_yet_statuses"):
        _sensor(not_yet_statuses="404")
    with pytest.raises(TypeError, match="response_check"):
        _sensor(response_check="ok")
    with pytest.raises(ValueError, match="mode"):
        _sensor(mode="sometimes")


# ---------------------------------------------------------------------- poke mode


def test_not_yet_then_done(sb: Sandbox, conns: Any) -> None:
    """404 answers mean "not yet"; the first 200 ends the wait with a small XCom."""
    sb.faults("bazefield").script(PATH, status=404, times=2)
    result = _sensor().execute({})
    assert _requests(sb) == 3
    assert result["status_code"] == 200
    assert "allocationTypes" in result["body"]
    assert not {k.lower() for k in result["headers"]} & {"set-cookie", "authorization"}
    _no_secret(result)


def test_response_check_decides(sb: Sandbox, conns: Any) -> None:
    """With response_check, an accepted status is "done" only when the check says so."""
    seen: list[int] = []

    def check(response: Any) -> bool:
        seen.append(response.status_code)
        return len(seen) == 3 and "allocationTypes" in response.json()

    result = _sensor(response_check=check).execute({})
    assert seen == [200, 200, 200]
    assert result["status_code"] == 200


def test_consecutive_errors_fail_with_the_last_error(sb: Sandbox, conns: Any) -> None:
    sb.faults("bazefield").script(PATH, status=500, times=50)
    with pytest.raises(HttpStatusError) as caught:
        _sensor(max_consecutive_errors=2).execute({})
    assert caught.value.status_code == 500
    _no_secret(str(caught.value))
    # Each poll is one request plus the connection's one retry (max_retries=1).
    assert _requests(sb) == 4


def test_an_answer_resets_the_error_count(sb: Sandbox, conns: Any) -> None:
    faults = sb.faults("bazefield")
    faults.script(PATH, status=500, times=2)  # one failed poll (with its retry)
    faults.script(PATH, status=404, times=1)  # an answer: not yet
    faults.script(PATH, status=500, times=2)  # another failed poll
    result = _sensor(max_consecutive_errors=2).execute({})
    assert result["status_code"] == 200


def test_transport_errors_count_too(conns: Any, refused_port: int) -> None:
    conns.define(
        "refused",
        {
            "conn_type": "echo_http",
            "host": f"http://127.0.0.1:{refused_port}",
            "extra": {"max_retries": 0, "max_conn_retries": 0, "retry_wait_time": 0},
        },
    )
    with pytest.raises(HttpTransportError):
        _sensor(conn_id="refused", max_consecutive_errors=2).execute({})


@pytest.mark.parametrize(
    ("soft_fail", "raised"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)]
)
def test_timeout_and_soft_fail(
    sb: Sandbox, conns: Any, soft_fail: bool, raised: type[Exception]
) -> None:
    sb.faults("bazefield").script(PATH, status=404, times=50)
    with pytest.raises(raised):
        _sensor(timeout=0, soft_fail=soft_fail).execute({})


# ---------------------------------------------------------------------- reschedule mode


class TaskStateStore:
    """Stands in for ``context["task_state_store"]`` (kept by Airflow across reschedules)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class FirstReschedule:
    """The ``ti`` of a reschedule-mode run: Airflow's first reschedule date."""

    def __init__(self) -> None:
        self.first = datetime.now(UTC)

    def get_first_reschedule_date(self, context: Any) -> datetime:
        return self.first


def test_reschedule_mode_keeps_counting_errors_across_reschedules(sb: Sandbox, conns: Any) -> None:
    """Each reschedule is a new process (a new sensor object): the count is in the store."""
    sb.faults("bazefield").script(PATH, status=500, times=50)
    context = {"ti": FirstReschedule(), "task_state_store": TaskStateStore()}
    with pytest.raises(AirflowRescheduleException):
        _sensor(mode="reschedule", max_consecutive_errors=2).execute(context)
    assert context["task_state_store"].values  # type: ignore[attr-defined]
    with pytest.raises(HttpStatusError):
        _sensor(mode="reschedule", max_consecutive_errors=2).execute(context)


# ---------------------------------------------------------------------- deferred


async def test_deferred_check_runs_in_the_worker_and_defers_again(sb: Sandbox, conns: Any) -> None:
    """The trigger sleeps through "not yet"; the check runs on resume; False defers again,
    waiting one poke_interval first, with the first poke's time carried along."""
    sb.faults("bazefield").script(PATH, status=404, times=2)
    verdicts = iter([False, True])
    seen: list[Any] = []

    def check(response: Any) -> bool:
        seen.append(response.json())
        return next(verdicts)

    sensor = _sensor(deferrable=True, response_check=check, timeout=600)
    with pytest.raises(TaskDeferred) as first:
        sensor.execute({})
    trigger = first.value.trigger
    assert isinstance(trigger, EchoHttpSensorTrigger)
    assert trigger.ship_body is True
    assert trigger.first_delay == 0
    assert first.value.method_name == "execute_complete"
    assert isinstance(first.value.timeout, timedelta)
    assert 0 < first.value.timeout.total_seconds() <= 600
    started_at = first.value.kwargs["started_at"]

    event = await _run_trigger(first.value)
    assert event["status_code"] == 200
    assert _requests(sb) == 3  # two "not yet", then the answer
    with pytest.raises(TaskDeferred) as again:
        sensor.execute_complete({}, event=event, **first.value.kwargs)
    assert again.value.kwargs == {"started_at": started_at}
    assert again.value.trigger.first_delay == sensor.poke_interval  # type: ignore[attr-defined]
    assert again.value.timeout is not None
    assert again.value.timeout <= first.value.timeout

    event = await _run_trigger(again.value)
    result = sensor.execute_complete({}, event=event, **again.value.kwargs)
    assert result["status_code"] == 200
    assert result["body"] == seen[-1]
    assert len(seen) == 2


async def test_deferred_errors_fail_with_the_last_error(sb: Sandbox, conns: Any) -> None:
    sb.faults("bazefield").script(PATH, status=500, times=50)
    sensor = _sensor(deferrable=True, max_consecutive_errors=2)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    event = await _run_trigger(deferred.value)
    assert event["status"] == "error"
    assert event["consecutive_errors"] == 2
    with pytest.raises(HttpStatusError) as caught:
        sensor.execute_complete({}, event=event, **deferred.value.kwargs)
    assert caught.value.status_code == 500


@pytest.mark.parametrize(
    ("soft_fail", "raised"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)]
)
def test_deferred_timeout_counts_from_the_first_poke(
    sb: Sandbox, conns: Any, soft_fail: bool, raised: type[Exception]
) -> None:
    """A check that says no after the timeout (counted from the first poke, not from the
    last deferral) ends the task; Airflow's own trigger timeout too."""
    sensor = _sensor(
        deferrable=True, response_check=lambda r: False, timeout=60, soft_fail=soft_fail
    )
    event = {
        "status": "success",
        "status_code": 200,
        "method": "GET",
        "url": "http://sandbox/allocationTypes",
        "headers": {"content-type": "application/json"},
        "content_type": "application/json",
        "bytes": 2,
        "body": "{}",
    }
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    with pytest.raises(raised):
        sensor.resume_execution("execute_complete", {"event": event, "started_at": long_ago}, {})
    with pytest.raises(raised):
        sensor.resume_execution(
            TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {}
        )


def test_deferred_post_needs_idempotent(conns: Any) -> None:
    with pytest.raises(ValueError, match="idempotent=True"):
        _sensor(deferrable=True, method="POST").execute({})


async def test_credential_headers_are_masked_in_the_xcom(token_server: Any) -> None:
    """As for EchoHttpOperator: a server-issued token in a header is ``***`` in the XCom, in
    poke mode and deferred."""
    kwargs: dict[str, Any] = {"conn_id": token_server.conn_id, "endpoint": "v3/auth/tokens"}
    poked = _sensor(**kwargs).execute({})
    sensor = _sensor(deferrable=True, **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    event = await _run_trigger(deferred.value)
    resumed = sensor.execute_complete({}, event=event, **deferred.value.kwargs)
    for result in (poked, resumed):
        headers = result["headers"]
        for name in token_server.issued:
            assert headers[name.lower()] == "***", name
        assert not {name.lower() for name in token_server.hidden} & set(headers)
        assert headers["x-request-id"] == "req-42"
        text = json.dumps(result)
        for secret in token_server.secrets:
            assert secret not in text
