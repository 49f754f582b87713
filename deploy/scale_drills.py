"""The scale-out mode's demo and drills: ``python -m deploy.local_airflow demo --scale``.

The example DAGs run as ``make demo`` runs them (``deploy.demo.run_demo``) on the scale-out
deployment (``deploy.scale_out``), then, on the same running deployment, three drills, each a
CCEE pull (``CceeDatastoreOperator``, the daily dataset, 50 rows a page, 2 pages in flight, 500
ms added to every CCEE request) writing to S3:

1. ``triggerer``: a deferred pull; once its checkpoint manifest on S3 shows partial progress, the
   triggerer running its trigger (the trigger table's ``triggerer_id``) is SIGKILLed with its
   process group. The other triggerer takes the trigger over once the dead one's heartbeat is
   older than ``[triggerer] triggerer_health_check_threshold``, and the pull resumes from the
   checkpoint in the same task try. The killed triggerer is started again afterwards.
2. ``worker``: a pull in the worker (``deferrable=False``, ``retries=1``); once the manifest shows
   partial progress, the Celery worker running it is SIGKILLed, its whole process tree (the task
   process has a process group of its own). The scheduler fails the task instance once its
   heartbeat is older than ``[scheduler] task_instance_heartbeat_timeout``, and the retry, on the
   other worker, resumes from the checkpoint. The killed worker is started again afterwards.
3. ``fanout``: 20 deferred pulls at once (one year each); how the triggers spread over the two
   triggerers is recorded; once a quarter of all chunks are done, the triggerer holding the most
   triggers is SIGKILLed, and its pulls move to the other one.

Each pull's output is compared byte for byte with an uninterrupted ``run_pull`` of the same
source (run afterwards, in this process, to a local folder); the CCEE app of the sandbox counts
every ``datastore_search`` page by ``(resource_id, offset)``: a chunk recorded in the manifest
at a kill is never fetched again, no chunk more than twice, no page outside the plan. The kill
moments are read from the manifests, never from a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from deploy.deployment import Deployment, say
from deploy.pull_drills import (
    DATASET,
    LATENCY_MS,
    PAGE_SIZE,
    TRIGGERER_OUTPUT,
    TRIGGERER_YEARS,
    WORKER_OUTPUT,
    WORKER_YEARS,
    CountingMiddleware,
    DatastorePages,
    chunk_plan,
    chunks_done,
    expected_chunks,
    partial,
    pull_drill_dags,
    reference_pull,
    resource_rows,
)
from deploy.scale_out import ScaleOut, ScaleSettings
from echo_connhandler.sandbox import SandboxConfig

__all__ = [
    "DRILL_BUNDLE",
    "FANOUT_YEARS",
    "SCALE_SANDBOX",
    "PullCheck",
    "check_pull",
    "demo_scale",
    "drill_dag_file",
    "run_scale_drills",
]

V = TypeVar("V")

DRILL_BUNDLE = "scale-drills"
#: One resource per pull: the request counts of the 20 pulls never mix.
FANOUT_YEARS = tuple(range(2006, 2026))
#: The sandbox of the mode: one CCEE resource per year and dataset for 20 years (the example
#: DAGs use the newest years only).
SCALE_SANDBOX = SandboxConfig(seed=42, ccee_years=FANOUT_YEARS)
DRILL_TIMEOUT_S = 600.0

FANOUT_DAG = """
with DAG("scale_drill_fanout", schedule="@daily", start_date=START, catchup=False):
    for year in %(fanout_years)r:
        pull(f"pull_{year}", [year], f"drills/fanout/{year}.jsonl", deferrable=True, retries=0)
"""


def drill_dag_file() -> str:
    return pull_drill_dags(
        "scale-out drills (deploy/scale_drills.py)",
        triggerer_dag="scale_drill_triggerer",
        worker_dag="scale_drill_worker",
        more=FANOUT_DAG % {"fanout_years": list(FANOUT_YEARS)},
    )


# -- one pull's verdict --------------------------------------------------------------------------
@dataclass
class PullCheck:
    """What one pull of a drill did, and whether it is exact."""

    name: str
    years: tuple[int, ...]
    output: str  # relative to the data lake
    plan: list[tuple[str, int]] = field(default_factory=list)
    done_at_kill: list[int] = field(default_factory=list)
    killed: bool = False
    pages: dict[str, int] = field(default_factory=dict)  # "resource:offset" -> requests
    probes: int = 0
    same_bytes: bool = False
    output_size: int = 0
    leftovers: list[str] = field(default_factory=list)
    refetched: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_pull(
    check: PullCheck,
    counts: Counter[tuple[str, int]],
    output: bytes | None,
    reference: bytes,
    expected: int | None = None,
) -> PullCheck:
    """Fill ``check``'s verdict: the same bytes as the reference, every planned chunk fetched,
    none recorded at a kill fetched again, none more than twice (once more when in flight at a
    kill), none without a kill twice, no page outside the plan."""
    problems = check.problems
    expected = expected_chunks(check.years) if expected is None else expected
    if len(check.plan) != expected:
        problems.append(f"plan of {len(check.plan)} chunks, {expected} expected")
    resources = {r for r, _ in check.plan}
    mine = {k: n for k, n in counts.items() if k[0] in resources}
    check.pages = {f"{r}:{o}": n for (r, o), n in sorted(mine.items())}
    per_chunk = [mine.get(key, 0) for key in check.plan]
    check.refetched = [i for i, n in enumerate(per_chunk) if n > 1]
    check.same_bytes = output is not None and output == reference
    check.output_size = len(output or b"")
    if not check.same_bytes:
        problems.append("output differs from an uninterrupted pull" if output else "no output")
    if any(n == 0 for n in per_chunk):
        problems.append("a chunk of the plan was never fetched")
    if any(n > 2 for n in per_chunk):
        problems.append(f"a chunk fetched more than twice: {per_chunk}")
    if any(per_chunk[i] != 1 for i in check.done_at_kill):
        problems.append("a chunk recorded before the kill was fetched again")
    if check.refetched and not check.killed:
        problems.append(f"chunks fetched twice without a kill: {check.refetched}")
    if set(mine) - set(check.plan):
        problems.append("a page outside the plan was requested")
    if check.leftovers:
        problems.append(f"left next to the output: {check.leftovers}")
    return check


# -- reading the deployment ----------------------------------------------------------------------
class Lake:
    """The data lake as the drills read it: the deployment's storage (the S3 bucket, through a
    filesystem that caches no listing: every read goes to the server)."""

    def __init__(self, deployment: Deployment) -> None:
        self.storage, root = deployment.lake("")
        self.root = root.rstrip("/")

    def _folder_and_name(self, output: str) -> tuple[str, str]:
        folder, name = f"{self.root}/{output}".rsplit("/", 1)
        return folder, name

    def manifests(self, output: str) -> dict[str, Any] | None:
        """The checkpoint manifest of ``output`` now (None: none, or being removed)."""
        from echo_connhandler.pull import read_checkpoint

        folder, name = self._folder_and_name(output)
        for entry in self.storage.list_names(folder):
            if entry.startswith(f"{name}.parts-"):
                with contextlib.suppress(OSError, ValueError):
                    found = read_checkpoint(self.storage, f"{folder}/{entry}")
                    if found is not None:
                        return found
        return None

    def read(self, output: str) -> bytes | None:
        path = f"{self.root}/{output}"
        return self.storage.read_bytes(path) if self.storage.exists(path) else None

    def written(self, output: str) -> bool:
        return self.storage.exists(f"{self.root}/{output}")

    def progressed(self, output: str, done_at_kill: int) -> bool:
        """Whether the pull went on after a kill: its output is there, or its checkpoint
        records more chunks than at the kill."""
        return self.written(output) or chunks_done(self.manifests(output)) > done_at_kill

    def siblings(self, output: str) -> list[str]:
        """What is next to ``output`` whose name starts with it (checkpoints, temporary
        files)."""
        folder, name = self._folder_and_name(output)
        return [n for n in self.storage.list_names(folder) if n.startswith(name) and n != name]


def _tree(pid: int) -> list[Any]:
    import psutil  # type: ignore[import-untyped]

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _kill_tree(deployment: Deployment, label: str) -> None:
    """SIGKILL a process of the deployment, its process group and every descendant (a task
    process has a group of its own), and wait until they are gone."""
    import psutil

    process = deployment.processes.running[label]
    tree = _tree(process.pid)
    deployment.processes.kill(label)  # the group, then wait()
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(tree, timeout=30)


def _ti_row(scale: ScaleOut, dag_id: str, run_id: str, task_id: str) -> tuple[Any, ...] | None:
    rows = scale.query(
        "SELECT id, state, try_number, trigger_id FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s AND task_id = %s",
        (dag_id, run_id, task_id),
    )
    return rows[0] if rows else None


def _worker_of(deployment: Deployment, ti_id: str) -> str | None:
    """The Celery worker (label) whose process tree holds the task process of ``ti_id``."""
    import psutil

    title = f"airflow worker -- {ti_id}"
    for label, process in list(deployment.processes.running.items()):
        if not label.startswith("worker-"):
            continue
        for proc in _tree(process.pid):
            with contextlib.suppress(psutil.Error):
                if " ".join(proc.cmdline()).strip() == title:
                    return label
    return None


class Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self.end = time.monotonic() + seconds
        self.what = what

    def check(self, deployment: Deployment) -> None:
        deployment.processes.check_alive()
        if deployment.scale:
            deployment.scale.check_alive()
        if time.monotonic() > self.end:
            raise TimeoutError(f"{self.what}: not done in time")


# -- the drills ----------------------------------------------------------------------------------
def _kill_mid_pull(deployment: Deployment, lake: Lake, check: PullCheck, victim: str) -> float:
    """SIGKILL ``victim`` (its whole tree), then note in ``check`` the plan and the chunks the
    checkpoint recorded at that moment. Returns the moment of the kill (``time.monotonic``)."""
    _kill_tree(deployment, victim)
    killed_at = time.monotonic()
    manifest = lake.manifests(check.output)
    assert manifest is not None, "the checkpoint vanished at the kill"
    check.killed = True
    check.plan = chunk_plan(manifest)
    check.done_at_kill = sorted(int(i) for i in manifest["done"])
    return killed_at


def _wait_for_kill_moment(
    deployment: Deployment,
    lake: Lake,
    check: PullCheck,
    run: tuple[str, str],
    deadline: Deadline,
    pick: Callable[[tuple[Any, ...]], V | None],
) -> tuple[tuple[Any, ...], V]:
    """Until the pull of ``run`` (dag id, run id) is at its kill moment (:func:`partial`) and
    ``pick`` finds what to kill in its task instance row; the row and what was picked."""
    scale = _scale(deployment)
    while True:
        deadline.check(deployment)
        if lake.written(check.output):
            raise AssertionError("the pull ended before the kill")
        manifest = lake.manifests(check.output)
        ti = _ti_row(scale, *run, "pull")
        if partial(manifest) and ti is not None:
            picked = pick(ti)
            if picked is not None:
                return ti, picked
        time.sleep(0.2)


def _until_progressed(
    deployment: Deployment,
    lake: Lake,
    check: PullCheck,
    deadline: Deadline,
    killed_at: float,
    watch: Callable[[], None],
) -> float:
    """Seconds from the kill until the pull recorded more chunks than at the kill (or wrote
    its output); ``watch`` is called before each look, for the drill's own observations."""
    while True:
        deadline.check(deployment)
        watch()
        if lake.progressed(check.output, len(check.done_at_kill)):
            return time.monotonic() - killed_at
        time.sleep(0.2)


def drill_triggerer(deployment: Deployment, lake: Lake) -> dict[str, Any]:
    scale = _scale(deployment)
    dag_id = "scale_drill_triggerer"
    check = PullCheck("triggerer", TRIGGERER_YEARS, TRIGGERER_OUTPUT)
    t0 = time.monotonic()
    run_id = deployment.start_run(dag_id)
    deadline = Deadline(DRILL_TIMEOUT_S, "the triggerer drill")
    ti, trigger_id = _wait_for_kill_moment(
        deployment, lake, check, (dag_id, run_id), deadline, lambda row: row[3]
    )
    try_at_kill = int(ti[2])
    victim_job = scale.trigger_assignments().get(int(trigger_id))
    victim = scale.label_of_job(victim_job)
    killed_at = _kill_mid_pull(deployment, lake, check, victim)
    done_at_kill = len(check.done_at_kill)
    say(f"  killed {victim} (job {victim_job}) at {done_at_kill}/{len(check.plan)} chunks")
    taken_over_s = None
    new_owner = None

    def watch_takeover() -> None:
        nonlocal taken_over_s, new_owner
        owner = scale.trigger_assignments().get(int(trigger_id))
        if taken_over_s is None and owner is not None and owner != victim_job:
            taken_over_s = time.monotonic() - killed_at
            new_owner = scale.label_of_job(owner)

    resumed_s = _until_progressed(deployment, lake, check, deadline, killed_at, watch_takeover)
    say(
        f"  {new_owner} took the trigger over after {taken_over_s or 0:.1f} s; "
        f"resumed at {resumed_s:.1f} s"
    )
    scale.restart(deployment.processes, victim)  # two triggerers again
    run = deployment.wait_for_runs({dag_id: run_id})[dag_id]
    final = _ti_row(scale, dag_id, run_id, "pull")
    return {
        "check": check,
        "run_state": run["state"],
        "try_at_kill": try_at_kill,
        "try_number": final[2] if final else None,
        # A triggerer's death costs no task try: the same try resumes from the checkpoint.
        "same_try": final is not None and int(final[2]) == try_at_kill,
        "killed": victim,
        "taken_over_by": new_owner,
        "taken_over_s": taken_over_s,
        "failover_s": resumed_s,
        "seconds": time.monotonic() - t0,
    }


def drill_worker(deployment: Deployment, lake: Lake) -> dict[str, Any]:
    scale = _scale(deployment)
    dag_id = "scale_drill_worker"
    check = PullCheck("worker", WORKER_YEARS, WORKER_OUTPUT)
    t0 = time.monotonic()
    run_id = deployment.start_run(dag_id)
    deadline = Deadline(DRILL_TIMEOUT_S, "the worker drill")
    ti, victim = _wait_for_kill_moment(
        deployment,
        lake,
        check,
        (dag_id, run_id),
        deadline,
        lambda row: _worker_of(deployment, str(row[0])),
    )
    try_at_kill = int(ti[2])
    killed_at = _kill_mid_pull(deployment, lake, check, victim)
    done_at_kill = len(check.done_at_kill)
    say(
        f"  killed {victim} (its whole tree) at {done_at_kill}/{len(check.plan)} chunks, "
        f"try {try_at_kill}"
    )
    failed_s = None
    retry_worker = None

    def watch_retry() -> None:
        nonlocal failed_s, retry_worker
        ti = _ti_row(scale, dag_id, run_id, "pull")
        if failed_s is None and ti is not None and (ti[1] != "running" or int(ti[2]) > try_at_kill):
            failed_s = time.monotonic() - killed_at
        if ti is not None and retry_worker is None and int(ti[2]) > try_at_kill:
            retry_worker = _worker_of(deployment, str(ti[0]))

    resumed_s = _until_progressed(deployment, lake, check, deadline, killed_at, watch_retry)
    say(
        f"  task failed over after {failed_s or 0:.1f} s; the retry ({retry_worker}) "
        f"resumed at {resumed_s:.1f} s"
    )
    scale.restart(deployment.processes, victim)  # two workers again
    run = deployment.wait_for_runs({dag_id: run_id})[dag_id]
    final = _ti_row(scale, dag_id, run_id, "pull")
    return {
        "check": check,
        "run_state": run["state"],
        "try_at_kill": try_at_kill,
        "try_number": final[2] if final else None,
        # A worker's death costs one try: the retry, on the other worker, resumes.
        "one_retry": final is not None and int(final[2]) == try_at_kill + 1,
        "retry_on": retry_worker,
        "killed": victim,
        "detected_s": failed_s,
        "failover_s": resumed_s,
        "seconds": time.monotonic() - t0,
    }


def drill_fanout(deployment: Deployment, lake: Lake) -> dict[str, Any]:
    scale = _scale(deployment)
    dag_id = "scale_drill_fanout"
    checks = {
        year: PullCheck(f"fanout {year}", (year,), f"drills/fanout/{year}.jsonl")
        for year in FANOUT_YEARS
    }
    total = expected_chunks(FANOUT_YEARS)
    t0 = time.monotonic()
    run_id = deployment.start_run(dag_id)
    deadline = Deadline(DRILL_TIMEOUT_S, "the fan-out drill")
    spread_peak: dict[str, int] = {}
    assigned: dict[int, str] = {}  # trigger id -> its first triggerer
    victim = None
    killed_at = None
    taken_over_s = None
    moved: set[int] = set()
    spread_at_kill: dict[str, int] = {}
    while True:
        deadline.check(deployment)
        assignments = scale.trigger_assignments()
        tis = {
            str(r[0]): r
            for r in scale.query(
                "SELECT task_id, state, trigger_id FROM task_instance "
                "WHERE dag_id = %s AND run_id = %s",
                (dag_id, run_id),
            )
        }
        ours = {int(r[2]) for r in tis.values() if r[2] is not None}
        spread = Counter(scale.label_of_job(assignments.get(t)) for t in ours if t in assignments)
        if sum(spread.values()) > sum(spread_peak.values()):
            spread_peak = dict(spread)
        for trigger in ours:
            owner = assignments.get(trigger)
            if owner is not None:
                assigned.setdefault(trigger, scale.label_of_job(owner))
        if all(r[1] in ("success", "failed") for r in tis.values()) and len(tis) == len(checks):
            break
        if victim is None:
            manifests = {y: lake.manifests(c.output) for y, c in checks.items()}
            done = sum(chunks_done(m) for m in manifests.values())
            if done >= total // 4 and spread:
                victim = max(spread, key=lambda k: spread[k])
                victim_job = scale.triggerer_jobs[victim]
                moved = {t for t in ours if assignments.get(t) == victim_job}
                spread_at_kill = dict(spread)
                _kill_tree(deployment, victim)
                killed_at = time.monotonic()
                # The victim's pulls first: their manifests no longer change (the other
                # triggerer's pulls go on while these are read, and fetch nothing twice).
                on_victim = {
                    year
                    for year in checks
                    if (tis.get(f"pull_{year}") or (None, None, None))[2] in moved
                }
                for year in sorted(checks, key=lambda y: y not in on_victim):
                    check = checks[year]
                    manifest = lake.manifests(check.output)
                    if manifest is not None:
                        check.plan = chunk_plan(manifest)
                        check.done_at_kill = sorted(int(i) for i in manifest["done"])
                    check.killed = year in on_victim
                say(
                    f"  killed {victim} holding {len(moved)} of {len(ours)} triggers at "
                    f"{done}/{total} chunks"
                )
        if (
            killed_at is not None
            and taken_over_s is None
            and moved
            and all(
                assignments.get(t) not in (None, scale.triggerer_jobs.get(victim or ""))
                for t in moved & set(assignments)
            )
        ):
            taken_over_s = time.monotonic() - killed_at
        time.sleep(0.5)
    if victim is not None:
        scale.restart(deployment.processes, victim)
    if not any(c.killed for c in checks.values()):
        # Without a kill the checks below would all pass: they would have drilled nothing.
        raise AssertionError("the pulls ended before a triggerer holding one of them was killed")
    run = deployment.wait_for_runs({dag_id: run_id})[dag_id]
    states = Counter(
        str(r[0])
        for r in scale.query(
            "SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s", (dag_id, run_id)
        )
    )
    return {
        "checks": checks,
        "run_state": run["state"],
        "states": dict(states),
        "spread_peak": spread_peak,
        "spread_at_kill": spread_at_kill,
        "first_assignment": dict(Counter(assigned.values())),
        "killed": victim,
        "triggers_moved": len(moved),
        "taken_over_s": taken_over_s,
        "seconds": time.monotonic() - t0,
    }


def _scale(deployment: Deployment) -> ScaleOut:
    if deployment.scale is None:
        raise RuntimeError("the scale-out drills need the scale-out mode")
    return deployment.scale


def _finish_checks(
    deployment: Deployment,
    lake: Lake,
    checks: list[PullCheck],
    counts: Counter[tuple[str, int]],
    probes: Counter[str],
) -> None:
    """Each pull's verdict against a reference pull (the counter off: its requests not
    counted)."""
    with tempfile.TemporaryDirectory(prefix="scale-drills-reference-") as folder:
        for check in checks:
            if not check.plan:  # no kill: the plan is the reference pull's
                check.plan = _reference_plan(check.years)
            output = lake.read(check.output)
            check.leftovers = lake.siblings(check.output)
            name = Path(folder) / f"{'-'.join(map(str, check.years))}.jsonl"
            reference = asyncio.run(reference_pull(deployment.sandbox.urls.ccee, check.years, name))
            check_pull(check, counts, output, reference)
            resources = {r for r, _ in check.plan}
            check.probes = sum(n for r, n in probes.items() if r in resources)


def _reference_plan(years: tuple[int, ...]) -> list[tuple[str, int]]:
    """The plan of a pull without a kill: each year's resource, a chunk per page."""
    from echo_connhandler.sandbox._ccee_data import DATASETS

    dataset = DATASETS[DATASET]
    return [
        (dataset.resource_id(year), offset)
        for year in years
        for offset in range(0, resource_rows(year), PAGE_SIZE)
    ]


def run_scale_drills(deployment: Deployment, counter: DatastorePages) -> dict[str, Any]:
    """The three drills on the running scale-out deployment; their report."""
    _scale(deployment)  # the scale-out mode, or a clear error
    lake = Lake(deployment)
    ccee = deployment.sandbox.faults("ccee")
    results: dict[str, Any] = {}
    deployment.wait_for_dags(3, bundle=DRILL_BUNDLE)
    for name, drill in (
        ("triggerer", drill_triggerer),
        ("worker", drill_worker),
        ("fanout", drill_fanout),
    ):
        say(f"scale drill: {name}")
        counter.pages.clear()
        counter.probes.clear()
        ccee.configure(latency_ms=LATENCY_MS)
        counter.counting = True
        try:
            result = drill(deployment, lake)
        except Exception:
            results[name] = {"error": traceback.format_exc(), "ok": False}
            say(f"  FAILED: {results[name]['error'].splitlines()[-1]}")
            continue
        finally:
            counter.counting = False
            ccee.configure()
        counts, probes = Counter(counter.pages), Counter(counter.probes)
        checks = list(result["checks"].values()) if name == "fanout" else [result["check"]]
        _finish_checks(deployment, lake, checks, counts, probes)
        result["ok"] = (
            result["run_state"] == "success"
            and result.get("same_try", True)
            and result.get("one_retry", True)
            and all(c.ok for c in checks)
        )
        if name == "fanout":
            result["checks"] = {str(k): asdict(v) for k, v in result["checks"].items()}
            result["refetched_chunks"] = sum(len(c.refetched) for c in checks)
        else:
            result["check"] = asdict(result["check"])
        results[name] = result
        summary = {k: v for k, v in result.items() if k not in ("check", "checks")}
        say(f"  {'ok' if result['ok'] else 'NOT OK'}: {json.dumps(summary, default=str)}")
        for check in checks:
            if not check.ok:
                say(f"  {check.name}: {'; '.join(check.problems)}")
    return results


# -- memory --------------------------------------------------------------------------------------
class RssSampler:
    """Samples, every second, each process's RSS (the main process, and its whole tree: a
    Celery worker's pool and task processes, PostgreSQL's backends); keeps the peaks (MiB)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.peak_main: dict[str, float] = {}
        self.peak_tree: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> Iterator[tuple[str, int]]:
        for label, process in list(self.deployment.processes.running.items()):
            yield label, process.pid
        scale = self.deployment.scale
        if scale:
            for service in (scale.postgres, scale.redis, scale.s3):
                if service.pid is not None:
                    yield service.name, service.pid
        yield "runner (sandbox)", os.getpid()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(1.0):
            for label, pid in self._pids():
                tree = [] if label.startswith("runner") else _tree(pid)
                with contextlib.suppress(psutil.Error):
                    main = psutil.Process(pid).memory_info().rss / 2**20
                    self.peak_main[label] = max(self.peak_main.get(label, 0.0), main)
                total = 0.0
                for proc in tree:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss / 2**20
                if tree:
                    self.peak_tree[label] = max(self.peak_tree.get(label, 0.0), total)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- the command ---------------------------------------------------------------------------------
def demo_scale(home: Path, report_path: Path | None = None, *, drills: bool = True) -> int:
    """``python -m deploy.local_airflow demo --scale``: the example DAGs on the scale-out
    deployment at ``home``, then the drills; everything stopped, the secret scan."""
    from deploy.demo import run_demo

    t0 = time.monotonic()
    drill_dags = home.resolve() / "drill_dags"
    drill_dags.mkdir(parents=True, exist_ok=True)
    (drill_dags / "scale_drills.py").write_text(drill_dag_file(), encoding="utf-8")
    deployment = Deployment(
        home,
        sandbox_config=SCALE_SANDBOX,
        extra_dag_bundles={DRILL_BUNDLE: drill_dags} if drills else None,
        scale=ScaleSettings(),
    )
    counter = DatastorePages()
    deployment.sandbox.app("ccee").add_middleware(CountingMiddleware, counter=counter)
    figures: dict[str, Any] = {}
    drill_results: dict[str, Any] = {}

    def while_running(running: Deployment) -> None:
        figures["demo_s"] = time.monotonic() - t0
        if drills:
            t1 = time.monotonic()
            drill_results.update(run_scale_drills(running, counter))
            figures["drills_s"] = time.monotonic() - t1
            running.pause(["scale_drill_triggerer", "scale_drill_worker", "scale_drill_fanout"])

    demo_report = home.resolve() / "demo-report.json"
    with RssSampler(deployment) as sampler:
        code = run_demo(deployment, demo_report, while_running=while_running)
    figures.update(
        start_s=deployment.timings.get("start"),
        services_and_migrate_s=deployment.timings.get("migrate"),
        scale_start=deployment.scale.timings if deployment.scale else {},
        total_s=time.monotonic() - t0,
        rss_peak_mib_main=sampler.peak_main,
        rss_peak_mib_tree=sampler.peak_tree,
    )
    left = _leftovers(deployment)
    drills_ok = not drills or (
        len(drill_results) == 3 and all(r.get("ok") for r in drill_results.values())
    )
    say("")
    say(
        f"scale-out: started in {figures['start_s'] or 0:.0f} s, "
        f"whole run {figures['total_s']:.0f} s"
    )
    for name, result in drill_results.items():
        say(
            f"  drill {name}: {'ok' if result.get('ok') else 'FAILED'}"
            + (f", failover {result['failover_s']:.1f} s" if result.get("failover_s") else "")
            + (f", {result['seconds']:.0f} s" if result.get("seconds") else "")
        )
    say("  peak RSS (MiB, main process / whole tree):")
    for label in sorted(sampler.peak_main):
        main, tree = sampler.peak_main[label], sampler.peak_tree.get(label, 0)
        say(f"    {label:<18} {main:7.0f} / {tree:7.0f}")
    say(f"  processes left: {len(left)}" + (f" {left}" if left else ""))
    report = {
        "ok": code == 0 and drills_ok and not left,
        "demo_exit_code": code,
        "figures": figures,
        "drills": drill_results,
        "processes_left": left,
    }
    path = report_path or home.resolve() / "scale-report.json"
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    say(f"report: {path}")
    return 0 if report["ok"] else 1


def _leftovers(deployment: Deployment) -> list[str]:
    """Processes still running whose command line names the deployment's home or one of its
    services' ports (none may be left)."""
    import psutil

    marks = [str(deployment.home)]
    if deployment.scale:
        marks += [
            f"127.0.0.1:{deployment.scale.redis.port}",
            f"-p {deployment.scale.postgres.port}",
            f"-p {deployment.scale.s3.port}",
        ]
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid():
                continue
            cmdline = " ".join(proc.info.get("cmdline") or [])
            env_home = (proc.info.get("environ") or {}).get("AIRFLOW_HOME")
            if any(m in cmdline for m in marks) or env_home == str(deployment.home):
                left.append(f"{proc.pid} {cmdline[:100]}")
    return left
