"""CceeDatasetUpdatedSensor against the sandbox: updated_after (templated, default the data
interval's end), the XCom a downstream pull can use, waiting for a publication, deferral."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import ApiError, utc_moment
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.sensors import CceeDatasetUpdatedSensor
from echo_connhandler_provider.triggers.ccee import CceeDatasetUpdatedTrigger

DATASET = "pld_horario"


def _sensor(**changes: Any) -> CceeDatasetUpdatedSensor:
    kwargs: dict[str, Any] = {
        "task_id": "wait",
        "conn_id": "ccee_json",
        "dataset": DATASET,
        "poke_interval": 0.05,
        "timeout": 60,
        "deferrable": False,
        **changes,
    }
    return CceeDatasetUpdatedSensor(**kwargs)


def _package_shows(sb: Sandbox) -> int:
    requests = sb.faults("ccee").stats["requests"]
    return sum(n for path, n in requests.items() if path.endswith("/package_show"))


def test_bad_arguments_fail_at_parse_time() -> None:
    with pytest.raises(ValueError, match="dataset"):
        _sensor(dataset="")
    with pytest.raises(ValueError, match="year"):
        _sensor(year=2024.5)
    with pytest.raises(TypeError, match="updated_after"):
        _sensor(updated_after=1700000000)


def test_done_at_once_with_the_resources_found(sb: Sandbox, conns: Any) -> None:
    """Resources modified after updated_after (a naive time: UTC), oldest year first."""
    result = _sensor(updated_after="2024-06-01T00:00:00").execute({})
    assert result["dataset"] == DATASET
    assert result["updated_after"] == "2024-06-01T00:00:00+00:00"
    assert [r["year"] for r in result["resources"]] == [2024, 2025]
    assert result["resource_ids"] == [r["id"] for r in result["resources"]]
    assert result["last_modified"] == result["resources"][-1]["last_modified"]


def test_updated_after_defaults_to_the_data_interval_end_and_is_templated(
    sb: Sandbox, conns: Any
) -> None:
    with DAG("ccee_wait", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
        default = _sensor(year="{{ data_interval_end.year - 1 }}")
        templated = _sensor(task_id="templated", updated_after="{{ data_interval_start }}")
    end = pendulum.datetime(2025, 1, 10, 3, tz="America/Sao_Paulo")
    context: dict[str, Any] = {
        "data_interval_start": end.subtract(days=1),
        "data_interval_end": end,
    }
    default.render_template_fields(context)  # type: ignore[arg-type]
    templated.render_template_fields(context)  # type: ignore[arg-type]
    assert default.year == "2024"
    result = default.execute(context)  # type: ignore[arg-type]
    assert [r["year"] for r in result["resources"]] == [2024]
    assert utc_moment(result["updated_after"], "time") == end
    assert isinstance(templated.updated_after, str)
    assert utc_moment(templated.execute(context)["updated_after"], "time") == end.subtract(days=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give updated_after"):
        _sensor().execute({})


def test_waits_for_a_publication(sb: Sandbox, conns: Any) -> None:
    """Not updated yet: it polls until the sandbox publishes, then returns that publication."""
    start = _package_shows(sb)
    published: dict[str, str] = {}

    def publish_after_two_polls() -> None:
        while _package_shows(sb) < start + 2:
            threading.Event().wait(0.01)
        published.update(sb.ccee_publish(DATASET))

    thread = threading.Thread(target=publish_after_two_polls, daemon=True)
    thread.start()
    result = _sensor(year=2025, updated_after=datetime.now(UTC)).execute({})
    thread.join(10)
    assert utc_moment(result["last_modified"], "time") == utc_moment(published[DATASET], "time")
    assert _package_shows(sb) >= start + 3


def test_unknown_dataset_fails_after_consecutive_errors(sb: Sandbox, conns: Any) -> None:
    with pytest.raises(ApiError, match="Not Found"):
        _sensor(dataset="no_such_dataset", updated_after="2024-01-01").execute({})
    assert _package_shows(sb) == 3  # max_consecutive_errors=3, CKAN errors are not retried


async def test_deferred(sb: Sandbox, conns: Any) -> None:
    sensor = _sensor(deferrable=True, updated_after="2024-06-01", year=2025)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, CceeDatasetUpdatedTrigger)
    classpath, kwargs = trigger.serialize()
    assert kwargs["updated_after"] == "2024-06-01T00:00:00+00:00"
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    events = [event async for event in rebuilt.run()]
    assert len(events) == 1
    event = deserialize(serialize(events[0].payload))
    result = sensor.execute_complete({}, event=event, **deferred.value.kwargs)
    assert [r["year"] for r in result["resources"]] == [2025]

    error = {"status": "error", "error_type": "ApiError", "message": "CKAN Not Found Error"}
    with pytest.raises(ApiError, match="Not Found"):
        sensor.execute_complete({}, event=error, **deferred.value.kwargs)


class _Log:
    """A logger that keeps the lines (the sensor's ``log``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append(message % args if args else message)

    debug = info = warning = error = exception = _keep

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _package_body(sb: Sandbox, year: int, last_modified: Any) -> str:
    """The dataset's package_show answer now, with ``year``'s resource dated ``last_modified``."""
    import json

    import httpx

    with httpx.Client(base_url=sb.urls.ccee, headers={"User-Agent": "Mozilla/5.0"}) as client:
        client.get("/")
        answer = client.get("/api/3/action/package_show", params={"id": DATASET}).json()
    (changed,) = [r for r in answer["result"]["resources"] if str(year) in r["name"]]
    changed["last_modified"] = last_modified
    return json.dumps(answer)


@pytest.mark.parametrize("bogus", ["not a date", "2099-01-01T00:00:00.000000"])
def test_a_bogus_last_modified_is_logged_and_never_done(
    sb: Sandbox, conns: Any, monkeypatch: pytest.MonkeyPatch, bogus: str
) -> None:
    """A non-date used to fail the poke with a ValueError, a far future value to end the wait
    at once with it; both are now a warning and "not yet", and the real publication that
    follows ends the wait."""
    log = _Log()
    monkeypatch.setattr(CceeDatasetUpdatedSensor, "log", log)
    sensor = _sensor(updated_after=datetime.now(UTC))
    sb.faults("ccee").script("package_show", body=_package_body(sb, 2025, bogus), times=1)
    try:
        assert sensor.poke({}) is False
        assert "Resource PLD_HORARIO_2025 (" in log.text
        assert f"last_modified {bogus!r} is " in log.text
        assert sensor.poke({}) is False  # the real answer: not updated yet
        published = sb.ccee_publish(DATASET)[DATASET]
        done = sensor.poke({})
    finally:
        if sensor._hook is not None:
            sensor._hook.close()
    assert not isinstance(done, bool)
    assert done.is_done
    found = done.xcom_value
    assert utc_moment(found["last_modified"], "time") == utc_moment(published, "time")
    assert [r["name"] for r in found["resources"]] == ["PLD_HORARIO_2025"]
