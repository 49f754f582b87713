"""A POST that is not idempotent is never sent twice, deferred or not; one that is idempotent
may be, and is, after a triggerer restart.

The POST is Bazefield's ``objects/timeseries/aggregated`` through an ``echo_http`` connection:
the generic handler knows nothing of that endpoint, so the POST is not idempotent unless the
task says so (``idempotent=True``). The sandbox counts the requests it received per path (faulted
ones included), which is what "sent" means here: a 500 or a dropped connection is injected
*after* the request reached the server, so the server may have acted on it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import HttpStatusError, HttpTransportError
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.operators import EchoHttpOperator
from echo_connhandler_provider.triggers import RequestTrigger

API = "BazeField.Services/api"
ENDPOINT = "objects/timeseries/aggregated"
PATH = f"/{API}/{ENDPOINT}".lower()
SERIES = {
    "ObjectIds": ["1001"],
    "Points": ["ActivePower"],
    "Aggregates": ["Average"],
    "From": "2024-01-01T00:00:00Z",
    "To": "2024-01-02T00:00:00Z",
    "Interval": "1h",
}
CONTEXT: dict[str, Any] = {}


@pytest.fixture
def conn_id(sb: Sandbox, define_conn: Callable[[str, dict[str, Any]], str]) -> str:
    """An ``echo_http`` connection on the Bazefield API, with every default retry (no wait)."""
    return define_conn(
        "post_api",
        {
            "conn_type": "echo_http",
            "host": f"{sb.urls.bazefield}/{API}",
            "extra": {
                "api_key": DEMO_CREDENTIALS["bazefield"]["api_key"],
                "headers": {"Accept": "application/json"},
                "retry_wait_time": 0,
                "exponential_min_retry_wait_time": 0,
            },
        },
    )


def _sent(sb: Sandbox) -> int:
    """POSTs of the series that reached the server (answered, faulted or dropped)."""
    return int(sb.faults("bazefield").stats["requests"].get(PATH, 0))


def _post(conn_id: str, **kwargs: Any) -> EchoHttpOperator:
    return EchoHttpOperator(
        task_id="post",
        conn_id=conn_id,
        method="POST",
        endpoint=ENDPOINT,
        json=SERIES,
        **kwargs,
    )


async def _events(trigger: RequestTrigger) -> list[dict[str, Any]]:
    return [deserialize(serialize(event.payload)) async for event in trigger.run()]


def _restarted(trigger: RequestTrigger) -> RequestTrigger:
    """The trigger as a triggerer rebuilds it after a restart: from its stored serialisation."""
    classpath, kwargs = trigger.serialize()
    stored = deserialize(serialize(json.loads(json.dumps(kwargs))))
    rebuilt = import_string(classpath)(**stored)
    assert isinstance(rebuilt, RequestTrigger)
    return rebuilt


def test_an_idempotent_post_is_sent_again_by_a_restarted_trigger(sb: Sandbox, conn_id: str) -> None:
    """idempotent=True: the operator defers; the trigger, run, then rebuilt from serialize()
    and run again (the triggerer restarted before the task resumed), sends the POST again and
    gets the same answer."""
    with pytest.raises(TaskDeferred) as info:
        _post(conn_id, idempotent=True, deferrable=True).execute(CONTEXT)  # type: ignore[arg-type]
    trigger = info.value.trigger
    assert isinstance(trigger, RequestTrigger)
    assert trigger.serialize()[1]["request"]["idempotent"] is True

    first = asyncio.run(_events(_restarted(trigger)))
    second = asyncio.run(_events(_restarted(trigger)))  # after the "restart"
    assert [e["status"] for e in first + second] == ["success", "success"]
    assert first[0]["body"] == second[0]["body"]
    assert "1001" in json.loads(first[0]["body"])["objects"]
    assert _sent(sb) == 2


def test_an_idempotent_post_from_a_trigger_is_retried_after_a_500(
    sb: Sandbox, conn_id: str
) -> None:
    """What idempotent=True allows: a 500 after sending is retried, by the trigger too."""
    sb.faults("bazefield").script(ENDPOINT, status=500)
    trigger = RequestTrigger(
        request={
            "conn_type": "echo_http",
            "conn_id": conn_id,
            "method": "POST",
            "endpoint": ENDPOINT,
            "request_kwargs": {"json": SERIES},
            "idempotent": True,
        }
    )
    events = asyncio.run(_events(_restarted(trigger)))
    assert [e["status"] for e in events] == ["success"]
    assert _sent(sb) == 2


@pytest.mark.parametrize("idempotent", [None, False])
def test_a_post_that_is_not_idempotent_is_never_deferred(
    sb: Sandbox, conn_id: str, idempotent: bool | None
) -> None:
    """The operator refuses to defer it, before anything is sent; no trigger can be built for
    it, neither new nor from a stored serialisation whose flag was lost or changed."""
    with pytest.raises(ValueError, match=r"deferred POST needs idempotent=True"):
        _post(conn_id, idempotent=idempotent, deferrable=True).execute(CONTEXT)  # type: ignore[arg-type]
    assert _sent(sb) == 0

    stored = RequestTrigger(
        request={
            "conn_type": "echo_http",
            "conn_id": conn_id,
            "method": "POST",
            "endpoint": ENDPOINT,
            "request_kwargs": {"json": SERIES},
            "idempotent": True,
        }
    ).serialize()[1]
    tampered = {**stored, "request": {**stored["request"], "idempotent": idempotent}}
    with pytest.raises(ValueError, match=r"a deferred POST needs idempotent=True"):
        RequestTrigger(**tampered)
    assert _sent(sb) == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 500}, HttpStatusError),
        ({"status": 502}, HttpStatusError),
        ({"status": 504}, HttpStatusError),
        ({"drop": True}, HttpTransportError),
        ({"truncate": True}, HttpTransportError),
    ],
    ids=["500", "502", "504", "dropped", "truncated"],
)
def test_a_post_in_the_worker_is_not_replayed_after_sending(
    sb: Sandbox, conn_id: str, fault: dict[str, Any], error: type[Exception]
) -> None:
    """Not deferred and not idempotent: a failure after the request reached the server fails
    the task after exactly one request, although the connection allows 8 retries."""
    sb.faults("bazefield").script(ENDPOINT, times=5, **fault)
    with pytest.raises(error):
        _post(conn_id, deferrable=False).execute(CONTEXT)  # type: ignore[arg-type]
    assert _sent(sb) == 1


def test_a_post_in_the_worker_is_replayed_when_the_server_did_not_act(
    sb: Sandbox, conn_id: str
) -> None:
    """The counterpart: 503 and 429 say the server did not act, so the POST is sent again."""
    faults = sb.faults("bazefield")
    faults.script(ENDPOINT, status=503)
    faults.script(ENDPOINT, retry_after=0)
    result = _post(conn_id, deferrable=False).execute(CONTEXT)  # type: ignore[arg-type]
    assert result["status_code"] == 200
    assert _sent(sb) == 3
