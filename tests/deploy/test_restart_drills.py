"""Restart drills on the real local deployment: kill a process in the middle of a pull.

One deployment (``deploy.local_airflow.Deployment``: api-server, scheduler with LocalExecutor,
dag-processor and triggerer as separate processes on SQLite, the sandbox in this process) runs
three DAGs of its own, written into a temporary DAGs folder:

1. ``drill_triggerer_restart``: a deferred ``CceeDatastoreOperator`` pull (60 pages). When the
   checkpoint manifest in the data lake shows some but not all chunks done, the triggerer's
   whole process group is SIGKILLed, then the triggerer is started again. The pull must finish in
   the same task try, from the checkpoint.
2. ``drill_worker_kill``: the same kind of pull in the worker (``deferrable=False``,
   ``retries=1``). When the manifest shows partial progress, the task process (titled
   ``airflow worker -- <ti id>``, in its own process group under the LocalExecutor's supervisor)
   is SIGKILLed; Airflow puts the task up for retry and the second try resumes from the
   checkpoint.
3. ``drill_post_not_idempotent``: a deferred ``EchoHttpOperator`` POST without
   ``idempotent=True``: the task must fail before deferring, and no POST reaches the server. (The
   trigger level, a POST with ``idempotent=True`` run twice, is in
   ``tests/reliability/test_post_replay.py``.)

What the service saw is counted by an ASGI middleware on the sandbox's CCEE app: every
``datastore_search`` page request by ``(resource_id, offset)`` (the planning probes, ``limit=0``
or ``fields=_id``, apart). Each pull's output is compared byte for byte with an uninterrupted
``run_pull`` of the same source run afterwards in this process.

The moment of each kill is read from the manifest file (deterministic), never from a sleep; no
assertion is about time. The module takes about 2 to 3 minutes (one stack start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import psutil
import pytest
from cryptography.fernet import Fernet, InvalidToken
from starlette.types import ASGIApp, Receive, Scope, Send

from deploy.local_airflow import Deployment
from echo_connhandler import CceeHttpHandler, HttpConnProperties
from echo_connhandler.pull import CceeDatastoreSource, LocalStorage, read_checkpoint, run_pull
from echo_connhandler.sandbox import SandboxConfig

pytestmark = pytest.mark.deployment

T = TypeVar("T")

YEARS = (2024, 2025)
ROWS_PER_RESOURCE = 1200
PAGE_SIZE = 40
#: Pages of each pull: 2 resources x 1 200 rows / 40.
CHUNKS = len(YEARS) * ROWS_PER_RESOURCE // PAGE_SIZE
#: Added to every sandbox request: with 2 pages in flight a pull lasts about 15 s.
LATENCY_MS = 500
CONCURRENCY = 2
#: Kill once at least this many chunks are recorded in the manifest (and not all of them).
KILL_AT = 12
#: Seconds the drills may take before the module gives up (not an assertion on time).
DRILL_TIMEOUT_S = 420.0

POST_PATH = "/bazefield.services/api/objects/timeseries/aggregated"

DAG_FILE = '''
"""DAGs of the restart drills (tests/deploy/test_restart_drills.py)."""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from echo_connhandler_provider.operators import CceeDatastoreOperator, EchoHttpOperator

LAKE = "{{ var.value.echo_data_lake }}"
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def pull(dataset, output, **kwargs):
    return CceeDatastoreOperator(
        task_id="pull",
        conn_id="ccee_default",
        dataset=dataset,
        years=%(years)r,
        page_size=%(page_size)d,
        concurrency=%(concurrency)d,
        output=LAKE + "/" + output,
        progress_every=2.0,
        **kwargs,
    )


with DAG("drill_triggerer_restart", schedule="@daily", start_date=START, catchup=False):
    pull("pld_horario", "%(out1)s", deferrable=True, retries=0)

with DAG("drill_worker_kill", schedule="@daily", start_date=START, catchup=False):
    pull(
        "pld_media_diaria",
        "%(out2)s",
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

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
'''


# -- what the service saw ------------------------------------------------------------------------
@dataclass
class DatastoreRequests:
    """``datastore_search`` requests received by the sandbox's CCEE app, faulted ones included."""

    pages: Counter[tuple[str, int]] = field(default_factory=Counter)
    probes: Counter[str] = field(default_factory=Counter)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def count(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].endswith("/datastore_search"):
                query = parse_qs(scope["query_string"].decode("latin-1"))
                resource = query.get("resource_id", [""])[0]
                limit = int(query.get("limit", ["0"])[0])
                if limit > 0 and "fields" not in query:
                    self.pages[(resource, int(query.get("offset", ["0"])[0]))] += 1
                else:
                    self.probes[resource] += 1
            await app(scope, receive, send)

        return count


class _Counting:
    """``app.add_middleware(_Counting, counter=...)``: Starlette builds it with the app."""

    def __init__(self, app: ASGIApp, counter: DatastoreRequests) -> None:
        self._call = counter.middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._call(scope, receive, send)


# -- one drill -----------------------------------------------------------------------------------
@dataclass
class Drill:
    dag_id: str
    dataset: str
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

    def manifest(self, lake: Path) -> dict[str, Any] | None:
        """The checkpoint's manifest now (None when there is none, or it is being removed)."""
        for path in sorted(lake.glob(f"{self.output}.parts-*/manifest.json")):
            with contextlib.suppress(OSError, ValueError):
                return read_checkpoint(LocalStorage(), str(path.parent))
        return None

    def record_kill(self, what: str, manifest: dict[str, Any] | None) -> None:
        assert manifest is not None, f"{self.dag_id}: the checkpoint vanished at the kill"
        self.killed = what
        self.plan = [
            (str(c["params"]["resource_id"]), int(c["params"]["offset"]))
            for c in sorted(manifest["plan"]["chunks"], key=lambda c: int(c["index"]))
        ]
        self.done_at_kill = {int(i) for i in manifest["done"]}
        assert 0 < len(self.done_at_kill) < len(self.plan), (
            f"{self.dag_id}: the kill came too late or too early "
            f"({len(self.done_at_kill)}/{len(self.plan)} chunks done)"
        )


def _partial(manifest: dict[str, Any] | None) -> bool:
    if manifest is None:
        return False
    return KILL_AT <= len(manifest.get("done") or {}) < len(manifest["plan"]["chunks"])


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
    path = f"dags/{drill.dag_id}/dagRuns/{drill.run_id}/taskInstances"
    tis = _retry_locked(deployment.api.call, "GET", path).get("task_instances", [])
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


async def _reference(url: str, dataset: str, output: Path) -> bytes:
    """An uninterrupted pull of the same source (another output, so another checkpoint)."""
    props = HttpConnProperties(host=url)
    async with CceeHttpHandler(props, skip_connect=True) as ccee:
        source = CceeDatastoreSource(dataset=dataset, years=list(YEARS), page_size=PAGE_SIZE)
        await run_pull(ccee, source, str(output), concurrency=16)
    return output.read_bytes()


# -- the deployment and the drills (once for the module) -----------------------------------------
@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("restart-drills-home")
    dags = tmp_path_factory.mktemp("restart-drills-dags")
    triggerer_drill = Drill("drill_triggerer_restart", "pld_horario", "drills/triggerer/pull.jsonl")
    worker_drill = Drill("drill_worker_kill", "pld_media_diaria", "drills/worker/pull.jsonl")
    (dags / "restart_drills.py").write_text(
        DAG_FILE
        % {
            "years": list(YEARS),
            "page_size": PAGE_SIZE,
            "concurrency": CONCURRENCY,
            "out1": triggerer_drill.output,
            "out2": worker_drill.output,
        },
        encoding="utf-8",
    )
    config = SandboxConfig(
        seed=42, ccee_years=YEARS, ccee_rows_per_resource=ROWS_PER_RESOURCE, latency_ms=LATENCY_MS
    )
    extra_env = {
        # A killed triggerer's triggers go to a live one once its heartbeat is this old.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        # A killed task process is reported by its supervisor at once (exit -9: up_for_retry);
        # heartbeat-timeout detection is only the fallback should the supervisor die too.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }
    deployment = Deployment(home, dags_folder=dags, sandbox_config=config, extra_env=extra_env)
    # The Airflow processes are not pytest's: a test's variables would change their logging.
    for key in [k for k in deployment.processes.env if k.startswith("PYTEST")]:
        del deployment.processes.env[key]
    counter = DatastoreRequests()
    deployment.sandbox.app("ccee").add_middleware(_Counting, counter=counter)
    lake = Path(deployment.data_lake)
    post = Drill("drill_post_not_idempotent", "", "")
    started = time.monotonic()
    with deployment:
        deployment.wait_for_dags(3)
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
            if not triggerer_drill.killed and _partial(triggerer_drill.manifest(lake)):
                pgid = deployment.processes.running["triggerer"].pid
                deployment.processes.kill("triggerer")  # SIGKILL, the whole process group
                _wait_group_gone(pgid)  # the trigger runner subprocess included
                triggerer_drill.record_kill("triggerer", triggerer_drill.manifest(lake))
                deployment.processes.start("triggerer")
            if not worker_drill.killed and _partial(worker_drill.manifest(lake)):
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
        for drill in (triggerer_drill, worker_drill, post):
            drill.ti = _task_instance(deployment, drill)
            task_id = drill.ti["task_id"]
            value = deployment.xcom(drill.dag_id, drill.run_id, task_id)
            drill.summary = value if isinstance(value, dict) else {}
            drill.deferred = deployment.deferred(drill.dag_id, drill.run_id, task_id)
        post_log = "\n".join(
            p.read_text(errors="replace") for p in deployment.task_logs(post.dag_id)
        )
        posts_sent = deployment.sandbox.faults("bazefield").stats["requests"].get(POST_PATH, 0)
        fernet = Fernet(deployment.secrets.fernet_key.encode())
        trigger_rows = [_decrypt(fernet, k) for k in deployment.trigger_rows.values()]
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
                _reference(
                    deployment.sandbox.urls.ccee,
                    drill.dataset,
                    tmp_path_factory.mktemp("reference") / Path(drill.output).name,
                )
            )
        yield {
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


def _report(name: str, drill: Drill, drills: dict[str, Any]) -> None:
    refetched = sorted(i for i, key in enumerate(drill.plan) if drill.pages.get(key, 0) > 1)
    print(
        f"\n{name}: killed the {drill.killed} at {len(drill.done_at_kill)}/{len(drill.plan)} "
        f"chunks; try {drill.ti.get('try_number')}, {drill.ti.get('state')}; "
        f"summary: {drill.summary.get('chunks')} chunks, {drill.summary.get('chunks_resumed')} "
        f"resumed, {drill.summary.get('rows')} rows, {drill.summary.get('retries')} retries; "
        f"page requests {sum(drill.pages.values())} (fetched twice: {len(refetched)} chunks "
        f"{refetched}), planning probes {drill.probes}; module {drills['seconds']:.0f} s, "
        f"blocked-loop warnings {len(drills['blocked_loop_warnings'])}"
    )


def _check_resumed(drill: Drill) -> None:
    """The pull finished from its checkpoint: the same bytes as an uninterrupted pull, every
    chunk fetched, the chunks done before the kill never again, fewer than 2 requests per
    chunk."""
    assert drill.ti["state"] == "success", drill.ti
    assert len(drill.plan) == CHUNKS
    assert drill.summary["chunks"] == CHUNKS
    assert drill.summary["rows"] == len(YEARS) * ROWS_PER_RESOURCE
    assert drill.summary["chunks_resumed"] == len(drill.done_at_kill) > 0
    assert drill.output_bytes, "no output"
    assert drill.output_bytes == drill.reference_bytes
    assert drill.leftovers == [], "a checkpoint or temporary file was left"
    counts = [drill.pages.get(key, 0) for key in drill.plan]
    assert all(n >= 1 for n in counts), counts
    assert all(counts[i] == 1 for i in drill.done_at_kill), counts
    assert all(n <= 2 for n in counts), counts
    assert sum(counts) < 2 * CHUNKS
    assert set(drill.pages) == set(drill.plan), "a page outside the plan was requested"


def test_triggerer_killed_mid_pull_resumes_in_the_same_try(drills: dict[str, Any]) -> None:
    drill: Drill = drills["triggerer"]
    _report("triggerer restart", drill, drills)
    assert drill.killed == "triggerer"
    assert drill.deferred, "the pull did not run in the triggerer"
    assert drill.ti["try_number"] == 1, "a triggerer restart must not use a task try"
    _check_resumed(drill)
    # The planning probes (2 per resource) ran once: the resumed trigger read the manifest.
    assert drill.probes == 2 * len(YEARS)


def test_worker_killed_mid_pull_retry_resumes(drills: dict[str, Any]) -> None:
    drill: Drill = drills["worker"]
    _report("worker kill", drill, drills)
    assert drill.killed == "task process"
    assert not drill.deferred
    assert drill.try_at_kill == 1
    assert drill.ti["try_number"] == 2, "the retry did not run"
    _check_resumed(drill)
    assert drill.probes == 2 * len(YEARS)


def test_non_idempotent_post_is_never_deferred(drills: dict[str, Any]) -> None:
    """Refused in ``execute`` before deferring: no trigger, so no restart can replay it."""
    drill: Drill = drills["post"]
    print(f"\nPOST: {drill.ti.get('state')}, {drills['posts_sent']} POSTs received")
    assert drill.ti["state"] == "failed"
    assert drill.ti["try_number"] == 1
    assert not drill.deferred
    assert "a deferred POST needs idempotent=True" in drills["post_log"]
    assert drills["posts_sent"] == 0
    # No trigger of the deployment ever held the POST (the captured rows, decrypted).
    assert not [k for k in drills["trigger_rows"] if "timeseries/aggregated" in k]
