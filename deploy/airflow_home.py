"""The deployment's ``AIRFLOW_HOME``: its paths, its own secrets, the Airflow processes' settings.

Nothing here starts a process or imports Airflow: these are the values every Airflow process of
the deployment gets through its environment (``airflow_env``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ADMIN_USER",
    "DAGS_FOLDER",
    "DEFAULT_DAG_BUNDLE",
    "DEFAULT_HOME",
    "JWT_SECRET_MIN_BYTES",
    "ROOT",
    "HomeSecrets",
    "airflow_env",
    "dag_bundles_setting",
    "free_port",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / ".local-airflow"
DAGS_FOLDER = ROOT / "dags_examples"
PLUGINS_FOLDER = ROOT / "deploy" / "airflow_plugins"
ADMIN_USER = "admin"
#: Airflow's name of the bundle of ``[core] dags_folder`` (its default
#: ``[dag_processor] dag_bundle_config_list``); the REST API reports each DAG's ``bundle_name``.
DEFAULT_DAG_BUNDLE = "dags-folder"
#: Airflow signs its JWTs with HS512 when a secret is set; PyJWT warns
#: (``InsecureKeyLengthWarning``, on every token) below the hash's size, 64 bytes (RFC 7518 3.2).
JWT_SECRET_MIN_BYTES = 64


def _jwt_secret() -> str:
    return secrets.token_urlsafe(JWT_SECRET_MIN_BYTES)  # 86 ASCII characters


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
    #: The metadata database's password (the scale-out mode's PostgreSQL; unused on SQLite).
    database_password: str = ""

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
            "database_password": stored.get("database_password") or secrets.token_urlsafe(24),
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


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dag_bundles_setting(extra_dag_bundles: Mapping[str, Path]) -> str:
    """``[dag_processor] dag_bundle_config_list``: Airflow's default bundle (``[core]
    dags_folder``) and one local folder per extra bundle, so that DAGs of another folder (e.g.
    the restart drills') run on the same deployment and stay apart in the REST API."""
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [{"name": DEFAULT_DAG_BUNDLE, "classpath": local, "kwargs": {}}]
    for name, path in extra_dag_bundles.items():
        if name == DEFAULT_DAG_BUNDLE:
            raise ValueError(f"{DEFAULT_DAG_BUNDLE!r} is the bundle of the DAGs folder")
        bundles.append({"name": name, "classpath": local, "kwargs": {"path": str(path)}})
    return json.dumps(bundles)


def airflow_env(
    home: Path,
    home_secrets: HomeSecrets,
    api_port: int,
    data_lake: str,
    dags_folder: Path = DAGS_FOLDER,
    log_server_port: int = 0,
    extra_dag_bundles: Mapping[str, Path] | None = None,
    executor: str = "LocalExecutor",
    database_url: str | None = None,
) -> dict[str, str]:
    """The environment of every Airflow process of the deployment (``executor`` and
    ``database_url``: the scale-out mode's CeleryExecutor and PostgreSQL; by default
    LocalExecutor and ``<home>/airflow.db``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        # Bytecode as in production (pip compiles an installed package): with the shell's
        # PYTHONDONTWRITEBYTECODE, the editable install's modules were compiled again by every
        # process, 0.14 s on the triggerer's loop at its first trigger of ours (a "blocked"
        # warning in the demo's table).
        and key != "PYTHONDONTWRITEBYTECODE"
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
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": home_secrets.fernet_key,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url
            or f"sqlite:///{home / 'airflow.db'}",
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
            # A retry waits 10 s, not Airflow's 5 minutes: Airflow 3.3's scheduler can fail a
            # deferred task whose trigger fires before the executor's event of the deferral is
            # read ("state mismatch", apache/airflow#72716, open); the try after it succeeds.
            # Tasks that set their own retry_delay keep it.
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "10",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Where the example DAGs write (their Variable ``echo_data_lake``).
            "AIRFLOW_VAR_ECHO_DATA_LAKE": data_lake,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if extra_dag_bundles:
        env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = dag_bundles_setting(
            extra_dag_bundles
        )
    return env
