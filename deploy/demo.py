"""The demo: what the runner knows of the example DAGs (``dags_examples/``).

``demo``: every example DAG run once on a fresh start of the deployment (the asset-scheduled ones
by their asset's event: a CCEE publication, once the sensor waits in the triggerer and the
watcher watches, or the yearly pull's outlet),
the integrity drill (the yearly CCEE pull against a CCEE that ignores ``offset``: it must fail
and write nothing), what the UI shows of the provider and the connections, the table of the
runs, and the secret scan of everything the deployment left. ``up``: the same stack left running
with its UI.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.airflow_home import ADMIN_USER, DAGS_FOLDER, DEFAULT_DAG_BUNDLE
from deploy.deployment import RUN_TIMEOUT_S, Deployment, say
from echo_connhandler.sandbox import SandboxConfig
from echo_connhandler_provider import DOCS_PATH

__all__ = [
    "LOG_MARKS",
    "TABLE_WIDTH",
    "TaskRow",
    "dag_file_count",
    "demo",
    "exception_message",
    "format_table",
    "integrity_drill",
    "is_asset_scheduled",
    "run_demo",
    "up",
]

#: The integrity drill: this DAG's pull of this year against a misbehaving CCEE must fail.
DRILL_DAG = "ccee_pld_horario_yearly"
DRILL_YEAR = 2022
#: The sensor of ``ccee_wait_then_pull`` that waits for a CCEE publication in the triggerer.
PUBLICATION_SENSOR = "CceeDatasetUpdatedSensor"
#: The prefix of the keys ``ccee_on_publication``'s asset watcher keeps in the asset's state
#: store (its starting point: the publication it saw first).
WATCHER_STATE_PREFIX = "echo_connhandler."
#: Lines the demo counts in the deployment's logs (its report's ``log_marks``): PyJWT's warning
#: of a too short secret, and Airflow's remark on a connection type with ``_`` (``echo_http``;
#: the URI form ``echo-http://`` is read back as ``echo_http``, so the remark is harmless; it is
#: logged whenever Airflow turns such a connection into a URI, e.g. by the connection test).
LOG_MARKS = ("InsecureKeyLengthWarning", "shall not contain '_'")
#: The demo's table fits a terminal this wide.
TABLE_WIDTH = 120


# -- the example DAGs ----------------------------------------------------------------------------
def is_asset_scheduled(dag: Mapping[str, Any]) -> bool:
    """Whether a DAG (as the REST API describes it) runs on asset events."""
    return (
        bool(dag.get("asset_expression"))
        or "asset" in str(dag.get("timetable_summary") or "").lower()
    )


def dag_file_count(folder: Path = DAGS_FOLDER) -> int:
    """The DAG files of a folder (one DAG each)."""
    return len([p for p in folder.glob("*.py") if not p.name.startswith("_")])


def publication_sensor_waits(deployment: Deployment) -> bool:
    """Whether the publication sensor is deferred (waits in the triggerer)."""
    deferred = deployment.task_instances(
        "~", "~", state="deferred", operator=PUBLICATION_SENSOR, limit=1
    )
    return bool(deferred)


def watcher_ready(deployment: Deployment) -> bool:
    """Whether an asset watcher of the provider has its starting point (a key in its asset's
    state store)."""
    assets = deployment.api.call("GET", "assets", params={"limit": 100}).get("assets", [])
    for asset in assets:
        if not asset.get("watchers"):
            continue
        store = deployment.api.call("GET", f"assets/{asset['id']}/state-store")
        entries = store.get("asset_state_store") or []
        if any(str(e.get("key", "")).startswith(WATCHER_STATE_PREFIX) for e in entries):
            return True
    return False


def publish_when_watched(deployment: Deployment, timeout: float = 150.0) -> None:
    """Republish CCEE's ``pld_horario`` in the sandbox once a sensor waits for it in the
    triggerer and the asset watcher has its starting point (a first publication before
    that would pass the sensor at once, or be the watcher's starting point)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.processes.check_alive()
        if publication_sensor_waits(deployment) and watcher_ready(deployment):
            break
        time.sleep(1.0)
    else:
        say("  (no sensor deferred or no watcher ready in time: publishing anyway)")
    published = deployment.sandbox.ccee_publish("pld_horario")
    say(f"sandbox: CCEE republished pld_horario ({published})")


# -- the report ----------------------------------------------------------------------------------
@dataclass
class TaskRow:
    """One line of the demo's table: a task of an example DAG's run."""

    dag_id: str
    task_id: str
    state: str
    deferred: bool
    rows: int | None
    files: int | None
    output: str | None
    seconds: float | None
    run_id: str


def task_rows(deployment: Deployment, run: Mapping[str, Any]) -> list[TaskRow]:
    """The table's lines of a finished run: each task's state, deferral (the audit log), and
    what its summary (the ``return_value`` XCom) says it wrote."""
    dag_id, run_id = run["dag_id"], run["dag_run_id"]
    rows = []
    tis = deployment.task_instances(dag_id, run_id)
    for ti in sorted(tis, key=lambda t: (t.get("start_date") or "", t["task_id"])):
        value = deployment.xcom(dag_id, run_id, ti["task_id"])
        summary = value if isinstance(value, dict) else {}
        rows.append(
            TaskRow(
                dag_id=dag_id,
                task_id=ti["task_id"],
                state=str(ti["state"]),
                deferred=deployment.deferred(dag_id, run_id, ti["task_id"]),
                rows=summary.get("rows") if summary.get("format") not in (None, "files") else None,
                files=len(summary["files"]) if summary.get("format") == "files" else None,
                output=summary.get("output") if isinstance(summary.get("output"), str) else None,
                seconds=ti.get("duration"),
                run_id=run_id,
            )
        )
    return rows


def _shorten(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` characters (a path's end is what tells)."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def format_table(rows: Sequence[TaskRow], data_lake: str = "", width: int = TABLE_WIDTH) -> str:
    """The demo's table, at most ``width`` characters wide: a line per DAG, its tasks indented
    under it; outputs relative to ``data_lake`` (printed under the table), cut from the left
    if still too long."""
    header = ("DAG / task", "state", "deferred", "rows/files", "output", "s")
    prefix = data_lake.rstrip("/") + "/" if data_lake else ""
    lines = [
        [
            f"  {r.task_id}",
            r.state,
            "yes" if r.deferred else "no",
            f"{r.rows:,}" if r.rows is not None else f"{r.files} files" if r.files else "",
            (r.output or "").removeprefix(prefix),
            "" if r.seconds is None else f"{r.seconds:.0f}",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    output_column = header.index("output")
    others = sum(widths) - widths[output_column] + 2 * (len(widths) - 1)
    widths[output_column] = max(len("output"), min(widths[output_column], width - others))
    for line in lines:
        line[output_column] = _shorten(line[output_column], widths[output_column])

    def joined(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [joined(header), "  ".join("-" * w for w in widths)]
    dag_id = None
    for row, line in zip(rows, lines, strict=True):
        if row.dag_id != dag_id:
            dag_id = row.dag_id
            out.append(_shorten(dag_id, width))
        out.append(joined(line))
    return "\n".join(out)


# -- the integrity drill and the UI ---------------------------------------------------------------
def exception_message(entries: Sequence[Mapping[str, Any]], exc_type: str) -> str:
    """The message of the first ``exc_type`` exception of a task log (the API's structured
    entries: Airflow puts a failure's exception in the entry's ``error_detail``); else of the
    first ``<exc_type>: <message>`` in an entry's text."""
    for entry in entries:
        for detail in entry.get("error_detail") or []:
            if isinstance(detail, Mapping) and str(detail.get("exc_type", "")) == exc_type:
                return str(detail.get("exc_value") or "")
    pattern = re.compile(rf"\b{re.escape(exc_type)}: ([^\n]*)")
    for entry in entries:
        found = pattern.search(str(entry.get("event", "")))
        if found:
            return found.group(1)
    return ""


def integrity_drill(
    deployment: Deployment,
    dag_id: str = DRILL_DAG,
    year: int = DRILL_YEAR,
    timeout: float = RUN_TIMEOUT_S,
) -> dict[str, Any]:
    """The yearly CCEE pull against a CCEE that ignores ``offset`` (a cache in front of CKAN;
    the sandbox misbehaving on purpose, docs/sandbox.md, "Misbehaviour"): its first try must
    fail with ``DataConsistencyError`` and leave nothing at the output's name. The run is then
    marked failed (its retries would fail the same way)."""
    faults = deployment.sandbox.faults("ccee")
    faults.misbehave("ignore_offset")
    run_id = f"integrity_drill__{int(time.time())}"
    task_id = ""
    try:
        deployment.api.call(
            "POST",
            f"dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": {"year": year}},
        )
        deadline = time.monotonic() + timeout
        state = ""
        while state not in ("up_for_retry", "failed", "success"):
            deployment.processes.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the integrity drill's run did not end in {timeout:.0f} s")
            time.sleep(1.0)
            tis = deployment.task_instances(dag_id, run_id) or [{}]
            state = str(tis[0].get("state") or "")
            task_id = str(tis[0].get("task_id") or "")
        deployment.api.call("PATCH", f"dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
    finally:
        faults.behave("ignore_offset")
    log = deployment.task_log(dag_id, run_id, task_id, try_number=1) if task_id else []
    error = exception_message(log, "DataConsistencyError")
    # Through the lake's own storage: a local folder, or S3 in the scale-out mode.
    storage, output = deployment.lake(f"ccee/pld_horario/{year}.parquet")
    folder, name = storage.parent(output), output.rsplit("/", 1)[-1]
    written = storage.exists(output)
    # The failed pull kept its checkpoint for a retry; the drill's run is over: clean up.
    checkpoints = [n for n in storage.list_names(folder) if n.startswith(f"{name}.parts-")]
    for checkpoint in checkpoints:
        storage.remove_tree(storage.join(folder, checkpoint))
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "error": error[:300],
        "output_written": written,
        "checkpoint_kept": bool(checkpoints),
        "ok": state in ("up_for_retry", "failed")
        and "does not follow the page before it" in error
        and not written,
    }


def ui_checks(deployment: Deployment) -> dict[str, Any]:
    """What the UI shows of the provider and the connections, read through the REST API while
    the deployment runs: the Test button of every connection (the UI's own request body), each
    stored connection, the provider's entry of the Providers page, and the Assets view's events
    (name, URI, extra, the task that produced each and the DAG runs it started)."""
    api = deployment.api
    providers = api.call("GET", "providers", params={"limit": 100}).get("providers", [])
    connections = api.call("GET", "connections", params={"limit": 100})
    docs = api.client.get(DOCS_PATH)
    # The Assets view's events of this start (an AIRFLOW_HOME is reused), with their extra (a
    # pull's summary), as the UI reads them. No source task: an asset watcher's event.
    since = datetime.fromtimestamp(deployment.started_at, UTC).isoformat()
    events = api.call(
        "GET",
        "assets/events",
        params={"limit": 100, "order_by": "timestamp", "timestamp_gte": since},
    )
    return {
        "asset_events": [
            {k: e.get(k) for k in ("name", "uri", "extra", "source_dag_id", "source_task_id")}
            | {"created_dagruns": [r.get("dag_id") for r in e.get("created_dagruns") or []]}
            for e in events.get("asset_events", [])
        ],
        "docs": {"path": DOCS_PATH, "status_code": docs.status_code, "text": docs.text[:2000]},
        "connection_tests": api.test_as_the_ui_does(),
        "connections": {c["connection_id"]: c for c in connections.get("connections", [])},
        "provider": next(
            (p for p in providers if p["package_name"] == "echo-connhandler-provider"), None
        ),
    }


# -- the commands --------------------------------------------------------------------------------
def run_demo(
    deployment: Deployment,
    report_path: Path | None = None,
    *,
    while_running: Callable[[Deployment], None] | None = None,
) -> int:
    """The main job on ``deployment`` (not started yet; stopped on return). Returns the exit
    code: 0 when every run succeeded, the drill failed as it must, every Test button passed and
    the scan is clean.

    ``while_running`` is called with the deployment still running once the demo is done with
    it (its DAGs paused again), before the stop and the scan: the restart drills of the tests
    run there, on the same deployment, and the scan covers them too.
    """
    t0 = time.monotonic()
    rows: list[TaskRow] = []
    with deployment:
        dags = deployment.wait_for_dags(
            dag_file_count(deployment.dags_folder), bundle=DEFAULT_DAG_BUNDLE
        )
        wanted: dict[str, str | None] = {}
        # Asset-scheduled DAGs are switched on first: an asset event queues a run only for the
        # DAGs not paused then (ccee_pld_horario_check runs on the yearly pull started below).
        for dag in sorted(dags, key=lambda d: (not is_asset_scheduled(d), d["dag_id"])):
            if is_asset_scheduled(dag):
                # Runs on its asset's next event (a CCEE publication its watcher sees, or the
                # yearly pull's outlet): the first new run.
                deployment.api.call("PATCH", f"dags/{dag['dag_id']}", json={"is_paused": False})
                wanted[dag["dag_id"]] = None
            else:
                wanted[dag["dag_id"]] = deployment.start_run(dag["dag_id"])
        # CCEE publishes once the sensor waits in the triggerer and the watcher watches: both
        # DAGs react to the same publication, as they would to the real one.
        publish_when_watched(deployment)
        say(f"started {len(wanted)} DAGs; waiting for their runs")
        finished = deployment.wait_for_runs(wanted)
        for run in finished.values():
            rows += task_rows(deployment, run)
        say("integrity drill: the yearly CCEE pull, the sandbox ignoring offset on purpose")
        drill = integrity_drill(deployment)
        ui = ui_checks(deployment)
        listening = deployment.listening()
        deployment.pause(wanted)
        warnings = deployment.blocked_loop_warnings()
        if while_running is not None:
            while_running(deployment)
    scan = deployment.scan()
    log_marks = deployment.log_lines(*LOG_MARKS)
    tests = ui["connection_tests"]
    tests_ok = sorted(c for c, t in tests.items() if (t["body"] or {}).get("status") is True)
    ok = (
        all(r.state == "success" for r in rows)
        and drill["ok"]
        and not scan.leaks
        and not scan.unread
        and len(tests_ok) == len(tests) > 0
    )
    say("")
    say(format_table(rows, deployment.data_lake))
    say("")
    say(f"Test button of the connections (the UI's request): {len(tests_ok)} of {len(tests)} ok")
    for conn_id, test in sorted(tests.items()):
        if conn_id not in tests_ok:
            say(f"  {conn_id}: {test['status_code']} {json.dumps(test['body'])[:200]}")
    for event in ui["asset_events"]:
        extra, started = event["extra"] or {}, ", ".join(event["created_dagruns"])
        source = (
            f"{event['source_dag_id']}.{event['source_task_id']}"
            if event["source_task_id"]
            else "its watcher"
        )
        say(
            f"asset event {event['name']}: from {source}"
            + (f" ({extra['rows']:,} rows)" if isinstance(extra.get("rows"), int) else "")
            + (f", started {started}" if started else "")
        )
    say(
        "integrity drill (CCEE ignoring offset): "
        + (
            "the pull failed as it must, nothing written"
            if drill["ok"]
            else f"NOT AS EXPECTED: {drill['state']}, written: {drill['output_written']}"
        )
    )
    say(f"  DataConsistencyError: {drill['error'][:90]}...")
    say(f"outputs: {deployment.data_lake}")
    say(f"logs:    {deployment.home / 'logs'}")
    say(f"         (the processes': {deployment.processes.log_dir})")
    say(f"triggerer blocked-loop warnings: {len(warnings)}")
    for line in warnings:
        say(f"  {line}")
    verdict = "clean" if not scan.leaks else f"{len(scan.leaks)} LEAKS"
    if scan.unread:
        verdict += f", NOT READ: {'; '.join(scan.unread)}"
    say(
        f"secret scan: {verdict} ({scan.secrets} secrets; {scan.files} files, "
        f"{scan.tables} tables, {scan.db_rows} rows, {scan.triggers} trigger rows)"
    )
    for leak in scan.leaks:
        say(f"  {leak}")
    say(f"{'done' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s")
    if report_path is not None:
        report = {
            "ok": ok,
            "seconds": time.monotonic() - t0,
            "home": str(deployment.home),
            "data_lake": str(deployment.data_lake),
            "tasks": [asdict(r) for r in rows],
            "blocked_loop_warnings": warnings,
            "scan": asdict(scan),
            "ui": ui,
            "listening": listening,
            "log_marks": log_marks,
            "integrity_drill": drill,
        }
        report_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if ok else 1


def demo(home: Path, report_path: Path | None = None) -> int:
    """``python -m deploy.local_airflow demo``: the main job on a deployment at ``home``."""
    return run_demo(Deployment(home), report_path)


def up(home: Path, port: int) -> int:
    """The stack left running with its UI until Ctrl-C."""
    # A publication every 5 minutes: the asset-scheduled DAG runs on each.
    config = SandboxConfig(seed=42, ccee_publish_every=300)
    with Deployment(home, api_port=port, sandbox_config=config) as deployment:
        dags = deployment.wait_for_dags(
            dag_file_count(deployment.dags_folder), bundle=DEFAULT_DAG_BUNDLE
        )
        tests = deployment.api.test_as_the_ui_does()
        failed = sorted(c for c, t in tests.items() if (t["body"] or {}).get("status") is not True)
        paused = sorted(d["dag_id"] for d in dags if d.get("is_paused"))
        say("")
        say(
            f"Airflow UI   {deployment.url}  (user {ADMIN_USER}, "
            f"password {deployment.secrets.admin_password})"
        )
        say(f"Connections  {', '.join(sorted(tests))}: on the sandbox;")
        say(
            f"             Admin > Connections > Test: {len(tests) - len(failed)} of "
            f"{len(tests)} ok{' (failed: ' + ', '.join(failed) + ')' if failed else ''}"
        )
        if paused:
            say(
                f"DAGs         {len(paused)} of {len(dags)} paused, nothing runs until you ask: "
                "on the Dags page,"
            )
            say("             switch a DAG on to let it run on its schedule (an asset-scheduled")
            say("             DAG's watcher starts then), or open it and click Trigger (the")
            say('             dialog\'s "Unpause ... on trigger" box runs it at once).')
        say(f"Docs         {deployment.url}{DOCS_PATH}  (built by make docs)")
        say("Ctrl-C stops everything.")
        while True:
            deployment.processes.check_alive()
            time.sleep(2.0)
