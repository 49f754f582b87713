"""``EchoHttpSensor``: wait until an endpoint answers as expected, through a provider connection.

The request goes through the connection type's handler (``echo_http`` by default, or
``bazefield``, ``ccee``, ``ons``): its login, retries, typed errors and secret redaction apply.
Each poll sends one request (the handler's own retries included) and is one of:

* **done**: the status is in ``response_ok`` and ``response_check(response)`` (if given) is
  True. The task's XCom is ``status_code``, ``headers`` (without cookies or authentication
  challenges; credential-carrying values as ``X-Subject-Token``'s replaced by ``***``, see
  :func:`~echo_connhandler_provider.operators.http.xcom_headers`), ``bytes`` and ``body``
  (decoded JSON, or the text of a textual body of at most ``max_body_bytes``, else None);
* **not yet**: the status is in ``not_yet_statuses`` (also when the handler raises an error
  carrying that status, as a CKAN 404), or ``response_check`` returned False;
* **an error**: anything else (a transport error, another status, a failed login). It counts
  towards ``max_consecutive_errors``; see :mod:`echo_connhandler_provider.sensors._base`.

The sensor sleeps ``poke_interval`` after every poll that is not done, errors included.

Deferred (``deferrable=True``), an :class:`~echo_connhandler_provider.triggers.http.
EchoHttpSensorTrigger` polls from the triggerer until the status is accepted (sleeping through
"not yet" and errors there), then sends the response back: its status, kept headers and, when
there is a ``response_check``, its whole body (up to ``max_body_bytes``). The check runs **in the
worker**, on an ``httpx.Response`` rebuilt from that event, exactly when it runs undeferred:
after a response whose status is accepted. If it returns False, the sensor defers again with a
trigger that waits ``poke_interval`` before its first poll. A callable never goes to the
triggerer, and the check is never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from airflow.sdk import Context, PokeReturnValue

from echo_connhandler import EchoHttpError
from echo_connhandler_provider._defaults import default_deferrable
from echo_connhandler_provider._jobs import hook_for
from echo_connhandler_provider._requests import (
    HttpRequestArguments,
    accepted_statuses,
    describe_response,
    is_not_yet,
    response_from_event,
    status_codes,
    status_list,
)
from echo_connhandler_provider.sensors._base import EchoSensor, utcnow
from echo_connhandler_provider.triggers.http import EchoHttpSensorTrigger

__all__ = ["EchoHttpSensor"]

ResponseCheck = Callable[[httpx.Response], bool]


class EchoHttpSensor(EchoSensor, HttpRequestArguments):
    """Polls an endpoint through a provider connection until it answers as expected.

    The request's arguments (``endpoint``, ``conn_id``, ``conn_type``, ``method``, ``query``,
    ``json``, ``data``, ``headers``, ``response_ok``, ``idempotent``, ``max_body_bytes``) are
    those of :class:`~echo_connhandler_provider.operators.HttpRequestArguments`. Here
    ``response_ok`` is the statuses that end the wait (None: any that is not "not yet"; with
    ``response_check``, the statuses whose response is checked), and ``max_body_bytes`` also
    bounds the body a deferred trigger sends back for ``response_check`` (a larger one fails
    the task).

    Args:
        not_yet_statuses: the statuses that mean "not yet" (default 404); they must not be in
            ``response_ok``.
        response_check: ``(response) -> bool``; False means "not yet". It runs in the worker,
            deferred or not; what it raises fails the task.
        max_consecutive_errors: failed polls in a row after which the task fails with the last
            error (default 3).
        deferrable: poll from the triggerer.
        **kwargs: the request's arguments (above), and those of ``BaseSensorOperator``
            (``poke_interval``, ``timeout``, ``soft_fail``, ``mode``, ...) and
            ``BaseOperator``.
    """

    template_fields: Sequence[str] = HttpRequestArguments.request_template_fields
    template_fields_renderers = HttpRequestArguments.template_fields_renderers
    ui_color = "#e6eef4"

    def __init__(
        self,
        *,
        not_yet_statuses: int | Sequence[int] | None = (404,),
        response_check: ResponseCheck | None = None,
        max_consecutive_errors: int = 3,
        deferrable: bool = default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            max_consecutive_errors=max_consecutive_errors, deferrable=deferrable, **kwargs
        )
        ok = status_codes(self.response_ok, "response_ok")
        not_yet = status_list(not_yet_statuses, "not_yet_statuses")
        both = set(not_yet) & set([ok] if isinstance(ok, int) else ok or [])
        if both:
            raise ValueError(
                f"response_ok and not_yet_statuses share {sorted(both)}: a status cannot mean "
                "both done and not yet"
            )
        if response_check is not None and not callable(response_check):
            raise TypeError(f"response_check must be callable, got {response_check!r}")
        self.not_yet_statuses = not_yet
        self.response_check = response_check

    # -- in the worker ---------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        self.rendered_method(deferred=False)  # refused before the first poll, not as a poll
        if self.deferrable:
            self._defer(utcnow(), first_delay=0.0)
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        method = self.rendered_method(deferred=False)
        name = f"{method} {self.endpoint}"
        try:
            if self._hook is None:
                self._hook = hook_for(self.conn_type, self.conn_id)
            handler = self._hook.get_conn()
            response = handler.request(
                method,
                self.endpoint,
                response_ok=accepted_statuses(self.response_ok, self.not_yet_statuses),
                idempotent=self.idempotent,
                **self.request_kwargs(),
            )
        except EchoHttpError as exc:
            if is_not_yet(exc, self.not_yet_statuses):
                self.poll_answered(context)
                self.log.info("%s -> HTTP %s: not yet", name, getattr(exc, "status_code", "?"))
                return False
            self.poll_failed(context, exc)
            return False
        self.poll_answered(context)
        if response.status_code in self.not_yet_statuses:
            self.log.info("%s -> HTTP %s: not yet", name, response.status_code)
            return False
        if self.response_check is not None and not self.response_check(response):
            self.log.info(
                "%s -> HTTP %s: response_check returned False", name, response.status_code
            )
            return False
        payload = describe_response(
            response, output=None, ship_body=False, max_body_bytes=self.max_body_bytes
        )
        self.log.info("%s -> HTTP %s: done", name, response.status_code)
        return PokeReturnValue(
            is_done=True, xcom_value=self.result(payload, log=self.log, output=False)
        )

    # -- deferred --------------------------------------------------------------------------------
    def _defer(self, started_at: Any, *, first_delay: float) -> None:
        method = self.rendered_method(deferred=True)
        self.defer_polling(
            EchoHttpSensorTrigger(
                request=self.trigger_request(method),
                polling=self.polling(started_at, first_delay),
                not_yet_statuses=self.not_yet_statuses,
                ship_body=self.response_check is not None,
                max_body_bytes=self.max_body_bytes,
            ),
            started_at,
        )

    def execute_complete(
        self,
        context: Context,
        event: Mapping[str, Any] | None = None,
        started_at: str | None = None,
    ) -> Any:
        """Resume after the trigger: check the response (defer again if the check says no),
        or raise the last poll's error again."""
        if event is None:
            raise RuntimeError(f"{type(self).__name__} resumed without a trigger event")
        started = self.resumed(event, started_at)
        name = f"{event.get('method')} {event.get('url')}"
        if self.response_check is not None:
            response = response_from_event(event)
            if not self.response_check(response):
                self.log.info(
                    "%s -> HTTP %s: response_check returned False; polling again in %s s",
                    name,
                    event["status_code"],
                    self.poke_interval,
                )
                self._defer(started, first_delay=self.poke_interval)
        self.log.info("%s -> HTTP %s: done", name, event["status_code"])
        return self.result(event, log=self.log, output=False)
