"""Deferred pulls into object storage: the worker defers, a *separate process* runs the trigger.

That is what a deployment does: ``execute`` runs in a worker and raises ``TaskDeferred``; the
triggerer, another process (often another machine), rebuilds the ``PullTrigger`` from its JSON
kwargs and runs it; the worker resumes with the event. Here the trigger runs in a child
``python`` process whose only links to this one are its environment (``AIRFLOW_CONN_*`` and the
``AWS_*`` variables of the ``s3_bucket`` fixture) and the trigger's serialised kwargs, and it
writes to ``s3://`` on a local S3 server (moto). A triggerer killed in the middle of a pull is
replaced by another one, which resumes from the checkpoint on S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk.exceptions import TaskDeferred

from echo_connhandler.pull import read_checkpoint, storage_for
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.operators import CceeDatastoreOperator, OnsSinapseExportOperator
from echo_connhandler_provider.triggers import PullTrigger

pytest.importorskip("s3fs")

SEARCH = "/api/3/action/datastore_search"

#: The triggerer's side, in a child process: rebuild the trigger from its JSON, consume its
#: run() in an event loop (as the triggerer does), print the event.
TRIGGERER = """
import asyncio, json, sys
from airflow.sdk.module_loading import import_string

classpath, kwargs = json.loads(sys.argv[1])
trigger = import_string(classpath)(**kwargs)


async def main():
    events = trigger.run()
    try:
        event = await anext(events)
    finally:
        await events.aclose()
    return event.payload


print("EVENT " + json.dumps(asyncio.run(main())), flush=True)
"""


def _context() -> dict[str, Any]:
    return {
        "data_interval_start": pendulum.parse("2024-01-01"),
        "data_interval_end": pendulum.parse("2024-01-03"),
    }


def _defer(op: Any, context: dict[str, Any]) -> str:
    """The worker's side: ``execute`` defers; the trigger's serialisation as JSON text."""
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert isinstance(deferred.trigger, PullTrigger)
    return json.dumps(list(deferred.trigger.serialize()))


def _triggerer(serialised: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", TRIGGERER, serialised],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _event(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=180)
    lines = [line for line in out.splitlines() if line.startswith("EVENT ")]
    assert process.returncode == 0, f"exit {process.returncode}: {err[-3000:]}"
    assert lines, err[-3000:]
    payload: dict[str, Any] = json.loads(lines[-1][len("EVENT ") :])
    return payload


def _env(s3_bucket: Any) -> dict[str, str]:
    """The triggerer's environment: this one (AIRFLOW_HOME, the AIRFLOW_CONN_* of ``conns``)
    and the S3 settings the fixture hands out for other processes."""
    return {**os.environ, **s3_bucket.env}


def _keys(s3: Any, url: str) -> list[str]:
    root = url.removeprefix("s3://").rstrip("/")
    s3.invalidate_cache()
    return sorted(key[len(root) + 1 :] for key in s3.find(root))


def _ccee_op(task_id: str, output: str, *, deferrable: bool, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {
        "conn_id": "ccee_json",
        "dataset": "pld_media_diaria",
        "years": [2023, 2024],
        "page_size": 500,
        **kwargs,
    }
    return CceeDatastoreOperator(task_id=task_id, output=output, deferrable=deferrable, **settings)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_deferred_ccee_pull_writes_to_s3_from_another_process(
    conns: Any, sb: Sandbox, s3_bucket: Any, tmp_path: Path, fmt: str
) -> None:
    context = _context()
    url = f"{s3_bucket.url}/lake/ccee/pld_media_diaria.{fmt}"
    op = _ccee_op("d", url, deferrable=True)
    event = _event(_triggerer(_defer(op, context), _env(s3_bucket)))
    assert event["status"] == "success", event
    summary = op.execute_complete(context, event=event)
    worker_url = f"{s3_bucket.url}/worker/pld_media_diaria.{fmt}"
    worker = _ccee_op("w", worker_url, deferrable=False).execute(context)
    local = _ccee_op("l", str(tmp_path / f"l.{fmt}"), deferrable=False).execute(context)

    assert summary["output"] == url
    assert summary["rows"] == worker["rows"] == local["rows"] == 365 * 4 + 366 * 4
    assert summary["chunks"] == 6
    s3 = s3_bucket.filesystem()
    assert s3.cat_file(url) == s3.cat_file(worker_url) == (tmp_path / f"l.{fmt}").read_bytes()
    assert _keys(s3, s3_bucket.url) == [
        f"lake/ccee/pld_media_diaria.{fmt}",
        f"worker/pld_media_diaria.{fmt}",
    ]


def test_a_deferred_ons_files_pull_writes_to_s3_from_another_process(
    conns: Any, sb: Sandbox, s3_bucket: Any, tmp_path: Path
) -> None:
    context = _context()
    settings: dict[str, Any] = {
        "conn_id": "ons_sinapse_json",
        "start": "2023-11-01",
        "end": "2024-02-01",
        "analitico": True,
    }
    url = f"{s3_bucket.url}/lake/ons/sinapse"
    op = OnsSinapseExportOperator(task_id="d", output=url, deferrable=True, **settings)
    event = _event(_triggerer(_defer(op, context), _env(s3_bucket)))
    assert event["status"] == "success", event
    summary = op.execute_complete(context, event=event)
    local = OnsSinapseExportOperator(
        task_id="l", output=str(tmp_path / "sinapse"), deferrable=False, **settings
    ).execute(context)

    names = [Path(f).name for f in local["files"]]
    assert len(names) == 3
    assert summary["files"] == [f"{url}/{name}" for name in names]
    s3 = s3_bucket.filesystem()
    for name in names:
        assert s3.cat_file(f"{url}/{name}") == (tmp_path / "sinapse" / name).read_bytes()
    assert _keys(s3, s3_bucket.url) == [f"lake/ons/sinapse/{name}" for name in names]


def test_a_killed_triggerer_is_replaced_and_resumes_from_s3(
    conns: Any, sb: Sandbox, s3_bucket: Any, tmp_path: Path
) -> None:
    """The first triggerer is killed (SIGKILL) once a few chunks are on S3; a new one runs the
    same trigger, fetches only the missing chunks, and the output is the uninterrupted file."""
    context = _context()
    url = f"{s3_bucket.url}/lake/ccee/pld.jsonl.gz"
    op = _ccee_op("d", url, deferrable=True, page_size=100, concurrency=2)
    serialised = _defer(op, context)
    sb.faults("ccee").script("datastore_search", delay_s=0.25, times=1_000)  # a slow service
    s3 = s3_bucket.filesystem()
    first = _triggerer(serialised, _env(s3_bucket))
    try:
        done: list[int] = []
        deadline = time.monotonic() + 120
        while len(done) < 4 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
            manifests = [k for k in _keys(s3, s3_bucket.url) if k.endswith("/manifest.json")]
            if manifests:
                folder = f"{s3_bucket.url}/{manifests[0]}".rsplit("/", 1)[0]
                recorded = read_checkpoint(*storage_for(folder))
                done = sorted(recorded["done"]) if recorded else []
    finally:
        first.kill()
        first.communicate()
    assert len(done) >= 4, "the first triggerer did not get four chunks done"
    assert "lake/ccee/pld.jsonl.gz" not in _keys(s3, s3_bucket.url)

    sb.reset()  # the scripted delays go away
    time.sleep(0.3)  # requests the killed process had sent may still reach the server
    before = sb.faults("ccee").stats["requests"].get(SEARCH, 0)
    event = _event(_triggerer(serialised, _env(s3_bucket)))
    fetched = sb.faults("ccee").stats["requests"].get(SEARCH, 0) - before
    assert event["status"] == "success", event
    summary = op.execute_complete(context, event=event)
    assert summary["chunks_resumed"] >= len(done)
    assert fetched == summary["chunks"] - summary["chunks_resumed"]

    local = _ccee_op("l", str(tmp_path / "pld.jsonl.gz"), deferrable=False, page_size=100)
    local.execute(context)
    assert s3.cat_file(url) == (tmp_path / "pld.jsonl.gz").read_bytes()
    assert _keys(s3, s3_bucket.url) == ["lake/ccee/pld.jsonl.gz"]
