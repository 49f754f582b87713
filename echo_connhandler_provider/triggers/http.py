"""The trigger of a deferred :class:`~echo_connhandler_provider.sensors.http.EchoHttpSensor`.

:class:`EchoHttpSensorTrigger` polls one endpoint from the triggerer through a provider
connection (a :class:`~echo_connhandler_provider.triggers.base.PollingTrigger`: one connection,
one login, for all its polls) and fires once:

* ``{"status": "success", ...}`` with a description of the first response whose status is
  accepted (:func:`~echo_connhandler_provider._requests.describe_response`: status, kept
  headers, the body as text, and with ``ship_body`` the whole body base64-encoded for a
  ``response_check`` run in the worker);
* or an error event (the last error's type and message, ``consecutive_errors``) after
  ``max_consecutive_errors`` failed polls in a row.

A status of ``not_yet_statuses`` means "not yet": the trigger sleeps ``poke_interval`` and polls
again, as it does after an error. It sleeps ``first_delay`` before its first poll (a sensor that
defers again after its ``response_check`` said no waits one ``poke_interval`` that way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from echo_connhandler import EchoHttpError, HttpHandler
from echo_connhandler_provider._jobs import error_payload
from echo_connhandler_provider._requests import (
    TriggerRequest,
    accepted_statuses,
    describe_response,
    is_not_yet,
    status_list,
)
from echo_connhandler_provider.triggers.base import PollingTrigger

__all__ = ["EchoHttpSensorTrigger"]


class EchoHttpSensorTrigger(TriggerRequest, PollingTrigger):
    """Polls an endpoint until its status is accepted, and fires once (see the module).

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
        started_at: the first poke's time (ISO 8601), carried into every event.
        deadline: the sensor's deadline (ISO 8601): a ``timeout`` event once it has passed.
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
            conn_id=conn_id,
            poke_interval=poke_interval,
            max_consecutive_errors=max_consecutive_errors,
            first_delay=first_delay,
            started_at=started_at,
            deadline=deadline,
        )
        self.set_request(
            conn_type=conn_type,
            endpoint=endpoint,
            method=method,
            request_kwargs=request_kwargs,
            response_ok=response_ok,
            idempotent=idempotent,
        )
        self.not_yet_statuses = status_list(not_yet_statuses, "not_yet_statuses")
        self.ship_body = bool(ship_body)
        self.max_body_bytes = int(max_body_bytes)

    @property
    def what(self) -> str:
        return f"{self.method} {self.endpoint}"

    async def poll(self, handler: HttpHandler) -> dict[str, Any] | None:
        try:
            response = await handler.async_request(
                self.method,
                self.endpoint,
                response_ok=accepted_statuses(self.response_ok, self.not_yet_statuses),
                idempotent=self.idempotent,
                **self.request_kwargs,
            )
        except EchoHttpError as exc:
            if not is_not_yet(exc, self.not_yet_statuses):
                raise
            status = getattr(exc, "status_code", None)
        else:
            status = response.status_code
            if status not in self.not_yet_statuses:
                self.log.info("%s -> HTTP %s", self.what, status)
                try:
                    # Decoding (and base64 for ship_body) may take a while: in a thread.
                    return await asyncio.to_thread(
                        describe_response,
                        response,
                        output=None,
                        ship_body=self.ship_body,
                        max_body_bytes=self.max_body_bytes,
                    )
                except ValueError as exc:  # a body too large to send back
                    return error_payload(exc)
        self.log.info("%s -> HTTP %s: not yet", self.what, status)
        return None
