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
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig
from echo_connhandler_provider import DOCS_PATH
from echo_connhandler_provider._fields import CONNECTION_TYPES

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
PLUGINS_FOLDER = ROOT / "deploy" / "airflow_plugins"
BAZE_API = "BazeField.Services/api"
ADMIN_USER = "admin"
#: Seconds a run may take before the demo gives up on it.
RUN_TIMEOUT_S = 480.0
#: The audit-log event the Execution API writes when a task instance defers (one per deferral,
#: kept after the task ends, unlike the task instance's own ``next_method`` and trigger).
DEFERRED_EVENT = "deferred"
#: How the triggerer warns of a blocked event loop.
BLOCKED_MARK = "async thread was blocked for"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: The integrity drill: this DAG's pull of this year against a misbehaving CCEE must fail.
DRILL_DAG = "ccee_pld_horario_yearly"
DRILL_YEAR = 2022
#: Lines the demo counts in the deployment's logs (its report's ``log_marks``): PyJWT's warning
#: of a too short secret, and Airflow's remark on a connection type with ``_`` (``echo_http``;
#: the URI form ``echo-http://`` is read back as ``echo_http``, so the remark is harmless; it is
#: logged whenever Airflow turns such a connection into a URI, e.g. by the connection test).
LOG_MARKS = ("InsecureKeyLengthWarning", "shall not contain '_'")


# -- the deployment's own secrets and settings ---------------------------------------------------
@dataclass(frozen=True)
class HomeSecrets:
    """Generated once per AIRFLOW_HOME and kept in ``deployment.json`` there (not in the repo)."""

    fernet_key: str
    #: Signs the API's tokens (``[api_auth] jwt_secret``).
    jwt_secret: str
    admin_password: str
    #: Signs the tokens the API server shows the log server (``[api] secret_key``); without it
    #: Airflow writes a 16-byte one into airflow.cfg, too short for HS512.
    api_secret_key: str = ""

    @classmethod
    def load_or_create(cls, home: Path) -> HomeSecrets:
        path = home / "deployment.json"
        stored: dict[str, str] = {}
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
        values = {
            "fernet_key": stored.get("fernet_key")
            or base64.urlsafe_b64encode(os.urandom(32)).decode("ascii"),
            "admin_password": stored.get("admin_password") or secrets.token_urlsafe(12),
        }
        # A home made by an older runner may hold a short secret: a new one only invalidates
        # the tokens issued so far (the Fernet key, which encrypts stored rows, stays).
        for key in ("jwt_secret", "api_secret_key"):
            value = stored.get(key, "")
            values[key] = value if len(value.encode()) >= JWT_SECRET_MIN_BYTES else _jwt_secret()
        created = cls(**values)
        if asdict(created) != stored:
            path.write_text(json.dumps(asdict(created)), encoding="utf-8")
            path.chmod(0o600)
        return created


#: Airflow signs its JWTs with HS512 when a secret is set; PyJWT warns
#: (``InsecureKeyLengthWarning``, on every token) below the hash's size, 64 bytes (RFC 7518 3.2).
JWT_SECRET_MIN_BYTES = 64


def _jwt_secret() -> str:
    return secrets.token_urlsafe(JWT_SECRET_MIN_BYTES)  # 86 ASCII characters


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
    log_server_port: int = 0,
) -> dict[str, str]:
    """The environment of every Airflow process of the deployment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
    }
    api = f"http://127.0.0.1:{api_port}"
    log_port = str(log_server_port or free_port())
    # ``deploy.loopback`` (the hostname callable below) is imported by the Airflow processes.
    python_path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
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
            "AIRFLOW__API__SECRET_KEY": home_secrets.api_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": home_secrets.jwt_secret,
            # One log server for the task and the trigger logs (one folder on one machine),
            # started by the runner on loopback (Airflow's own binds every interface, on fixed
            # ports 8793/8794); tasks and triggerers name their host 127.0.0.1, so that the API
            # server fetches a running or deferred task's log from there.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": log_port,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": log_port,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "deploy.loopback.hostname",
            # Serves the built docs at the provider's documentation-url (DOCS_PATH).
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
            "PYTHONPATH": python_path,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Where the example DAGs write (their Variable ``echo_data_lake``).
            "AIRFLOW_VAR_ECHO_DATA_LAKE": data_lake,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def stored_extra(conn_type: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with every field of the type's form: the given values, the others at their
    default (``None`` where the form has none, which the hooks read as unset).

    Airflow 3.3's edit form shows only the extra fields a connection stores, so a connection
    written with a few extras hides the others (API key, timeouts, TLS, concurrency...); stored
    in full, each shows with its value. Unknown names are refused here, as the hooks would.
    """
    fields = {f.name: f.default for f in CONNECTION_TYPES[conn_type].fields}
    unknown = sorted(set(extra) - set(fields))
    if unknown:
        raise ValueError(f"extra: no field {', '.join(unknown)} in a {conn_type!r} connection")
    return {name: extra.get(name, default) for name, default in fields.items()}


def connections_for(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The connections the example DAGs use, pointing at the sandbox (REST API bodies).

    Each stores every extra field of its type's form (``stored_extra``), a description, and the
    Base URL's port also in ``port``: Airflow 3.3.2's Test button sends the stored ``port`` as a
    number (``0`` when empty) and the API refuses a port that differs from the stored one
    (apache/airflow#73298); the hooks take the port of the Base URL when it has one.
    """
    urls = sandbox.urls
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]

    def conn(
        conn_id: str,
        conn_type: str,
        host: str,
        description: str,
        extra: Mapping[str, Any],
        **fields: str,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "connection_id": conn_id,
            "conn_type": conn_type,
            "description": description,
            "host": host,
            "extra": json.dumps(stored_extra(conn_type, extra)),
            **fields,
        }
        port = urlsplit(host).port
        if port is not None:
            body["port"] = port
        return body

    ons_extra = {"auth_url": urls.ons_auth_url, "max_retries": 3}
    return [
        conn(
            "ccee_default",
            "ccee",
            urls.ccee,
            "CCEE Dados Abertos (CKAN) of the local sandbox: no credentials",
            {"concurrency": 4, "max_retries": 3},
        ),
        conn(
            "bazefield_default",
            "bazefield",
            urls.bazefield,
            "Bazefield of the local sandbox: user and password (made-up demo account)",
            {"max_retries": 3},
            login=baze["user"],
            password=baze["password"],
        ),
        conn(
            "ons_sager",
            "ons",
            urls.ons_sager,
            "ONS SAGER renováveis of the local sandbox: OAuth2 password login (demo account)",
            {"login_target": "SAGER", **ons_extra},
            login=ons["user"],
            password=ons["password"],
        ),
        conn(
            "ons_sinapse",
            "ons",
            urls.ons_sinapse,
            "ONS SINAPSE of the local sandbox: OAuth2 login, then the user's profile",
            {"login_target": "SINAPSE", "profile_url": urls.ons_profile_url, **ons_extra},
            login=ons["user"],
            password=ons["password"],
        ),
        conn(
            "echo_http_default",
            "echo_http",
            f"{urls.bazefield}/{BAZE_API}",
            "Any REST API, here Bazefield's of the local sandbox: API key (Bearer)",
            {"api_key": baze["api_key"], "health_endpoint": "allocationTypes", "max_retries": 3},
        ),
    ]


# -- processes -----------------------------------------------------------------------------------
#: Arguments the runner always adds: the scheduler and the triggerer would each start a log
#: server on every interface; the runner starts one on loopback instead (``LOG_SERVER``).
SERVICE_ARGS: Mapping[str, tuple[str, ...]] = {
    "scheduler": ("--skip-serve-logs",),
    "triggerer": ("--skip-serve-logs",),
}
#: Airflow's log server (what ``serve_logs`` runs) bound to loopback, on the configured port.
LOG_SERVER = """
import uvicorn
from airflow.configuration import conf
uvicorn.run(
    "airflow.utils.serve_logs.log_server:get_app",
    factory=True,
    host="127.0.0.1",
    port=conf.getint("logging", "worker_log_server_port"),
    log_config=None,
    access_log=False,
)
"""


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
        """Start ``airflow <name> <args>`` in the background, its output to ``<name>.log``
        (``log-server``: Airflow's log server on loopback)."""
        if name == "log-server":
            command = [sys.executable, "-c", LOG_SERVER]
        else:
            command = [self.airflow, name, *args, *SERVICE_ARGS.get(name, ())]
        log = (self.log_dir / f"{name}.log").open("ab")
        self.log_offsets[name] = log.tell()
        self.running[name] = subprocess.Popen(  # noqa: S603 - our own venv's airflow
            command,
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

    def test_as_the_ui_does(self) -> dict[str, dict[str, Any]]:
        """Press the Connections list's Test button on every connection: per id, the request
        body sent (``password`` as listed: masked) and the reply (``status_code``, ``body``)."""
        listed = self.call("GET", "connections", params={"limit": 100}).get("connections", [])
        results = {}
        for connection in listed:
            body = ui_test_body(connection)
            reply = self.client.post("/api/v2/connections/test", json=body)
            results[str(connection["connection_id"])] = {
                "request": body,
                "status_code": reply.status_code,
                "body": reply.json() if reply.content else None,
            }
        return results

    def close(self) -> None:
        self.client.close()


#: The body of the Test button of Airflow 3.3.2's Connections list (``TestConnectionButton`` of
#: the UI; in ``airflow/ui/dist/assets/index-*.js``), from the listed connection ``n``:
#: ``{conn_type, connection_id, description: n.description ?? "", extra: n.extra || "{}",
#: host: n.host ?? "", login: n.login ?? "", password: n.password ?? "",
#: port: Number(n.port), schema: n.schema ?? ""}``.
UI_TEST_BODY_KEYS = (
    "conn_type",
    "connection_id",
    "description",
    "extra",
    "host",
    "login",
    "password",
    "port",
    "schema",
)


def _js_number(value: Any) -> int | float:
    """JavaScript's ``Number(value)`` for what a JSON reply holds (null is 0)."""
    if value is None or value == "":
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return int(number) if number.is_integer() else number


def ui_test_body(connection: Mapping[str, Any]) -> dict[str, Any]:
    """What the UI's Test button posts to ``/api/v2/connections/test`` for a connection as the
    list (``GET /api/v2/connections``) gives it."""
    extra = connection.get("extra")
    return {
        "conn_type": connection["conn_type"],
        "connection_id": connection["connection_id"],
        "description": connection.get("description") or "",
        "extra": "{}" if extra in ("", None) else extra,
        "host": connection.get("host") or "",
        "login": connection.get("login") or "",
        "password": connection.get("password") or "",
        "port": _js_number(connection.get("port")),
        "schema": connection.get("schema") or "",
    }


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
        self.processes.start("api-server", "--port", str(self.api_port), "--host", "127.0.0.1")
        for name in ("log-server", "scheduler", "dag-processor", "triggerer"):
            self.processes.start(name)
        self.api.wait_until_up(self.processes)
        self.api.put_connections(connections_for(self.sandbox))
        say(f"api-server, scheduler, dag-processor, triggerer, log server up; UI at {self.url}")

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

    def integrity_drill(
        self, dag_id: str = DRILL_DAG, year: int = DRILL_YEAR, timeout: float = RUN_TIMEOUT_S
    ) -> dict[str, Any]:
        """The yearly CCEE pull against a CCEE that ignores ``offset`` (a cache in front of
        CKAN; the sandbox misbehaving on purpose, docs/sandbox.md, "Misbehaviour"): its first try
        must fail with ``DataConsistencyError`` and leave nothing at the output's name. The run
        is then marked failed (its retries would fail the same way)."""
        faults = self.sandbox.faults("ccee")
        faults.misbehave("ignore_offset")
        run_id = f"integrity_drill__{int(time.time())}"
        try:
            self.api.call(
                "POST",
                f"dags/{dag_id}/dagRuns",
                json={"dag_run_id": run_id, "logical_date": None, "conf": {"year": year}},
            )
            deadline = time.monotonic() + timeout
            state = ""
            while state not in ("up_for_retry", "failed", "success"):
                self.processes.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the integrity drill's run did not end in {timeout:.0f} s")
                time.sleep(1.0)
                tis = self.api.call("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")
                state = str((tis.get("task_instances") or [{}])[0].get("state") or "")
            self.api.call("PATCH", f"dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
        finally:
            faults.behave("ignore_offset")
        logs = "\n".join(
            p.read_text(errors="replace") for p in self.task_logs(dag_id) if run_id in str(p)
        )
        output = Path(self.data_lake) / "ccee" / "pld_horario" / f"{year}.parquet"
        # The failed pull kept its checkpoint for a retry; the drill's run is over: clean up.
        checkpoints = sorted(output.parent.glob(f"{output.name}.parts-*"))
        for folder in checkpoints:
            shutil.rmtree(folder, ignore_errors=True)
        found = re.search(r"DataConsistencyError: ([^\"\\\n]*)", logs)
        error = found.group(1) if found else ""
        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": state,
            "error": error[:300],
            "output_written": output.exists(),
            "checkpoint_kept": bool(checkpoints),
            "ok": state in ("up_for_retry", "failed")
            and "does not follow the page before it" in error
            and not output.exists(),
        }

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
        """Whether the task deferred in this deployment (its audit log, through the API)."""
        params: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "event": DEFERRED_EVENT,
            # An earlier demo on this AIRFLOW_HOME ran (and logged) the same run id.
            "after": datetime.fromtimestamp(self.started_at, tz=UTC).isoformat(),
            "limit": 1,
        }
        return int(self.api.call("GET", "eventLogs", params=params)["total_entries"]) > 0

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

    def ui_checks(self) -> dict[str, Any]:
        """What the UI shows of the provider and the connections, read through the REST API
        while the deployment runs: the Test button of every connection (the UI's own request
        body), each stored connection, and the provider's entry of the Providers page."""
        providers = self.api.call("GET", "providers", params={"limit": 100}).get("providers", [])
        connections = self.api.call("GET", "connections", params={"limit": 100})
        docs = self.api.client.get(DOCS_PATH)
        return {
            "docs": {"path": DOCS_PATH, "status_code": docs.status_code, "text": docs.text[:2000]},
            "connection_tests": self.api.test_as_the_ui_does(),
            "connections": {c["connection_id"]: c for c in connections.get("connections", [])},
            "provider": next(
                (p for p in providers if p["package_name"] == "echo-connhandler-provider"), None
            ),
        }

    def log_lines(self, *marks: str) -> dict[str, int]:
        """How many lines of this deployment's logs (its processes' since they started, and the
        task and trigger logs) hold each mark."""
        texts = []
        for name, offset in self.processes.log_offsets.items():
            with (self.processes.log_dir / f"{name}.log").open("rb") as log:
                log.seek(offset)
                texts.append(log.read().decode(errors="replace"))
        texts += [p.read_text(errors="replace") for p in self.task_logs()]
        lines = [line for text in texts for line in text.splitlines()]
        return {mark: sum(mark in line for line in lines) for mark in marks}

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


#: The demo's table fits a terminal this wide.
TABLE_WIDTH = 120


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
        say("integrity drill: the yearly CCEE pull, the sandbox ignoring offset on purpose")
        drill = deployment.integrity_drill()
        ui = deployment.ui_checks()
        listening = deployment.listening()
        deployment.pause_all(wanted)
        warnings = deployment.blocked_loop_warnings()
    scan = deployment.scan()
    log_marks = deployment.log_lines(*LOG_MARKS)
    tests = ui["connection_tests"]
    tests_ok = sorted(c for c, t in tests.items() if (t["body"] or {}).get("status") is True)
    ok = (
        all(r.state == "success" for r in rows)
        and drill["ok"]
        and not scan.leaks
        and len(tests_ok) == len(tests) > 0
    )
    say("")
    say(format_table(rows, deployment.data_lake))
    say("")
    say(f"Test button of the connections (the UI's request): {len(tests_ok)} of {len(tests)} ok")
    for conn_id, test in sorted(tests.items()):
        if conn_id not in tests_ok:
            say(f"  {conn_id}: {test['status_code']} {json.dumps(test['body'])[:200]}")
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


def up(home: Path, port: int) -> int:
    """The stack left running with its UI until Ctrl-C."""
    # A publication every 5 minutes: the asset-scheduled DAG runs on each.
    config = SandboxConfig(seed=42, ccee_publish_every=300)
    with Deployment(home, api_port=port, sandbox_config=config) as deployment:
        dags = deployment.wait_for_dags(dag_file_count(deployment.dags_folder))
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
