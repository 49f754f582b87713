"""The trigger of a deferred :class:`~echo_connhandler_provider.sensors.http.EchoHttpSensor`.

:class:`EchoHttpSensorTrigger` polls one endpoint from the triggerer through a provider
connection (one connection, one login, for all its polls) and fires once:

* ``{"status": "success", ...}`` with a description of the first response whose status is
  accepted (:func:`~echo_connhandler_provider.triggers.pull.describe_response`: status, kept
  headers, the body as text, and with ``ship_body`` the whole body base64-encoded for a
  ``response_check`` run in the worker);
* or an error event (the last error's type and message, ``consecutive_errors``) after
  ``max_consecutive_errors`` failed polls in a row.

A status of ``not_yet_statuses`` means "not yet": the trigger sleeps ``poke_interval`` and polls
again, as it does after an error. It sleeps ``first_delay`` before its first poll (a sensor that
defers again after its ``response_check`` said no waits one ``poke_interval`` that way).

This module also holds what the sensor's worker path shares with the trigger:
:func:`accepted_statuses` and :func:`is_not_yet`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from airflow.triggers.base import TriggerEvent

from echo_connhandler import EchoHttpError, HttpResponseError
from echo_connhandler_provider._deadline import Deadline
from echo_connhandler_provider.triggers.pull import (
    RequestTrigger,
    describe_response,
    error_payload,
    hook_for,
    response_ok_to_json,
)

__all__ = [
    "EchoHttpSensorTrigger",
    "accepted_statuses",
    "check_max_consecutive_errors",
    "is_not_yet",
    "not_yet_to_json",
]


def not_yet_to_json(statuses: Any) -> list[int]:
    """``not_yet_statuses`` as a sorted list of ints (an int, a collection, or None: none)."""
    if statuses is None:
        return []
    if isinstance(statuses, int) and not isinstance(statuses, bool):
        return [statuses]
    if isinstance(statuses, Collection) and not isinstance(statuses, str | bytes):
        values = list(statuses)
        if all(isinstance(s, int) and not isinstance(s, bool) for s in values):
            return sorted(set(values))
    raise TypeError(
        f"not_yet_statuses must be an int, a collection of ints or None, got {statuses!r}"
    )


def check_max_consecutive_errors(value: Any) -> int:
    """``max_consecutive_errors`` checked: an integer >= 1 (else ``ValueError`` naming it)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_consecutive_errors must be an integer >= 1, got {value!r}")
    return value


def accepted_statuses(response_ok: Any, not_yet: Collection[int]) -> int | list[int] | None:
    """What the handler is asked to accept: ``response_ok`` and the "not yet" statuses (None:
    any status)."""
    ok = response_ok_to_json(response_ok)
    if ok is None:
        return None
    return sorted({*([ok] if isinstance(ok, int) else ok), *not_yet})


def is_not_yet(exc: BaseException, not_yet: Collection[int]) -> bool:
    """Whether an error is a "not yet" answer (an error with one of those statuses, as a CKAN
    404 ``Not Found Error`` raised as ``ApiError``)."""
    return isinstance(exc, HttpResponseError) and exc.status_code in not_yet


class EchoHttpSensorTrigger(RequestTrigger):
    """Polls an endpoint until its status is accepted, and fires once (see the module).

    The request is a :class:`~echo_connhandler_provider.triggers.pull.RequestTrigger`'s (its
    checks and serialised form, without ``output``), sent again every ``poke_interval``.

    Args:
        conn_type: ``echo_http``, ``bazefield``, ``ccee`` or ``ons`` (picks the hook).
        conn_id: the connection (None: the type's default).
        method: the HTTP method; a POST or PATCH needs ``idempotent=True``.
        endpoint: the path after the connection's Base URL.
        request_kwargs: ``params``, ``json``, ``data``, ``headers`` (plain JSON values).
        response_ok: the statuses that end the wait (None: any that is not "not yet").
        not_yet_statuses: the statuses that mean "not yet".
        poke_interval: seconds slept after every poll that does not end the wait.
        first_delay: seconds slept before the first poll.
        max_consecutive_errors: failed polls in a row that end the wait with the last error.
        idempotent: whether the request may be replayed.
        ship_body: send the whole body back (base64) for a ``response_check``.
        max_body_bytes: the largest body sent back.
    """

    def __init__(
        self,
        *,
        conn_type: str,
        conn_id: str | None,
        method: str,
        endpoint: str,
        request_kwargs: Mapping[str, Any] | None = None,
        response_ok: Any = 200,
        not_yet_statuses: Any = (404,),
        poke_interval: float = 60.0,
        first_delay: float = 0.0,
        max_consecutive_errors: int = 3,
        idempotent: bool | None = None,
        ship_body: bool = False,
        max_body_bytes: int = 65_536,
        started_at: str | None = None,
        deadline: str | None = None,
    ) -> None:
        super().__init__(
            conn_type=conn_type,
            conn_id=conn_id,
            method=method,
            endpoint=endpoint,
            request_kwargs=request_kwargs,
            response_ok=response_ok,
            idempotent=idempotent,
            ship_body=ship_body,
            max_body_bytes=max_body_bytes,
        )
        check_max_consecutive_errors(max_consecutive_errors)
        self.not_yet_statuses = not_yet_to_json(not_yet_statuses)
        self.poke_interval = float(poke_interval)
        self.first_delay = float(first_delay)
        self.max_consecutive_errors = max_consecutive_errors
        self.timing = Deadline(started_at, deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        del kwargs["output"]  # a sensor's poll writes nothing
        kwargs.update(
            not_yet_statuses=list(self.not_yet_statuses),
            poke_interval=self.poke_interval,
            first_delay=self.first_delay,
            max_consecutive_errors=self.max_consecutive_errors,
            **self.timing.to_json(),
        )
        return classpath, kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        name = f"{self.method} {self.endpoint}"
        accept = accepted_statuses(self.response_ok, self.not_yet_statuses)
        errors = 0
        timing = self.timing
        await timing.sleep(self.first_delay)
        hook = hook_for(self.conn_type, self.conn_id)
        try:
            while True:
                if timing.passed():
                    self.log.info("%s: the sensor's timeout has passed", name)
                    yield TriggerEvent(timing.timeout_event())  # type: ignore[no-untyped-call]
                    return
                status: int | None = None
                try:
                    handler = await hook.aget_conn()
                    response = await handler.async_request(
                        self.method,
                        self.endpoint,
                        response_ok=accept,
                        idempotent=self.idempotent,
                        **self.request_kwargs,
                    )
                    status = response.status_code
                except EchoHttpError as exc:
                    if is_not_yet(exc, self.not_yet_statuses):
                        status = getattr(exc, "status_code", None)
                    else:
                        errors += 1
                        payload = error_payload(exc)
                        self.log.warning(
                            "%s failed (%d of %d consecutive errors): %s: %s",
                            name,
                            errors,
                            self.max_consecutive_errors,
                            payload["error_type"],
                            payload["message"],
                        )
                        if errors >= self.max_consecutive_errors:
                            payload["consecutive_errors"] = errors
                            yield TriggerEvent(timing.event(payload))  # type: ignore[no-untyped-call]
                            return
                else:
                    if status not in self.not_yet_statuses:
                        try:
                            description = await asyncio.to_thread(
                                describe_response,
                                response,
                                output=None,
                                ship_body=self.ship_body,
                                max_body_bytes=self.max_body_bytes,
                            )
                        except ValueError as exc:  # a body too large to send back
                            description = error_payload(exc)
                        self.log.info("%s -> HTTP %s", name, status)
                        yield TriggerEvent(timing.event(description))  # type: ignore[no-untyped-call]
                        return
                if status is not None:
                    errors = 0
                    self.log.info("%s -> HTTP %s: not yet", name, status)
                await timing.sleep(self.poke_interval)
        finally:
            await hook.aclose()
