"""Bounded, ordered concurrency: fetch many items at once, hand the results back in order.

The one sliding window of the package: the CCEE pager and the pull engine both use it. Up to
``concurrency`` fetches run at once; results are yielded in the order of the items, each as soon
as it and every earlier one are done, so memory holds at most ``concurrency`` results whatever
the number of items. A failure cancels the fetches still running and is raised in order (the
results before it are yielded first).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["ordered_window"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


async def ordered_window(
    items: Iterable[ItemT],
    fetch: Callable[[ItemT], Awaitable[ResultT]],
    concurrency: int,
) -> AsyncGenerator[ResultT, None]:
    """``fetch(item)`` for every item, ``concurrency`` at a time, results in item order."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    pending = iter(items)
    window: deque[asyncio.Future[ResultT]] = deque()

    def start_next() -> None:
        for item in pending:
            window.append(asyncio.ensure_future(fetch(item)))
            return

    try:
        for _ in range(concurrency):
            start_next()
        while window:
            result = await window.popleft()
            start_next()  # keep the window full while the caller consumes this result
            yield result
    finally:
        for future in window:
            future.cancel()
        if window:
            await asyncio.gather(*window, return_exceptions=True)
