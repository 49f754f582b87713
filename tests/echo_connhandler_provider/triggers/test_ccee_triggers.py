"""CceePublicationTrigger and CceeDatasetUpdatedTrigger against the sandbox, over real sockets.

The publication trigger is driven as the triggerer drives an asset watcher: built from its
serialised kwargs, given an ``AssetStateStoreAccessors`` of the watched asset (Airflow's own
class, as ``triggerer_job_runner`` injects it), its ``run()`` iterated. The accessors talk to
a stand-in of the supervisor channel that keeps the values in a dict (the triggerer's
supervisor writes them to the database). New publications come from ``Sandbox.ccee_publish``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import (
    AssetStateStoreResult,
    ErrorResponse,
    GetAssetStateStoreByName,
    OKResponse,
    SetAssetStateStoreByName,
)
from airflow.sdk.execution_time.context import AssetStateStoreAccessors
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

import echo_connhandler
from echo_connhandler import utc_moment
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.triggers import ccee as ccee_module
from echo_connhandler_provider.triggers.ccee import (
    CceeDatasetUpdatedTrigger,
    CceePublicationTrigger,
    publication_key,
)

DATASET = "pld_horario"
ASSET = Asset(name="ccee_pld_horario", uri="ccee://pld_horario")


class StateDatabase:
    """The supervisor side of the asset state store: ``asend``/``send`` of the comms channel."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.writes = 0

    def send(self, msg: Any) -> Any:
        if isinstance(msg, GetAssetStateStoreByName):
            if (msg.name, msg.key) not in self.values:
                return ErrorResponse(error=ErrorType.ASSET_STORE_NOT_FOUND)
            return AssetStateStoreResult(value=self.values[(msg.name, msg.key)])
        if isinstance(msg, SetAssetStateStoreByName):
            self.writes += 1
            self.values[(msg.name, msg.key)] = json.loads(json.dumps(msg.value))
            return OKResponse(ok=True)
        raise AssertionError(f"unexpected message {msg!r}")

    async def asend(self, msg: Any) -> Any:
        return self.send(msg)


class Log:
    """A trigger's logger that keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)

    info = warning = error = _keep

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Log:
    recorder = Log()
    monkeypatch.setattr(CceePublicationTrigger, "log", recorder)
    monkeypatch.setattr(CceeDatasetUpdatedTrigger, "log", recorder)
    return recorder


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> StateDatabase:
    database = StateDatabase()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", database, raising=False)
    monkeypatch.setattr(ccee_module, "COMMIT_DELAY_S", 0.0)
    return database


def _watcher(conns: Any, **changes: Any) -> CceePublicationTrigger:
    """A trigger as the triggerer builds it: from serialised kwargs, with the asset's store."""
    trigger = CceePublicationTrigger(
        dataset=DATASET, conn_id="ccee_json", poke_interval=0.05, **changes
    )
    classpath, kwargs = trigger.serialize()
    rebuilt: CceePublicationTrigger = import_string(classpath)(**deserialize(serialize(kwargs)))
    rebuilt.asset_state_store = AssetStateStoreAccessors(inlets=[ASSET])
    return rebuilt


def _package_shows(sb: Sandbox) -> int:
    requests = sb.faults("ccee").stats["requests"]
    return sum(n for path, n in requests.items() if path.endswith("/package_show"))


async def _pending_after_polls(
    gen: AsyncIterator[TriggerEvent], sb: Sandbox, polls: int
) -> asyncio.Future[TriggerEvent]:
    """The trigger's next event, still pending after ``polls`` more polls."""
    start = _package_shows(sb)
    task = asyncio.ensure_future(anext(gen))
    while _package_shows(sb) < start + polls:
        assert not task.done(), f"fired without a new publication: {task.result()}"
        await asyncio.sleep(0.01)
    assert not task.done(), f"fired without a new publication: {task.result()}"
    return task


async def _polls_without_event(gen: AsyncIterator[TriggerEvent], sb: Sandbox, polls: int) -> None:
    """Let the trigger poll ``polls`` more times; it must not fire meanwhile; then stop it."""
    task = await _pending_after_polls(gen, sb, polls)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _newest(sb: Sandbox) -> str:
    """The newest last_modified of the dataset now (publishing nothing)."""
    import httpx

    with httpx.Client(base_url=sb.urls.ccee, headers={"User-Agent": "Mozilla/5.0"}) as client:
        client.get("/")
        result = client.get("/api/3/action/package_show", params={"id": DATASET}).json()
    return max(r["last_modified"] for r in result["result"]["resources"])


def test_is_an_event_trigger_with_stable_plain_kwargs() -> None:
    """JSON kwargs without a watermark (they are the watcher's identity) and a stable hash."""
    trigger = CceePublicationTrigger(dataset=DATASET, conn_id="ccee_json", year="2025")
    assert isinstance(trigger, BaseEventTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "echo_connhandler_provider.triggers.ccee.CceePublicationTrigger"
    assert kwargs == {
        "dataset": DATASET,
        "conn_id": "ccee_json",
        "year": 2025,
        "poke_interval": 300.0,
        "updated_after": None,
    }
    again = CceePublicationTrigger(**kwargs)
    assert BaseEventTrigger.hash(*again.serialize()) == BaseEventTrigger.hash(classpath, kwargs)
    with pytest.raises(ValueError, match="poke_interval"):
        CceePublicationTrigger(dataset=DATASET, poke_interval=0)
    with pytest.raises(ValueError, match="dataset"):
        CceePublicationTrigger(dataset=" ")
    with pytest.raises(ValueError, match="year"):
        CceePublicationTrigger(dataset=DATASET, year="next")


async def test_one_event_per_publication_and_none_after_a_restart(
    sb: Sandbox, conns: Any, state: StateDatabase
) -> None:
    """Polls of one publication give no event; a new one gives exactly one; a restarted
    trigger (same kwargs, the stored watermark) does not fire again for it."""
    key = (ASSET.name, publication_key(DATASET, None))
    first = _watcher(conns)
    gen = first.run()
    # The first polls only record the current publication as the starting point.
    await _polls_without_event(gen, sb, polls=3)
    assert utc_moment(state.values[key], "time") == utc_moment(_newest(sb), "time")

    published = sb.ccee_publish(DATASET)[DATASET]
    gen = first.run()  # the same trigger object, restarted (its in-memory state is gone)
    event = await asyncio.wait_for(anext(gen), timeout=30)
    payload = deserialize(serialize(event.payload))
    assert payload["dataset"] == DATASET
    assert utc_moment(payload["last_modified"], "time") == utc_moment(published, "time")
    assert [r["name"] for r in payload["resources"]] == ["PLD_HORARIO_2025"]
    assert payload["resource_ids"] == [payload["resources"][0]["id"]]
    assert utc_moment(payload["previous"], "time") < utc_moment(published, "time")
    # The same generator goes on polling: the watermark is stored, no second event.
    await _polls_without_event(gen, sb, polls=3)
    assert utc_moment(state.values[key], "time") == utc_moment(published, "time")

    # A triggerer restart: a new trigger from the same kwargs, the same stored state.
    restarted = _watcher(conns)
    await _polls_without_event(restarted.run(), sb, polls=3)

    # One more publication: exactly one more event.
    again = sb.ccee_publish(DATASET)[DATASET]
    gen = restarted.run()
    event = await asyncio.wait_for(anext(gen), timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(again, "time")
    assert utc_moment(event.payload["previous"], "time") == utc_moment(published, "time")
    await _polls_without_event(gen, sb, polls=2)


async def test_updated_after_fires_for_the_current_publication(
    sb: Sandbox, conns: Any, state: StateDatabase
) -> None:
    """With updated_after before the current publication and no stored watermark, the first
    poll fires; one year's resource only with year=."""
    trigger = _watcher(conns, updated_after="2024-06-01", year=2024)
    gen = trigger.run()
    event = await asyncio.wait_for(anext(gen), timeout=30)
    assert [r["year"] for r in event.payload["resources"]] == [2024]
    assert event.payload["previous"] == "2024-06-01T00:00:00+00:00"
    await _polls_without_event(gen, sb, polls=2)
    stored = state.values[(ASSET.name, publication_key(DATASET, 2024))]
    assert stored == event.payload["last_modified"]


async def test_poll_errors_are_logged_and_polling_goes_on(
    sb: Sandbox, conns: Any, state: StateDatabase, log: Log
) -> None:
    """A failing poll is no event and no crash; the next publication still fires once."""
    trigger = _watcher(conns)
    await _polls_without_event(trigger.run(), sb, polls=2)  # the starting point is stored
    sb.faults("ccee").script("package_show", status=500, times=6)
    published = sb.ccee_publish(DATASET)[DATASET]
    event = await asyncio.wait_for(anext(_watcher(conns).run()), timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(published, "time")
    assert "pld_horario failed (1 consecutive errors)" in log.text
    assert sb.faults("ccee").stats["faults"]["error"] == 6


async def test_without_a_state_store_it_keeps_memory_only(
    sb: Sandbox, conns: Any, log: Log
) -> None:
    """Outside a watcher (no asset_state_store) it still fires once per publication."""
    trigger = CceePublicationTrigger(dataset=DATASET, conn_id="ccee_json", poke_interval=0.05)
    pending = await _pending_after_polls(trigger.run(), sb, polls=2)
    assert "no asset state store" in log.text
    published = sb.ccee_publish(DATASET)[DATASET]
    event = await asyncio.wait_for(pending, timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(published, "time")
    # A restart forgets it and starts from the current publication: no event.
    await _polls_without_event(trigger.run(), sb, polls=2)


# ---------------------------------------------------------------------- the sensor's trigger


def _updated_trigger(**changes: Any) -> CceeDatasetUpdatedTrigger:
    polling_keys = {"poke_interval", "max_consecutive_errors", "started_at", "deadline"}
    polling = {"poke_interval": 0.05, **{k: v for k, v in changes.items() if k in polling_keys}}
    kwargs: dict[str, Any] = {
        "conn_id": "ccee_json",
        "dataset": DATASET,
        "updated_after": "2024-06-01T00:00:00",
        "polling": polling,
        **{k: v for k, v in changes.items() if k not in polling_keys},
    }
    trigger = CceeDatasetUpdatedTrigger(**kwargs)
    classpath, serialised = trigger.serialize()
    text = json.dumps(serialised)
    for secret in DEMO_CREDENTIALS["bazefield"].values():
        assert secret not in text
    rebuilt: CceeDatasetUpdatedTrigger = import_string(classpath)(**json.loads(text))
    assert rebuilt.serialize() == (classpath, serialised)
    return rebuilt


async def test_dataset_updated_trigger_fires_with_the_newer_resources(
    sb: Sandbox, conns: Any
) -> None:
    trigger = _updated_trigger()
    assert trigger.updated_after == "2024-06-01T00:00:00+00:00"  # naive means UTC
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    payload = deserialize(serialize(events[0].payload))
    assert payload["status"] == "success"
    found = payload["publication"]
    assert [r["year"] for r in found["resources"]] == [2024, 2025]  # 2024's is 2025-01-15
    assert found["updated_after"] == "2024-06-01T00:00:00+00:00"


async def test_dataset_updated_trigger_waits_for_a_publication(sb: Sandbox, conns: Any) -> None:
    after = datetime.now(UTC).isoformat()
    gen = _updated_trigger(updated_after=after, year=2025).run()
    await _polls_without_event(gen, sb, polls=2)
    published = sb.ccee_publish(DATASET)[DATASET]
    gen = _updated_trigger(updated_after=after, year=2025).run()
    event = await asyncio.wait_for(anext(gen), timeout=30)
    assert utc_moment(event.payload["publication"]["last_modified"], "time") == utc_moment(
        published, "time"
    )


async def test_dataset_updated_trigger_gives_up_after_consecutive_errors(
    sb: Sandbox, conns: Any
) -> None:
    trigger = _updated_trigger(dataset="no_such_dataset", max_consecutive_errors=2)
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    assert events[0].payload["status"] == "error"
    assert events[0].payload["error_type"] == "ApiError"
    assert events[0].payload["consecutive_errors"] == 2
    assert "Not Found" in events[0].payload["message"]


# ------------------------------------------------------- a last_modified that is not a real one


def _package_body(sb: Sandbox, year: int, last_modified: Any) -> str:
    """The dataset's package_show answer now, with ``year``'s resource dated ``last_modified``
    (a scripted body: the emulator answers it as is)."""
    import httpx

    with httpx.Client(base_url=sb.urls.ccee, headers={"User-Agent": "Mozilla/5.0"}) as client:
        client.get("/")
        answer = client.get("/api/3/action/package_show", params={"id": DATASET}).json()
    changed = [r for r in answer["result"]["resources"] if str(year) in r["name"]]
    assert len(changed) == 1
    changed[0]["last_modified"] = last_modified
    return json.dumps(answer)


@pytest.mark.parametrize("bogus", ["yesterday", 20250115, "2025-02-30T00:00:00"])
async def test_a_last_modified_that_is_not_a_date_is_logged_and_skipped(
    sb: Sandbox, conns: Any, state: StateDatabase, log: Log, bogus: Any
) -> None:
    """The doc says poll errors are logged and polling goes on: a value that is not a date
    used to end the trigger with a ValueError. Now it is a warning naming the resource and
    the value, and the next real publication fires once."""
    key = (ASSET.name, publication_key(DATASET, None))
    trigger = _watcher(conns)
    await _polls_without_event(trigger.run(), sb, polls=2)  # the starting point is stored
    before = state.values[key]
    resource_id = _resource_id(sb, 2025)
    sb.faults("ccee").script("package_show", body=_package_body(sb, 2025, bogus), times=3)
    gen = trigger.run()
    pending = await _pending_after_polls(gen, sb, polls=3)
    assert state.values[key] == before
    assert f"Resource PLD_HORARIO_2025 ({resource_id}): last_modified {bogus!r} is " in log.text
    assert "is not a date" in log.text
    published = sb.ccee_publish(DATASET)[DATASET]
    event = await asyncio.wait_for(pending, timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(published, "time")
    assert utc_moment(event.payload["previous"], "time") == utc_moment(before, "time")
    await _polls_without_event(gen, sb, polls=1)


async def test_a_future_last_modified_never_becomes_the_watermark(
    sb: Sandbox, conns: Any, state: StateDatabase, log: Log
) -> None:
    """A bogus future value (2099) used to fire an event and become the watermark, hiding
    every real publication until 2099. Now it is ignored (logged) and the next real
    publication fires once."""
    key = (ASSET.name, publication_key(DATASET, None))
    trigger = _watcher(conns)
    await _polls_without_event(trigger.run(), sb, polls=2)
    before = state.values[key]
    future = "2099-01-01T00:00:00.000000"
    sb.faults("ccee").script("package_show", body=_package_body(sb, 2025, future), times=3)
    gen = trigger.run()
    pending = await _pending_after_polls(gen, sb, polls=3)
    assert state.values[key] == before
    assert f"last_modified {future!r} is more than 1:00:00 in the future" in log.text
    published = sb.ccee_publish(DATASET)[DATASET]
    event = await asyncio.wait_for(pending, timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(published, "time")
    await _polls_without_event(gen, sb, polls=1)
    assert utc_moment(state.values[key], "time") == utc_moment(published, "time")


async def test_a_future_value_within_the_tolerance_is_a_publication(
    sb: Sandbox, conns: Any, state: StateDatabase, log: Log
) -> None:
    """Clock skew: a last_modified a little ahead of our clock (within FUTURE_TOLERANCE) is a
    real publication."""
    trigger = _watcher(conns)
    await _polls_without_event(trigger.run(), sb, polls=2)
    ahead = datetime.now(UTC) + echo_connhandler.FUTURE_TOLERANCE / 2
    naive = ahead.replace(tzinfo=None).isoformat(timespec="microseconds")
    sb.faults("ccee").script("package_show", body=_package_body(sb, 2025, naive), times=1)
    event = await asyncio.wait_for(anext(trigger.run()), timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(naive, "time")
    assert "in the future" not in log.text


async def test_a_stored_future_watermark_is_ignored(
    sb: Sandbox, conns: Any, state: StateDatabase, log: Log
) -> None:
    """A watermark stored from a bogus future value (before they were ignored) would hide
    every publication: it is ignored, and the current publication is the starting point."""
    key = (ASSET.name, publication_key(DATASET, None))
    state.values[key] = "2099-01-01T00:00:00+00:00"
    trigger = _watcher(conns)
    await _polls_without_event(trigger.run(), sb, polls=2)
    assert utc_moment(state.values[key], "time") == utc_moment(_newest(sb), "time")
    assert f"Stored {key[1]} '2099-01-01T00:00:00+00:00' is more than" in log.text
    published = sb.ccee_publish(DATASET)[DATASET]
    event = await asyncio.wait_for(anext(trigger.run()), timeout=30)
    assert utc_moment(event.payload["last_modified"], "time") == utc_moment(published, "time")


async def test_dataset_updated_trigger_ignores_bogus_values(
    sb: Sandbox, conns: Any, log: Log
) -> None:
    """The sensor's trigger neither dies on a non-date nor fires on a future value; it fires
    on the real publication that follows."""
    after = datetime.now(UTC).isoformat()
    bodies = [
        _package_body(sb, 2025, "not a date"),
        _package_body(sb, 2025, "2099-01-01T00:00:00.000000"),
    ]
    for body in bodies:
        sb.faults("ccee").script("package_show", body=body, times=2)
    gen = _updated_trigger(updated_after=after).run()
    pending = await _pending_after_polls(gen, sb, polls=4)
    assert "'not a date' is not a date" in log.text
    assert "'2099-01-01T00:00:00.000000' is more than 1:00:00 in the future" in log.text
    published = sb.ccee_publish(DATASET)[DATASET]
    event = await asyncio.wait_for(pending, timeout=30)
    assert event.payload["status"] == "success"
    found = event.payload["publication"]
    assert utc_moment(found["last_modified"], "time") == utc_moment(published, "time")
    assert [r["name"] for r in found["resources"]] == ["PLD_HORARIO_2025"]


def _resource_id(sb: Sandbox, year: int) -> str:
    import httpx

    with httpx.Client(base_url=sb.urls.ccee, headers={"User-Agent": "Mozilla/5.0"}) as client:
        client.get("/")
        answer = client.get("/api/3/action/package_show", params={"id": DATASET}).json()
    (found,) = [r["id"] for r in answer["result"]["resources"] if str(year) in r["name"]]
    return str(found)
