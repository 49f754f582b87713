"""Pacing: many answers ready at once are handled over several turns of the event loop.

asyncio runs every callback that is ready in one turn, so 400 answers arriving together in a
triggerer are one stall of 400 times an answer's handling, however short each is. The handler
calls :func:`pace` around each exchange of its async path: once a turn has run
:data:`PACE_BUDGET_S` of paced work, the rest waits for the next turn, and whatever else is ready
(a sensor's timer, the triggerer's heartbeat) runs in between. Measured in docs/performance.md,
"Start-up burst".
"""

from __future__ import annotations

import asyncio
import time
import weakref

__all__ = ["PACE_BUDGET_S", "pace"]

#: Seconds of paced work (:func:`pace`) one turn of the event loop runs before the rest waits
#: for the next turn: well under the 0.1 s a triggerer's loop may stall.
PACE_BUDGET_S = 0.02


class _Turn:
    """The current turn of one event loop, as :func:`pace` counts it."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started: float | None = None  # when this turn's first paced step began

    def end(self) -> None:
        self.started = None


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()


async def pace() -> None:
    """Return at once while this turn of the event loop has run less than
    :data:`PACE_BUDGET_S` of paced work; else wait for a later turn that has not.

    asyncio runs every callback that is ready in one turn, so 400 requests answering together
    are one stall of 400 times a request's handling, however short each is. Work that calls
    ``await pace()`` between its steps is spread over turns instead, and whatever else is ready
    (a sensor's timer, the triggerer's own heartbeat) runs between them. Nothing is skipped or
    reordered within a task: it only waits. The budget is counted from the first paced step of
    the turn; a turn is over when the loop runs the callback this schedules (``call_soon``
    callbacks run in the next turn).
    """
    loop = asyncio.get_running_loop()
    try:
        turn = _turns.get(loop)
        if turn is None:
            turn = _turns[loop] = _Turn()
    except TypeError:  # a loop class without weak references: no pacing
        return
    while True:
        now = time.perf_counter()
        if turn.started is None:
            turn.started = now
            loop.call_soon(turn.end)
        if now - turn.started < PACE_BUDGET_S:
            return
        await asyncio.sleep(0)
