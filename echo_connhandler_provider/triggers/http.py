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
        request: the request (:class:`~echo_connhandler_provider._requests.TriggerRequest`:
            ``conn_type``, ``conn_id``, ``method``, ``endpoint``, ``request_kwargs``,
            ``response_ok`` (the statuses that end the wait; None: any that is not "not
            yet"), ``idempotent``; a POST or PATCH needs ``idempotent=True``).
        polling: the polling's arguments (:class:`~echo_connhandler_provider.triggers.base.
            PollingTrigger`: ``poke_interval``, ``first_delay``, ``max_consecutive_errors``,
            ``started_at``, ``deadline``), as the sensor gives them.
        not_yet_statuses: the statuses that mean "not yet".
        ship_body: send the whole body back (base64) for a ``response_check``.
        max_body_bytes: the largest body sent back.
    """

    def __init__(
        self,
        *,
        request: Mapping[str, Any],
        polling: Mapping[str, Any],
        not_yet_statuses: Any = (404,),
        ship_body: bool = False,
        max_body_bytes: int = 65_536,
    ) -> None:
        self.set_request(request)
        super().__init__(conn_id=self.conn_id, **polling)
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
