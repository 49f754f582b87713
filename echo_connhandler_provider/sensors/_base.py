"""What the provider's sensors share: consecutive errors, and a timeout that spans deferrals.

* **Consecutive errors.** A poll that fails (a transport error, a status that is neither
  accepted nor "not yet", a CKAN error, a failed login) is logged and counted; the sensor sleeps
  ``poke_interval`` and polls again, and fails with that error (its type and message) once
  ``max_consecutive_errors`` polls in a row have failed. A poll that gets an answer resets the
  count. In ``mode="reschedule"`` the count lives in the task state store
  (``context["task_state_store"]``, Airflow >= 3.3), which outlives a reschedule; deferred, it
  lives in the trigger.
* **Timeout.** As :class:`~airflow.sdk.BaseSensorOperator`: measured from the first poke (in
  ``reschedule`` mode, Airflow's first reschedule date), not per deferral. A deferred sensor
  carries the time of its first poke through each deferral (``started_at`` in the next
  method's keyword arguments) and gives each trigger the time left as its deferral timeout;
  Airflow turns a deferral timeout into :class:`AirflowSensorTimeout`, and ``soft_fail`` (or
  ``never_fail``) turns that into a skip. The trigger also carries ``started_at`` and its
  deadline and fires a ``timeout`` event itself once the deadline has passed, with
  ``started_at`` in every event: under ``airflow dags test``, which runs the trigger inline with
  no deferral timeout and resumes with the event alone, the sensor ends as it does deployed
  (docs/airflow/sensors.md, "Timeouts").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
from airflow.triggers.base import BaseTrigger

from echo_connhandler import redact, utc_moment
from echo_connhandler_provider._checks import check_max_consecutive_errors
from echo_connhandler_provider._defaults import default_deferrable
from echo_connhandler_provider._jobs import rebuild_error
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = ["EchoSensor"]

#: The task state store key of the consecutive error count (reschedule mode).
ERRORS_KEY = "echo_connhandler.consecutive_errors"


def utcnow() -> datetime:
    from airflow.sdk import timezone

    now: datetime = timezone.utcnow()
    return now


class EchoSensor(BaseSensorOperator):
    """Base of the provider's sensors (see the module): ``max_consecutive_errors`` and
    ``deferrable`` on top of :class:`~airflow.sdk.BaseSensorOperator`'s arguments."""

    def __init__(
        self,
        *,
        max_consecutive_errors: int = 3,
        deferrable: bool = default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_consecutive_errors = check_max_consecutive_errors(max_consecutive_errors)
        self.deferrable = deferrable
        self._consecutive_errors = 0
        #: The hook of the worker's polls (one connection, one login, for all of them).
        self._hook: HandlerHook[Any] | None = None

    def execute(self, context: Context) -> Any:
        """Poll in the worker (``poke`` until done); the polls' hook is closed at the end."""
        try:
            return super().execute(context)
        finally:
            if self._hook is not None:
                self._hook.close()
                self._hook = None

    # -- consecutive errors ----------------------------------------------------------------------
    def _error_store(self, context: Context) -> Any:
        return context.get("task_state_store") if self.reschedule else None

    def _errors(self, context: Context) -> int:
        store = self._error_store(context)
        if store is not None:
            return int(store.get(ERRORS_KEY, 0) or 0)
        return self._consecutive_errors

    def _set_errors(self, context: Context, count: int) -> None:
        store = self._error_store(context)
        if store is not None:
            if count:
                store.set(ERRORS_KEY, count)
            else:
                store.delete(ERRORS_KEY)  # a no-op when the key is absent
        self._consecutive_errors = count

    def poll_failed(self, context: Context, exc: BaseException) -> None:
        """Count a failed poll; raise ``exc`` when it is the ``max_consecutive_errors``-th."""
        count = self._errors(context) + 1
        self._set_errors(context, count)
        self.log.warning(
            "Poll failed (%d of %d consecutive errors): %s: %s",
            count,
            self.max_consecutive_errors,
            type(exc).__name__,
            redact(str(exc)),
        )
        if count >= self.max_consecutive_errors:
            self._set_errors(context, 0)
            raise exc

    def poll_answered(self, context: Context) -> None:
        """A poll got an answer: the consecutive errors start again from 0."""
        if self._consecutive_errors or self.reschedule:
            self._set_errors(context, 0)

    # -- deferral and its timeout ----------------------------------------------------------------
    def timed_out(self, started_at: datetime) -> NoReturn:
        """Raise what a sensor raises on timeout (a skip with ``soft_fail``/``never_fail``)."""
        elapsed = (utcnow() - started_at).total_seconds()
        message = (
            f"Sensor has timed out; run duration of {elapsed} seconds exceeds the specified "
            f"timeout of {self.timeout}."
        )
        if self.soft_fail or self.never_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)

    def defer_polling(
        self, trigger: BaseTrigger, started_at: datetime, method_name: str = "execute_complete"
    ) -> NoReturn:
        """Defer to ``trigger`` with the time left of the timeout counted from ``started_at``."""
        left = self.timeout - (utcnow() - started_at).total_seconds()
        if left <= 0:
            self.timed_out(started_at)
        self.defer(
            trigger=trigger,
            method_name=method_name,
            kwargs={"started_at": started_at.isoformat()},
            timeout=timedelta(seconds=left),
        )

    def polling(self, started_at: datetime, first_delay: float = 0.0) -> dict[str, Any]:
        """The trigger's ``polling`` argument (:class:`~echo_connhandler_provider.triggers.
        base.PollingTrigger`): this sensor's ``poke_interval`` and ``max_consecutive_errors``,
        ``first_delay``, and ``started_at`` with the ``deadline`` (the timeout counted from
        the first poke), so that it ends the wait itself where no deferral timeout applies."""
        deadline = started_at + timedelta(seconds=float(self.timeout))
        return {
            "poke_interval": float(self.poke_interval),
            "first_delay": float(first_delay),
            "max_consecutive_errors": self.max_consecutive_errors,
            "started_at": started_at.isoformat(),
            "deadline": deadline.isoformat(),
        }

    def resumed(self, event: Mapping[str, Any], started_at: str | None) -> datetime:
        """The first poke's time on resume (the next method's keyword argument, else the
        event's: ``airflow dags test`` gives only the event); a ``timeout`` event raises what
        a sensor raises on timeout, an error event the last poll's error again."""
        started = self.started(started_at or event.get("started_at"))
        if event.get("status") == "timeout":
            self.timed_out(started)
        if event.get("status") != "success":
            self.log.error(
                "Polling failed %s times in a row; the last error follows",
                event.get("consecutive_errors", "?"),
            )
            raise rebuild_error(event)
        return started

    @staticmethod
    def started(started_at: str | None) -> datetime:
        """The first poke's time from the next method's keyword argument (now when absent)."""
        if not started_at:
            return utcnow()
        return utc_moment(started_at, "started_at")
