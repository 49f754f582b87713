"""The bases of the provider's triggers: plain-JSON arguments, and one polling loop.

* :class:`EchoTrigger` serialises a trigger as its class path and its constructor's keyword
  arguments, each read from the attribute of the same name (so a trigger lists its arguments
  once, in ``__init__``). Those values are plain JSON, checked by the constructor: never a
  handler, a response or a secret.
* :class:`PollingTrigger` owns what every polling trigger does (as Amazon's
  ``AwsBaseWaiterTrigger`` does for waiters): the hook's life (one connection, one login, for
  all the polls; always closed), the count of consecutive errors, the sleep between polls, and
  the sensor's deadline (:class:`~echo_connhandler_provider._deadline.Deadline`). A subclass
  writes :meth:`~PollingTrigger.poll`: one look, returning the event's payload when there is
  something to report, None when not yet.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from echo_connhandler import EchoHttpError, HttpHandler
from echo_connhandler_provider._checks import check_max_consecutive_errors, check_seconds
from echo_connhandler_provider._deadline import Deadline
from echo_connhandler_provider._jobs import error_payload, hook_for

__all__ = ["EchoTrigger", "PollingTrigger"]


@functools.cache
def _argument_names(cls: type[BaseTrigger]) -> tuple[str, ...]:
    parameters = inspect.signature(cls).parameters.values()
    return tuple(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


class EchoTrigger(BaseTrigger):
    """A trigger whose serialised form is its constructor's arguments (see the module)."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        arguments = {name: getattr(self, name) for name in _argument_names(type(self))}
        return f"{type(self).__module__}.{type(self).__qualname__}", arguments


class PollingTrigger(EchoTrigger, abc.ABC):
    """Polls through a provider connection until :meth:`poll` has something to report.

    Each poll is one call of :meth:`poll` with the connected handler. A payload ends the wait
    with that event (or, when :attr:`fires_once` is False, is fired and the polling goes on); an
    :class:`~echo_connhandler.EchoHttpError` is logged and counted, and after
    ``max_consecutive_errors`` in a row (None: never) the last one ends the wait as an error
    event with ``consecutive_errors``. The trigger sleeps ``poke_interval`` after every poll
    that does not end the wait, errors included, and never past the deadline: once it has
    passed, a ``timeout`` event ends the wait. Every event carries ``started_at``.
    """

    #: The connection type of the hook (a subclass for one service sets it; others take it as
    #: an argument).
    conn_type: str
    #: False: an event does not end the trigger (an asset watcher's).
    fires_once: ClassVar[bool] = True

    def __init__(
        self,
        *,
        conn_id: str | None,
        poke_interval: float,
        max_consecutive_errors: int | None = 3,
        first_delay: float = 0.0,
        started_at: str | None = None,
        deadline: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.conn_id = conn_id
        self.poke_interval = check_seconds(poke_interval, "poke_interval")
        if max_consecutive_errors is not None:
            check_max_consecutive_errors(max_consecutive_errors)
        self.max_consecutive_errors = max_consecutive_errors
        self.first_delay = check_seconds(first_delay, "first_delay")
        self.timing = Deadline(started_at, deadline)
        # As serialised: ISO 8601 text, or None.
        self.started_at = self.timing.to_json()["started_at"]
        self.deadline = self.timing.to_json()["deadline"]
        #: The polling's arguments as one plain-JSON value (what a sensor's trigger takes).
        self.polling = {
            "poke_interval": self.poke_interval,
            "first_delay": self.first_delay,
            "max_consecutive_errors": self.max_consecutive_errors,
            "started_at": self.started_at,
            "deadline": self.deadline,
        }

    @property
    @abc.abstractmethod
    def what(self) -> str:
        """What is polled, for log lines (``pld_horario (2024)``, ``GET status``)."""

    @abc.abstractmethod
    async def poll(self, handler: Any) -> dict[str, Any] | None:
        """One look: the event's payload, or None (not yet). Raise an
        :class:`~echo_connhandler.EchoHttpError` for a failed poll."""

    async def prepare(self) -> None:
        """Called once before the first poll (a watcher reads its stored state here)."""

    async def fired(self) -> float:
        """Called after an event when the trigger goes on; returns the seconds it has waited
        already (taken from the next sleep)."""
        return 0.0

    async def run(self) -> AsyncIterator[TriggerEvent]:
        timing = self.timing
        await timing.sleep(self.first_delay)
        await self.prepare()
        hook = hook_for(self.conn_type, self.conn_id)
        errors = 0
        limit = self.max_consecutive_errors
        try:
            while True:
                if timing.passed():
                    self.log.info("%s: the sensor's timeout has passed", self.what)
                    yield TriggerEvent(timing.timeout_event())  # type: ignore[no-untyped-call]
                    return
                waited = 0.0
                try:
                    handler: HttpHandler = await hook.aget_conn()
                    payload = await self.poll(handler)
                except EchoHttpError as exc:
                    errors += 1
                    failed = error_payload(exc)
                    self.log.warning(
                        "%s failed (%d%s consecutive errors): %s: %s",
                        self.what,
                        errors,
                        "" if limit is None else f" of {limit}",
                        failed["error_type"],
                        failed["message"],
                    )
                    if limit is not None and errors >= limit:
                        failed["consecutive_errors"] = errors
                        yield TriggerEvent(timing.event(failed))  # type: ignore[no-untyped-call]
                        return
                else:
                    errors = 0
                    if payload is not None:
                        yield TriggerEvent(timing.event(payload))  # type: ignore[no-untyped-call]
                        if self.fires_once:
                            return
                        waited = await self.fired()
                await timing.sleep(self.poke_interval - waited)
        finally:
            await hook.aclose()
