"""A real local Airflow deployment running the example DAGs against the sandbox.

``python -m deploy.local_airflow demo`` (``make demo``, the main job):

1. prepares ``AIRFLOW_HOME`` (``.local-airflow/`` by default; a second run reuses it): its own
   Fernet key, JWT secret and UI password, generated once; the metadata database (SQLite)
   migrated;
2. starts the sandbox (emulators of Bazefield, CCEE and ONS) on loopback ports, and a real
   Airflow: ``api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``
   as separate processes, with ``dags_examples/`` as the DAGs folder;
3. writes one connection per id the DAGs use (``ccee_default``, ``bazefield_default``,
   ``ons_sager``, ``ons_sinapse``, ``echo_http_default``) through the REST API, pointing at the
   sandbox with its made-up credentials;
4. triggers every example DAG (the asset-scheduled one is started by a CCEE publication), waits
   for the runs, and prints a table: DAG, task, state, deferred or not, rows, output, seconds;
5. stops every process it started (also on Ctrl-C or a failure), then scans what the deployment
   left (task and trigger logs, the processes' logs, every table of the metadata database with
   the trigger rows seen during the run decrypted) for every credential, token and session id
   used: none may appear.

``python -m deploy.local_airflow up`` (``make airflow``): the same stack left running with the
UI on http://localhost:8080 (``--port``), the connections ready and the connection test
enabled, until Ctrl-C.

This module is the project's own tooling (it lives outside the two packages): it imports
Airflow only in the processes it starts, never itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

__all__ = [
    "DEFAULT_HOME",
    "Deployment",
    "ScanReport",
    "TaskRow",
    "connections_for",
    "main",
    "scan_for_secrets",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / ".local-airflow"
DAGS_FOLDER = ROOT / "dags_examples"
BAZE_API = "BazeField.Services/api"
ADMIN_USER = "admin"
#: Seconds a run may take before the demo gives up on it.
RUN_TIMEOUT_S = 480.0
#: How the task logs say that a task deferred (airflow.sdk's task runner).
DEFERRED_MARK = "Pausing task as DEFERRED"
#: How the triggerer warns of a blocked event loop.
BLOCKED_MARK = "async thread was blocked for"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


# -- the deployment's own secrets and settings ---------------------------------------------------
@dataclass(frozen=True)
class HomeSecrets:
    """Generated once per AIRFLOW_HOME and kept in ``deployment.json`` there (not in the repo)."""

    fernet_key: str
    jwt_secret: str
    admin_password: str

    @classmethod
    def load_or_create(cls, home: Path) -> HomeSecrets:
        path = home / "deployment.json"
        if path.is_file():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        created = cls(
            fernet_key=base64.urlsafe_b64encode(os.urandom(32)).decode("ascii"),
            jwt_secret=secrets.token_urlsafe(32),
            admin_password=secrets.token_urlsafe(12),
        )
        path.write_text(json.dumps(asdict(created)), encoding="utf-8")
        path.chmod(0o600)
        return created


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(
    home: Path,
    home_secrets: HomeSecrets,
    api_port: int,
    data_lake: str,
    dags_folder: Path = DAGS_FOLDER,
) -> dict[str, str]:
    """The environment of every Airflow process of the deployment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
    }
    api = f"http://127.0.0.1:{api_port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": home_secrets.fernet_key,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": home_secrets.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Where the example DAGs write (their Variable ``echo_data_lake``).
            "AIRFLOW_VAR_ECHO_DATA_LAKE": data_lake,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def connections_for(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The connections the example DAGs use, pointing at the sandbox (REST API bodies)."""
    urls = sandbox.urls
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]

    def conn(
        conn_id: str, conn_type: str, host: str, extra: Mapping[str, Any], **fields: str
    ) -> dict[str, Any]:
        return {
            "connection_id": conn_id,
            "conn_type": conn_type,
            "host": host,
            "extra": json.dumps(dict(extra)),
            **fields,
        }

    ons_extra = {"auth_url": urls.ons_auth_url, "max_retries": 3}
    return [
        conn("ccee_default", "ccee", urls.ccee, {"concurrency": 4, "max_retries": 3}),
        conn(
            "bazefield_default",
            "bazefield",
            urls.bazefield,
            {"max_retries": 3},
            login=baze["user"],
            password=baze["password"],
        ),
        conn(
            "ons_sager",
            "ons",
            urls.ons_sager,
            {"login_target": "SAGER", **ons_extra},
            login=ons["user"],
            password=ons["password"],
        ),
        conn(
            "ons_sinapse",
            "ons",
            urls.ons_sinapse,
            {"login_target": "SINAPSE", "profile_url": urls.ons_profile_url, **ons_extra},
            login=ons["user"],
            password=ons["password"],
        ),
        conn(
            "echo_http_default",
            "echo_http",
            f"{urls.bazefield}/{BAZE_API}",
            {"api_key": baze["api_key"], "health_endpoint": "allocationTypes", "max_retries": 3},
        ),
    ]


# -- processes -----------------------------------------------------------------------------------
class Processes:
    """The Airflow processes of the deployment, each in its own session (process group)."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.log_dir = home / "logs" / "processes"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        #: Where each log was when this deployment started (the logs of a reused home grow).
        self.log_offsets: dict[str, int] = {}
        self.airflow = str(Path(sys.executable).with_name("airflow"))

    def run(self, *args: str, timeout: float = 300.0) -> None:
        """Run ``airflow <args>`` to completion (e.g. ``db migrate``); its output to a log."""
        log_path = self.log_dir / f"{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        with log_path.open("ab") as log:
            done = subprocess.run(  # noqa: S603 - our own venv's airflow, fixed arguments
                [self.airflow, *args],
                env=self.env,
                stdout=log,
                stderr=log,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed; see {log_path}\n{tail(log_path)}")

    def start(self, name: str, *args: str) -> None:
        """Start ``airflow <name> <args>`` in the background, its output to ``<name>.log``."""
        log = (self.log_dir / f"{name}.log").open("ab")
        self.log_offsets[name] = log.tell()
        self.running[name] = subprocess.Popen(  # noqa: S603 - our own venv's airflow
            [self.airflow, name, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
        )
        log.close()

    def check_alive(self) -> None:
        """Raise if a process ended on its own (with the end of its log)."""
        for name, process in self.running.items():
            if process.poll() is not None:
                log_path = self.log_dir / f"{name}.log"
                raise RuntimeError(
                    f"airflow {name} exited with code {process.returncode}; see {log_path}\n"
                    f"{tail(log_path)}"
                )

    def kill(self, name: str) -> None:
        """SIGKILL one process and its children (for restart drills)."""
        process = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process group, then SIGKILL what is still there after ``grace_s``."""
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.running.values():
            # The group too: LocalExecutor's workers and task processes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.running.clear()


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- the REST API --------------------------------------------------------------------------------
class Api:
    """The deployment's REST API (``/api/v2``), logged in as the admin user."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self._password = password
        self.client = httpx.Client(base_url=base, timeout=30.0)

    def wait_until_up(self, processes: Processes, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            processes.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/api/v2/monitor/health").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the API server at {self.base} did not answer in {timeout:.0f} s"
                )
            time.sleep(0.5)
        reply = self.client.post(
            "/auth/token", json={"username": ADMIN_USER, "password": self._password}
        )
        reply.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, *, attempts: int = 6, **kwargs: Any) -> Any:
        """One REST call. Every call the runner makes is safe to repeat (reads, pause/unpause,
        clear, connections overwritten): a 5xx is tried again, because SQLite lets one writer
        at a time and the API server answers 500 "Database error" after waiting about 5 s
        behind the scheduler on a loaded machine."""
        for attempt in range(1, attempts + 1):
            reply = self.client.request(method, f"/api/v2/{path}", **kwargs)
            if reply.status_code < 500 or attempt == attempts:
                break
            time.sleep(attempt)
        if reply.status_code >= 400:
            raise RuntimeError(f"{method} /api/v2/{path}: {reply.status_code} {reply.text[:500]}")
        return reply.json() if reply.content else None

    def put_connections(self, connections: Sequence[Mapping[str, Any]]) -> None:
        body = {
            "actions": [
                {
                    "action": "create",
                    "entities": list(connections),
                    "action_on_existence": "overwrite",
                }
            ]
        }
        result = self.call("PATCH", "connections", json=body)
        errors = (result or {}).get("create", {}).get("errors")
        if errors:
            raise RuntimeError(f"could not write the connections: {errors}")

    def close(self) -> None:
        self.client.close()


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


@dataclass
class ScanReport:
    """What the secret scan looked at and found (never the secrets themselves)."""

    secrets: int = 0
    files: int = 0
    tables: int = 0
    db_rows: int = 0
    triggers: int = 0
    leaks: list[str] = field(default_factory=list)


def _needles(values: Iterable[str]) -> dict[str, bytes]:
    """Each secret as text and its label (``secret #n``): labels never reveal the value."""
    unique = sorted({v for v in values if len(v) >= 5})
    return {f"secret #{i + 1} ({len(v)} chars)": v.encode() for i, v in enumerate(unique)}


def scan_for_secrets(
    home: Path,
    secret_values: Iterable[str],
    *,
    fernet_key: str,
    trigger_rows: Mapping[int, str] | None = None,
    extra_texts: Mapping[str, str] | None = None,
    skip_files: Iterable[Path] = (),
) -> ScanReport:
    """Look for every secret in what a deployment left.

    Scanned: every file under ``home`` (task logs, trigger logs, the processes' logs, outputs)
    except ``skip_files`` (the deployment's own key and password stores); every cell of every
    table of ``home/airflow.db``, with the Fernet-encrypted ``trigger.kwargs`` and encrypted
    ``variable.val`` decrypted (``connection`` rows stay encrypted: that is where credentials
    belong); the trigger kwargs captured during the run (``trigger_rows``: rows are deleted once
    their task resumes); and ``extra_texts`` (e.g. the runner's own output).
    """
    from cryptography.fernet import Fernet, InvalidToken

    needles = _needles(secret_values)
    report = ScanReport(secrets=len(needles))
    fernet = Fernet(fernet_key.encode())

    def check(where: str, blob: bytes) -> None:
        for label, needle in needles.items():
            if needle in blob:
                report.leaks.append(f"{label} in {where}")

    def decrypt(value: str) -> bytes:
        try:
            return fernet.decrypt(value.encode())
        except (InvalidToken, ValueError):
            return value.encode()

    skipped = {p.resolve() for p in skip_files}
    database = home / "airflow.db"
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.resolve() in skipped or path.name.startswith("airflow.db"):
            continue
        report.files += 1
        check(str(path.relative_to(home)), path.read_bytes())
    if database.is_file():
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                report.tables += 1
                cursor = db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite_master
                columns = [c[0] for c in cursor.description]
                for row in cursor:
                    report.db_rows += 1
                    for column, value in zip(columns, row, strict=True):
                        if value is None or isinstance(value, int | float):
                            continue
                        blob = value if isinstance(value, bytes) else str(value).encode()
                        if (table, column) in {("trigger", "kwargs"), ("variable", "val")}:
                            blob += b"\n" + decrypt(blob.decode(errors="replace"))
                        check(f"table {table}.{column}", blob)
    for trigger_id, kwargs in (trigger_rows or {}).items():
        report.triggers += 1
        check(f"trigger {trigger_id} kwargs (captured during the run)", decrypt(kwargs))
    for where, text in (extra_texts or {}).items():
        check(where, text.encode())
    return report


# -- the deployment ------------------------------------------------------------------------------
class Deployment:
    """The sandbox and a local Airflow stack; a context manager that stops everything on exit."""

    def __init__(
        self,
        home: Path,
        *,
        api_port: int = 0,
        sandbox_config: SandboxConfig | None = None,
        dags_folder: Path = DAGS_FOLDER,
        data_lake: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """
        Args:
            home: the AIRFLOW_HOME (created if missing, reused if there).
            api_port: the API server's port (0: a free one).
            sandbox_config: the sandbox's settings (default: seed 42, nothing else).
            dags_folder: the DAGs folder (default: ``dags_examples/``).
            data_lake: the Variable ``echo_data_lake`` (default: ``<home>/data_lake``): a
                folder or an fsspec URL (``s3://bucket/prefix``).
            extra_env: more environment for the Airflow processes (e.g. S3 endpoint settings).
        """
        self.home = home.resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.secrets = HomeSecrets.load_or_create(self.home)
        (self.home / "passwords.json").write_text(
            json.dumps({ADMIN_USER: self.secrets.admin_password}), encoding="utf-8"
        )
        self.api_port = api_port or free_port()
        self.data_lake = data_lake or str(self.home / "data_lake")
        self.env = airflow_env(
            self.home, self.secrets, self.api_port, self.data_lake, dags_folder=dags_folder
        )
        self.env.update(extra_env or {})
        self.dags_folder = dags_folder
        self.processes = Processes(self.home, self.env)
        self.sandbox = Sandbox(sandbox_config or SandboxConfig(seed=42))
        self.api = Api(f"http://127.0.0.1:{self.api_port}", self.secrets.admin_password)
        self.trigger_rows: dict[int, str] = {}
        self.started_at = time.time()

    @property
    def url(self) -> str:
        return f"http://localhost:{self.api_port}"

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
        self.processes.run("db", "migrate")
        self.sandbox.start()
        say(f"sandbox up: {self.sandbox.urls.bazefield}, {self.sandbox.urls.ccee}, ...")
        self.processes.start("api-server", "--port", str(self.api_port), "--host", "127.0.0.1")
        for name in ("scheduler", "dag-processor", "triggerer"):
            self.processes.start(name)
        self.api.wait_until_up(self.processes)
        self.api.put_connections(connections_for(self.sandbox))
        say(f"api-server, scheduler, dag-processor, triggerer up; UI at {self.url}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.capture_triggers()
        self.processes.stop_all()
        self.api.close()
        if self.sandbox.running:
            self.sandbox.stop()

    # -- reading the deployment's state ----------------------------------------------------------
    def capture_triggers(self) -> None:
        """Keep a copy of the trigger rows now in the database (for the secret scan)."""
        with contextlib.closing(self._db()) as db:
            for trigger_id, kwargs in db.execute("SELECT id, kwargs FROM trigger"):
                self.trigger_rows[int(trigger_id)] = str(kwargs)

    def wait_for_dags(self, expected: int, timeout: float = 180.0) -> list[dict[str, Any]]:
        """The parsed DAGs once ``expected`` of them are there (import errors fail at once)."""
        deadline = time.monotonic() + timeout
        while True:
            self.processes.check_alive()
            errors = self.api.call("GET", "importErrors").get("import_errors", [])
            if errors:
                text = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise RuntimeError(f"the example DAGs do not import:\n{text}")
            dags = self.api.call("GET", "dags", params={"limit": 100}).get("dags", [])
            if len(dags) >= expected:
                return list(dags)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(dags)} of {expected} DAGs parsed after {timeout:.0f} s")
            time.sleep(1.0)

    def start_run(self, dag_id: str, timeout: float = 60.0) -> str:
        """Unpause ``dag_id`` and return the run of its latest complete data interval.

        Unpausing makes the scheduler create that run (the DAGs have ``catchup=False``); when it
        exists already (an earlier demo on this AIRFLOW_HOME) and has finished, it is cleared
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
                if newest["state"] in TERMINAL_RUN_STATES and not self._is_new(newest):
                    self.api.call(
                        "POST", f"dags/{dag_id}/dagRuns/{run_id}/clear", json={"dry_run": False}
                    )
                return run_id
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler created no run of {dag_id} in {timeout:.0f} s")
            time.sleep(1.0)

    def _is_new(self, run: Mapping[str, Any]) -> bool:
        """Whether ``run`` was queued by this deployment (not an earlier one)."""
        queued = run.get("queued_at")
        if not queued:
            return True
        return datetime.fromisoformat(str(queued)).timestamp() >= self.started_at

    def publish_when_watched(self, timeout: float = 150.0) -> None:
        """Republish CCEE's ``pld_horario`` in the sandbox once a sensor waits for it in the
        triggerer and the asset watcher has its starting point (a first publication before
        that would pass the sensor at once, or be the watcher's starting point)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.processes.check_alive()
            with contextlib.suppress(sqlite3.Error):
                self.capture_triggers()
                if self._sensor_deferred() and self._watcher_ready():
                    break
            time.sleep(1.0)
        else:
            say("  (no sensor deferred or no watcher ready in time: publishing anyway)")
        published = self.sandbox.ccee_publish("pld_horario")
        say(f"sandbox: CCEE republished pld_horario ({published})")

    def _db(self) -> sqlite3.Connection:
        database = self.home / "airflow.db"
        return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)

    def _sensor_deferred(self) -> bool:
        with contextlib.closing(self._db()) as db:
            row = db.execute(
                "SELECT count(*) FROM task_instance WHERE state = 'deferred' "
                "AND operator = 'CceeDatasetUpdatedSensor'"
            ).fetchone()
        return bool(row and row[0])

    def _watcher_ready(self) -> bool:
        with contextlib.closing(self._db()) as db:
            row = db.execute(
                "SELECT count(*) FROM asset_state_store WHERE key LIKE 'echo_connhandler.%'"
            ).fetchone()
        return bool(row and row[0])

    def pause_all(self, dag_ids: Iterable[str]) -> None:
        """Pause the DAGs again, so that the next start of this AIRFLOW_HOME runs nothing
        until asked."""
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
            with contextlib.suppress(sqlite3.Error):
                self.capture_triggers()
            for dag_id, run_id in wanted.items():
                if dag_id in finished:
                    continue
                for run in self.runs(dag_id):
                    if run_id is None and not self._is_new(run):
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

    def task_rows(self, run: Mapping[str, Any]) -> list[TaskRow]:
        dag_id, run_id = run["dag_id"], run["dag_run_id"]
        tis = self.api.call("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances").get(
            "task_instances", []
        )
        rows = []
        for ti in sorted(tis, key=lambda t: (t.get("start_date") or "", t["task_id"])):
            value = self.xcom(dag_id, run_id, ti["task_id"])
            summary = value if isinstance(value, dict) else {}
            rows.append(
                TaskRow(
                    dag_id=dag_id,
                    task_id=ti["task_id"],
                    state=str(ti["state"]),
                    deferred=self.deferred(dag_id, run_id, ti["task_id"]),
                    rows=summary.get("rows")
                    if summary.get("format") not in (None, "files")
                    else None,
                    files=len(summary["files"]) if summary.get("format") == "files" else None,
                    output=summary.get("output")
                    if isinstance(summary.get("output"), str)
                    else None,
                    seconds=ti.get("duration"),
                    run_id=run_id,
                )
            )
        return rows

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        try:
            return self.api.call("GET", path).get("value")
        except RuntimeError:
            return None

    def task_logs(self, dag_id: str | None = None) -> list[Path]:
        pattern = f"dag_id={dag_id}/**/*.log" if dag_id else "dag_id=*/**/*.log"
        return sorted((self.home / "logs").glob(pattern))

    def deferred(self, dag_id: str, run_id: str, task_id: str) -> bool:
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return any(DEFERRED_MARK in p.read_text(errors="replace") for p in folder.rglob("*.log"))

    def blocked_loop_warnings(self) -> list[str]:
        with (self.processes.log_dir / "triggerer.log").open("rb") as log:
            log.seek(self.processes.log_offsets.get("triggerer", 0))
            text = log.read().decode(errors="replace")
        return [line.strip() for line in text.splitlines() if BLOCKED_MARK in line]

    def secret_values(self) -> list[str]:
        """Every credential, token and session id of this run (sandbox and deployment)."""
        values = [
            value
            for service in DEMO_CREDENTIALS.values()
            for key, value in service.items()
            if "password" in key or "api_key" in key
        ]
        values += self.sandbox.issued_secrets()
        values += [self.secrets.admin_password, self.secrets.fernet_key, self.secrets.jwt_secret]
        return values

    def scan(self, extra_texts: Mapping[str, str] | None = None) -> ScanReport:
        return scan_for_secrets(
            self.home,
            self.secret_values(),
            fernet_key=self.secrets.fernet_key,
            trigger_rows=self.trigger_rows,
            extra_texts=extra_texts,
            skip_files=[self.home / "deployment.json", self.home / "passwords.json"],
        )


def say(text: str) -> None:
    print(text, flush=True)


def format_table(rows: Sequence[TaskRow]) -> str:
    header = ("DAG", "task", "state", "deferred", "rows / files", "output", "seconds")
    lines = [
        (
            r.dag_id,
            r.task_id,
            r.state,
            "yes" if r.deferred else "no",
            f"{r.rows:,}" if r.rows is not None else f"{r.files} files" if r.files else "",
            r.output or "",
            "" if r.seconds is None else f"{r.seconds:.1f}",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


# -- the commands --------------------------------------------------------------------------------
def is_asset_scheduled(dag: Mapping[str, Any]) -> bool:
    """Whether a DAG (as the REST API describes it) runs on asset events."""
    return (
        bool(dag.get("asset_expression"))
        or "asset" in str(dag.get("timetable_summary") or "").lower()
    )


def dag_file_count(folder: Path = DAGS_FOLDER) -> int:
    """The DAG files of a folder (one DAG each)."""
    return len([p for p in folder.glob("*.py") if not p.name.startswith("_")])


def demo(home: Path, report_path: Path | None) -> int:
    """The main job. Returns the exit code: 0 when every run succeeded and the scan is clean."""
    t0 = time.monotonic()
    rows: list[TaskRow] = []
    with Deployment(home) as deployment:
        dags = deployment.wait_for_dags(dag_file_count(deployment.dags_folder))
        wanted: dict[str, str | None] = {}
        for dag in sorted(dags, key=lambda d: d["dag_id"]):
            if is_asset_scheduled(dag):
                # Runs when its asset's watcher sees a CCEE publication: the first new run.
                deployment.api.call("PATCH", f"dags/{dag['dag_id']}", json={"is_paused": False})
                wanted[dag["dag_id"]] = None
            else:
                wanted[dag["dag_id"]] = deployment.start_run(dag["dag_id"])
        # CCEE publishes once the sensor waits in the triggerer and the watcher watches: both
        # DAGs react to the same publication, as they would to the real one.
        deployment.publish_when_watched()
        say(f"started {len(wanted)} DAGs; waiting for their runs")
        finished = deployment.wait_for_runs(wanted)
        for run in finished.values():
            rows += deployment.task_rows(run)
        deployment.pause_all(wanted)
        warnings = deployment.blocked_loop_warnings()
    scan = deployment.scan()
    ok = all(r.state == "success" for r in rows) and not scan.leaks
    say("")
    say(format_table(rows))
    say("")
    say(f"outputs: {deployment.data_lake}")
    say(f"logs:    {deployment.home / 'logs'} (processes: {deployment.processes.log_dir})")
    say(f"triggerer blocked-loop warnings: {len(warnings)}")
    for line in warnings:
        say(f"  {line}")
    verdict = "clean" if not scan.leaks else f"{len(scan.leaks)} LEAKS"
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
        }
        report_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if ok else 1


def up(home: Path, port: int) -> int:
    """The stack left running with its UI until Ctrl-C."""
    # A publication every 5 minutes: the asset-scheduled DAG runs on each.
    config = SandboxConfig(seed=42, ccee_publish_every=300)
    with Deployment(home, api_port=port, sandbox_config=config) as deployment:
        deployment.wait_for_dags(dag_file_count(deployment.dags_folder))
        say("")
        say(
            f"Airflow UI: {deployment.url}  (user {ADMIN_USER}, "
            f"password {deployment.secrets.admin_password})"
        )
        say(
            "Connections ccee_default, bazefield_default, ons_sager, ons_sinapse, echo_http_default"
        )
        say("point at the sandbox; the connection test button is enabled. Ctrl-C stops everything.")
        while True:
            deployment.processes.check_alive()
            time.sleep(2.0)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local_airflow", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["demo", "up"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="AIRFLOW_HOME (reused)")
    parser.add_argument("--port", type=int, default=8080, help="API server / UI port (up)")
    parser.add_argument("--report", type=Path, default=None, help="write the demo's report (JSON)")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both stop everything (SIGINT explicitly: a shell may have started us
    # with it ignored, in the background).
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, _raise_on_sigterm)
    try:
        if args.command == "demo":
            return demo(args.home, args.report)
        return up(args.home, args.port)
    except KeyboardInterrupt:
        say("stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
