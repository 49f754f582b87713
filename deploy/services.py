"""The services the scale-out mode runs besides Airflow: PostgreSQL (the metadata database and
Celery's result backend), Redis (Celery's broker) and moto's S3 server (the data lake), each a
process of the runner on a loopback port, under the runner's folder, stopped with the rest.

PostgreSQL and Redis come from the distribution's packages (``postgresql``, ``redis-server``):
the runner finds their binaries on ``PATH`` or in ``/usr/lib/postgresql/<version>/bin`` (Debian
and Ubuntu keep ``initdb`` and ``postgres`` there, off ``PATH``), and, when one is missing and it
runs as root, installs the packages with ``apt-get``; otherwise it stops with the packages to
install. The runner's PostgreSQL and Redis are its own processes, never system services; on a
host with an init system, installing the packages may also start the distribution's services
(on their default ports), which the runner neither uses nor stops.

PostgreSQL refuses to run as root: as root, the cluster belongs to the unprivileged user the
``postgresql`` package creates (``postgres``), else ``nobody``; its folder is that user's.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "APT_PACKAGES",
    "POSTGRES_DIRS",
    "Binaries",
    "MotoS3",
    "Postgres",
    "Redis",
    "Service",
    "find_binaries",
    "find_binary",
    "postgres_account",
    "require_binaries",
]

#: The distribution packages that provide each binary the mode needs.
APT_PACKAGES: Mapping[str, str] = {
    "initdb": "postgresql",
    "postgres": "postgresql",
    "redis-server": "redis-server",
}
#: Where Debian and Ubuntu put a PostgreSQL version's binaries (not on ``PATH``).
POSTGRES_DIRS = "/usr/lib/postgresql/*/bin"
#: The user the ``postgresql`` package creates; ``nobody`` when there is none.
POSTGRES_USERS = ("postgres", "nobody")
#: The database, its owner (the cluster's superuser, password-protected on TCP).
DB_NAME = "airflow"
DB_USER = "airflow"


def _version_key(path: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` sorts by 15 (the newest version wins)."""
    parts = [p for p in Path(path).parts if p.isdigit()]
    return tuple(int(p) for p in parts)


def find_binary(
    name: str,
    path: str | None = None,
    extra_globs: Sequence[str] = (),
    is_executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK),
) -> str | None:
    """``name`` on ``path`` (default: ``$PATH``), else in the newest folder of ``extra_globs``."""
    found = shutil.which(name, path=path if path is not None else os.environ.get("PATH"))
    if found:
        return found
    for pattern in extra_globs:
        for folder in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate) and is_executable(candidate):
                return candidate
    return None


@dataclass(frozen=True)
class Binaries:
    initdb: str
    postgres: str
    redis_server: str


def find_binaries(
    path: str | None = None, postgres_globs: Sequence[str] = (POSTGRES_DIRS,)
) -> dict[str, str | None]:
    """Each binary the mode needs and where it is (None: missing). ``initdb`` and ``postgres``
    must come from the same folder (one PostgreSQL version), so ``postgres`` is looked for next
    to ``initdb`` first."""
    initdb = find_binary("initdb", path, postgres_globs)
    postgres = None
    if initdb:
        sibling = os.path.join(os.path.dirname(os.path.realpath(initdb)), "postgres")
        postgres = sibling if os.path.isfile(sibling) else None
    postgres = postgres or find_binary("postgres", path, postgres_globs)
    return {
        "initdb": initdb,
        "postgres": postgres,
        "redis-server": find_binary("redis-server", path),
    }


def missing_packages(found: Mapping[str, str | None]) -> list[str]:
    """The packages to install for the binaries not found."""
    return sorted({APT_PACKAGES[name] for name, where in found.items() if not where})


def require_binaries(say: Callable[[str], None] = print) -> Binaries:
    """The binaries, installed with ``apt-get`` first when missing and running as root with
    ``apt-get`` at hand; else a ``RuntimeError`` naming the packages."""
    found = find_binaries()
    packages = missing_packages(found)
    if packages and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing {', '.join(packages)} (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
        # A package's service, when the package starts one, is not ours: the runner starts its
        # own processes on its own ports, and leaves the system's as apt-get left them.
        found = find_binaries()
        packages = missing_packages(found)
    if packages:
        raise RuntimeError(
            "the scale-out mode needs PostgreSQL and Redis from the distribution: "
            f"install {' '.join(packages)} (e.g. sudo apt-get install {' '.join(packages)}), "
            "or run the runner as root to let it install them"
        )
    return Binaries(
        initdb=str(found["initdb"]),
        postgres=str(found["postgres"]),
        redis_server=str(found["redis-server"]),
    )


def postgres_account(euid: int | None = None) -> pwd.struct_passwd | None:
    """The account the cluster runs as: None (this one) unless running as root, then the
    ``postgres`` user if there is one, else ``nobody``."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    for name in POSTGRES_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root with neither a postgres nor a nobody user")


def _wait(ready: Callable[[], bool], alive: Callable[[], None], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.2)


class Service:
    """A background process in its own session, logging to ``<log_dir>/<name>.log``."""

    name = ""
    #: The signal that stops the service quickly and cleanly.
    stop_signal = signal.SIGTERM

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def launch(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the distribution's binaries
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self.popen_kwargs(),
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            text = self.log_path.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(
                f"{self.name} exited with code {self.process.returncode}; see {self.log_path}\n"
                + "\n".join(text)
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, grace_s: float = 20.0) -> None:
        """``stop_signal``, then SIGKILL of the whole group after ``grace_s``."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, self.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def unreachable_parent(folder: Path) -> Path | None:
    """The first existing parent of ``folder`` that does not let other users through (no
    ``o+x``), or None."""
    for parent in reversed(folder.resolve().parents):
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return parent
    return None


def searchable_by_others(folder: Path) -> bool:
    """Whether every existing parent of ``folder`` lets other users through (``o+x``)."""
    return unreachable_parent(folder) is None


def cluster_folder_outside(home_folder: Path) -> Path:
    """A PostgreSQL folder for ``home_folder`` in the system's temporary folder (one per home:
    its path's hash in the name)."""
    digest = hashlib.sha256(str(home_folder.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"echo-connhandler-postgres-{digest}"


class Postgres(Service):
    """A PostgreSQL cluster in ``folder`` (initialised once, reused), on ``127.0.0.1:port``
    only (no Unix socket), password authentication for the ``airflow`` superuser."""

    name = "postgres"
    #: SIGINT is PostgreSQL's "fast" shutdown (SIGTERM waits for every client to leave).
    stop_signal = signal.SIGINT

    def __init__(
        self,
        binaries: Binaries | None,
        folder: Path,
        port: int,
        password: str,
        log_dir: Path,
        account: pwd.struct_passwd | None = None,
    ) -> None:
        super().__init__(log_dir)
        self.binaries = binaries
        #: Whether the cluster lives outside ``folder`` (removed at the stop, then).
        self.outside_home = account is not None and not searchable_by_others(folder)
        # The unprivileged user must reach the cluster through every parent folder: a home
        # under a private folder (a 0700 temporary directory, as a CI checkout may be) gets
        # its cluster in the system's temporary folder instead, one per home.
        self.folder = cluster_folder_outside(folder) if self.outside_home else folder
        self.data = self.folder / "data"
        self.port = port
        self.password = password
        self.account = account

    @property
    def url(self) -> str:
        """SQLAlchemy's URL of the database (the password inside: an environment value only)."""
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    def _binaries(self) -> Binaries:
        if self.binaries is None:
            raise RuntimeError("PostgreSQL's binaries are not known yet (require_binaries)")
        return self.binaries

    def initdb_command(self, pwfile: Path) -> list[str]:
        return [
            self._binaries().initdb,
            "--pgdata",
            str(self.data),
            "--username",
            DB_USER,
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        ]

    def command(self) -> list[str]:
        return [
            self._binaries().postgres,
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            # TCP only: no socket file in /var/run/postgresql (the system's, maybe absent).
            "-c",
            "unix_socket_directories=",
            # Airflow's scheduler, API server, dag-processor, two triggerers, two Celery workers
            # (result backend) and the runner: about 60 connections at peak; 100 is the default.
            "-c",
            "max_connections=200",
        ]

    def popen_kwargs(self) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        if self.account is None:
            return {"env": env}
        env["HOME"] = str(self.folder)
        return {"env": env, "user": self.account.pw_uid, "group": self.account.pw_gid}

    def _own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def stop(self, grace_s: float = 20.0) -> None:
        super().stop(grace_s)
        if self.outside_home:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _check_reachable(self) -> None:
        """The unprivileged user must reach the folder through every parent folder."""
        if self.account is None:
            return
        parent = unreachable_parent(self.folder)
        if parent is not None:
            # The cluster is already outside a private home (ScaleOut): this parent is above
            # both, e.g. a private TMPDIR.
            raise RuntimeError(
                f"{parent} is not searchable by other users: the PostgreSQL cluster "
                f"(run as {self.account.pw_name}) cannot live under it; make it searchable "
                "(chmod o+x) or set TMPDIR and --home under folders that are"
            )

    def initialise(self) -> bool:
        """``initdb`` once (True when it ran)."""
        if (self.data / "PG_VERSION").is_file():
            return False
        self._check_reachable()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self._own(self.folder)
        if self.data.exists():  # a half-made cluster of an interrupted first run
            shutil.rmtree(self.data)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        self._own(pwfile)
        try:
            with self.log_path.open("ab") as log:
                subprocess.run(  # noqa: S603 - the distribution's initdb
                    self.initdb_command(pwfile),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=180,
                    **self.popen_kwargs(),
                )
        finally:
            pwfile.unlink(missing_ok=True)
        return True

    def connect(self, database: str = DB_NAME, timeout: float = 3.0) -> Any:
        import psycopg2  # type: ignore[import-untyped]  # the celery extra

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            password=self.password,
            dbname=database,
            connect_timeout=max(1, int(timeout)),
        )

    def _answers(self) -> bool:
        import psycopg2

        try:
            self.connect("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def start(self, timeout: float = 60.0) -> None:
        self.initialise()
        self.launch()
        _wait(self._answers, self.check_alive, "PostgreSQL", timeout)
        db = self.connect("postgres")
        try:
            db.autocommit = True
            with db.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            db.close()


class Redis(Service):
    """``redis-server`` on ``127.0.0.1:port``, nothing written to disk."""

    name = "redis"

    def __init__(self, binary: str, port: int, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.binary = binary
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        # No RDB snapshots, no AOF: Celery's queue lives as long as the deployment; and no
        # protected-mode surprise: it binds loopback only.
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        _wait(self._answers, self.check_alive, "Redis", timeout)


#: moto's made-up credentials (any value works; boto needs some).
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "moto-scale-key",
    "AWS_SECRET_ACCESS_KEY": "moto-scale-secret",
}
REGION = "us-east-1"


class MotoS3(Service):
    """moto's S3 server (the dev extra's ``moto[server]``) on ``127.0.0.1:port``, one bucket."""

    name = "moto-s3"

    def __init__(self, port: int, bucket: str, home: Path, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.port = port
        self.bucket = bucket
        self.aws_home = home / "aws"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach the bucket through fsspec/s3fs and boto3 (botocore
        honours ``AWS_ENDPOINT_URL``): made-up credentials, a region, no profile or instance
        metadata of this machine."""
        return {
            **MOTO_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": str(self.aws_home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def filesystem(self) -> Any:
        """An s3fs filesystem on this server that caches nothing (to read what pulls wrote)."""
        import s3fs  # type: ignore[import-untyped]

        return s3fs.S3FileSystem(
            key=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": REGION},
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> None:
        self.aws_home.mkdir(parents=True, exist_ok=True)
        self.launch()
        _wait(self._answers, self.check_alive, "moto's S3 server", timeout)
        self.client().create_bucket(Bucket=self.bucket)

    def objects(self) -> dict[str, bytes]:
        """Every object of the bucket (for the secret scan, before the server stops: moto keeps
        them in memory)."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                found[item["Key"]] = body
        return found
