"""Triggers of the provider's jobs: a whole pull in one trigger, and one HTTP request.

:class:`PullTrigger` runs the fetching of a pull in the triggerer
(:func:`echo_connhandler.pull.run_pull` with ``stage="fetch"``): the connection is opened once
(one login), every chunk is fetched and written to the checkpoint *as delivered* (no decoding,
no encoding: the triggerer's event loop, shared by every trigger, only waits on the network),
and one event comes back. The operator never defers once per page. The task, resumed in a
worker, decodes, checks, encodes and assembles the kept pages there, with the worker's cores
(docs/airflow/deferrable-pulls.md, "What runs where"). A trigger may run again after a
triggerer restart: the checkpoint then fetches only the chunks still missing.

:class:`RequestTrigger` sends one request (for :class:`~echo_connhandler_provider.operators.http.
EchoHttpOperator`), optionally writes the body atomically to ``output``, and sends back a small
description of the response.

Both serialise only plain JSON values (the connection, the source's registered name and its
arguments, the output as a string), never a handler, a response or a secret. Failures come back
as an error event (:func:`~echo_connhandler_provider._jobs.error_payload`); the operator's
``execute_complete`` raises that same exception type again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import TriggerEvent

from echo_connhandler.pull import json_arguments, source_class
from echo_connhandler_provider._jobs import (
    PROGRESS_EVERY_S,
    error_payload,
    request_job,
    run_pull_job,
)
from echo_connhandler_provider._requests import TriggerRequest
from echo_connhandler_provider.triggers.base import EchoTrigger

__all__ = ["PullTrigger", "RequestTrigger"]


def _output_text(output: Any) -> None:
    if output is not None and not isinstance(output, str):
        raise TypeError(f"a trigger's output must be a string path or URL, got {output!r}")


class PullTrigger(EchoTrigger):
    """Fetches a pull's chunks in the triggerer and fires once, with its summary or its error.

    The success event is ``{"status": "success", "summary": ..., "source": ...,
    "arguments": ...}``: the fetch stage's summary (``stage="fetched"``) and the pull's source
    and arguments, so that the resumed task finishes exactly this pull.

    Args:
        conn_id: the Airflow connection (of the type whose handler the source reads through).
        source: the source's registered name (``ccee_datastore``, ...: see
            :func:`echo_connhandler.pull.registered_sources`).
        arguments: the source's keyword arguments as plain JSON
            (:meth:`~echo_connhandler.pull.Source.arguments`).
        output: where the pull writes (a local path on a volume the workers share, or a URL).
        format: the output format (default: from the output's name).
        concurrency: chunks in flight (None: the connection's ``concurrency`` option).
        progress_every: seconds between progress lines in the task log.
    """

    def __init__(
        self,
        *,
        conn_id: str | None,
        source: str,
        arguments: Mapping[str, Any],
        output: str,
        format: str | None = None,
        concurrency: int | None = None,
        progress_every: float = PROGRESS_EVERY_S,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        source_class(source)  # an unknown name fails here, with the registered ones
        _output_text(output)
        self.conn_id = conn_id
        self.source = source
        self.arguments = json_arguments(arguments, "source argument")
        self.output = output
        self.format = format
        self.concurrency = concurrency
        self.progress_every = float(progress_every)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Pulling in the triggerer through connection %r", self.conn_id)
        try:
            summary = await run_pull_job(
                conn_id=self.conn_id,
                source=self.source,
                arguments=self.arguments,
                output=self.output,
                format=self.format,
                concurrency=self.concurrency,
                log=self.log,
                progress_every=self.progress_every,
                stage="fetch",
                where="triggerer",
            )
        except Exception as exc:
            payload = error_payload(exc)
            self.log.error("The pull failed: %s: %s", payload["error_type"], payload["message"])
        else:
            payload = {
                "status": "success",
                "summary": dict(summary),
                "source": self.source,
                "arguments": self.arguments,
            }
        yield TriggerEvent(payload)  # type: ignore[no-untyped-call]


class RequestTrigger(TriggerRequest, EchoTrigger):
    """Sends one request in the triggerer and fires once with a small description of it.

    ``request`` is the request (:class:`~echo_connhandler_provider._requests.TriggerRequest`:
    ``conn_type``, ``conn_id``, ``method``, ``endpoint``, ``request_kwargs`` with ``params``,
    ``json``, ``data`` and ``headers``, ``response_ok``, ``idempotent``; plain JSON). With
    ``output`` the body is written there atomically and not sent back. With ``ship_body`` the
    whole body comes back base64-encoded (for a ``response_check``/``response_filter`` run on
    resume), up to ``max_body_bytes``. A POST or PATCH is sent by a trigger only when
    ``idempotent`` is True: a triggerer restart runs the trigger again.
    """

    def __init__(
        self,
        *,
        request: Mapping[str, Any],
        output: str | None = None,
        ship_body: bool = False,
        max_body_bytes: int = 65_536,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.set_request(request)
        _output_text(output)
        self.output = output
        self.ship_body = bool(ship_body)
        self.max_body_bytes = int(max_body_bytes)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            payload, _ = await request_job(
                **self.request,
                output=self.output,
                ship_body=self.ship_body,
                max_body_bytes=self.max_body_bytes,
            )
        except Exception as exc:
            payload = error_payload(exc)
            self.log.error(
                "%s %s failed: %s: %s",
                self.method,
                self.endpoint,
                payload["error_type"],
                payload["message"],
            )
        else:
            self.log.info(
                "%s %s -> HTTP %s (%d bytes)",
                self.method,
                self.endpoint,
                payload["status_code"],
                payload["bytes"],
            )
        yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
