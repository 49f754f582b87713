"""The scale-out mode of the local deployment: production's shape on one machine.

``python -m deploy.local_airflow demo --scale`` (``make demo-scale``) runs the same deployment as
``make demo`` (``deploy.deployment.Deployment``), with, instead of SQLite, LocalExecutor and one
triggerer:

- PostgreSQL (the distribution's ``postgresql``) as the metadata database and Celery's result
  backend: a cluster of the runner's folder (``.local-airflow-scale/postgres``), started by the
  runner as an unprivileged user (``deploy.services``);
- ``CeleryExecutor`` with Redis (the distribution's ``redis-server``) as the broker, and two
  Celery workers (``airflow celery worker``, ``WORKER_CONCURRENCY`` each);
- two triggerers (``airflow triggerer`` twice, each its own process group, so that one can be
  killed while the other takes its triggers over);
- the data lake (the Variable ``echo_data_lake``) on S3: moto's server (the dev extra), with
  made-up credentials in the processes' environment.

Every process listens on 127.0.0.1 only; everything is stopped with the deployment. The
heartbeat settings are lowered (``HEARTBEAT_ENV``) so that a failover happens within seconds,
not the defaults' minutes: the drills (``deploy.scale_drills``) measure it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from deploy.airflow_home import ROOT, HomeSecrets, free_port
from deploy.services import MotoS3, Postgres, Redis, postgres_account, require_binaries

if TYPE_CHECKING:
    from deploy.airflow_processes import Processes

__all__ = [
    "DEFAULT_SCALE_HOME",
    "EXECUTOR",
    "HEARTBEAT_ENV",
    "LAKE_BUCKET",
    "ScaleOut",
    "ScaleSettings",
    "triggerer_label",
    "worker_command",
    "worker_label",
]

T = TypeVar("T")

DEFAULT_SCALE_HOME = ROOT / ".local-airflow-scale"
EXECUTOR = "CeleryExecutor"
LAKE_BUCKET = "echo-scale-lake"
#: A worker runs this many task processes at once (2 cores: two workers of 4 are plenty).
WORKER_CONCURRENCY = 4
#: Heartbeats and their thresholds, lowered for failovers within seconds (the drills):
#: - a triggerer heartbeats every 2 s; one silent for 10 s is dead, and a live triggerer takes
#:   its triggers on its next loop (``Trigger.assign_unassigned``: triggers whose triggerer has
#:   not heartbeated within ``[triggerer] triggerer_health_check_threshold``). Defaults: 5 s, 30 s.
#: - a task instance whose worker stopped heartbeating for 30 s is failed, and retried (the
#:   scheduler looks every 5 s). Defaults: 300 s, 10 s.
HEARTBEAT_ENV: Mapping[str, str] = {
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}
#: A Celery worker is ready once its log says so (``celery@<name> ready.``).
WORKER_READY_MARK = "ready."


@dataclass(frozen=True)
class ScaleSettings:
    """How many of each process the mode runs."""

    triggerers: int = 2
    workers: int = 2
    worker_concurrency: int = WORKER_CONCURRENCY
    #: The data lake's prefix in the bucket.
    lake_prefix: str = "lake"


def triggerer_label(index: int) -> str:
    """``triggerer-a``, ``triggerer-b``...: the process's name in the runner and its log."""
    return f"triggerer-{chr(ord('a') + index)}"


def worker_label(index: int) -> str:
    return f"worker-{chr(ord('a') + index)}"


def worker_command(index: int, concurrency: int) -> tuple[str, ...]:
    """The arguments of ``airflow celery worker`` for worker ``index``: its own Celery node
    name (two workers of one host would share ``celery@<host>``), no mingle or gossip (nothing
    to synchronise between two local workers; each costs a broker round trip at start)."""
    return (
        "--celery-hostname",
        f"{worker_label(index)}@127.0.0.1",
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
    )


class ScaleOut:
    """The scale-out mode's services and processes of one deployment (its ``home``)."""

    def __init__(
        self,
        home: Path,
        secrets: HomeSecrets,
        settings: ScaleSettings | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.home = home
        self.settings = settings or ScaleSettings()
        self.say = say
        log_dir = home / "logs" / "processes"
        self.postgres = Postgres(
            binaries=None,  # found (or installed) at the start
            folder=home / "postgres",
            port=free_port(),
            password=secrets.database_password,
            log_dir=log_dir,
            account=postgres_account(),
        )
        self.redis = Redis("redis-server", free_port(), log_dir)
        self.s3 = MotoS3(free_port(), LAKE_BUCKET, home, log_dir)
        #: The TriggererJob id of each triggerer process (by label), as the trigger table's
        #: ``triggerer_id`` names it.
        self.triggerer_jobs: dict[str, int] = {}
        #: What the runner keeps of the database and the bucket for the secret scan, read just
        #: before PostgreSQL and moto stop.
        self.db_tables: list[tuple[str, list[str], list[tuple[Any, ...]]]] = []
        self.bucket_objects: dict[str, bytes] = {}
        #: What could not be kept for the scan, and why (the scan reports it as unread).
        self.capture_errors: list[str] = []
        #: Seconds each phase of the start took.
        self.timings: dict[str, float] = {}

    @property
    def data_lake(self) -> str:
        return f"s3://{self.s3.bucket}/{self.settings.lake_prefix}"

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def env(self) -> dict[str, str]:
        """What the mode adds to every Airflow process's environment."""
        result_backend = "db+" + self.postgres.url
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.settings.worker_concurrency),
            # A task a dead worker held (acks late) goes back to the queue after this long;
            # the scheduler has failed it (heartbeat timeout) and retried it by then. Set, as
            # the provider warns when it is not.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            # The workers' tasks need no more: tasks talk to the Execution API, not the database.
            **HEARTBEAT_ENV,
            **self.s3.env(),
        }

    # -- the services ----------------------------------------------------------------------------
    def start_services(self) -> None:
        t0 = time.monotonic()
        binaries = require_binaries(self.say)
        self.postgres.binaries = binaries
        self.redis.binary = binaries.redis_server
        fresh = not (self.postgres.data / "PG_VERSION").is_file()
        self.postgres.start()
        owner = self.postgres.account.pw_name if self.postgres.account else "this user"
        self.say(
            f"PostgreSQL up on 127.0.0.1:{self.postgres.port} (cluster "
            f"{'initialised' if fresh else 'reused'} in {self.postgres.folder}, run as {owner})"
        )
        self.redis.start()
        self.say(f"Redis up on 127.0.0.1:{self.redis.port}")
        self.s3.start()
        self.say(f"S3 (moto) up on {self.s3.endpoint}; data lake {self.data_lake}")
        self.timings["services"] = time.monotonic() - t0

    def check_alive(self) -> None:
        for service in (self.postgres, self.redis, self.s3):
            service.check_alive()

    def stop_services(self) -> None:
        """Keep what the secret scan needs of the database and the bucket, then stop the
        services (each tried even when another fails)."""
        self.db_tables = (
            self._keep("the PostgreSQL tables", self.postgres.process, self.read_tables) or []
        )
        self.bucket_objects = self._keep("the S3 objects", self.s3.process, self.s3.objects) or {}
        for service in (self.s3, self.redis, self.postgres):
            with contextlib.suppress(Exception):
                service.stop()

    def _keep(self, what: str, process: object, read: Callable[[], T]) -> T | None:
        """``read()`` for the scan; None, and the reason in ``capture_errors``, when the
        service is not running or the read fails (the stop goes on either way)."""
        try:
            if process is None:
                raise RuntimeError("not running")
            return read()
        except Exception as exc:
            self.capture_errors.append(f"{what} ({type(exc).__name__})")
            return None

    # -- the database ----------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self.postgres.connect()
        try:
            with db.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            db.close()

    def read_tables(self) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
        """Every table of the metadata database: name, columns, rows."""
        tables = []
        names = self.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        db = self.postgres.connect()
        try:
            for (name,) in names:
                with db.cursor() as cursor:
                    cursor.execute(f'SELECT * FROM "{name}"')  # noqa: S608 - names from the catalogue
                    columns = [c[0] for c in cursor.description or []]
                    tables.append((str(name), columns, list(cursor.fetchall())))
        finally:
            db.close()
        return tables

    def trigger_rows(self) -> dict[int, str]:
        """The trigger rows now: id and kwargs as stored (encrypted)."""
        return {int(i): str(k) for i, k in self.query("SELECT id, kwargs FROM trigger")}

    def trigger_assignments(self) -> dict[int, int | None]:
        """Each trigger's triggerer (its TriggererJob id; None: not assigned yet)."""
        return {int(i): t for i, t in self.query("SELECT id, triggerer_id FROM trigger")}

    def running_triggerer_jobs(self) -> set[int]:
        rows = self.query(
            "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' "
            "AND end_date IS NULL"
        )
        return {int(r[0]) for r in rows}

    def label_of_job(self, job_id: int | None) -> str:
        for label, job in self.triggerer_jobs.items():
            if job == job_id:
                return label
        return f"job {job_id}" if job_id is not None else "unassigned"

    # -- the Airflow processes -------------------------------------------------------------------
    def start_triggerer(self, processes: Processes, index: int, timeout: float = 120.0) -> None:
        """Start triggerer ``index`` and learn its TriggererJob id: the running TriggererJob
        row that appears once it started (one triggerer starts at a time)."""
        label = triggerer_label(index)
        before = self.running_triggerer_jobs()
        processes.start("triggerer", label=label)
        deadline = time.monotonic() + timeout
        while True:
            processes.check_alive()
            new = self.running_triggerer_jobs() - before - set(self.triggerer_jobs.values())
            if new:
                self.triggerer_jobs[label] = max(new)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label} started no TriggererJob in {timeout:.0f} s")
            time.sleep(0.3)

    def start_workers(self, processes: Processes) -> None:
        for index in range(self.settings.workers):
            self.start_worker(processes, index)

    def start_worker(self, processes: Processes, index: int) -> None:
        processes.start(
            "celery worker",
            *worker_command(index, self.settings.worker_concurrency),
            label=worker_label(index),
        )

    def restart(self, processes: Processes, label: str) -> None:
        """Start again the triggerer or worker ``label`` (``triggerer-a``, ``worker-b``...)
        after a drill killed it."""
        kind, letter = label.rsplit("-", 1)
        index = ord(letter) - ord("a")
        if kind == "triggerer":
            self.start_triggerer(processes, index)
        elif kind == "worker":
            self.start_worker(processes, index)
        else:
            raise ValueError(f"not a triggerer or worker label: {label!r}")

    def wait_for_workers(self, processes: Processes, timeout: float = 180.0) -> None:
        """Until every worker's log says it is ready (connected to the broker, consuming)."""
        deadline = time.monotonic() + timeout
        waiting = [worker_label(i) for i in range(self.settings.workers)]
        while waiting:
            processes.check_alive()
            for label in list(waiting):
                if f"{label}@127.0.0.1 {WORKER_READY_MARK}" in processes.log_since_start(label):
                    waiting.remove(label)
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"Celery workers not ready in {timeout:.0f} s: {waiting}")
            time.sleep(0.3)

    def start_airflow(self, processes: Processes) -> None:
        """The workers, then the triggerers one after the other (each one's job id known)."""
        t0 = time.monotonic()
        self.start_workers(processes)
        for index in range(self.settings.triggerers):
            self.start_triggerer(processes, index)
        self.wait_for_workers(processes)
        self.timings["workers_and_triggerers"] = time.monotonic() - t0
