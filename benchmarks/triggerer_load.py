"""Triggerer load: 200 PullTriggers at once in ONE event loop, against the sandbox.

What Airflow's triggerer does with deferred pulls: every trigger is rebuilt from its serialised
kwargs, and its ``run()`` async generator is consumed as a task of one event loop, all of them
at once. Here: 150 CCEE pulls of small resources (3 datasets x 5 years of ``--ccee-rows`` rows,
pages of 500 rows, as JSON Lines, gzip CSV or Parquet) and 50 Bazefield pulls (one object, two
points, one day at 10 minutes, windows of 6 hours), mixed, with ``AIRFLOW_CONN_*`` connections
(concurrency 2 each: up to 400 requests in flight). The sandbox runs in its own process
(``python -m echo_connhandler.sandbox``, ``--latency-ms`` per request), so it does not share
the GIL with the triggers.

Figures, for each mode:

* every output must be the bytes of a reference pull of the same source run alone (its SHA-256;
  the references are pulled one at a time, in another process, before the load);
* the longest event-loop stall: a monitor coroutine sleeps 10 ms in a loop and records how late
  it wakes up (target < 0.1 s; Airflow's triggerer warns when a trigger blocks the loop 0.2 s);
* the total time, and the peak RSS of the load process (``VmHWM``, /proc/self/status).

Modes, each in a fresh child process (Airflow imported, as in a triggerer):

``cold``
    the triggers start in a process that has done nothing else: what the first batch of a
    freshly started triggerer meets (the first client builds the process's SSL context on the
    loop, ``ssl.create_default_context`` with certifi; the first Parquet pull imports pyarrow
    in the pull's worker thread while holding the GIL, ...).
``warm``
    the same after a warm-up outside the timed part: the handler's SSL contexts built, pyarrow
    imported, one connection looked up: what every later batch of a running triggerer meets.
``warm_gc_frozen``
    ``warm``, then ``gc.freeze()`` (docs/performance.md: half of the loop's stall in a process
    with Airflow loaded is the collector's full passes over long-lived objects).

``warm_shared_worker``
    an experiment, not the library as shipped: ``warm``, with the engine's one worker thread
    *per pull* replaced by one worker thread shared by every pull of the process (patched in
    this benchmark's process only). With 200 pulls the engine starts 200 threads (each start
    blocks the loop until the new thread runs) that all compete with the loop for the GIL.

``--slow-callbacks`` runs once more in asyncio's debug mode (``slow_callback_duration`` 50 ms)
and lists the callbacks that held the loop longest (debug mode slows everything: its times are
not figures). Results: a markdown table on stdout, ``benchmarks/results/triggerer_load.json``
(not versioned). Run::

    python benchmarks/triggerer_load.py                  # 200 triggers, the three modes
    python benchmarks/triggerer_load.py --triggers 40 --modes warm   # a smoke run
    python benchmarks/triggerer_load.py --slow-callbacks # and what held the loop
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import hashlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "triggerer_load.json"

TRIGGERS = 200
BAZEFIELD_SHARE = 0.25  # 50 of 200
CCEE_ROWS = 2_000
CCEE_PAGE = 500
CONCURRENCY = 2
LATENCY_MS = 20.0
MODES = ("cold", "warm", "warm_gc_frozen", "warm_shared_worker")
MAX_STALL_S = 0.1
AIRFLOW_WARNS_S = 0.2
STALL_PERIOD_S = 0.010
CHILD_TIMEOUT_S = 1800

CCEE_DATASETS = ("pld_horario", "pld_media_diaria", "geracao_horaria_submercado")
CCEE_YEARS = (2021, 2022, 2023, 2024, 2025)
CCEE_FORMATS = ("jsonl", "csv.gz", "parquet")
BAZE_OBJECTS = ("1001", "1002", "2001")
BAZE_DAYS = 8


# -- what is pulled --------------------------------------------------------------------------------
def specs(count: int) -> list[dict[str, Any]]:
    """``count`` trigger specs, CCEE and Bazefield interleaved; ``key`` names the distinct pull
    (its reference), ``name`` the trigger (its own output)."""
    bazefield = round(count * BAZEFIELD_SHARE)
    kinds = ["bazefield" if i % round(1 / BAZEFIELD_SHARE) == 0 else "ccee" for i in range(count)]
    while kinds.count("bazefield") > bazefield:  # small counts: keep the share
        kinds[kinds.index("bazefield")] = "ccee"
    out: list[dict[str, Any]] = []
    ccee_i = baze_i = 0
    for index, kind in enumerate(kinds):
        if kind == "ccee":
            dataset = CCEE_DATASETS[ccee_i % len(CCEE_DATASETS)]
            year = CCEE_YEARS[(ccee_i // len(CCEE_DATASETS)) % len(CCEE_YEARS)]
            fmt = CCEE_FORMATS[(ccee_i // 15) % len(CCEE_FORMATS)]
            ccee_i += 1
            key = f"ccee-{dataset}-{year}.{fmt}"
            trigger = {
                "conn_id": "bench_ccee",
                "source": "ccee_datastore",
                "arguments": {"dataset": dataset, "years": [year], "page_size": CCEE_PAGE},
                "format": fmt,
            }
        else:
            obj = BAZE_OBJECTS[baze_i % len(BAZE_OBJECTS)]
            day = 1 + (baze_i // len(BAZE_OBJECTS)) % BAZE_DAYS
            baze_i += 1
            key = f"baze-{obj}-03{day:02d}.jsonl"
            trigger = {
                "conn_id": "bench_baze",
                "source": "bazefield_timeseries",
                "arguments": {
                    "objects": [obj],
                    "points": ["ActivePower", "WindSpeed"],
                    "aggregates": ["Average"],
                    "start": f"2024-03-{day:02d}T00:00:00Z",
                    "end": f"2024-03-{day + 1:02d}T00:00:00Z",
                    "interval": "10m",
                    "window": 6 * 3600,
                },
                "format": "jsonl",
            }
        out.append({"name": f"t{index:03d}-{key}", "key": key, "trigger": trigger})
    return out


# -- measuring -------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM`` (``ru_maxrss`` survives exec on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class StallWatch:
    """A coroutine that sleeps ``period`` in a loop and records how late it wakes up."""

    def __init__(self, period: float = STALL_PERIOD_S) -> None:
        self.period = period
        self.stalls: list[tuple[float, float]] = []  # (lateness, seconds since start)
        self.samples = 0
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self.beat = time.monotonic()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.period)
            late = loop.time() - before - self.period
            self.beat = time.monotonic()
            self.samples += 1
            self.stalls.append((late, before - self._started))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._task = loop.create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lateness = sorted((late for late, _ in self.stalls), reverse=True)
        worst = sorted(self.stalls, reverse=True)[:5]
        return {
            "max_s": round(lateness[0], 4) if lateness else 0.0,
            "p99_s": round(lateness[len(lateness) // 100], 4) if lateness else 0.0,
            "over_0_1_s": sum(1 for late in lateness if late >= MAX_STALL_S),
            "over_0_2_s": sum(1 for late in lateness if late >= AIRFLOW_WARNS_S),
            "worst": [{"stall_s": round(a, 4), "at_s": round(b, 2)} for a, b in worst],
            "samples": self.samples,
        }


class SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's "Executing <...> took X seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        match = re.search(r"took ([0-9.]+) seconds", text)
        if match:
            self.found.append((float(match.group(1)), text[:400]))


#: Innermost frames of a thread that waits for work (left out of the stall samples).
IDLE = ("_worker (futures/thread.py:81)", "wait (python3.11/threading.py", "_wait_for_tstate_lock")


class StallSampler(threading.Thread):
    """While the monitor is late by more than ``threshold``, samples the stacks of every
    thread (``sys._current_frames``) every 5 ms: what the loop's thread, and the others, are
    doing during the stalls. A sample needs the GIL: a stall in one C call shows up as the
    frame that made the call."""

    def __init__(self, watch: StallWatch, loop_thread: int, threshold: float = 0.05) -> None:
        super().__init__(name="stall-sampler", daemon=True)
        self.watch, self.loop_thread, self.threshold = watch, loop_thread, threshold
        self.stacks: collections.Counter[str] = collections.Counter()
        self.stop_event = threading.Event()

    @staticmethod
    def _stack(frame: Any, depth: int = 7) -> str:
        parts = []
        while frame is not None and len(parts) < depth:
            code = frame.f_code
            where = "/".join(Path(code.co_filename).parts[-2:])
            parts.append(f"{code.co_name} ({where}:{frame.f_lineno})")
            frame = frame.f_back
        return " < ".join(parts)

    def run(self) -> None:
        me = threading.get_ident()
        while not self.stop_event.wait(0.005):
            if time.monotonic() - self.watch.beat < self.threshold + self.watch.period:
                continue
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                who = "loop" if ident == self.loop_thread else "other thread"
                stack = self._stack(frame)
                if who != "loop" and stack.startswith(IDLE):
                    continue  # a worker thread waiting for work
                self.stacks[f"[{who}] {stack}"] += 1


# -- the child processes ---------------------------------------------------------------------------
def build_trigger(spec: dict[str, Any], output: Path) -> Any:
    """A PullTrigger as the triggerer gets it: rebuilt from its serialised kwargs (JSON)."""
    from airflow.sdk.module_loading import import_string

    from echo_connhandler_provider.triggers.pull import PullTrigger

    made = PullTrigger(**spec["trigger"], output=str(output))
    classpath, kwargs = made.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


async def consume(trigger: Any) -> dict[str, Any]:
    """What the triggerer does with a trigger: iterate ``run()`` until its first event."""
    events = trigger.run()
    try:
        event = await anext(events)
    finally:
        await events.aclose()
    return dict(event.payload)


def child_reference(args: argparse.Namespace) -> None:
    """Each distinct pull alone, one after the other: the reference bytes."""
    distinct = {s["key"]: s for s in specs(args.triggers)}
    out = Path(args.workdir) / "reference"
    out.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    rows: dict[str, int] = {}
    started = time.perf_counter()
    for key, spec in distinct.items():
        payload = asyncio.run(consume(build_trigger(spec, out / key)))
        if payload.get("status") != "success":
            raise RuntimeError(f"reference {key} failed: {payload}")
        digests[key] = sha256(out / key)
        rows[key] = int(payload["summary"]["rows"])
    seconds = time.perf_counter() - started
    print("RESULT " + json.dumps({"digests": digests, "rows": rows, "seconds": seconds}))


def warm_up() -> None:
    """What a running triggerer has done before: SSL contexts built, pyarrow imported, a
    connection looked up (its secrets backends initialised)."""
    from airflow.sdk import Connection

    from echo_connhandler._handler import ssl_context
    from echo_connhandler.pull._parquet import require_pyarrow

    ssl_context(True)
    ssl_context(False)
    require_pyarrow()
    Connection.get("bench_ccee")


def share_one_worker() -> None:
    """The experiment of ``warm_shared_worker``: every pull's blocking work in one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from echo_connhandler.pull import _engine, _offload

    shared = ThreadPoolExecutor(1, thread_name_prefix="echo-pull-shared")
    shared.submit(lambda: None).result()  # started now, not on the loop

    class SharedWorker:
        def __enter__(self) -> ThreadPoolExecutor:
            self._token = _offload._worker.set(shared)
            return shared

        def __exit__(self, *exc: object) -> None:
            _offload._worker.reset(self._token)

    _engine.pull_worker = SharedWorker  # type: ignore[assignment,misc]


async def load(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    all_specs = specs(args.triggers)
    triggers = [build_trigger(s, out / s["name"]) for s in all_specs]
    slow: SlowCallbacks | None = None
    if args.slow_callbacks:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        slow = SlowCallbacks()
        logging.getLogger("asyncio").addHandler(slow)
    watch = StallWatch()
    watch.start()
    sampler = None
    if args.sample_stalls:
        sampler = StallSampler(watch, threading.get_ident())
        sampler.start()
    await asyncio.sleep(0.05)  # the monitor runs before the first trigger
    started = time.perf_counter()
    loop_cpu = time.thread_time()  # this thread: the event loop's own CPU time
    tasks = [
        asyncio.create_task(consume(t), name=s["name"])
        for s, t in zip(all_specs, triggers, strict=True)
    ]
    payloads = await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - started
    loop_cpu = time.thread_time() - loop_cpu
    stall = await watch.stop()
    if sampler is not None:
        sampler.stop_event.set()
        sampler.join()
    failed = {}
    for spec, payload in zip(all_specs, payloads, strict=True):
        if isinstance(payload, BaseException):
            failed[spec["name"]] = f"{type(payload).__name__}: {payload}"
        elif payload.get("status") != "success":
            failed[spec["name"]] = f"{payload.get('error_type')}: {payload.get('message')}"
    result: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "loop_cpu_s": round(loop_cpu, 3),
        "loop_busy": round(loop_cpu / seconds, 3) if seconds else None,
        "stall": stall,
        "failed": failed,
        "retries": sum(
            int(p["summary"].get("retries") or 0)
            for p in payloads
            if isinstance(p, dict) and p.get("status") == "success"
        ),
    }
    if sampler is not None:
        result["stall_stacks"] = [
            {"samples": n, "stack": stack} for stack, n in sampler.stacks.most_common(25)
        ]
    if slow is not None:
        result["slow_callbacks"] = [
            {"seconds": s, "callback": text} for s, text in sorted(slow.found, reverse=True)[:15]
        ]
    return result


def child_load(args: argparse.Namespace) -> None:
    """One mode: the triggers at once in one loop; outputs checked against the references."""
    logging.basicConfig(level=logging.WARNING)
    import airflow  # noqa: F401 - a triggerer has Airflow loaded (and its objects tracked)

    from echo_connhandler_provider.triggers import pull  # noqa: F401

    warm = args.mode.startswith("warm")
    setup = time.perf_counter()
    if warm:
        warm_up()
    if args.mode == "warm_shared_worker":
        share_one_worker()
    if args.mode == "warm_gc_frozen":
        gc.collect()
        gc.freeze()
    setup_s = time.perf_counter() - setup
    out = Path(args.workdir) / args.mode
    out.mkdir(parents=True, exist_ok=True)
    rss_idle = peak_rss_mb()
    result = asyncio.run(load(args, out))
    result["rss_peak_mb"] = round(peak_rss_mb(), 1)
    result["rss_before_mb"] = round(rss_idle, 1)
    result["warm_up_s"] = round(setup_s, 3)
    reference = json.loads(Path(args.reference).read_text())["digests"]
    mismatched = []
    for spec in specs(args.triggers):
        path = out / spec["name"]
        if spec["name"] in result["failed"]:
            continue
        if not path.exists() or sha256(path) != reference[spec["key"]]:
            mismatched.append(spec["name"])
    result["mismatched"] = mismatched
    result["exact"] = args.triggers - len(mismatched) - len(result["failed"])
    shutil.rmtree(out, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------------------
@contextlib.contextmanager
def sandbox_process(rows: int, latency_ms: float) -> Iterator[dict[str, str]]:
    """``python -m echo_connhandler.sandbox`` in a child process; yields its base URLs."""
    command = [sys.executable, "-m", "echo_connhandler.sandbox", "--port-base", "0"]
    command += ["--ccee-rows", str(rows), "--latency-ms", str(latency_ms)]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command, stdout=subprocess.PIPE, text=True
    )
    urls: dict[str, str] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.match(r"\s*(bazefield|ccee):\s+(\S+)", line)
            if match:
                urls[match.group(1)] = match.group(2)
            if len(urls) == 2:
                break
        if len(urls) != 2:
            raise RuntimeError("the sandbox did not start")
        yield urls
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def child_env(urls: dict[str, str], airflow_home: str) -> dict[str, str]:
    from echo_connhandler.sandbox import DEMO_CREDENTIALS

    baze = DEMO_CREDENTIALS["bazefield"]
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": airflow_home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_BENCH_CCEE": json.dumps(
                {"conn_type": "ccee", "host": urls["ccee"], "extra": {"concurrency": CONCURRENCY}}
            ),
            "AIRFLOW_CONN_BENCH_BAZE": json.dumps(
                {
                    "conn_type": "bazefield",
                    "host": urls["bazefield"],
                    "login": baze["user"],
                    "password": baze["password"],
                    "extra": {"concurrency": CONCURRENCY},
                }
            ),
        }
    )
    return env


def run_child(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, __file__, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
        return {"error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("httpx", "orjson", "apache-airflow", "pyarrow", "starlette", "uvicorn"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, read-only
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }


def targets(results: dict[str, dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Per mode: every output exact, and the longest stall under 0.1 s."""
    found = []
    for mode, r in results.items():
        if "error" in r:
            found.append(
                {
                    "target": f"{mode}: {count} triggers complete",
                    "value": None,
                    "shown": "failed",
                    "goal": "all",
                    "verdict": "not met",
                    "reason": r["error"].splitlines()[-1][:200],
                }
            )
            continue
        exact = r["exact"]
        found.append(
            {
                "target": f"{mode}: {count} triggers complete, same bytes as alone",
                "value": exact,
                "shown": f"{exact}/{count}",
                "goal": f"{count}/{count}",
                "verdict": "met" if exact == count else "not met",
                "reason": ""
                if exact == count
                else f"failed {sorted(r['failed'])[:3]}, mismatched {r['mismatched'][:3]}",
            }
        )
        stall = r["stall"]["max_s"]
        worst = r["stall"]["worst"][0] if r["stall"]["worst"] else {}
        found.append(
            {
                "target": f"{mode}: longest event-loop stall",
                "value": stall,
                "shown": f"{stall:.3f} s",
                "goal": f"< {MAX_STALL_S:g} s",
                "verdict": "met" if stall < MAX_STALL_S else "not met",
                "reason": ""
                if stall < MAX_STALL_S
                else f"worst at {worst.get('at_s')} s into the run; "
                f"{r['stall']['over_0_1_s']} stalls >= 0.1 s, {r['stall']['over_0_2_s']} >= 0.2 s",
            }
        )
    return found


def markdown(results: dict[str, dict[str, Any]], found: list[dict[str, Any]], count: int) -> str:
    lines = [
        "| mode | triggers | exact outputs | total s | loop thread CPU | longest stall s "
        "| stalls >= 0.1 s | stalls >= 0.2 s | p99 lateness s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        if "error" in r:
            lines.append(f"| {mode} | {count} | failed | | | | | | | |")
            continue
        s = r["stall"]
        lines.append(
            f"| {mode} | {count} | {r['exact']}/{count} | {r['seconds']:.2f} | "
            f"{r['loop_busy']:.0%} | {s['max_s']:.3f} | "
            f"{s['over_0_1_s']} | {s['over_0_2_s']} | {s['p99_s']:.3f} | {r['rss_peak_mb']:.0f} |"
        )
    lines += ["", "| target | measured | goal | verdict |", "|---|---:|---|---|"]
    for t in found:
        verdict = t["verdict"] + (f": {t['reason']}" if t["reason"] else "")
        lines.append(f"| {t['target']} | {t['shown']} | {t['goal']} | {verdict} |")
    return "\n".join(lines)


def main_parent(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        print(f"unknown modes: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    info = machine()
    print(
        f"# triggerer load: {args.triggers} PullTriggers in one loop; {info['cpu']}, "
        f"{info['cores']} cores, python {info['python']}; sandbox in its own process, latency "
        f"{args.latency_ms:g} ms, CCEE resources of {args.ccee_rows:,} rows, pages of "
        f"{CCEE_PAGE}, concurrency {CONCURRENCY} per trigger",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="echo-bench-triggerer-"))
    try:
        with sandbox_process(args.ccee_rows, args.latency_ms) as urls:
            env = child_env(urls, str(work / "airflow-home"))
            common = ["--triggers", str(args.triggers), "--workdir", str(work)]
            reference = run_child(["--child", "reference", *common], env)
            if "error" in reference:
                print(f"reference pulls failed: {reference['error']}", file=sys.stderr)
                return 1
            (work / "reference.json").write_text(json.dumps(reference))
            distinct = len(reference["digests"])
            print(
                f"references: {distinct} distinct pulls alone in {reference['seconds']:.1f} s "
                f"({sum(reference['rows'].values()):,} rows)",
                flush=True,
            )
            load_args = [*common, "--reference", str(work / "reference.json")]
            if args.sample_stalls:
                load_args.append("--sample-stalls")
            for mode in modes:
                run = run_child(["--child", "load", "--mode", mode, *load_args], env)
                results[mode] = run
                print(f"  {mode}: {describe(run, args.triggers)}", flush=True)
            debug: dict[str, Any] = {}
            for mode in modes if args.slow_callbacks else []:
                run = run_child(
                    ["--child", "load", "--mode", mode, "--slow-callbacks", *load_args], env
                )
                debug[mode] = run
                print(f"  {mode}, asyncio debug mode: the callbacks that held the loop longest:")
                for item in (run.get("slow_callbacks") or [])[:8]:
                    print(f"    {item['seconds']:.3f} s  {item['callback'][:150]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = targets(results, args.triggers)
    print()
    print(markdown(results, found, args.triggers))
    document = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "config": {
            "triggers": args.triggers,
            "ccee_rows": args.ccee_rows,
            "ccee_page": CCEE_PAGE,
            "concurrency_per_trigger": CONCURRENCY,
            "latency_ms": args.latency_ms,
            "stall_period_s": STALL_PERIOD_S,
            "modes": modes,
        },
        "reference": {"distinct_pulls": distinct, "seconds": round(reference["seconds"], 3)},
        "results": results,
        "targets": found,
        "slow_callbacks": debug,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 1 if any("error" in r for r in results.values()) else 0


def describe(run: dict[str, Any], count: int) -> str:
    if "error" in run:
        return f"FAILED {run['error']}"
    s = run["stall"]
    return (
        f"{run['exact']}/{count} exact, {run['seconds']:.2f} s (loop thread busy "
        f"{run['loop_busy']:.0%}), longest stall "
        f"{s['max_s']:.3f} s (worst: {s['worst'][:3]}), peak RSS {run['rss_peak_mb']:.0f} MB, "
        f"{run['retries']} retries"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=TRIGGERS)
    parser.add_argument("--modes", default=",".join(MODES), help=f"among {','.join(MODES)}")
    parser.add_argument("--ccee-rows", type=int, default=CCEE_ROWS, help="rows per resource")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    parser.add_argument(
        "--slow-callbacks",
        action="store_true",
        help="then a cold run in asyncio debug mode: the callbacks that held the loop",
    )
    parser.add_argument(
        "--sample-stalls",
        action="store_true",
        help="sample every thread's stack while the loop is late (diagnosis; adds overhead)",
    )
    parser.add_argument("--json", default=str(RESULTS), help="where the results are written")
    # internal: the child processes
    parser.add_argument("--child", choices=["reference", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "reference":
        child_reference(args)
        return 0
    if args.child == "load":
        child_load(args)
        return 0
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
