"""Where a pull's blocking calls run: a few threads shared by every pull of the process, one
call of a pull at a time, in order (echo_connhandler/pull/_offload.py).

Before, every pull started a thread of its own: 200 pulls starting at once in a triggerer
blocked its event loop in ``Thread.start`` 200 times (docs/performance.md, "Start-up burst").
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler import _pace
from echo_connhandler.pull import _offload
from echo_connhandler.pull._offload import PULL_THREADS, offload, pull_worker

#: A bound for a wait that only a bug makes long (a deadlock), not a measure of speed.
HANG_GUARD_S = 30.0


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh shared pool for the test (the process's own is left alone)."""
    monkeypatch.setattr(_offload, "_threads", None)
    yield
    if _offload._threads is not None:
        _offload._threads.shutdown(wait=True)


def _pull_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("echo-pull")]


async def test_a_pulls_calls_run_one_at_a_time_in_order(shared: None) -> None:
    running = 0
    most = 0
    order: list[int] = []
    lock = threading.Lock()
    first_may_end = threading.Event()

    def call(index: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            order.append(index)
        if index == 0:
            # Every other call is queued while this one runs: none may start meanwhile.
            first_may_end.wait(HANG_GUARD_S)
        with lock:
            running -= 1
        return index * 10

    with pull_worker():
        calls = [asyncio.ensure_future(offload(call, i)) for i in range(20)]
        await asyncio.sleep(0)  # every call submitted
        first_may_end.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), HANG_GUARD_S)
    assert results == [i * 10 for i in range(20)]
    assert order == list(range(20))
    assert most == 1


async def test_two_pulls_calls_run_at_the_same_time(shared: None) -> None:
    """One pull's slow call (a file written, the GIL released) does not hold back another's:
    a call of pull A that waits for a call of pull B ends (serialised, it would never)."""
    assert PULL_THREADS >= 2
    b_ran = threading.Event()

    def wait_for_b() -> bool:
        return b_ran.wait(HANG_GUARD_S)

    async def pull_a() -> bool:
        with pull_worker():
            return await offload(wait_for_b)

    async def pull_b() -> None:
        with pull_worker():
            await offload(b_ran.set)

    a = asyncio.ensure_future(pull_a())
    await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(a, pull_b()), HANG_GUARD_S)
    assert a.result() is True


async def test_many_pulls_start_no_thread_of_their_own(shared: None) -> None:
    before = {t.ident for t in _pull_threads()}
    seen: set[int | None] = set()

    def where() -> None:
        seen.add(threading.get_ident())

    async def one_pull() -> None:
        with pull_worker():
            for _ in range(3):
                await offload(where)

    await asyncio.wait_for(asyncio.gather(*(one_pull() for _ in range(60))), HANG_GUARD_S)
    started = {t.ident for t in _pull_threads()} - before
    assert len(seen) <= PULL_THREADS
    assert len(started) <= PULL_THREADS
    assert threading.get_ident() not in seen  # never on the event loop's thread


def test_a_pulls_next_call_waits_behind_the_other_pulls() -> None:
    """Round robin on the shared threads: a pull with many calls queued does not keep a
    thread for all of them (one thread here, so the order is exact)."""
    threads = ThreadPoolExecutor(1)
    order: list[str] = []
    a1_started, release = threading.Event(), threading.Event()

    def call(name: str) -> None:
        if name == "a1":
            a1_started.set()
            release.wait(HANG_GUARD_S)
        order.append(name)

    try:
        pull_a, pull_b = _offload._PullQueue(threads), _offload._PullQueue(threads)
        futures = [pull_a.submit(call, "a1")]
        assert a1_started.wait(HANG_GUARD_S)
        futures += [pull_a.submit(call, name) for name in ("a2", "a3", "a4")]
        futures.append(pull_b.submit(call, "b1"))
        release.set()
        for future in futures:
            future.result(HANG_GUARD_S)
    finally:
        threads.shutdown()
    assert order == ["a1", "b1", "a2", "a3", "a4"]


async def test_a_failed_call_raises_in_the_pull_and_the_next_call_runs(shared: None) -> None:
    def fail() -> None:
        raise ValueError("bad page")

    with pull_worker():
        with pytest.raises(ValueError, match="bad page"):
            await offload(fail)
        assert await offload(lambda: 42) == 42


async def test_the_callers_context_reaches_the_call(shared: None) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("the pull's")
    with pull_worker():
        assert await offload(var.get) == "the pull's"


async def test_ending_the_pull_drops_its_queued_calls_and_refuses_new_ones(
    shared: None,
) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def call(index: int) -> None:
        if index == 0:
            started.set()
            release.wait(HANG_GUARD_S)
        ran.append(index)

    with pull_worker() as executor:
        running = executor.submit(call, 0)
        assert started.wait(HANG_GUARD_S)
        queued = [executor.submit(call, i) for i in (1, 2)]
    # The pull ended (a failure cancelled it): what it queued is dropped, not run later.
    assert all(future.cancelled() for future in queued)
    release.set()
    await asyncio.wait_for(asyncio.wrap_future(running), HANG_GUARD_S)
    assert ran == [0]
    with pytest.raises(RuntimeError, match="after the pull ended"):
        executor.submit(call, 3)


async def test_outside_a_pull_offload_is_a_thread_call(shared: None) -> None:
    loop_thread = threading.get_ident()
    assert await offload(threading.get_ident) != loop_thread


def test_shutdown_waits_for_the_running_and_queued_calls() -> None:
    threads = ThreadPoolExecutor(2)
    try:
        queue = _offload._PullQueue(threads)
        futures = [queue.submit(pow, 2, i) for i in range(5)]
        queue.shutdown(wait=True)
        assert all(future.done() for future in futures)
        assert [future.result() for future in futures] == [1, 2, 4, 8, 16]
    finally:
        threads.shutdown()


def test_a_pool_that_refuses_work_fails_the_queued_calls() -> None:
    """At interpreter shutdown the shared pool refuses new work: the pull's calls fail (its
    coroutine gets the error) instead of waiting forever."""
    threads = ThreadPoolExecutor(1)
    threads.shutdown()
    queue = _offload._PullQueue(threads)
    future = queue.submit(pow, 2, 3)
    with pytest.raises(RuntimeError, match="shutdown"):
        future.result(HANG_GUARD_S)
    # The queue is usable again once the pool takes work (nothing left marked as running).
    assert not queue._running


def test_a_cancelled_call_is_skipped() -> None:
    threads = ThreadPoolExecutor(1)
    release = threading.Event()
    try:
        queue = _offload._PullQueue(threads)
        first = queue.submit(release.wait, HANG_GUARD_S)
        second = queue.submit(pow, 2, 2)
        third = queue.submit(pow, 2, 3)
        assert second.cancel()
        release.set()
        assert third.result(HANG_GUARD_S) == 8
        assert first.result(HANG_GUARD_S) is True
        with pytest.raises(CancelledError):
            second.result(0)
    finally:
        threads.shutdown()


# -- pace(): paced work spread over the loop's turns -----------------------------------------------
class _Turns:
    """Counts the event loop's turns: a callback that schedules itself again each turn."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


def _busy(seconds: float) -> None:
    """CPU work on the loop's thread (what a request's handling is)."""
    end = _offload.time.perf_counter() + seconds
    while _offload.time.perf_counter() < end:
        pass


async def test_paced_steps_of_many_tasks_are_spread_over_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 tasks whose steps each take 5 ms, all ready in the same turn: with a budget of 20 ms
    a turn runs a few of them, not all 40; every step still runs, each task's in order."""
    monkeypatch.setattr(_pace, "PACE_BUDGET_S", 0.02)
    turns = _Turns()
    steps: dict[int, list[int]] = {}
    turn_of_step: list[int] = []

    async def task(index: int) -> None:
        for step in range(3):
            await _pace.pace()
            turn_of_step.append(turns.count)
            steps.setdefault(index, []).append(step)
            _busy(0.005)

    await asyncio.gather(*(task(i) for i in range(40)))
    turns.stop()
    assert steps == {i: [0, 1, 2] for i in range(40)}
    per_turn = collections.Counter(turn_of_step)
    # 120 steps of 5 ms at 20 ms a turn: about 5 a turn (the step that crosses the budget
    # runs too); unpaced, 40 would run in the first turn.
    assert max(per_turn.values()) <= 8
    assert len(per_turn) >= 120 // 8


async def test_a_timer_runs_between_paced_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """What pacing is for: a callback that becomes ready runs after at most a turn's budget
    (plus a step), not after every ready task's step."""
    monkeypatch.setattr(_pace, "PACE_BUDGET_S", 0.02)
    ran_before_timer: list[int] = []
    timer_fired = asyncio.Event()
    done = 0

    async def task() -> None:
        nonlocal done
        for _ in range(2):
            await _pace.pace()
            _busy(0.005)
            done += 1
            if not timer_fired.is_set():
                ran_before_timer.append(1)

    tasks = [asyncio.ensure_future(task()) for _ in range(50)]
    # Ready after the 50 tasks' first steps, in the same turn.
    asyncio.get_running_loop().call_soon(timer_fired.set)
    await asyncio.gather(*tasks)
    assert timer_fired.is_set()
    assert done == 100
    # Unpaced, the 50 first steps would all run before the callback scheduled before them.
    assert len(ran_before_timer) <= 8


async def test_pace_returns_at_once_under_the_budget() -> None:
    """A lone task is never held back: its steps run in the same turn."""
    turns = _Turns()
    start = turns.count
    for _ in range(100):
        await _pace.pace()
    assert turns.count == start
    turns.stop()


# -- the process pool: started off the event loop, every worker with an empty __main__ ----------
async def test_the_process_pool_is_started_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting the pool (the fork server, its first fork) blocks the starting thread (0.7 s
    measured): it starts in a thread, once; the calls are submitted on the loop."""
    loop_thread = threading.get_ident()
    started_on: list[int] = []
    pool = ThreadPoolExecutor(1)  # stands in for the process pool (same submit contract)

    def start() -> ThreadPoolExecutor:
        started_on.append(threading.get_ident())
        _offload._pool = pool  # type: ignore[assignment]
        return pool

    monkeypatch.setattr(_offload, "_pool", None)
    monkeypatch.setattr(_offload, "_process_pool", start)
    try:
        assert await _offload.offload_to_process(pow, 2, 5) == 32
        assert await _offload.offload_to_process(pow, 2, 6) == 64
    finally:
        pool.shutdown()
    assert loop_thread not in started_on
    assert len(started_on) == 1  # the second call found the pool started


def test_a_dead_decode_worker_fails_its_call_and_the_next_call_gets_a_new_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker killed mid-call (out of memory, a signal) fails that call with
    BrokenProcessPool, never a made-up result; the pool is dropped and the next call runs in a
    new one."""
    monkeypatch.setattr(_offload, "_pool", None)  # this test's own pool, whatever ran before

    async def calls() -> tuple[int, int]:
        assert await _offload.offload_to_process(pow, 2, 5) == 32
        broken = _offload._pool
        with pytest.raises(BrokenProcessPool):
            await _offload.offload_to_process(os._exit, 3)
        assert _offload._pool is None
        result = await _offload.offload_to_process(pow, 2, 6)
        assert _offload._pool is not None
        assert _offload._pool is not broken
        return result, len(_offload._pool._processes or {})

    try:
        result, workers = asyncio.run(calls())
    finally:
        if _offload._pool is not None:
            _offload._pool.shutdown(wait=True)
    assert result == 64
    assert workers >= 1


#: Run as a script (its own process, its own decode pool). Imported again in a decode worker
#: (as ``__mp_main__``), it writes the marker: what Airflow's task runner's ``__main__`` does
#: there is import Airflow without its configuration, and fail.
_MAIN_SCRIPT = """
import asyncio
import json
import os
import sys

if __name__ != "__main__":
    with open(os.environ["ECHO_TEST_MARKER"], "a") as marker:
        marker.write(f"{__name__} imported in {os.getpid()}\\n")
else:
    import decode_barrier
    from echo_connhandler.pull import _offload

    _offload.DECODE_PROCESSES = 3  # whatever the cores: several workers

    async def main() -> None:
        await _offload.offload_to_process(os.getpid)  # the pool started, its first worker
        # Three calls that all wait for each other: each in a worker of its own.
        pids = await asyncio.gather(
            *(_offload.offload_to_process(decode_barrier.meet, sys.argv[1], 3) for _ in range(3))
        )
        print(json.dumps(sorted(pids)))

    asyncio.run(main())
"""

_BARRIER_MODULE = """
import os
import time


def meet(folder: str, parties: int) -> int:
    \"\"\"In a worker: wait until ``parties`` workers are here; this worker's pid.\"\"\"
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30  # a guard against a hang, not a measure
    while len(os.listdir(folder)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(os.listdir(folder))} of {parties} workers started")
        time.sleep(0.01)
    return os.getpid()
"""


def test_every_worker_of_the_process_pool_starts_with_an_empty_main(tmp_path: Path) -> None:
    """The pool starts a worker whenever a call finds none idle; each start would run the
    parent's ``__main__`` again. Found with 6 calls: the first worker started clean, the second
    imported it."""
    (tmp_path / "main_script.py").write_text(_MAIN_SCRIPT)
    (tmp_path / "decode_barrier.py").write_text(_BARRIER_MODULE)
    (tmp_path / "met").mkdir()
    marker = tmp_path / "main-imported.txt"
    root = Path(_offload.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "ECHO_TEST_MARKER": str(marker),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, str(tmp_path / "main_script.py"), str(tmp_path / "met")],
        env=env,
        capture_output=True,
        text=True,
        timeout=2 * HANG_GUARD_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(pids)) == 3  # three workers started, not only the first
    assert not marker.exists(), marker.read_text()


# -- a daemonic process (a task under Celery's prefork pool) may not have children ---------------
def _process_call_in_daemon(results: Any) -> None:
    signal.alarm(int(HANG_GUARD_S))  # a hang ends the child, and the test fails
    try:
        results.put(("ok", asyncio.run(_offload.offload_to_process(os.getpid))))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_a_daemonic_process_runs_process_work_in_a_thread() -> None:
    """Found on Celery: a deferred pull's finish (decode="process") failed with "daemonic
    processes are not allowed to have children". The call runs in the process itself."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_process_call_in_daemon, args=(results,), daemon=True)
    child.start()
    outcome, value = results.get(timeout=HANG_GUARD_S)
    child.join(HANG_GUARD_S)
    assert (outcome, value) == ("ok", child.pid)


# -- a forked child: the parent's threads are not there ------------------------------------------
def _offload_in_child() -> int:
    """In a forked child: a pull's call must run (0), not wait for a thread that is gone."""
    signal.alarm(int(HANG_GUARD_S))  # a hang ends the child, and the test fails

    async def one_call() -> int:
        with pull_worker():
            return await offload(pow, 2, 4)

    return 0 if asyncio.run(one_call()) == 16 else 1


async def test_a_forked_child_gets_threads_of_its_own(shared: None) -> None:
    with pull_worker():
        await offload(pow, 2, 3)  # the parent's shared threads exist, one of them idle
    with warnings.catch_warnings():
        # Python 3.12+ warns on fork() with threads: that is this test's very situation.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        code = 1
        try:
            code = _offload_in_child()
        finally:
            os._exit(code)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
