"""``EchoHttpOperator``: one HTTP request through a provider connection, in the worker or the
triggerer.

The request goes through the connection type's handler (``echo_http`` by default, or
``bazefield``, ``ccee``, ``ons``): its login, retries, typed errors and secret redaction apply.

What the task returns (its XCom) is kept small:

* with ``response_filter``: what ``response_filter(response)`` returns;
* otherwise a dict: ``status_code``, ``headers`` (without cookies or authentication
  challenges; the value of any header whose name looks like a credential's, as
  ``X-Subject-Token``, replaced by ``***``: see :func:`xcom_headers`), ``bytes``, ``output``
  (where the body was written, or None) and ``body``: the decoded JSON or the text of a textual
  body of at most ``max_body_bytes`` when there is no ``output``, else None. A larger body
  belongs in ``output``.

``output`` (a path or URL) receives the body atomically (a temporary name, then a move).

``method`` must be an HTTP method token (``GET``, ``post``: any case, upper-cased): text with
spaces or other characters (``" POST"``) is refused, so that the deferred POST/PATCH check
always sees the real method. A blank ``output``, or one padded with whitespace, is refused too.

Deferral (``deferrable=True``): a :class:`~echo_connhandler_provider.triggers.pull.
RequestTrigger` sends the request from the triggerer. A POST or PATCH is refused there unless
``idempotent=True``: a triggerer restart would send it again. ``response_check`` and
``response_filter`` are callables, which a trigger cannot carry: they run in the worker on
resume, on an ``httpx.Response`` rebuilt from the event (status code, the kept headers, the
body, and a request with the method and URL only), so the body must fit ``max_body_bytes``.

Lineage (Airflow's OpenLineage provider, in the worker once the task has succeeded, deferred or
not): the input is the endpoint (namespace ``scheme://host[:port]``, name the URL's path), the
output the file written, if any (:mod:`echo_connhandler_provider._lineage`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException

from echo_connhandler_provider._checks import check_path_text
from echo_connhandler_provider._defaults import default_deferrable
from echo_connhandler_provider._jobs import rebuild_error, request_job, run_job
from echo_connhandler_provider._lineage import LineageOnSuccess, request_lineage
from echo_connhandler_provider._requests import (
    HttpRequestArguments,
    http_method,
    response_from_event,
    xcom_headers,
)
from echo_connhandler_provider.triggers.pull import RequestTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["EchoHttpOperator", "http_method", "xcom_headers"]

ResponseCheck = Callable[[httpx.Response], bool]
ResponseFilter = Callable[[httpx.Response], Any]


class EchoHttpOperator(LineageOnSuccess, HttpRequestArguments):
    """One HTTP request through an ``echo_http`` (or other provider) connection.

    The request's arguments (``endpoint``, ``conn_id``, ``conn_type``, ``method``, ``query``,
    ``json``, ``data``, ``headers``, ``response_ok``, ``idempotent``, ``max_body_bytes``) are
    those of :class:`~echo_connhandler_provider.operators.HttpRequestArguments`; a status
    outside ``response_ok`` fails the task with :class:`echo_connhandler.HttpStatusError`.

    Args:
        response_check: ``(response) -> bool``; False fails the task.
        response_filter: ``(response) -> value``; the value is the task's XCom.
        output: a path or URL the body is written to (atomically).
        deferrable: send the request from the triggerer (deferred with a callable, the body
            comes back from the trigger, up to ``max_body_bytes``).
        **kwargs: the request's arguments (above), and those of ``BaseOperator``
            (``task_id``, ``retries``, ...).
    """

    template_fields: Sequence[str] = (*HttpRequestArguments.request_template_fields, "output_path")
    ui_color = "#e8eef4"

    def __init__(
        self,
        *,
        response_check: ResponseCheck | None = None,
        response_filter: ResponseFilter | None = None,
        output: str | None = None,
        deferrable: bool = default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_path_text(output, "output")
        self.response_check = response_check
        self.response_filter = response_filter
        # ``output`` is BaseOperator's XComArg property: the value lives in output_path.
        self.output_path = output
        self.deferrable = deferrable
        # Set in the worker when the response is in (execute or execute_complete): what
        # lineage reports. The URL as sent (secrets masked; lineage keeps only its host and
        # path), the body's size and where it was written.
        self._lineage_request: dict[str, Any] | None = None

    def _output_text(self) -> str | None:
        output = self.output_path
        # As rendered: a template that renders blank would write a file named with spaces in
        # the current folder, or (empty) silently keep the body out of the file asked for.
        check_path_text(output, "output")
        if output is None or isinstance(output, str):
            return output
        if isinstance(output, os.PathLike):
            return str(os.fspath(output))
        if self.deferrable:
            raise TypeError(
                f"a deferred request needs output as a path or URL string (the trigger stores "
                f"only plain values), got {type(output).__name__}; use deferrable=False for an "
                "ObjectStoragePath"
            )
        return None  # an ObjectStoragePath in the worker: written through its own filesystem

    @property
    def _ship_body(self) -> bool:
        return self.response_check is not None or self.response_filter is not None

    def execute(self, context: Context) -> Any:
        # As rendered, before the deferred POST check.
        method = self.rendered_method(deferred=self.deferrable)
        output: Any = self._output_text()
        if output is None and self.output_path is not None:
            output = self.output_path
        # One request, whether the triggerer or this worker sends it.
        request = self.trigger_request(method)
        if self.deferrable:
            self.log.info("Deferring: %s %s is sent from the triggerer", method, self.endpoint)
            self.defer(
                trigger=RequestTrigger(
                    request=request,
                    output=output,
                    ship_body=self._ship_body,
                    max_body_bytes=self.max_body_bytes,
                ),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        payload, response = run_job(
            request_job(**request, output=output, max_body_bytes=self.max_body_bytes)
        )
        return self._finish(payload, response)

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Resume after the trigger: the result, or the library's error raised again."""
        if event is None:
            raise RuntimeError(f"{type(self).__name__} resumed without a trigger event")
        if event.get("status") != "success":
            raise rebuild_error(event)
        response = response_from_event(event) if self._ship_body else None
        return self._finish(dict(event), response)

    def _finish(self, payload: dict[str, Any], response: httpx.Response | None) -> Any:
        self._lineage_request = {
            "url": payload.get("url"),
            "bytes": payload["bytes"],
            "output": payload.get("output"),
        }
        self.log.info(
            "%s %s -> HTTP %s (%d bytes)%s",
            payload.get("method"),
            payload.get("url"),
            payload["status_code"],
            payload["bytes"],
            f", written to {payload['output']}" if payload.get("output") else "",
        )
        if response is not None:
            if self.response_check is not None and not self.response_check(response):
                raise AirflowException("Response check returned False.")
            if self.response_filter is not None:
                return self.response_filter(response)
        return self.result(payload, log=self.log, output=True)

    def get_openlineage_facets_on_complete(
        self, task_instance: Any
    ) -> OperatorLineage[Any, Any] | None:
        """What the request read (its endpoint) and wrote (``output``); Airflow's OpenLineage
        provider calls this in the worker once the task has succeeded."""
        if self._lineage_request is None:
            return None
        return request_lineage(self._lineage_request)
