"""PullTrigger and RequestTrigger driven directly, against the sandbox over real sockets.

Serialisation (plain JSON, no secret, same trigger after a round trip through Airflow's serde),
one event per run, success and error payloads, the handler closed in every case, progress in
the trigger's log, and a second run (a triggerer restart) giving the same file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import (
    ApiError,
    DataConsistencyError,
    HttpStatusError,
    WafBlockedError,
    register_secret,
)
from echo_connhandler.pull import UnknownFieldError
from echo_connhandler.pull._checkpoint import Checkpoint
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider import _jobs as trigger_module
from echo_connhandler_provider._jobs import (
    error_payload,
    rebuild_error,
)
from echo_connhandler_provider.hooks import CceeHook
from echo_connhandler_provider.triggers import PullTrigger, RequestTrigger

SECRETS = [
    DEMO_CREDENTIALS["bazefield"]["password"],
    DEMO_CREDENTIALS["bazefield"]["api_key"],
    DEMO_CREDENTIALS["ons"]["password"],
]


def _no_secret(value: Any) -> None:
    text = json.dumps(value)
    for secret in SECRETS:
        assert secret not in text


async def _only_event(trigger: Any) -> dict[str, Any]:
    """The trigger's one event (it must end right after it), through Airflow's serde."""
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    payload: dict[str, Any] = deserialize(serialize(events[0].payload))
    _no_secret(payload)
    return payload


async def _finish(event: dict[str, Any], output: Any, **kwargs: Any) -> Any:
    """What the resumed task does with a success event: finish the pull, in the worker."""
    assert event["status"] == "success", event
    assert event["summary"]["stage"] == "fetched"
    return await trigger_module.run_pull_job(
        conn_id=kwargs.pop("conn_id", "ccee_json"),
        source=event["source"],
        arguments=event["arguments"],
        output=str(output),
        where="worker",
        **kwargs,
    )


def _ccee_trigger(output: Any, **changes: Any) -> PullTrigger:
    kwargs: dict[str, Any] = {
        "conn_id": "ccee_json",
        "source": "ccee_datastore",
        "arguments": {"dataset": "pld_media_diaria", "years": [2024], "page_size": 400},
        "output": str(output),
        **changes,
    }
    return PullTrigger(**kwargs)


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The conn_ids whose hook was closed (aclose) by a trigger."""
    calls: list[str] = []

    class Recording(CceeHook):
        async def aclose(self) -> None:
            calls.append(self.conn_id)
            await super().aclose()

    monkeypatch.setitem(trigger_module.HOOKS, "ccee", Recording)
    return calls


def test_pull_trigger_serialization_round_trip(tmp_path: Path) -> None:
    """serialize() gives the class path and plain JSON kwargs; the rebuilt trigger is equal."""
    trigger = PullTrigger(
        conn_id="bazefield_json",
        source="bazefield_timeseries",
        arguments={
            "objects": ("1001", "1002"),
            "points": ["ActivePower"],
            "aggregates": ["Average"],
            "start": datetime(2024, 1, 1, tzinfo=UTC),
            "end": "2024-01-02T00:00:00Z",
            "window": timedelta(hours=6),
        },
        output=str(tmp_path / "out.parquet"),
        format="parquet",
        concurrency=3,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "echo_connhandler_provider.triggers.pull.PullTrigger"
    assert kwargs == {
        "conn_id": "bazefield_json",
        "source": "bazefield_timeseries",
        "arguments": {
            "objects": ["1001", "1002"],
            "points": ["ActivePower"],
            "aggregates": ["Average"],
            "start": "2024-01-01T00:00:00+00:00",
            "end": "2024-01-02T00:00:00Z",
            "window": 21600.0,
        },
        "output": str(tmp_path / "out.parquet"),
        "format": "parquet",
        "concurrency": 3,
        "progress_every": 5.0,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs
    _no_secret(kwargs)
    stored = deserialize(serialize(kwargs))
    rebuilt = import_string(classpath)(**stored)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_request_trigger_serialization_round_trip(tmp_path: Path) -> None:
    """The same for RequestTrigger: ranges and sets of statuses become sorted lists."""
    trigger = RequestTrigger(
        request={
            "conn_type": "echo_http",
            "conn_id": "echo_http_json",
            "method": "put",
            "endpoint": "things/1",
            "request_kwargs": {"json": {"a": (1, 2)}, "params": {"x": 1}, "headers": None},
            "response_ok": range(200, 205),
        },
        output=str(tmp_path / "body.bin"),
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "echo_connhandler_provider.triggers.pull.RequestTrigger"
    assert kwargs["request"]["method"] == "PUT"
    assert kwargs["request"]["request_kwargs"] == {"json": {"a": [1, 2]}, "params": {"x": 1}}
    assert kwargs["request"]["response_ok"] == [200, 201, 202, 203, 204]
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_trigger_arguments_are_checked(tmp_path: Path) -> None:
    """Unknown types and sources, objects as output, non-JSON values are refused at once."""
    with pytest.raises(ValueError, match="pull source"):
        _ccee_trigger(tmp_path / "x", source="nope")
    with pytest.raises(TypeError, match="string path or URL"):
        PullTrigger(
            conn_id="ccee_json",
            source="ccee_datastore",
            arguments={},
            output=tmp_path / "x",  # type: ignore[arg-type]
        )
    with pytest.raises(TypeError, match="no plain JSON value"):
        _ccee_trigger(tmp_path / "x", arguments={"dataset": object()})
    with pytest.raises(ValueError, match="finite"):
        _ccee_trigger(tmp_path / "x", arguments={"page_size": float("nan")})


async def test_pull_trigger_success_event(
    conns: Any, sb: Sandbox, tmp_path: Path, closed: list[str]
) -> None:
    """One success event: every page fetched as delivered (nothing decoded in the triggerer),
    the pull's source and arguments; the hook closed. The resumed task writes the year's rows."""
    output = tmp_path / "pld.jsonl"
    event = await _only_event(_ccee_trigger(output))
    assert event["status"] == "success"
    assert event["source"] == "ccee_datastore"
    assert event["arguments"] == {"dataset": "pld_media_diaria", "years": [2024], "page_size": 400}
    fetched = event["summary"]
    assert fetched["stage"] == "fetched"
    assert fetched["chunks"] == 4  # 1464 rows in pages of 400
    assert fetched["rows"] == 0  # counted when decoded, in the worker
    assert fetched["bytes"] > 0
    assert [p["where"] for p in fetched["phases"]] == ["triggerer"]
    assert not output.exists()
    assert closed == ["ccee_json"]
    searches = sb.faults("ccee").stats["requests"].get("/api/3/action/datastore_search", 0)
    summary = await _finish(event, output)
    assert sb.faults("ccee").stats["requests"].get("/api/3/action/datastore_search", 0) == (
        searches
    )
    assert summary["rows"] == 366 * 4
    assert summary["output"] == str(output)
    assert summary["chunks_resumed"] == 0
    assert [(p["phase"], p["where"]) for p in summary["phases"]] == [
        ("decode", "worker"),
        ("assemble", "worker"),
    ]
    lines = output.read_text("utf-8").splitlines()
    assert len(lines) == 366 * 4
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert (first["_id"], first["DIA"], first["SUBMERCADO"]) == (1, "2024-01-01", "SUDESTE")
    assert (last["_id"], last["DIA"], last["SUBMERCADO"]) == (1464, "2024-12-31", "NORTE")


async def test_a_second_run_gives_the_same_file(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """A triggerer restart runs the trigger again: same summary counts, same bytes."""
    output = tmp_path / "pld.csv.gz"
    first = await _finish(await _only_event(_ccee_trigger(output, format="csv.gz")), output)
    content = output.read_bytes()
    second = await _finish(await _only_event(_ccee_trigger(output, format="csv.gz")), output)
    assert first["rows"] == second["rows"] == 366 * 4
    assert output.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pld.csv.gz"]


async def test_pull_trigger_error_event_and_hook_closed(
    conns: Any, sb: Sandbox, tmp_path: Path, closed: list[str]
) -> None:
    """A missing year: an error event with the library's type and message; hook closed."""
    output = tmp_path / "pld.jsonl"
    trigger = _ccee_trigger(output, arguments={"dataset": "pld_media_diaria", "years": [1990]})
    event = await _only_event(trigger)
    assert event == {
        "status": "error",
        "error_type": "ValueError",
        "message": event["message"],
    }
    assert "no datastore resource for 1990" in event["message"]
    assert not output.exists()
    assert closed == ["ccee_json"]
    error = rebuild_error(event)
    assert type(error) is ValueError
    assert str(error) == event["message"]


@pytest.mark.parametrize(
    ("kind", "options", "match"),
    [
        ("ignore_offset", {}, "does not follow the page before it"),
        ("drop_column", {"after": 1}, "lacks 'PLD_MEDIA_DIA'"),
    ],
)
async def test_a_misbehaving_server_fails_the_pull_where_pages_are_decoded(
    conns: Any, sb: Sandbox, tmp_path: Path, kind: str, options: dict[str, Any], match: str
) -> None:
    """The triggerer only moves bytes; the integrity checks run where the pages are decoded,
    in the resumed task: a typed error, no output."""
    sb.faults("ccee").misbehave(kind, **options)
    output = tmp_path / "pld.parquet"
    event = await _only_event(_ccee_trigger(output))
    with pytest.raises(DataConsistencyError, match=match):
        await _finish(event, output)
    assert not output.exists()


async def test_a_republication_while_the_triggerer_fetched_is_pulled_again_by_the_task(
    conns: Any, sb: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The resource changed while the triggerer fetched: the task sees another version than
    the one planned and pulls afresh, so the output holds one version, never a mix."""
    sb.faults("ccee").misbehave("republish", after=2)
    output = tmp_path / "pld.jsonl"
    event = await _only_event(_ccee_trigger(output))
    sb.faults("ccee").behave()
    with caplog.at_level("WARNING", logger="echo_connhandler.pull"):
        summary = await _finish(event, output)
    assert "starting this pull afresh" in caplog.text
    assert summary["phases"][0] == {**summary["phases"][0], "phase": "fetch", "chunks": 4}
    reference = tmp_path / "reference.jsonl"
    await _finish(await _only_event(_ccee_trigger(reference)), reference)
    assert output.read_bytes() == reference.read_bytes()


async def test_a_bazefield_gap_fails_the_pull_unless_accepted(
    conns: Any, sb: Sandbox, tmp_path: Path
) -> None:
    """A Bazefield object missing from one window: an error by default (when the pages are
    decoded, in the resumed task); accepted with max_missing_steps, the count reaches the
    summary."""
    sb.faults("bazefield").misbehave("drop_object", object="1002", at="2024-01-01T09:00:00Z")
    kwargs = {
        "objects": ["1001", "1002"],
        "points": ["ActivePower"],
        "aggregates": ["Average"],
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-02T00:00:00Z",
        "interval": "10m",
        "window": 4 * 3600,
    }

    def trigger(output: Path, **extra: Any) -> PullTrigger:
        return PullTrigger(
            conn_id="bazefield_json",
            source="bazefield_timeseries",
            arguments={**kwargs, **extra},
            output=str(output),
        )

    strict = tmp_path / "strict.jsonl"
    event = await _only_event(trigger(strict))
    with pytest.raises(
        DataConsistencyError,
        match="object 1002 point ActivePower aggregate Average has 0 of the 24 steps",
    ):
        await _finish(event, strict, conn_id="bazefield_json")
    assert not strict.exists()
    ok = tmp_path / "ok.jsonl"
    accepted = await _finish(
        await _only_event(trigger(ok, max_missing_steps=24)), ok, conn_id="bazefield_json"
    )
    assert accepted["tolerated"] == {"missing_steps": 24}
    assert accepted["rows"] == 2 * 144 - 24


async def test_missing_connection_is_an_airflow_not_found_error(conns: Any, tmp_path: Path) -> None:
    """An unknown conn_id fails as Airflow's own not-found error, raised again on resume."""
    event = await _only_event(_ccee_trigger(tmp_path / "x.jsonl", conn_id="no_such_conn"))
    assert event["status"] == "error"
    assert event["error_type"] == "AirflowNotFoundException"
    assert isinstance(rebuild_error(event), AirflowNotFoundException)


async def test_waf_block_is_the_library_error(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """The CCEE WAF blocking every request: WafBlockedError, rebuilt with its status code."""
    sb.faults("ccee").configure(waf_block_rate=1.0)
    event = await _only_event(_ccee_trigger(tmp_path / "x.jsonl"))
    assert event["error_type"] == "WafBlockedError"
    error = rebuild_error(event)
    assert isinstance(error, WafBlockedError)
    assert error.status_code == event["status_code"]
    assert error.response is None


async def test_progress_goes_to_the_trigger_log(
    conns: Any, sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress lines are written through the trigger's own logger."""
    lines: list[str] = []

    class Log:
        def info(self, message: str, *args: Any) -> None:
            lines.append(message % args)

        def error(self, message: str, *args: Any) -> None:
            lines.append(message % args)

    trigger = _ccee_trigger(tmp_path / "x.jsonl", progress_every=0)
    monkeypatch.setattr(PullTrigger, "log", Log())
    event = await _only_event(trigger)
    assert event["status"] == "success"
    progress = [line for line in lines if "as delivered, " in line and "/4 chunks" in line]
    assert len(progress) == 4  # one per chunk with progress_every=0
    assert progress[-1].startswith("CCEE pld_media_diaria: 4/4 chunks, ")
    assert lines[1].startswith("CCEE pld_media_diaria: planning the pull into ")
    assert lines[2].startswith("CCEE pld_media_diaria: 4 chunks planned, ")
    # What was done once, the source named one way
    assert lines[-1].startswith("CCEE pld_media_diaria: every chunk fetched (4 pages kept")
    assert not [line for line in lines if "ccee_datastore" in line]


async def test_progress_lines_are_throttled(
    conns: Any, sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first chunk's progress line at once, then at most one per interval (the engine's
    one throttle): with an interval of an hour, one line for four chunks."""
    lines: list[str] = []

    class Log:
        def info(self, message: str, *args: Any) -> None:
            lines.append(message % args)

        warning = error = info

    monkeypatch.setattr(PullTrigger, "log", Log())
    event = await _only_event(_ccee_trigger(tmp_path / "x.jsonl", progress_every=3600))
    assert event["status"] == "success"
    assert [line for line in lines if "/4 chunks" in line] == [
        next(line for line in lines if "1/4 chunks" in line)
    ]


async def test_request_trigger_events(conns: Any, sb: Sandbox, tmp_path: Path) -> None:
    """One success event with a small description; an HTTP error as an error event."""
    ok = await _only_event(
        RequestTrigger(
            request={
                "conn_type": "echo_http",
                "conn_id": "echo_http_json",
                "method": "GET",
                "endpoint": "allocationTypes",
            }
        )
    )
    assert ok["status"] == "success"
    assert ok["status_code"] == 200
    assert "Disponível" in ok["body"]
    assert "content_b64" not in ok
    assert not {"set-cookie", "authorization"} & {k.lower() for k in ok["headers"]}
    failed = await _only_event(
        RequestTrigger(
            request={
                "conn_type": "echo_http",
                "conn_id": "echo_http_json",
                "method": "GET",
                "endpoint": "allocations/31337",
            }
        )
    )
    assert failed["error_type"] == "HttpStatusError"
    assert failed["status_code"] == 404
    assert isinstance(rebuild_error(failed), HttpStatusError)


def test_error_payload_redacts_registered_secrets() -> None:
    """A secret the library knows never reaches an event, even inside a foreign message."""
    secret = "trigger-test-secret-4711"
    register_secret(secret, ephemeral=True)
    payload = error_payload(RuntimeError(f"boom with {secret} inside"))
    assert secret not in json.dumps(payload)
    assert payload["message"].startswith("boom with ")


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("ApiError", ApiError),
        ("HttpStatusError", HttpStatusError),
        ("DataConsistencyError", DataConsistencyError),
        ("UnknownFieldError", UnknownFieldError),
        ("ValueError", ValueError),
        ("FileNotFoundError", FileNotFoundError),
        ("AirflowNotFoundException", AirflowNotFoundException),
    ],
)
def test_rebuild_error_types(error_type: str, expected: type[Exception]) -> None:
    """Known names give their class with the message; the library's without a response."""
    error = rebuild_error({"status": "error", "error_type": error_type, "message": "the text"})
    assert type(error) is expected
    assert str(error) == "the text" or error.args == ("the text",)


@pytest.mark.parametrize("error_type", ["SystemExit", "KeyboardInterrupt", "os.system", "Nope"])
def test_rebuild_error_refuses_other_names(error_type: str) -> None:
    """Anything else (builtins outside the list, dotted names, unknown) is a RuntimeError."""
    error = rebuild_error({"status": "error", "error_type": error_type, "message": "m"})
    assert type(error) is RuntimeError
    assert str(error) == f"{error_type}: m"


async def test_a_trigger_cancelled_mid_pull_resumes_with_the_missing_chunks(
    conns: Any, sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The triggerer stops a trigger half-way (its task is cancelled, as on a restart or a
    failover); the next run fetches only the chunks not yet finished and writes the same file
    as an uninterrupted run."""
    import asyncio

    output = tmp_path / "pld.jsonl"
    searches = "/api/3/action/datastore_search"
    done = asyncio.Event()

    original = Checkpoint.record

    def watching(self: Checkpoint, record: Any) -> None:
        original(self, record)
        if len(self.done) >= 3:
            done.set()

    monkeypatch.setattr(Checkpoint, "record", watching)
    first = asyncio.ensure_future(_only_event(_ccee_trigger(output, concurrency=1)))
    await asyncio.wait_for(done.wait(), 30)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    monkeypatch.setattr(Checkpoint, "record", original)
    assert not output.exists()
    await asyncio.sleep(0.3)  # a request cancelled in flight may still reach the server
    before = sb.faults("ccee").stats["requests"].get(searches, 0)
    resumed = await _only_event(_ccee_trigger(output, concurrency=1))
    fetched = sb.faults("ccee").stats["requests"].get(searches, 0) - before
    assert resumed["status"] == "success", resumed
    summary = resumed["summary"]
    assert summary["chunks_resumed"] >= 3
    assert fetched == summary["chunks"] - summary["chunks_resumed"]
    await _finish(resumed, output)

    clean = tmp_path / "clean" / "pld.jsonl"
    clean.parent.mkdir()
    await _finish(await _only_event(_ccee_trigger(clean, concurrency=1)), clean)
    assert output.read_bytes() == clean.read_bytes()


async def test_a_request_event_stored_by_airflow_masks_issued_tokens(token_server: Any) -> None:
    """A request trigger's event is stored in Airflow's database: a token the server issued in
    a response header (X-Subject-Token, ...) is masked there already, not only in the XCom."""
    trigger = RequestTrigger(
        request={
            "conn_type": "echo_http",
            "conn_id": token_server.conn_id,
            "method": "POST",
            "endpoint": "v3/auth/tokens",
            "request_kwargs": {"json": {"auth": {}}},
            "response_ok": 201,
            "idempotent": True,
        }
    )
    event = await _only_event(trigger)
    assert event["status"] == "success"
    for name in token_server.issued:
        assert event["headers"][name.lower()] == "***", name
    text = json.dumps(event)
    for secret in token_server.secrets:
        assert secret not in text


def test_a_request_trigger_refuses_a_method_that_is_not_a_token() -> None:
    with pytest.raises(ValueError, match=r"method must be an HTTP method token .* got ' POST'"):
        RequestTrigger(
            request={"conn_type": "echo_http", "conn_id": "x", "method": " POST", "endpoint": "a"}
        )
