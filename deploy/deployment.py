"""A local Airflow deployment (api-server, scheduler with LocalExecutor, dag-processor,
triggerer, a log server; SQLite) with the sandbox and its connections, and what the runner reads
of it: DAGs, runs, task instances, XComs, deferrals, task logs, all through the REST API.

It knows nothing of the example DAGs (that is ``deploy.demo``) and reads the database file only
for the secret scan (``deploy.secret_scan``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.airflow_home import ADMIN_USER, DAGS_FOLDER, HomeSecrets, airflow_env, free_port
from deploy.airflow_processes import Processes
from deploy.rest_api import Api
from deploy.sandbox_connections import connections_for
from deploy.scale_out import EXECUTOR, ScaleOut, ScaleSettings
from deploy.secret_scan import ScanReport, read_trigger_rows, scan_for_secrets, secret_values
from echo_connhandler.pull import FsspecStorage, Storage, storage_for
from echo_connhandler.sandbox import Sandbox, SandboxConfig

__all__ = ["DEFERRED_EVENT", "RUN_TIMEOUT_S", "TERMINAL_RUN_STATES", "Deployment", "say"]

#: Seconds a run may take before the runner gives up on it.
RUN_TIMEOUT_S = 480.0
#: The audit-log event the Execution API writes when a task instance defers (one per deferral,
#: kept after the task ends, unlike the task instance's own ``next_method`` and trigger).
DEFERRED_EVENT = "deferred"
#: How the triggerer warns of a blocked event loop (a warning of its own log, counted).
BLOCKED_MARK = "async thread was blocked for"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: The services started after ``db migrate``, in this order.
SERVICES = ("log-server", "scheduler", "dag-processor", "triggerer")
#: Seconds between two reads of the trigger rows by the watcher thread (a row lives at least
#: from its deferral until the scheduler has resumed its task: seconds).
TRIGGER_WATCH_S = 0.5


def say(text: str) -> None:
    print(text, flush=True)


class Deployment:
    """The sandbox and a local Airflow stack; a context manager that stops everything on exit."""

    def __init__(
        self,
        home: Path,
        *,
        api_port: int = 0,
        sandbox_config: SandboxConfig | None = None,
        dags_folder: Path = DAGS_FOLDER,
        extra_dag_bundles: Mapping[str, Path] | None = None,
        data_lake: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        scale: ScaleSettings | None = None,
    ) -> None:
        """
        Args:
            home: the AIRFLOW_HOME (created if missing, reused if there).
            api_port: the API server's port (0: a free one).
            sandbox_config: the sandbox's settings (default: seed 42, nothing else).
            dags_folder: the DAGs folder (default: ``dags_examples/``), Airflow's bundle
                ``dags-folder``.
            extra_dag_bundles: more DAG folders, by bundle name (e.g. the restart drills').
            data_lake: the Variable ``echo_data_lake`` (default: ``<home>/data_lake``): a
                folder or an fsspec URL (``s3://bucket/prefix``).
            extra_env: more environment for the Airflow processes (e.g. S3 endpoint settings).
            scale: the scale-out mode (``deploy.scale_out``): PostgreSQL, CeleryExecutor with
                Redis and its workers, several triggerers, the data lake on S3 (moto); None:
                SQLite, LocalExecutor, one triggerer.
        """
        self.home = home.resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.secrets = HomeSecrets.load_or_create(self.home)
        (self.home / "passwords.json").write_text(
            json.dumps({ADMIN_USER: self.secrets.admin_password}), encoding="utf-8"
        )
        self.api_port = api_port or free_port()
        self.scale = ScaleOut(self.home, self.secrets, scale, say) if scale is not None else None
        default_lake = self.scale.data_lake if self.scale else str(self.home / "data_lake")
        self.data_lake = data_lake or default_lake
        self.env = airflow_env(
            self.home,
            self.secrets,
            self.api_port,
            self.data_lake,
            dags_folder=dags_folder,
            extra_dag_bundles=extra_dag_bundles,
            executor=EXECUTOR if self.scale else "LocalExecutor",
            database_url=self.scale.database_url if self.scale else None,
        )
        if self.scale:
            self.env.update(self.scale.env())
        self.env.update(extra_env or {})
        self.dags_folder = dags_folder
        self.processes = Processes(self.home, self.env)
        self.sandbox = Sandbox(sandbox_config or SandboxConfig(seed=42))
        self.api = Api(f"http://127.0.0.1:{self.api_port}", self.secrets.admin_password)
        # Trigger rows seen while the deployment ran, for the secret scan (``capture_triggers``);
        # a watcher thread reads them every TRIGGER_WATCH_S while it runs.
        self._trigger_rows: dict[str, str] = {}
        self._trigger_lock = threading.Lock()
        self._trigger_watch_stop = threading.Event()
        self._trigger_watch: threading.Thread | None = None
        self.started_at = time.time()
        #: Seconds the start's phases took (``migrate``: the services and ``db migrate``;
        #: ``start``: everything until the API answers and every component heartbeated).
        self.timings: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://localhost:{self.api_port}"

    def lake(self, relative: str) -> tuple[Storage, str]:
        """The storage of the data lake and the path of ``relative`` in it, as this process
        reaches it: a local folder, or the scale-out mode's S3 bucket (moto's server)."""
        url = f"{self.data_lake.rstrip('/')}/{relative.lstrip('/')}"
        if self.scale is None:
            return storage_for(url)
        return FsspecStorage(self.scale.s3.filesystem(), "s3"), url.removeprefix("s3://")

    def __enter__(self) -> Deployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        say(f"AIRFLOW_HOME {self.home}")
        t0 = time.monotonic()
        if self.scale:
            self.scale.start_services()
        self.processes.run("db", "migrate")
        self.timings["migrate"] = time.monotonic() - t0
        self._trigger_watch = threading.Thread(
            target=self._watch_triggers, name="trigger-watch", daemon=True
        )
        self._trigger_watch.start()
        self.sandbox.start()
        urls = self.sandbox.urls
        say("sandbox up (emulators on loopback):")
        for service, url in (
            ("Bazefield", urls.bazefield),
            ("CCEE", urls.ccee),
            ("ONS SAGER", urls.ons_sager),
            ("ONS SINAPSE", urls.ons_sinapse),
            ("ONS login", urls.ons_auth_url),
        ):
            say(f"  {service:<12} {url}")
        # Heartbeats older than this are an earlier run's (a reused AIRFLOW_HOME).
        services_started = datetime.now(tz=UTC)
        self.processes.start("api-server", "--port", str(self.api_port), "--host", "127.0.0.1")
        for name in SERVICES:
            if not (self.scale and name == "triggerer"):
                self.processes.start(name)
        if self.scale:
            self.scale.start_airflow(self.processes)
        self.api.wait_until_ready(self.processes.check_alive, since=services_started)
        self.api.put_connections(connections_for(self.sandbox))
        self.timings["start"] = time.monotonic() - t0
        if self.scale:
            say(
                f"api-server, scheduler, dag-processor, {len(self.scale.triggerer_jobs)} "
                f"triggerers, {self.scale.settings.workers} Celery workers (CeleryExecutor), "
                f"log server up in {self.timings['start']:.0f} s; UI at {self.url}"
            )
            return
        say(
            "api-server, scheduler, dag-processor, triggerer (each heartbeating), log server up; "
            f"UI at {self.url}"
        )

    def stop(self) -> None:
        self._trigger_watch_stop.set()
        if self._trigger_watch is not None:
            self._trigger_watch.join(timeout=30)
        self.capture_triggers()
        try:
            self.processes.stop_all()
        finally:
            self.api.close()
            if self.sandbox.running:
                self.sandbox.stop()
            if self.scale:
                self.scale.stop_services()

    # -- reading the deployment's state ----------------------------------------------------------
    @property
    def trigger_rows(self) -> dict[str, str]:
        """The trigger rows seen so far, a copy: label -> kwargs as stored (encrypted). The
        label is the row's id, ``id.n`` for the n-th row seen with that id: SQLite gives the id
        of a deleted newest row to the next one, so the id alone would merge two triggers."""
        with self._trigger_lock:
            return dict(self._trigger_rows)

    def capture_triggers(self) -> None:
        """Keep a copy of the trigger rows now in the database, for the secret scan (the rows
        go once their task resumes). A busy or not yet created database is tried next time."""
        rows: dict[int, str] = {}
        if self.scale:
            with contextlib.suppress(Exception):  # PostgreSQL not (or no longer) up
                rows = self.scale.trigger_rows()
        else:
            with contextlib.suppress(sqlite3.Error):
                rows = read_trigger_rows(self.home)
        with self._trigger_lock:
            seen = set(self._trigger_rows.values())  # Fernet tokens: unique per row
            for trigger_id, kwargs in rows.items():
                if kwargs in seen:
                    continue
                label, n = str(trigger_id), 1
                while label in self._trigger_rows:
                    n += 1
                    label = f"{trigger_id}.{n}"
                self._trigger_rows[label] = kwargs

    def _watch_triggers(self) -> None:
        # A trigger row lives from the deferral until its task resumes, which can be a second
        # or two: read at a steady pace, whatever the main thread waits for meanwhile.
        while not self._trigger_watch_stop.wait(TRIGGER_WATCH_S):
            self.capture_triggers()

    def wait_for_dags(
        self, expected: int, bundle: str | None = None, timeout: float = 180.0
    ) -> list[dict[str, Any]]:
        """The parsed DAGs (of ``bundle``, or all) once ``expected`` of them are there (import
        errors of any bundle fail at once)."""
        deadline = time.monotonic() + timeout
        params: dict[str, Any] = {"limit": 100}
        if bundle is not None:
            params["bundle_name"] = bundle
        while True:
            self.processes.check_alive()
            errors = self.api.call("GET", "importErrors").get("import_errors", [])
            if errors:
                text = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise RuntimeError(f"the DAGs do not import:\n{text}")
            dags = self.api.call("GET", "dags", params=params).get("dags", [])
            if len(dags) >= expected:
                return list(dags)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(dags)} of {expected} DAGs parsed after {timeout:.0f} s")
            time.sleep(1.0)

    def start_run(self, dag_id: str, timeout: float = 60.0) -> str:
        """Unpause ``dag_id`` and return the run of its latest complete data interval.

        Unpausing makes the scheduler create that run (the DAGs have ``catchup=False``); when it
        exists already (an earlier run of this AIRFLOW_HOME) and has finished, it is cleared
        so that it runs again. Either way the run is a scheduled one, as in production.
        """
        self.api.call("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        deadline = time.monotonic() + timeout
        while True:
            self.processes.check_alive()
            runs = [r for r in self.runs(dag_id) if r.get("run_type") == "scheduled"]
            if runs:
                newest = max(runs, key=lambda r: str(r.get("data_interval_end") or ""))
                run_id = str(newest["dag_run_id"])
                if newest["state"] in TERMINAL_RUN_STATES and not self.is_new(newest):
                    self.api.call(
                        "POST", f"dags/{dag_id}/dagRuns/{run_id}/clear", json={"dry_run": False}
                    )
                return run_id
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler created no run of {dag_id} in {timeout:.0f} s")
            time.sleep(1.0)

    def is_new(self, run: Mapping[str, Any]) -> bool:
        """Whether ``run`` was queued by this deployment (not an earlier one)."""
        queued = run.get("queued_at")
        if not queued:
            return True
        return datetime.fromisoformat(str(queued)).timestamp() >= self.started_at

    def pause(self, dag_ids: Iterable[str]) -> None:
        """Pause DAGs again, so that the next start of this AIRFLOW_HOME runs nothing until
        asked."""
        for dag_id in dag_ids:
            self.api.call("PATCH", f"dags/{dag_id}", json={"is_paused": True})

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(
            self.api.call("GET", f"dags/{dag_id}/dagRuns", params={"limit": 20}).get("dag_runs", [])
        )

    def wait_for_runs(
        self, wanted: Mapping[str, str | None], timeout: float = RUN_TIMEOUT_S
    ) -> dict[str, dict[str, Any]]:
        """Wait until each DAG's run is finished: ``wanted`` maps a DAG to a run id, or None
        for the first run that appears (asset-triggered). Returns the finished runs."""
        deadline = time.monotonic() + timeout
        finished: dict[str, dict[str, Any]] = {}
        while len(finished) < len(wanted):
            self.processes.check_alive()
            for dag_id, run_id in wanted.items():
                if dag_id in finished:
                    continue
                for run in self.runs(dag_id):
                    if run_id is None and not self.is_new(run):
                        continue  # an asset-triggered run of an earlier demo
                    if (run_id is None or run["dag_run_id"] == run_id) and run[
                        "state"
                    ] in TERMINAL_RUN_STATES:
                        finished[dag_id] = run
                        say(f"  {dag_id}: {run['state']}")
                        break
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(finished))
                raise TimeoutError(f"runs not finished after {timeout:.0f} s: {', '.join(missing)}")
            time.sleep(1.0)
        return finished

    def task_instances(self, dag_id: str, run_id: str, **params: Any) -> list[dict[str, Any]]:
        """The task instances of a run (``~`` for any DAG or run), filtered by ``params`` of
        ``GET .../taskInstances`` (e.g. ``state``, ``operator``)."""
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return list(self.api.call("GET", path, params=params or None).get("task_instances", []))

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's ``return_value`` XCom (None when there is none)."""
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        try:
            return self.api.call("GET", path).get("value")
        except RuntimeError:
            return None

    def deferred(self, dag_id: str, run_id: str, task_id: str) -> bool:
        """Whether the task deferred in this deployment: the audit log's ``deferred`` events,
        through the API (the task instance itself keeps no trace once it resumed)."""
        params: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "event": DEFERRED_EVENT,
            # An earlier run of this AIRFLOW_HOME ran (and logged) the same run id.
            "after": datetime.fromtimestamp(self.started_at, tz=UTC).isoformat(),
            "limit": 1,
        }
        return int(self.api.call("GET", "eventLogs", params=params)["total_entries"]) > 0

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1
    ) -> list[dict[str, Any]]:
        """The log of one try of a task as the UI shows it, through the API: its structured
        entries (``event``, ``level``, ``error_detail`` for an exception...)."""
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        entries: list[dict[str, Any]] = []
        params: dict[str, Any] = {"full_content": True}
        headers = {"Accept": "application/json"}  # the entries, not the NDJSON stream
        for _ in range(100):  # pages of a long log; one is the rule
            reply = self.api.call("GET", path, params=params, headers=headers)
            content = reply.get("content") or []
            entries += [e if isinstance(e, dict) else {"event": str(e)} for e in content]
            token = reply.get("continuation_token")
            if not token or not content:
                break
            params["token"] = token
        return entries

    def task_log_files(self, dag_id: str | None = None) -> list[Path]:
        """The task logs on disk (of a DAG, or all): what the secret scan and the log counts
        read besides the processes' logs."""
        pattern = f"dag_id={dag_id}/**/*.log" if dag_id else "dag_id=*/**/*.log"
        return sorted((self.home / "logs").glob(pattern))

    def listening(self) -> list[tuple[str, str, int]]:
        """The sockets the deployment's processes (and their children) listen on:
        ``(process, address, port)``."""
        import psutil  # type: ignore[import-untyped]

        found = []
        for name, process in self.processes.running.items():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(process.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        for sock in proc.net_connections(kind="inet"):
                            if sock.status == psutil.CONN_LISTEN:
                                found.append((name, str(sock.laddr.ip), int(sock.laddr.port)))
        return sorted(set(found))

    def log_lines(self, *marks: str) -> dict[str, int]:
        """How many lines of this deployment's logs (its processes' since they started, and the
        task and trigger logs) hold each mark."""
        texts = [self.processes.log_since_start(name) for name in self.processes.log_offsets]
        texts += [p.read_text(errors="replace") for p in self.task_log_files()]
        lines = [line for text in texts for line in text.splitlines()]
        return {mark: sum(mark in line for line in lines) for mark in marks}

    def blocked_loop_warnings(self) -> list[str]:
        """The triggerers' warnings of a blocked event loop since this deployment started."""
        lines = []
        for name in sorted(self.processes.log_offsets):
            if name.startswith("triggerer"):
                text = self.processes.log_since_start(name)
                lines += [line.strip() for line in text.splitlines() if BLOCKED_MARK in line]
        return lines

    # -- the secret scan -------------------------------------------------------------------------
    def secret_values(self) -> list[str]:
        """Every credential, token and session id of this run (sandbox and deployment)."""
        own = (
            self.secrets.admin_password,
            self.secrets.fernet_key,
            self.secrets.jwt_secret,
            self.secrets.api_secret_key,
            self.secrets.database_password,
        )
        return secret_values(self.sandbox, own)

    def scan(self, extra_texts: Mapping[str, str] | None = None) -> ScanReport:
        """The secret scan of everything this deployment left (run it once stopped)."""
        return scan_for_secrets(
            self.home,
            self.secret_values(),
            fernet_key=self.secrets.fernet_key,
            trigger_rows=self.trigger_rows,
            extra_texts={
                **{f"s3 object {k}": v for k, v in self._bucket_texts().items()},
                **(extra_texts or {}),
            },
            skip_files=[self.home / "deployment.json", self.home / "passwords.json"],
            tables=self.scale.db_tables if self.scale else None,
            unread=self.scale.capture_errors if self.scale else (),
        )

    def _bucket_texts(self) -> dict[str, str]:
        """The scale-out mode's S3 objects (read before moto stopped), as text."""
        if not self.scale:
            return {}
        return {k: v.decode(errors="replace") for k, v in self.scale.bucket_objects.items()}
