"""Where a pull's blocking work runs: one worker thread per pull.

Decoding pages, encoding parts and writing files hold the GIL for most of their time (a page of
32 000 rows is one long C call to the JSON decoder). Several such threads at once gain nothing
on throughput, since they take turns on the GIL, but the event loop then waits behind all of
them in a row: with asyncio's default executor a triggerer's loop stalled 0.24 to 0.37 s while a
pull decoded (docs/performance.md). One thread per pull keeps the work off the loop and lets the
loop wait behind one call at a time. :func:`run_pull` sets the thread for its pull; a source
calls :func:`offload` instead of ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["offload", "pull_worker"]

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
