"""EchoHttpOperator against the Bazefield sandbox over real sockets, deferred and in the worker.

Deferred: ``execute`` raises ``TaskDeferred`` with a ``RequestTrigger``; the trigger is rebuilt
from its serialisation, run to its one event, and ``execute_complete`` gets the payload (through
Airflow's serde). Both ways must return the same result and write the same file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import ApiError, HttpStatusError
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.operators import EchoHttpOperator
from echo_connhandler_provider.triggers import RequestTrigger

API = "BazeField.Services/api"
SECRETS = [
    DEMO_CREDENTIALS["bazefield"]["password"],
    DEMO_CREDENTIALS["bazefield"]["api_key"],
]
CONTEXT: dict[str, Any] = {}
SERIES = {
    "ObjectIds": ["1001"],
    "Points": ["ActivePower"],
    "Aggregates": ["Average"],
    "From": "2024-01-01T00:00:00Z",
    "To": "2024-01-02T00:00:00Z",
    "Interval": "1h",
}


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def _first_event(trigger: RequestTrigger) -> Any:
    events = trigger.run()
    try:
        return await anext(events)
    finally:
        await events.aclose()


def _event(op: EchoHttpOperator) -> dict[str, Any]:
    """Defer, rebuild the trigger from its serialisation, run it; its payload after serde."""
    with pytest.raises(TaskDeferred) as info:
        op.execute(CONTEXT)  # type: ignore[arg-type]
    assert info.value.method_name == "execute_complete"
    assert isinstance(info.value.trigger, RequestTrigger)
    classpath, kwargs = info.value.trigger.serialize()
    assert classpath == "echo_connhandler_provider.triggers.pull.RequestTrigger"
    _no_secret(json.dumps(kwargs))
    trigger = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert trigger.serialize() == (classpath, kwargs)
    event = asyncio.run(_first_event(trigger))
    payload: dict[str, Any] = deserialize(serialize(event.payload))
    _no_secret(json.dumps(payload))
    return payload


def run_deferred(op: EchoHttpOperator) -> Any:
    return op.execute_complete(CONTEXT, event=_event(op))  # type: ignore[arg-type]


def _both(**kwargs: Any) -> tuple[Any, Any]:
    """The operator's result deferred, then in the worker (without the ``date`` header: the two
    requests may fall in different seconds)."""
    deferred = run_deferred(EchoHttpOperator(task_id="d", deferrable=True, **kwargs))
    worker = EchoHttpOperator(task_id="w", deferrable=False, **kwargs).execute(CONTEXT)  # type: ignore[arg-type]
    return _undated(deferred), _undated(worker)


def _undated(result: Any) -> Any:
    if isinstance(result, dict) and isinstance(result.get("headers"), dict):
        result["headers"].pop("date", None)
    return result


def test_get_json_both_ways(conns: Any, sb: Sandbox) -> None:
    """A small JSON body comes back decoded, with the status and the safe headers."""
    deferred, worker = _both(conn_id="echo_http_json", endpoint="allocationTypes")
    assert deferred == worker
    assert deferred["status_code"] == 200
    assert deferred["output"] is None
    assert {"id": 1, "name": "Disponível"} in deferred["body"]["allocationTypes"]
    assert len(deferred["body"]["allocationTypes"]) == 6
    assert deferred["headers"]["content-type"].startswith("application/json")
    assert deferred["bytes"] == len(
        json.dumps(deferred["body"], separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_query_parameters_and_templates(conns: Any, sb: Sandbox) -> None:
    """query goes to the query string; endpoint and query are templated."""
    kwargs: dict[str, Any] = {
        "conn_id": "echo_http_uri",
        "endpoint": f"{API}/objects/{{{{ params.what }}}}",
        "query": {"type": "{{ params.type }}"},
        "params": {"what": "structure", "type": 2},
    }
    context = {"params": {"what": "structure", "type": 2}}
    results = []
    for deferrable in (True, False):
        op = EchoHttpOperator(task_id="t", deferrable=deferrable, **kwargs)
        op.render_template_fields(context)  # type: ignore[arg-type]
        assert op.endpoint == f"{API}/objects/structure"
        assert op.query == {"type": "2"}
        results.append(_undated(run_deferred(op) if deferrable else op.execute(CONTEXT)))  # type: ignore[arg-type]
    assert results[0] == results[1]
    objects = results[0]["body"]["objects"]
    assert len(objects) == 82
    assert {o["objectId"] for o in objects} >= {"1001", "1002"}


def test_post_to_output_both_ways(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """An idempotent POST's body goes to output (atomically); the XCom holds no body."""
    common: dict[str, Any] = {
        "conn_id": "bazefield_key_json",
        "conn_type": "bazefield",
        "method": "POST",
        "endpoint": f"{API}/objects/timeseries/aggregated",
        "json": SERIES,
        "idempotent": True,
    }
    deferred = run_deferred(
        EchoHttpOperator(task_id="d", deferrable=True, output=str(tmp_path / "d.json"), **common)
    )
    worker = EchoHttpOperator(
        task_id="w", deferrable=False, output=str(tmp_path / "w" / "w.json"), **common
    ).execute(CONTEXT)  # type: ignore[arg-type]
    assert deferred["body"] is None
    assert worker["body"] is None
    assert deferred["output"] == str(tmp_path / "d.json")
    assert worker["output"] == str(tmp_path / "w" / "w.json")
    content = (tmp_path / "d.json").read_bytes()
    assert content == (tmp_path / "w" / "w.json").read_bytes()
    assert deferred["bytes"] == worker["bytes"] == len(content)
    series = json.loads(content)["objects"]["1001"]["points"]["ActivePower"][0]
    assert series["aggregate"] == "Average"
    assert len(series["timeSeries"]) == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "w"]  # no temporary file


@pytest.mark.parametrize("method", ["POST", "PATCH", "post"])
def test_non_idempotent_method_is_not_deferred(conns: Any, method: str) -> None:
    """A deferred POST/PATCH without idempotent=True fails before deferring."""
    op = EchoHttpOperator(
        task_id="t", conn_id="echo_http_json", method=method, endpoint="x", deferrable=True
    )
    with pytest.raises(ValueError, match="idempotent=True"):
        op.execute(CONTEXT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idempotent=True"):
        RequestTrigger(
            request={"conn_type": "echo_http", "conn_id": "c", "method": method, "endpoint": "x"}
        )


def test_post_in_the_worker_needs_no_idempotent_flag(conns: Any, sb: Sandbox) -> None:
    """Not deferred, a POST is sent once as the handler's own retry rules say."""
    result = EchoHttpOperator(
        task_id="w",
        conn_id="bazefield_key_json",
        conn_type="bazefield",
        method="POST",
        endpoint=f"{API}/objects/timeseries/aggregated",
        json=SERIES,
        deferrable=False,
    ).execute(CONTEXT)  # type: ignore[arg-type]
    assert result["status_code"] == 200
    assert "1001" in result["body"]["objects"]


def test_response_check_and_filter_both_ways(conns: Any, sb: Sandbox) -> None:
    """Callables run in the worker; deferred, on a response rebuilt from the event."""
    seen: list[httpx.Response] = []

    def check(response: httpx.Response) -> bool:
        seen.append(response)
        return bool(response.json()["allocationTypes"])

    def names(response: httpx.Response) -> list[str]:
        return [t["name"] for t in response.json()["allocationTypes"]]

    deferred, worker = _both(
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        response_check=check,
        response_filter=names,
    )
    assert deferred == worker
    assert "Disponível" in deferred
    assert len(deferred) == 6
    rebuilt, real = seen
    assert rebuilt.status_code == real.status_code == 200
    assert rebuilt.content == real.content
    assert rebuilt.headers["content-type"] == real.headers["content-type"]
    assert rebuilt.request.method == "GET"
    assert str(rebuilt.request.url).endswith("/allocationTypes")


def test_response_check_false_fails_both_ways(conns: Any, sb: Sandbox) -> None:
    """response_check returning False fails the task."""
    for deferrable in (True, False):
        op = EchoHttpOperator(
            task_id="t",
            conn_id="echo_http_json",
            endpoint="allocationTypes",
            response_check=lambda response: response.status_code == 201,
            deferrable=deferrable,
        )
        with pytest.raises(AirflowException, match="Response check returned False"):
            run_deferred(op) if deferrable else op.execute(CONTEXT)  # type: ignore[arg-type]


def test_body_too_large_to_ship_for_callables(conns: Any, sb: Sandbox) -> None:
    """Deferred with a callable, a body over max_body_bytes is a ValueError from the trigger."""
    op = EchoHttpOperator(
        task_id="t",
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        response_filter=lambda response: response.status_code,
        max_body_bytes=10,
        deferrable=True,
    )
    event = _event(op)
    assert event["status"] == "error"
    assert event["error_type"] == "ValueError"
    with pytest.raises(ValueError, match="larger than max_body_bytes"):
        op.execute_complete(CONTEXT, event=event)  # type: ignore[arg-type]


def test_large_body_without_output_is_not_returned(conns: Any, sb: Sandbox) -> None:
    """A body over max_body_bytes stays out of the XCom (set output to keep it)."""
    deferred, worker = _both(
        conn_id="echo_http_json", endpoint="allocationTypes", max_body_bytes=10
    )
    assert deferred == worker
    assert deferred["body"] is None
    assert deferred["bytes"] > 10


def test_status_error_both_ways(conns: Any, sb: Sandbox) -> None:
    """A status outside response_ok fails the task with HttpStatusError, its message and code."""
    kwargs: dict[str, Any] = {"conn_id": "echo_http_json", "endpoint": "allocations/424242"}
    event = _event(EchoHttpOperator(task_id="d", deferrable=True, **kwargs))
    assert event["status"] == "error"
    assert event["error_type"] == "HttpStatusError"
    assert event["status_code"] == 404
    op = EchoHttpOperator(task_id="d", deferrable=True, **kwargs)
    with pytest.raises(HttpStatusError, match="HTTP 404") as resumed:
        op.execute_complete(CONTEXT, event=event)  # type: ignore[arg-type]
    assert resumed.value.status_code == 404
    with pytest.raises(HttpStatusError, match="HTTP 404") as direct:
        EchoHttpOperator(task_id="w", deferrable=False, **kwargs).execute(CONTEXT)  # type: ignore[arg-type]
    assert str(direct.value) == str(resumed.value)


def test_response_ok_accepts_the_status(conns: Any, sb: Sandbox) -> None:
    """With 404 in response_ok the answer is a result, not an error."""
    deferred, worker = _both(
        conn_id="echo_http_json", endpoint="allocations/424242", response_ok=[200, 404]
    )
    assert deferred == worker
    assert deferred["status_code"] == 404
    assert "not found" in json.dumps(deferred["body"]).lower()


def test_api_error_in_http_200_both_ways(conns: Any, sb: Sandbox) -> None:
    """Bazefield's error inside an HTTP 200 is the library's ApiError, deferred or not."""
    kwargs: dict[str, Any] = {
        "conn_id": "bazefield_key_json",
        "conn_type": "bazefield",
        "endpoint": f"{API}/objects/timeseries/aggregated",
        "query": {**SERIES, "ObjectIds": "999999", "Points": "ActivePower"},
    }
    with pytest.raises(ApiError, match="999999"):
        run_deferred(EchoHttpOperator(task_id="d", deferrable=True, **kwargs))
    with pytest.raises(ApiError, match="999999"):
        EchoHttpOperator(task_id="w", deferrable=False, **kwargs).execute(CONTEXT)  # type: ignore[arg-type]


def test_bad_arguments_fail_early(conns: Any) -> None:
    """Unknown conn_type or response_ok fail at parse time; bytes data cannot be deferred."""
    with pytest.raises(ValueError, match="unknown conn_type"):
        EchoHttpOperator(task_id="t", endpoint="x", conn_type="ftp")
    with pytest.raises(TypeError, match="response_ok"):
        EchoHttpOperator(task_id="t", endpoint="x", response_ok="200")  # type: ignore[arg-type]
    op = EchoHttpOperator(
        task_id="t", conn_id="echo_http_json", endpoint="x", data=b"raw", deferrable=True
    )
    with pytest.raises(TypeError, match="bytes"):
        op.execute(CONTEXT)  # type: ignore[arg-type]
    assert set(op.template_fields) >= {"endpoint", "query", "json", "data", "headers"}


def test_credential_headers_are_masked_in_the_xcom_both_ways(token_server: Any) -> None:
    """A server-issued token in a response header (X-Subject-Token, ...) used to be returned
    as is in the XCom; now every credential-carrying header's value is ``***``, cookies and
    challenges are not returned, other headers are kept."""
    common: dict[str, Any] = {
        "conn_id": token_server.conn_id,
        "endpoint": "v3/auth/tokens",
        "method": "POST",
        "json": {"auth": {"identity": {"methods": ["password"]}}},
        "idempotent": True,
        "response_ok": 201,
    }
    deferred, worker = _both(**common)
    assert deferred == worker
    headers = deferred["headers"]
    for name in token_server.issued:
        assert headers[name.lower()] == "***", name
    assert not {name.lower() for name in token_server.hidden} & set(headers)
    for name, value in token_server.plain.items():
        assert headers[name.lower()] == value
    assert deferred["body"] == {"token": {"expires_at": "2099-01-01T00:00:00Z"}}
    for result in (deferred, worker):
        text = json.dumps(result)
        for secret in token_server.secrets:
            assert secret not in text
