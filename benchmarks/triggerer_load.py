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
* the longest *loop CPU* between two wake-ups: the loop thread's own CPU time in that interval,
  what the code on the loop costs whatever else the machine runs (a stall with little of it is
  the loop waiting for a core or for the GIL), and the machine's load average;
* the garbage collector's passes (count and longest pause per generation);
* the total time, and the peak RSS of the load process (``VmHWM``, /proc/self/status).

Experiments, patched in the load process only (docs/performance.md, "Start-up burst"):
``--freeze-every S`` calls ``gc.freeze()`` every S seconds, ``--pull-threads N`` sets the pulls'
shared threads, ``--switch-interval S`` the interpreter's GIL switch interval. (The handler
paces its async requests itself, ``echo_connhandler._pace``: there is no switch for it.)

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

``warm_thread_per_pull``
    an experiment, not the library as shipped: ``warm``, with the engine's blocking calls in
    one new thread *per pull*, as the library did before its threads were shared by every pull
    (``echo_connhandler.pull._offload.PULL_THREADS``; patched in this benchmark's process only).
    With 200 pulls that starts 200 threads, each start blocking the loop until the new thread
    runs, and 200 threads then compete with the loop for the GIL.
``mix1000``
    ``warm``, and Airflow's default capacity of one triggerer (1,000 triggers) filled with the
    200 pulls, ``--sensors`` deferred ``EchoHttpSensor`` triggers polling every 5 s (most of
    them an answer that stays "not yet" until their deadline, one in four a dataset that is
    there after its first delay) and ``--timers`` of Airflow's ``DateTimeTrigger``, all in the
    one loop. Each event must be the expected one: the pulls' bytes, the sensors' ``timeout``
    or HTTP 200, the timers' moment (and how late a timer fired is reported).
``mix1000_gc_frozen``
    ``mix1000`` after ``gc.freeze()``.

How the triggers start (``--start``): ``airflow`` (default) as the triggerer's
``TriggerRunner.create_triggers`` does, one trigger after the other with two
``asyncio.sleep(0)`` around building each (so the loop runs between two triggers' starts);
``at-once``: every task created in one go, which makes the first steps of all the triggers one
loop turn (harsher than Airflow).

``--slow-callbacks`` runs once more in asyncio's debug mode (``slow_callback_duration`` 50 ms)
and lists the callbacks that held the loop longest (debug mode slows everything: its times are
not figures). Results: a markdown table on stdout, ``benchmarks/results/triggerer_load.json``
(not versioned). Run::

    python benchmarks/triggerer_load.py                  # 200 triggers, every mode
    python benchmarks/triggerer_load.py --triggers 40 --modes warm   # a smoke run
    python benchmarks/triggerer_load.py --slow-callbacks # and what held the loop
    python benchmarks/triggerer_load.py --modes mix1000 --freeze-every 1  # 1,000 triggers
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import gc
import hashlib
import json
import logging
import os
import platform
import random
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
MODES = (
    "cold",
    "warm",
    "warm_gc_frozen",
    "warm_thread_per_pull",
    "mix1000",
    "mix1000_gc_frozen",
)
MAX_STALL_S = 0.1
AIRFLOW_WARNS_S = 0.2
STALL_PERIOD_S = 0.010
CHILD_TIMEOUT_S = 1800
MIX_TRIGGERS = 1000  # Airflow's default [triggerer] capacity
SENSOR_POKE_S = 5.0
SENSOR_SHARE_FOUND = 4  # one sensor in 4 polls a dataset that is there

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
    """A coroutine that sleeps ``period`` in a loop and records how late it wakes up, and for
    each wake-up the CPU time the loop's thread and the whole process used meanwhile: a stall
    with little loop CPU is the loop waiting (for the GIL, or for a core the machine gave to
    another process), one with as much loop CPU as wall time is the loop computing."""

    def __init__(self, period: float = STALL_PERIOD_S) -> None:
        self.period = period
        # (lateness, seconds since start, loop thread CPU, process CPU) per wake-up
        self.stalls: list[tuple[float, float, float, float]] = []
        self.samples = 0
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self.beat = time.monotonic()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            cpu, process = time.thread_time(), time.process_time()
            await asyncio.sleep(self.period)
            late = loop.time() - before - self.period
            self.beat = time.monotonic()
            self.samples += 1
            cpu, process = time.thread_time() - cpu, time.process_time() - process
            self.stalls.append((late, before - self._started, cpu, process))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._task = loop.create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lateness = sorted((stall[0] for stall in self.stalls), reverse=True)
        worst = sorted(self.stalls, reverse=True)[:5]
        return {
            "max_s": round(lateness[0], 4) if lateness else 0.0,
            "p99_s": round(lateness[len(lateness) // 100], 4) if lateness else 0.0,
            "over_0_1_s": sum(1 for late in lateness if late >= MAX_STALL_S),
            "over_0_2_s": sum(1 for late in lateness if late >= AIRFLOW_WARNS_S),
            # The loop thread's own CPU time between two wake-ups: what the code on the loop
            # costs, whatever else the machine runs (a stall with little of it is the loop
            # waiting for a core or the GIL).
            "loop_cpu_max_s": round(max((stall[2] for stall in self.stalls), default=0.0), 4),
            "loop_cpu_over_0_1_s": sum(1 for stall in self.stalls if stall[2] >= MAX_STALL_S),
            "loop_cpu_over_0_05_s": sum(1 for stall in self.stalls if stall[2] >= 0.05),
            "worst": [
                {
                    "stall_s": round(late, 4),
                    "at_s": round(at, 2),
                    "loop_cpu_s": round(cpu, 3),
                    "process_cpu_s": round(process, 3),
                }
                for late, at, cpu, process in worst
            ],
            "samples": self.samples,
        }


class GcPauses:
    """The garbage collector's passes during the load (``gc.callbacks``): a full pass over the
    objects of a process with Airflow loaded holds the loop (it runs in whichever thread
    allocates, the loop's included)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{generation}": {
                "passes": len(pauses),
                "max_s": round(max(pauses, default=0.0), 4),
                "total_s": round(sum(pauses), 3),
            }
            for generation, pauses in self.pauses.items()
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
IDLE = ("_worker (futures/thread.py:", "wait (python3.11/threading.py", "_wait_for_tstate_lock")


class StallSampler(threading.Thread):
    """While the monitor is late by more than ``threshold``, samples the stacks of every
    thread (``sys._current_frames``) every 5 ms: what the loop's thread, and the others, are
    doing during the stalls. A sample needs the GIL: a stall in one C call shows up as the
    frame that made the call, and a loop thread shown in ``select`` is one waiting for the GIL
    (other threads hold it) rather than running code of its own.

    Each stall is one *episode* (its start, length and its own most frequent stacks), so the
    causes of the start-up burst can be told apart from those of the steady state."""

    def __init__(self, watch: StallWatch, loop_thread: int, threshold: float = 0.05) -> None:
        super().__init__(name="stall-sampler", daemon=True)
        self.watch, self.loop_thread, self.threshold = watch, loop_thread, threshold
        self.stacks: collections.Counter[str] = collections.Counter()
        self.episodes: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.origin = watch._started  # loop.time() is time.monotonic(): same clock

    @staticmethod
    def _stack(frame: Any, depth: int = 7) -> str:
        parts: list[str] = []
        while frame is not None and len(parts) < depth:
            code = frame.f_code
            where = "/".join(Path(code.co_filename).parts[-2:])
            parts.append(f"{code.co_name} ({where}:{frame.f_lineno})")
            frame = frame.f_back
        return " < ".join(parts)

    def _close(self, episode: dict[str, Any] | None) -> None:
        if episode is None:
            return
        loop_stacks: collections.Counter[str] = episode.pop("loop")
        others: collections.Counter[str] = episode.pop("others")
        episode["stall_s"] = round(self.watch.beat - episode.pop("beat") - self.watch.period, 3)
        episode["loop_stacks"] = [f"{n}x {s}" for s, n in loop_stacks.most_common(4)]
        episode["other_threads"] = [f"{n}x {s}" for s, n in others.most_common(4)]
        self.episodes.append(episode)

    def run(self) -> None:
        me = threading.get_ident()
        episode: dict[str, Any] | None = None
        while not self.stop_event.wait(0.005):
            beat = self.watch.beat
            if time.monotonic() - beat < self.threshold + self.watch.period:
                if episode is not None and beat != episode["beat"]:
                    self._close(episode)
                    episode = None
                continue
            if episode is not None and beat != episode["beat"]:
                self._close(episode)  # the loop woke in between: a new stall
                episode = None
            if episode is None:
                episode = {
                    "at_s": round(beat - self.origin, 3),
                    "beat": beat,
                    "samples": 0,
                    "loop": collections.Counter(),
                    "others": collections.Counter(),
                }
            episode["samples"] += 1
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                who = "loop" if ident == self.loop_thread else "other thread"
                if who == "loop":
                    stack = self._stack(frame, 12)
                    episode["loop"][stack] += 1
                else:
                    stack = self._stack(frame)
                    if stack.startswith(IDLE):
                        continue  # a worker thread waiting for work
                    episode["others"][stack] += 1
                self.stacks[f"[{who}] {self._stack(frame)}"] += 1
        self._close(episode)


# -- the child processes ---------------------------------------------------------------------------
def build_trigger(spec: dict[str, Any], output: Path) -> Any:
    """A PullTrigger as the triggerer gets it: rebuilt from its serialised kwargs (JSON)."""
    from airflow.sdk.module_loading import import_string

    from echo_connhandler_provider.triggers.pull import PullTrigger

    made = PullTrigger(**spec["trigger"], output=str(output))
    classpath, kwargs = made.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


async def consume(trigger: Any) -> Any:
    """What the triggerer does with a trigger: iterate ``run()`` until its first event."""
    events = trigger.run()
    try:
        event = await anext(events)
    finally:
        await events.aclose()
    payload = event.payload
    return dict(payload) if isinstance(payload, dict) else payload


async def finish_pulls(done: list[tuple[dict[str, Any], Path, dict[str, Any]]]) -> int:
    """What the resumed tasks do in the workers, outside the timed part: finish each pull whose
    trigger only fetched (``stage="fetched"``: pages kept as delivered in the checkpoint) into
    its output, so that the bytes can be compared. Returns how many were finished here."""
    from echo_connhandler.pull import build_source, run_pull
    from echo_connhandler_provider.hooks import BazefieldHook, CceeHook

    limit = asyncio.Semaphore(8)

    async def finish(spec: dict[str, Any], output: Path) -> None:
        trigger = spec["trigger"]
        hook_class = CceeHook if trigger["conn_id"] == "bench_ccee" else BazefieldHook
        hook = hook_class(trigger["conn_id"])
        async with limit:
            try:
                handler = await hook.aget_conn()
                source = build_source(trigger["source"], trigger["arguments"])
                await run_pull(
                    handler, source, str(output), format=trigger["format"], concurrency=CONCURRENCY
                )
            finally:
                await hook.aclose()

    todo = [
        (spec, output)
        for spec, output, payload in done
        if payload.get("status") == "success" and payload["summary"].get("stage") == "fetched"
    ]
    await asyncio.gather(*(finish(spec, output) for spec, output in todo))
    return len(todo)


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
        asyncio.run(finish_pulls([(spec, out / key, payload)]))
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


def thread_per_pull() -> None:
    """The experiment of ``warm_thread_per_pull``: each pull's blocking calls in a new thread of
    its own (the library before its threads were shared)."""
    from concurrent.futures import ThreadPoolExecutor

    from echo_connhandler.pull import _engine, _offload

    class OwnThread:
        def __enter__(self) -> ThreadPoolExecutor:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="echo-pull")
            self._token = _offload._worker.set(self._executor)
            return self._executor

        def __exit__(self, *exc: object) -> None:
            _offload._worker.reset(self._token)
            self._executor.shutdown(wait=False, cancel_futures=True)

    _engine.pull_worker = OwnThread  # type: ignore[assignment,misc]


def mix_specs(args: argparse.Namespace, pulls: int) -> list[dict[str, Any]]:
    """The sensors and timers of ``mix1000`` (``kind`` ``sensor`` or ``timer``); their deadlines
    and moments are set when the load starts (``at`` and ``deadline_s``: seconds from then)."""
    out: list[dict[str, Any]] = []
    for i in range(args.sensors):
        found = i % SENSOR_SHARE_FOUND == 0
        out.append(
            {
                "name": f"s{i:03d}-{'found' if found else 'not-yet'}",
                "kind": "sensor",
                "found": found,
                # "not yet" sensors poll until their deadline; the others fire at their first
                # poll, spread over the run.
                "first_delay": round((i * 7919 % 1000) / 1000 * SENSOR_POKE_S, 3),
                "deadline_s": args.mix_seconds + (i % 10) * 0.5,
                # First poll (first_delay + later_s) before the deadline, with a poke to spare.
                "later_s": (i * 104729 % 1000)
                / 1000
                * max(0.0, args.mix_seconds - 2 * SENSOR_POKE_S)
                if found
                else 0.0,
            }
        )
    for i in range(args.timers):
        out.append(
            {
                "name": f"d{i:03d}-timer",
                "kind": "timer",
                "at_s": 1.0 + (i * 7919 % 1000) / 1000 * (args.mix_seconds - 1.0),
            }
        )
    return out


def build_mix_trigger(spec: dict[str, Any], origin: Any) -> Any:
    """A sensor's or a timer's trigger, rebuilt from its serialised kwargs as a triggerer does."""
    from datetime import timedelta

    from airflow.sdk.module_loading import import_string

    if spec["kind"] == "timer":
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        made: Any = DateTimeTrigger(origin + timedelta(seconds=spec["at_s"]))
        classpath, kwargs = made.serialize()
        return import_string(classpath)(**kwargs)  # a datetime: not JSON, passed as is
    from echo_connhandler_provider.triggers.http import EchoHttpSensorTrigger

    dataset = "pld_horario" if spec["found"] else "no_such_dataset"
    made = EchoHttpSensorTrigger(
        request={
            "conn_type": "ccee",
            "conn_id": "bench_ccee",
            "method": "GET",
            "endpoint": "api/3/action/package_show",
            "request_kwargs": {"params": {"id": dataset}},
            "response_ok": 200,
        },
        polling={
            "poke_interval": SENSOR_POKE_S,
            "first_delay": spec["first_delay"] + spec["later_s"],
            "max_consecutive_errors": 3,
            "started_at": origin.isoformat(),
            "deadline": (origin + timedelta(seconds=spec["deadline_s"])).isoformat(),
        },
        not_yet_statuses=[404],
    )
    classpath, kwargs = made.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


def check_mix(spec: dict[str, Any], payload: Any, origin: Any) -> str | None:
    """What is wrong with a sensor's or a timer's event (None: the expected one)."""
    from datetime import timedelta

    if spec["kind"] == "timer":
        moment = origin + timedelta(seconds=spec["at_s"])
        return None if payload == moment else f"fired {payload!r}, expected {moment!r}"
    if not isinstance(payload, dict):
        return f"event {payload!r}"
    if spec["found"]:
        if payload.get("status") == "success" and payload.get("status_code") == 200:
            return None
        return f"expected HTTP 200, got {str(payload)[:200]}"
    deadline = (origin + timedelta(seconds=spec["deadline_s"])).isoformat()
    if payload.get("status") == "timeout" and payload.get("deadline") == deadline:
        return None
    return f"expected a timeout at {deadline}, got {str(payload)[:200]}"


async def consume_timed(trigger: Any) -> tuple[Any, Any]:
    """:func:`consume`, and when the event came (UTC)."""
    from datetime import UTC, datetime

    payload = await consume(trigger)
    return payload, datetime.now(UTC)


async def start_triggers(
    args: argparse.Namespace, items: list[tuple[dict[str, Any], Any]]
) -> list[asyncio.Task[Any]]:
    """A task per trigger, started as ``--start`` says (``items``: spec and trigger factory)."""
    if args.start == "at-once":
        built = [(spec, make()) for spec, make in items]
        return [
            asyncio.create_task(consume_timed(trigger), name=spec["name"])
            for spec, trigger in built
        ]
    tasks = []
    for spec, make in items:
        # As TriggerRunner.create_triggers: the loop runs before each trigger is built, and
        # between building it and starting its task.
        await asyncio.sleep(0)
        trigger = make()
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(consume_timed(trigger), name=spec["name"]))
    return tasks


async def freeze_every(seconds: float) -> None:
    """The experiment of ``--freeze-every``: ``gc.freeze()`` again and again, so that the
    collector's full passes never walk the triggers' long-lived objects (a frozen object is
    still freed by its reference count; only a cycle among frozen objects waits for
    ``gc.unfreeze()``)."""
    while True:
        await asyncio.sleep(seconds)
        gc.freeze()


async def load(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    all_specs = specs(args.triggers)
    extra = mix_specs(args, args.triggers) if args.mode.startswith("mix1000") else []
    slow: SlowCallbacks | None = None
    if args.slow_callbacks:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        slow = SlowCallbacks()
        logging.getLogger("asyncio").addHandler(slow)
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    watch = StallWatch()
    watch.start()
    sampler = None
    if args.sample_stalls:
        sampler = StallSampler(watch, threading.get_ident())
        sampler.start()
    freezer = None
    if args.freeze_every:
        freezer = asyncio.ensure_future(freeze_every(args.freeze_every))
    await asyncio.sleep(0.05)  # the monitor runs before the first trigger
    origin = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    items: list[tuple[dict[str, Any], Any]] = [
        (spec, functools.partial(build_trigger, spec, out / spec["name"])) for spec in all_specs
    ]
    items += [(spec, functools.partial(build_mix_trigger, spec, origin)) for spec in extra]
    if extra:  # the kinds interleaved, as a triggerer gets them from several DAGs
        random.Random(18).shuffle(items)
    started = time.perf_counter()
    loop_cpu = time.thread_time()  # this thread: the event loop's own CPU time
    tasks = await start_triggers(args, items)
    done = await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - started
    loop_cpu = time.thread_time() - loop_cpu
    stall = await watch.stop()
    gc.callbacks.remove(gc_pauses)
    if freezer is not None:
        freezer.cancel()
        gc.unfreeze()  # what was frozen is collected again (outside the timed part)
    if sampler is not None:
        sampler.stop_event.set()
        sampler.join()
    by_name = {spec["name"]: result for (spec, _), result in zip(items, done, strict=True)}
    failed = {}
    payloads = []
    finished: list[tuple[dict[str, Any], Path, dict[str, Any]]] = []
    for spec in all_specs:
        outcome = by_name[spec["name"]]
        if isinstance(outcome, BaseException):
            failed[spec["name"]] = f"{type(outcome).__name__}: {outcome}"
            continue
        payload = outcome[0]
        payloads.append(payload)
        finished.append((spec, out / spec["name"], payload))
        if payload.get("status") != "success":
            failed[spec["name"]] = f"{payload.get('error_type')}: {payload.get('message')}"
    wrong: dict[str, str] = {}
    timer_late = []
    for spec in extra:
        outcome = by_name[spec["name"]]
        if isinstance(outcome, BaseException):
            wrong[spec["name"]] = f"{type(outcome).__name__}: {outcome}"
            continue
        payload, fired = outcome
        problem = check_mix(spec, payload, origin)
        if problem:
            wrong[spec["name"]] = problem
        if spec["kind"] == "timer":
            timer_late.append((fired - (origin + timedelta(seconds=spec["at_s"]))).total_seconds())
    # Outside the timed part: the resumed tasks' work (a worker's, not the triggerer's).
    finish_s = time.perf_counter()
    finished_here = await finish_pulls(finished)
    result: dict[str, Any] = {
        "total": len(items),
        "pulls_finished_after": finished_here,
        "finish_s": round(time.perf_counter() - finish_s, 3),
        "seconds": round(seconds, 3),
        "loop_cpu_s": round(loop_cpu, 3),
        "loop_busy": round(loop_cpu / seconds, 3) if seconds else None,
        "stall": stall,
        "gc": gc_pauses.summary(),
        "failed": failed,
        "retries": sum(
            int(p["summary"].get("retries") or 0)
            for p in payloads
            if isinstance(p, dict) and p.get("status") == "success"
        ),
    }
    if extra:
        result["mix"] = {
            "sensors": sum(1 for spec in extra if spec["kind"] == "sensor"),
            "timers": len(timer_late),
            "wrong": dict(sorted(wrong.items())[:20]),
            "wrong_count": len(wrong),
            # DateTimeTrigger sleeps 1 s at a time: up to 1 s late by design.
            "timer_late_max_s": round(max(timer_late), 3) if timer_late else None,
        }
    if sampler is not None:
        result["stall_stacks"] = [
            {"samples": n, "stack": stack} for stack, n in sampler.stacks.most_common(25)
        ]
        result["stall_episodes"] = sorted(sampler.episodes, key=lambda e: -e["stall_s"])[:20]
    if slow is not None:
        result["slow_callbacks"] = [
            {"seconds": s, "callback": text} for s, text in sorted(slow.found, reverse=True)[:15]
        ]
    return result


def child_load(args: argparse.Namespace) -> None:
    """One mode: the triggers at once in one loop; outputs checked against the references."""
    logging.basicConfig(level=logging.WARNING)
    import airflow  # noqa: F401 - a triggerer has Airflow loaded (and its objects tracked)

    from echo_connhandler.pull import _offload
    from echo_connhandler_provider.triggers import pull  # noqa: F401

    if args.pull_threads:
        _offload.PULL_THREADS = args.pull_threads  # before the first pull starts the pool
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    warm = args.mode.startswith(("warm", "mix1000"))
    setup = time.perf_counter()
    if warm:
        warm_up()
    if args.mode == "warm_thread_per_pull":
        thread_per_pull()
    if args.mode.endswith("gc_frozen"):
        gc.collect()
        gc.freeze()
    setup_s = time.perf_counter() - setup
    out = Path(args.workdir) / args.mode
    out.mkdir(parents=True, exist_ok=True)
    rss_idle = peak_rss_mb()
    result = asyncio.run(load(args, out))
    # The machine's load (other processes on the same cores make the loop wait too).
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
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
    wrong = result.get("mix", {}).get("wrong_count", 0)
    result["exact"] = result["total"] - len(mismatched) - len(result["failed"]) - wrong
    shutil.rmtree(out, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------------------
@contextlib.contextmanager
def sandbox_process(rows: int, latency_ms: float, nice: int = 0) -> Iterator[dict[str, str]]:
    """``python -m echo_connhandler.sandbox`` in a child process; yields its base URLs.

    ``nice``: the sandbox's lower CPU priority, so that on a small machine the emulated
    services (remote machines in a deployment) take the cores the triggerer leaves."""
    command = [sys.executable, "-m", "echo_connhandler.sandbox", "--port-base", "0"]
    command += ["--ccee-rows", str(rows), "--latency-ms", str(latency_ms)]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,  # before any thread exists
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


def targets(results: dict[str, dict[str, Any]], pulls: int) -> list[dict[str, Any]]:
    """Per mode: every output exact, and the longest stall under 0.1 s."""
    found = []
    for mode, r in results.items():
        count = r.get("total", pulls)
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
                else f"failed {sorted(r['failed'])[:3]}, mismatched {r['mismatched'][:3]}, "
                f"wrong events {list(r.get('mix', {}).get('wrong', {}).items())[:3]}",
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


def markdown(results: dict[str, dict[str, Any]], found: list[dict[str, Any]], pulls: int) -> str:
    lines = [
        "| mode | triggers | exact outputs | total s | loop thread CPU | longest stall s "
        "| stalls >= 0.1 s | stalls >= 0.2 s | p99 lateness s | longest loop CPU s "
        "| loop CPU >= 0.05 s | load avg | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        count = r.get("total", pulls)
        if "error" in r:
            lines.append(f"| {mode} | {count} | failed | | | | | | | | | | |")
            continue
        s = r["stall"]
        lines.append(
            f"| {mode} | {count} | {r['exact']}/{count} | {r['seconds']:.2f} | "
            f"{r['loop_busy']:.0%} | {s['max_s']:.3f} | "
            f"{s['over_0_1_s']} | {s['over_0_2_s']} | {s['p99_s']:.3f} | "
            f"{s['loop_cpu_max_s']:.3f} | {s['loop_cpu_over_0_05_s']} | "
            f"{r.get('loadavg_1m', '')} | {r['rss_peak_mb']:.0f} |"
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
        with sandbox_process(args.ccee_rows, args.latency_ms, args.sandbox_nice) as urls:
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
            load_args += ["--start", args.start, "--pull-threads", str(args.pull_threads)]
            if args.freeze_every:
                load_args += ["--freeze-every", str(args.freeze_every)]
            load_args += ["--switch-interval", str(args.switch_interval)]
            load_args += ["--sensors", str(args.sensors), "--timers", str(args.timers)]
            load_args += ["--mix-seconds", str(args.mix_seconds)]
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
            "start": args.start,
            "sandbox_nice": args.sandbox_nice,
            "freeze_every_s": args.freeze_every,
            "pull_threads": args.pull_threads or "library default",
            "switch_interval_s": args.switch_interval or sys.getswitchinterval(),
            "mix": {
                "sensors": args.sensors,
                "timers": args.timers,
                "seconds": args.mix_seconds,
                "sensor_poke_s": SENSOR_POKE_S,
            },
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


def describe(run: dict[str, Any], pulls: int) -> str:
    if "error" in run:
        return f"FAILED {run['error']}"
    s = run["stall"]
    mix = run.get("mix")
    extra = (
        ""
        if not mix
        else (
            f", {mix['sensors']} sensors and {mix['timers']} timers (a timer fired at most "
            f"{mix['timer_late_max_s']} s late; wrong events: {mix['wrong_count']})"
        )
    )
    return (
        f"{run['exact']}/{run.get('total', pulls)} exact{extra}, {run['seconds']:.2f} s "
        f"(loop thread busy {run['loop_busy']:.0%}), longest loop CPU between two wake-ups "
        f"{s['loop_cpu_max_s']:.3f} s, longest stall "
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
    parser.add_argument(
        "--start",
        choices=["airflow", "at-once"],
        default="airflow",
        help="start the triggers as Airflow's TriggerRunner does, or all tasks in one go",
    )
    parser.add_argument(
        "--pull-threads",
        type=int,
        default=0,
        help="threads shared by the pulls (0: the library's PULL_THREADS); an experiment",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help="sys.setswitchinterval() in the load process (0: Python's 5 ms); an experiment",
    )
    parser.add_argument(
        "--sandbox-nice",
        type=int,
        default=10,
        help="the sandbox process's niceness (0: the same priority as the load)",
    )
    parser.add_argument(
        "--freeze-every",
        type=float,
        default=0.0,
        help="an experiment: gc.freeze() every so many seconds during the load (0: never)",
    )
    parser.add_argument("--sensors", type=int, default=700, help="mix1000: sensor triggers")
    parser.add_argument("--timers", type=int, default=100, help="mix1000: DateTimeTriggers")
    parser.add_argument(
        "--mix-seconds",
        type=float,
        default=30.0,
        help="mix1000: the sensors' deadline and the last timer, from the start",
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
