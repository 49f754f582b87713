"""Where a pull's blocking work runs: a few threads shared by every pull, one call of a pull at
a time.

Decoding pages, encoding parts and writing files hold the GIL for part of their time (a page of
32 000 rows is one long C call to the JSON decoder). Several such threads at once gain nothing
on throughput, since they take turns on the GIL, but the event loop then waits behind all of
them in a row: with asyncio's default executor a triggerer's loop stalled 0.24 to 0.37 s while a
pull decoded (docs/performance.md). So a pull's calls run one at a time, in order (a pull's
checkpoint is written by one call at a time), and a source calls :func:`offload` instead of
``asyncio.to_thread``.

The threads are shared by every pull of the process (:data:`PULL_THREADS` of them) rather than
one per pull: a triggerer starting 200 pulls used to start 200 threads, each start blocking the
loop until the new thread ran (``Thread.start`` waits for it, behind the GIL: 0.6 to 1.4 s
stalls in the start-up burst), and then 200 threads competed with the loop for the GIL
(docs/performance.md, "Start-up burst"). A pull queues its next call behind the other pulls'
calls (round robin), so no pull holds a thread for a series of calls.

The heaviest work, decoding a page and encoding its rows, can run in worker processes instead
(:func:`offload_to_process`): one pool per process, shared by every pull, started from a fork
server (a process with threads must not ``fork``).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import multiprocessing
import multiprocessing.context
import os
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from multiprocessing import popen_forkserver

__all__ = [
    "DECODE_PROCESSES",
    "PULL_THREADS",
    "offload",
    "offload_to_process",
    "pull_worker",
]

#: Worker processes of the decode pool: the cores, at most 4 (and at least 1).
DECODE_PROCESSES = max(1, min(4, os.cpu_count() or 1))

#: Threads shared by every pull of the process for their blocking calls. Enough for several
#: pulls' writes to wait on a disk or an object store at once (a thread waiting on I/O does
#: not hold the GIL); few enough that starting them costs the event loop little (each
#: ``Thread.start`` waits for the new thread) and that few of them compete with the loop for
#: the GIL when they compute. Measured in docs/performance.md, "Start-up burst".
PULL_THREADS = 8


P = ParamSpec("P")
T = TypeVar("T")

_worker: contextvars.ContextVar[Executor | None] = contextvars.ContextVar(
    "echo_connhandler_pull_worker", default=None
)

_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def _shared_threads() -> ThreadPoolExecutor:
    """The process's pull threads (started lazily by the pool, at most PULL_THREADS)."""
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="echo-pull")
        return _threads


def _forget_after_fork() -> None:
    """In a forked child: the parent's threads and worker processes are not there, and a pool
    that believes it has idle threads would queue work that no thread ever runs. The next pull
    starts its own (the locks too: another thread may have held one at the fork)."""
    global _threads, _threads_lock, _pool, _pool_lock, _main_swap_lock
    _threads, _threads_lock = None, threading.Lock()
    _pool, _pool_lock, _main_swap_lock = None, threading.Lock(), threading.Lock()


async def offload(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` as the pull's next blocking call (``asyncio.to_thread`` outside a pull)."""
    executor = _worker.get()
    if executor is None:
        return await asyncio.to_thread(function, *args, **kwargs)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await loop.run_in_executor(executor, call)


class _PullQueue(Executor):
    """One pull's blocking calls: run one at a time, in order, on the shared threads.

    Only one call of the pull is ever queued in the shared pool; when it ends, the pull's next
    call goes to the back of the pool's queue, behind the other pulls' calls. Nothing here
    starts a thread: the pool starts its few threads on its first calls.
    """

    def __init__(self, threads: ThreadPoolExecutor) -> None:
        self._threads = threads
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._calls: collections.deque[tuple[Future[Any], Callable[[], Any]]] = collections.deque()
        self._running = False  # a call of this pull is queued in, or running on, the pool
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new calls after the pull ended")
            self._calls.append((future, functools.partial(fn, *args, **kwargs)))
            if self._running:
                return future
            self._running = True
        self._hand_over()
        return future

    def _hand_over(self) -> None:
        """Queue this pull's next call in the shared pool."""
        try:
            self._threads.submit(self._run_next)
        except RuntimeError as exc:  # the pool refuses work: interpreter shutdown
            self._fail_queued(exc)

    def _fail_queued(self, exc: BaseException) -> None:
        with self._lock:
            calls, self._calls = list(self._calls), collections.deque()
            self._running = False
            self._idle.notify_all()
        for future, _ in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)

    def _run_next(self) -> None:
        with self._lock:
            if not self._calls:
                self._running = False
                self._idle.notify_all()
                return
            future, call = self._calls.popleft()
        if future.set_running_or_notify_cancel():
            try:
                result = call()
            except BaseException as exc:  # as ThreadPoolExecutor: the caller gets any failure
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, call  # no reference to the result kept until the next call
        with self._lock:
            if not self._calls:
                self._running = False
                self._idle.notify_all()
                return
        self._hand_over()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; ``cancel_futures`` drops the queued ones (a running call finishes);
        ``wait`` waits for the running and queued calls. The shared threads stay."""
        with self._lock:
            self._shut = True
            dropped: list[Future[Any]] = []
            if cancel_futures:
                dropped = [future for future, _ in self._calls]
                self._calls.clear()
        for future in dropped:
            future.cancel()
        if wait:
            with self._lock:
                self._idle.wait_for(lambda: not self._running)


class pull_worker:
    """The blocking calls of one pull, one at a time on the shared threads:
    ``with pull_worker(): ...`` (what :func:`offload` uses inside)."""

    def __enter__(self) -> Executor:
        self._executor = _PullQueue(_shared_threads())
        self._token = _worker.set(self._executor)
        return self._executor

    def __exit__(self, *exc: object) -> None:
        _worker.reset(self._token)
        self._executor.shutdown(wait=False, cancel_futures=True)


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_main_swap_lock = threading.Lock()


class _EmptyMainProcess(multiprocessing.context.ForkServerProcess):
    """A worker of the decode pool: started with an empty ``__main__``.

    A worker started from a fork server still runs the parent's ``__main__`` again, as
    ``__mp_main__`` (multiprocessing's rule for spawn and forkserver), and the pool starts a
    worker on any call that finds none idle, so the swap is made around every start, not only
    the first. Airflow's task runner's ``__main__`` is its CLI, which imports Airflow without
    its configuration and fails (docs/airflow/deferrable-pulls.md, "What runs where"); a
    decode needs nothing of it. This class is pickled with each worker (by name): it must
    stay importable at module level.

    While a worker starts, the whole process sees the empty ``__main__``: milliseconds for a
    worker forked by the running server, the server's start (most of a second) for the first.
    """

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> popen_forkserver.Popen:
        # One start at a time: two overlapping swaps would leave the empty module in place.
        with _main_swap_lock:
            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                return multiprocessing.context.ForkServerProcess._Popen(process_obj)
            finally:
                if main is not None:
                    sys.modules["__main__"] = main


class _EmptyMainContext(multiprocessing.context.ForkServerContext):
    """The forkserver start method, with :class:`_EmptyMainProcess` workers."""

    Process = _EmptyMainProcess


def _process_pool() -> ProcessPoolExecutor:
    """The process's decode pool, started: its fork server runs and has forked a worker.

    Starting it blocks the calling thread until the fork server has imported its preloaded
    modules and forked the first worker (0.7 s measured, 2 cores): never call it on an event
    loop's thread (:func:`offload_to_process` calls it in a thread).
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            # forkserver: a process with threads (the event loop's, the pulls') must not fork,
            # and spawn would import every module again in each worker.
            context = _EmptyMainContext()
            context.set_forkserver_preload(
                ["echo_connhandler.pull._forkserver_watch", "echo_connhandler.pull._engine"]
            )
            pool = ProcessPoolExecutor(
                max_workers=DECODE_PROCESSES,
                mp_context=context,
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
            # The first submit starts the fork server and waits for its first fork: here, so
            # that the later calls (on the loop) only ask the running server for a worker.
            try:
                pool.submit(os.getpid)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            _pool = pool
        return _pool


def _exit_with_parent(owner: int) -> None:
    """In a worker: leave as soon as the process that owns the pool is gone.

    A worker waits for work forever, and a killed owner (a triggerer's SIGKILL) would leave it
    running, holding the owner's stdout and stderr open (the fork server watches for the same,
    see ``_forkserver_watch``).
    """

    parent = os.getppid()  # the fork server, which exits with the owner

    def watch() -> None:
        while True:
            time.sleep(0.5)
            # A killed owner may stay a zombie (its pid alive) until its reader sees our end of
            # its pipes close: its fork server going away is the signal that does not wait.
            if os.getppid() != parent:
                os._exit(0)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name=f"exit-with-{owner}", daemon=True).start()


async def offload_to_process(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` (picklable, as are its arguments and result) in the process pool.

    The pool is started in a thread: starting the fork server blocks the caller until the
    server has forked the first worker, which on an event loop's thread is a stall of most of a
    second (docs/performance.md, "Start-up burst"). Calls are submitted here (a worker started
    on demand is one fork of the running fork server: milliseconds).
    """
    global _pool
    if multiprocessing.current_process().daemon:
        # A daemonic process may not start children (multiprocessing's rule), and an Airflow
        # task under Celery's prefork pool is one (it inherits its pool process's flag): the
        # work runs on the pulls' shared threads instead (docs/airflow/production.md, "Celery").
        return await offload(function, *args, **kwargs)
    pool = _pool
    if pool is None:  # started in a thread: starting it blocks (above)
        pool = await asyncio.to_thread(_process_pool)
    call = functools.partial(function, *args, **kwargs)
    try:
        return await asyncio.wrap_future(pool.submit(call))
    except BrokenProcessPool:
        # A worker died (killed, out of memory): the next call gets a new pool.
        with _pool_lock:
            if _pool is pool:
                _pool = None
        pool.shutdown(wait=False, cancel_futures=True)
        raise


os.register_at_fork(after_in_child=_forget_after_fork)
