"""Where a pull's blocking work runs: one worker thread per pull.

Decoding pages, encoding parts and writing files hold the GIL for most of their time (a page of
32 000 rows is one long C call to the JSON decoder). Several such threads at once gain nothing
on throughput, since they take turns on the GIL, but the event loop then waits behind all of
them in a row: with asyncio's default executor a triggerer's loop stalled 0.24 to 0.37 s while a
pull decoded (docs/performance.md). One thread per pull keeps the work off the loop and lets the
loop wait behind one call at a time. :func:`run_pull` sets the thread for its pull; a source
calls :func:`offload` instead of ``asyncio.to_thread``.

One thread per pull still shares the GIL with the event loop, and many pulls in one process (a
triggerer running 200 of them) make the loop wait behind them all for seconds
(docs/performance.md, "Triggerer load"). So the heaviest work, decoding a page and encoding its
rows, runs in worker processes (:func:`offload_to_process`): one pool per process, shared by
every pull, started from a fork server (a process with threads must not ``fork``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

__all__ = ["DECODE_PROCESSES", "offload", "offload_to_process", "pull_worker"]

#: Worker processes of the decode pool: the cores, at most 4 (and at least 1).
DECODE_PROCESSES = max(1, min(4, os.cpu_count() or 1))

P = ParamSpec("P")
T = TypeVar("T")

_worker: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "echo_connhandler_pull_worker", default=None
)


async def offload(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` in the pull's worker thread (``asyncio.to_thread`` outside a pull)."""
    executor = _worker.get()
    if executor is None:
        return await asyncio.to_thread(function, *args, **kwargs)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await loop.run_in_executor(executor, call)


class pull_worker:
    """The worker thread of one pull: ``with pull_worker(): ...``."""

    def __enter__(self) -> ThreadPoolExecutor:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="echo-pull")
        self._token = _worker.set(self._executor)
        return self._executor

    def __exit__(self, *exc: object) -> None:
        _worker.reset(self._token)
        self._executor.shutdown(wait=False, cancel_futures=True)


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _process_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # forkserver: a process with threads (the event loop's, the pulls') must not fork,
            # and spawn would import the parent's __main__ (Airflow's CLI) in every worker.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(
                ["echo_connhandler.pull._forkserver_watch", "echo_connhandler.pull._engine"]
            )
            _pool = ProcessPoolExecutor(
                max_workers=DECODE_PROCESSES,
                mp_context=context,
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
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
    """Run ``function`` (picklable, as are its arguments and result) in the process pool."""
    pool = _process_pool()
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(pool, functools.partial(function, *args, **kwargs))
    except BrokenProcessPool:
        # A worker died (killed, out of memory): the next call gets a new pool.
        global _pool
        with _pool_lock:
            if _pool is pool:
                _pool = None
        pool.shutdown(wait=False, cancel_futures=True)
        raise
