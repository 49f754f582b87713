"""One real local Airflow deployment for every test of ``tests/deploy`` that needs one.

The ``shared_deployment`` fixture (session scope) starts a single ``deploy.deployment.Deployment``
(api-server, scheduler with LocalExecutor, dag-processor, triggerer, a log server; SQLite; the
sandbox in this process) and runs on it, in order:

1. the main job exactly as ``make demo`` runs it (``deploy.demo.run_demo``): every example DAG,
   the integrity drill, the UI checks, the table; its output and its report are kept;
2. the restart drills (below), on the same running deployment, with the DAGs of their own
   DAG bundle (``restart-drills``, a temporary folder);
3. the stop of every process, the secret scan of everything both left (``run_demo`` does both),
   and a look at the process table for anything of the deployment left running.

A failure of one phase is kept for the tests of that phase; the others still run and report.

The restart drills (``test_restart_drills.py`` asserts on what they saw):

1. ``drill_triggerer_restart``: a deferred ``CceeDatastoreOperator`` pull (about 60 pages). When
   the checkpoint manifest in the data lake shows some but not all chunks done, the triggerer's
   whole process group is SIGKILLed, then the triggerer is started again. The pull must finish
   in the same task try, from the checkpoint.
2. ``drill_worker_kill``: the same kind of pull in the worker (``deferrable=False``,
   ``retries=1``). When the manifest shows partial progress, the task process (titled
   ``airflow worker -- <ti id>``, in its own process group under the LocalExecutor's supervisor)
   is SIGKILLed; Airflow puts the task up for retry and the second try resumes from the
   checkpoint.
3. ``drill_post_not_idempotent``: a deferred ``EchoHttpOperator`` POST without
   ``idempotent=True``: the task must fail before deferring, and no POST reaches the server.
   (The trigger level, a POST with ``idempotent=True`` run twice, is in
   ``tests/reliability/test_post_replay.py``.)

The pulls, their DAGs, the counting and the reference pull are the scale-out drills' too
(``deploy/pull_drills.py``). What the service saw is counted by an ASGI middleware on the
sandbox's CCEE app: every
``datastore_search`` page request by ``(resource_id, offset)`` (the planning probes, ``limit=0``
or ``fields=_id``, apart), counted from the start of the drills. Each pull's output is compared
byte for byte with an uninterrupted ``run_pull`` of the same source run afterwards in this
process. The moment of each kill is read from the manifest file (deterministic), never from a
sleep; no assertion is about time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil  # type: ignore[import-untyped]
import pytest
from cryptography.fernet import Fernet, InvalidToken

from deploy.demo import run_demo
from deploy.deployment import Deployment
from deploy.pull_drills import (
    LATENCY_MS,
    TRIGGERER_OUTPUT,
    TRIGGERER_YEARS,
    WORKER_OUTPUT,
    WORKER_YEARS,
    CountingMiddleware,
    DatastorePages,
    chunk_plan,
    expected_chunks,
    partial,
    pull_drill_dags,
    reference_pull,
    resource_rows,
)
from echo_connhandler.pull import LocalStorage, read_checkpoint

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deployment: uses the session's real local Airflow (api-server, scheduler, "
        "dag-processor, triggerer), started once for every such test",
    )
    # pytest-xdist registers this marker itself; without it installed, unregistered marks
    # warn (an error under the project's warning filters).
    config.addinivalue_line(
        "markers", "xdist_group(name): keep these tests on one pytest-xdist worker (loadgroup)"
    )


# -- the restart drills' settings ----------------------------------------------------------------
#: The drills' DAG bundle (a temporary folder): apart from the example DAGs in the REST API.
DRILL_BUNDLE = "restart-drills"
#: Seconds the drills may take before the fixture gives up (not an assertion on time).
DRILL_TIMEOUT_S = 420.0
#: Settings of the shared deployment the drills need (harmless to the demo).
DRILL_ENV = {
    # A killed triggerer's triggers go to a live one once its heartbeat is this old.
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    # A killed task process is reported by its supervisor at once (exit -9: up_for_retry);
    # heartbeat-timeout detection is only the fallback should the supervisor die too.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}

POST_PATH = "/bazefield.services/api/objects/timeseries/aggregated"

POST_DAG = """
with DAG("drill_post_not_idempotent", schedule="@daily", start_date=START, catchup=False):
    EchoHttpOperator(
        task_id="post",
        conn_id="echo_http_default",
        method="POST",
        endpoint="objects/timeseries/aggregated",
        json={
            "ObjectIds": ["1001"],
            "Points": ["ActivePower"],
            "Aggregates": ["Average"],
            "From": "2024-01-01T00:00:00Z",
            "To": "2024-01-02T00:00:00Z",
            "Interval": "1h",
        },
        deferrable=True,
        retries=0,
    )
"""


# -- one drill -----------------------------------------------------------------------------------
@dataclass
class Drill:
    dag_id: str
    years: tuple[int, ...]
    output: str  # relative to the data lake
    run_id: str = ""
    ti_id: str = ""
    killed: str = ""  # what was killed, once it was
    try_at_kill: int = 0
    plan: list[tuple[str, int]] = field(default_factory=list)  # (resource_id, offset) by index
    done_at_kill: set[int] = field(default_factory=set)
    pages: dict[tuple[str, int], int] = field(default_factory=dict)
    probes: int = 0
    ti: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    deferred: bool = False
    output_bytes: bytes = b""
    reference_bytes: bytes = b""
    leftovers: list[str] = field(default_factory=list)

    @property
    def expected_rows(self) -> int:
        return sum(resource_rows(year) for year in self.years)

    @property
    def expected_chunks(self) -> int:
        return expected_chunks(self.years)

    def manifest(self, lake: Path) -> dict[str, Any] | None:
        """The checkpoint's manifest now (None when there is none, or it is being removed)."""
        for path in sorted(lake.glob(f"{self.output}.parts-*/manifest.json")):
            with contextlib.suppress(OSError, ValueError):
                return read_checkpoint(LocalStorage(), str(path.parent))
        return None

    def record_kill(self, what: str, manifest: dict[str, Any] | None) -> None:
        assert manifest is not None, f"{self.dag_id}: the checkpoint vanished at the kill"
        self.killed = what
        self.plan = chunk_plan(manifest)
        self.done_at_kill = {int(i) for i in manifest["done"]}
        assert 0 < len(self.done_at_kill) < len(self.plan), (
            f"{self.dag_id}: the kill came too late or too early "
            f"({len(self.done_at_kill)}/{len(self.plan)} chunks done)"
        )


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Until no process is left in the process group ``pgid`` (SIGKILLed ones are reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc.pid)
        if not left:
            return
        time.sleep(0.1)
    raise TimeoutError(f"process group {pgid} still has processes after {timeout:.0f} s")


def _task_process(ti_id: str) -> psutil.Process | None:
    """The task process of a task instance: the task runner titles itself
    ``airflow worker -- <ti id>`` (its supervisor, the LocalExecutor worker, does not)."""
    title = f"airflow worker -- {ti_id}"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if cmdline.strip() == title:
            return proc
    return None


def _retry_locked(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``, again when the API server answered 500 "Database error": on SQLite a
    write may wait more than the database's busy timeout behind the scheduler's."""
    for attempt in range(5):
        try:
            return call(*args)
        except RuntimeError as exc:
            if "Database error" not in str(exc) or attempt == 4:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _task_instance(deployment: Deployment, drill: Drill) -> dict[str, Any]:
    tis = _retry_locked(deployment.task_instances, drill.dag_id, drill.run_id)
    assert len(tis) == 1, tis
    return dict(tis[0])


def _explain(deployment: Deployment) -> str:
    """The end of the processes' logs, for a failure message."""
    parts = []
    for name in ("scheduler", "triggerer"):
        log = deployment.processes.log_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            parts.append(f"--- {name}.log\n" + "\n".join(log.read_text().splitlines()[-30:]))
    return "\n".join(parts)


def _decrypt(fernet: Fernet, value: str) -> str:
    """A trigger row's kwargs as stored (Fernet-encrypted), in clear."""
    try:
        return fernet.decrypt(value.encode()).decode()
    except (InvalidToken, ValueError):
        return value


def run_restart_drills(
    deployment: Deployment, counter: DatastorePages, reference_dir: Path
) -> dict[str, Any]:
    """The three drills on the running deployment; what they saw (``test_restart_drills.py``)."""
    triggerer_drill = Drill("drill_triggerer_restart", TRIGGERER_YEARS, TRIGGERER_OUTPUT)
    worker_drill = Drill("drill_worker_kill", WORKER_YEARS, WORKER_OUTPUT)
    post = Drill("drill_post_not_idempotent", (), "")
    lake = Path(deployment.data_lake)
    started = time.monotonic()
    triggers_before = set(deployment.trigger_rows)
    bazefield = deployment.sandbox.faults("bazefield")
    # The demo's Bazefield pull posts to the same endpoint: only the drills' POSTs count.
    posts_before = bazefield.stats["requests"].get(POST_PATH, 0)
    ccee = deployment.sandbox.faults("ccee")
    ccee.configure(latency_ms=LATENCY_MS)
    counter.counting = True
    try:
        deployment.wait_for_dags(3, bundle=DRILL_BUNDLE)
        for drill in (triggerer_drill, worker_drill, post):
            drill.run_id = _retry_locked(deployment.start_run, drill.dag_id)

        deadline = time.monotonic() + DRILL_TIMEOUT_S
        while not (triggerer_drill.killed and worker_drill.killed):
            deployment.processes.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no kill moment in {DRILL_TIMEOUT_S:.0f} s\n{_explain(deployment)}"
                )
            for drill in (triggerer_drill, worker_drill):
                if not drill.killed and (lake / drill.output).is_file():
                    raise AssertionError(f"{drill.dag_id}: the pull ended before the kill")
            if not triggerer_drill.killed and partial(triggerer_drill.manifest(lake)):
                pgid = deployment.processes.running["triggerer"].pid
                deployment.processes.kill("triggerer")  # SIGKILL, the whole process group
                _wait_group_gone(pgid)  # the trigger runner subprocess included
                triggerer_drill.record_kill("triggerer", triggerer_drill.manifest(lake))
                deployment.processes.start("triggerer")
            if not worker_drill.killed and partial(worker_drill.manifest(lake)):
                ti = _task_instance(deployment, worker_drill)
                proc = _task_process(str(ti["id"]))
                if proc is not None:
                    worker_drill.try_at_kill = int(ti["try_number"])
                    os.killpg(proc.pid, signal.SIGKILL)  # the task runner has its own group
                    _wait_group_gone(proc.pid)
                    worker_drill.record_kill("task process", worker_drill.manifest(lake))
            time.sleep(0.1)

        finished = deployment.wait_for_runs(
            {d.dag_id: d.run_id for d in (triggerer_drill, worker_drill, post)}
        )
    finally:
        counter.counting = False
        ccee.configure()  # no added latency any more
    for drill in (triggerer_drill, worker_drill, post):
        drill.ti = _task_instance(deployment, drill)
        task_id = drill.ti["task_id"]
        value = deployment.xcom(drill.dag_id, drill.run_id, task_id)
        drill.summary = value if isinstance(value, dict) else {}
        drill.deferred = deployment.deferred(drill.dag_id, drill.run_id, task_id)
    # The POST task's log as the UI shows it (the API's entries, an exception's included).
    post_log = repr(deployment.task_log(post.dag_id, post.run_id, "post", 1))
    posts_sent = bazefield.stats["requests"].get(POST_PATH, 0) - posts_before
    fernet = Fernet(deployment.secrets.fernet_key.encode())
    # The trigger rows seen since the drills started (the demo's are not theirs).
    trigger_rows = [
        _decrypt(fernet, kwargs)
        for trigger_id, kwargs in deployment.trigger_rows.items()
        if trigger_id not in triggers_before
    ]
    # What the service saw for the drills, before the reference pulls add their own.
    for drill in (triggerer_drill, worker_drill):
        resources = {resource for resource, _ in drill.plan}
        drill.pages = {k: n for k, n in counter.pages.items() if k[0] in resources}
        drill.probes = sum(n for r, n in counter.probes.items() if r in resources)
        output = lake / drill.output
        drill.output_bytes = output.read_bytes() if output.is_file() else b""
        drill.leftovers = sorted(
            str(p.relative_to(lake)) for p in output.parent.iterdir() if p != output
        )
        drill.reference_bytes = asyncio.run(
            reference_pull(
                deployment.sandbox.urls.ccee,
                drill.years,
                reference_dir / f"{drill.dag_id}-{Path(drill.output).name}",
            )
        )
    return {
        "triggerer": triggerer_drill,
        "worker": worker_drill,
        "post": post,
        "runs": finished,
        "post_log": post_log,
        "posts_sent": posts_sent,
        "trigger_rows": trigger_rows,
        "blocked_loop_warnings": deployment.blocked_loop_warnings(),
        "seconds": time.monotonic() - started,
    }


# -- the shared deployment -----------------------------------------------------------------------
@dataclass
class SharedRun:
    """What the shared deployment's phases left for the tests."""

    #: ``run_demo``'s exit code (None when it raised), output, report, and its error if any.
    demo: dict[str, Any]
    #: ``run_restart_drills``'s result (empty when they failed: ``drills_error``).
    drills: dict[str, Any]
    drills_error: str = ""

    def drills_or_fail(self) -> dict[str, Any]:
        """The drills' result, or the test fails with why there is none."""
        if not self.drills:
            why = self.drills_error or f"the demo failed before them:\n{self.demo['stderr']}"
            pytest.fail(f"the restart drills did not run to the end:\n{why}")
        return self.drills


@pytest.fixture(scope="session")
def shared_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRun]:
    """One deployment for the session: the demo, then the restart drills, then the stop and
    the scan (see the module's docstring)."""
    home = tmp_path_factory.mktemp("airflow-home")
    drill_dags = tmp_path_factory.mktemp("restart-drills-dags")
    reference_dir = tmp_path_factory.mktemp("restart-drills-reference")
    report_path = home.parent / "report.json"
    (drill_dags / "restart_drills.py").write_text(
        pull_drill_dags(
            "restart drills (tests/deploy/conftest.py)",
            triggerer_dag="drill_triggerer_restart",
            worker_dag="drill_worker_kill",
            more=POST_DAG,
            operators=("EchoHttpOperator",),
        ),
        encoding="utf-8",
    )
    deployment = Deployment(home, extra_dag_bundles={DRILL_BUNDLE: drill_dags}, extra_env=DRILL_ENV)
    # The Airflow processes are not pytest's: a test's variables would change their logging.
    for key in [k for k in deployment.processes.env if k.startswith("PYTEST")]:
        del deployment.processes.env[key]
    counter = DatastorePages()
    # Before the start: Starlette takes no middleware once its app runs.
    deployment.sandbox.app("ccee").add_middleware(CountingMiddleware, counter=counter)

    drills: dict[str, Any] = {}
    drills_error: list[str] = []

    def restart_drills(running: Deployment) -> None:
        try:
            drills.update(run_restart_drills(running, counter, reference_dir))
        except Exception:  # kept for the drills' tests; the demo's still stop and scan
            drills_error.append(traceback.format_exc() + "\n" + _explain(running))

    output = io.StringIO()
    returncode: int | None = None
    demo_error = ""
    with contextlib.redirect_stdout(output):
        try:
            returncode = run_demo(deployment, report_path, while_running=restart_drills)
        except Exception:
            demo_error = traceback.format_exc()
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    ps = subprocess.run(["ps", "axeww", "-o", "args"], capture_output=True, text=True, check=True)  # noqa: S607
    demo = {
        "returncode": returncode,
        "stdout": output.getvalue(),
        "stderr": demo_error,
        "processes_left": [line for line in ps.stdout.splitlines() if str(deployment.home) in line],
        **report,
    }
    yield SharedRun(demo=demo, drills=drills, drills_error="\n".join(drills_error))
    deployment.processes.stop_all()  # nothing left to stop unless the stop itself failed
