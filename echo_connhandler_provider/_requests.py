"""One HTTP request as the provider defines it, for :class:`~echo_connhandler_provider.operators.
EchoHttpOperator`, :class:`~echo_connhandler_provider.sensors.EchoHttpSensor` and their triggers.

* :class:`HttpRequestArguments`: the arguments the operator and the sensor share (endpoint,
  method, query, json, data, headers, response_ok, idempotent, max_body_bytes), their checks
  when the DAG is parsed and as rendered, and the XCom of a response (:meth:`~HttpRequestArguments.
  result`).
* :class:`TriggerRequest`: the same request as a trigger carries it (plain JSON, checked once):
  a POST or PATCH is sent from a trigger only when ``idempotent`` is True, since a triggerer
  restart sends it again (:func:`check_deferred_method`, the one place that says so).
* :func:`describe_response` / :func:`response_from_event`: a response as a small JSON event, and
  back (for a ``response_check`` run in the worker).
"""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx
from airflow.sdk import BaseOperator

from echo_connhandler import HttpResponseError, is_sensitive_name, redact
from echo_connhandler.pull import json_arguments

__all__ = [
    "NON_IDEMPOTENT_METHODS",
    "HttpRequestArguments",
    "TriggerRequest",
    "accepted_statuses",
    "check_deferred_method",
    "describe_response",
    "http_method",
    "is_not_yet",
    "response_from_event",
    "status_codes",
    "xcom_headers",
]

#: Methods a trigger sends only when told they are idempotent: a triggerer restart runs the
#: trigger again.
NON_IDEMPOTENT_METHODS = frozenset({"POST", "PATCH"})

#: Response headers never sent back (cookies and authentication challenges).
_HIDDEN_HEADERS = frozenset(
    {
        "set-cookie",
        "set-cookie2",
        "cookie",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
    }
)

#: What a credential-carrying header's value becomes (the library's own mask).
MASK = "***"

#: An HTTP method is a token (RFC 9110, section 9.1; tchar of section 5.6.2): no spaces.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def http_method(value: Any, what: str = "method") -> str:
    """``value`` as an upper-case HTTP method; ValueError naming ``what`` if it is no token.

    Refused rather than stripped: ``" POST"`` is a template or a typo to fix, and before this
    check it slipped past the deferred POST/PATCH idempotency check.
    """
    if not isinstance(value, str) or not _METHOD.fullmatch(value):
        raise ValueError(
            f"{what} must be an HTTP method token such as GET or POST (no spaces), got {value!r}"
        )
    return value.upper()


def xcom_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Response headers for an XCom: credential-carrying values replaced by ``***``.

    A header is credential-carrying when its name is by the library's rule
    (:func:`~echo_connhandler.is_sensitive_name`: it contains ``password``, ``passwd``,
    ``secret``, ``token``, ``key``, ``auth``, ``cookie``, ``session`` or ``signature``):
    ``X-Subject-Token``, ``X-Auth-Token``, ``X-Api-Key``, ``X-Session-Id``,
    ``Authentication-Info``, ... A server issues such values (a token minted by a login
    endpoint) that no registry knows, and an XCom is readable by anyone who can read the DAG's
    runs. Cookies and authentication headers and challenges (``Set-Cookie``,
    ``Authorization``, ``WWW-Authenticate``, ...) are not returned at all.
    """
    return {name: MASK if is_sensitive_name(name) else value for name, value in headers.items()}


def status_codes(value: Any, what: str) -> int | list[int] | None:
    """Status codes as JSON: an int, a sorted list of ints, or None (``response_ok``'s "any")."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, Collection) and not isinstance(value, str | bytes):
        statuses = list(value)
        if all(isinstance(s, int) and not isinstance(s, bool) for s in statuses):
            return sorted(set(statuses))
    raise TypeError(f"{what} must be an int, a collection of ints or None, got {value!r}")


def status_list(value: Any, what: str) -> list[int]:
    """Status codes as a sorted list (None: none; ``not_yet_statuses``)."""
    codes = status_codes(value, what)
    return [] if codes is None else [codes] if isinstance(codes, int) else codes


def accepted_statuses(response_ok: Any, not_yet: Collection[int]) -> int | list[int] | None:
    """What the handler is asked to accept: ``response_ok`` and the "not yet" statuses (None:
    any status)."""
    ok = status_codes(response_ok, "response_ok")
    if ok is None:
        return None
    return sorted({*status_list(ok, "response_ok"), *not_yet})


def is_not_yet(exc: BaseException, not_yet: Collection[int]) -> bool:
    """Whether an error is a "not yet" answer (an error with one of those statuses, as a CKAN
    404 ``Not Found Error`` raised as ``ApiError``)."""
    return isinstance(exc, HttpResponseError) and exc.status_code in not_yet


def check_deferred_method(method: str, idempotent: bool | None) -> None:
    """Refuse a POST or PATCH from a trigger unless ``idempotent`` is True."""
    if method in NON_IDEMPOTENT_METHODS and idempotent is not True:
        raise ValueError(
            f"a deferred {method} needs idempotent=True: the triggerer may send it again after "
            "a restart; set idempotent=True if the endpoint tolerates it, or use "
            "deferrable=False"
        )


class TriggerRequest:
    """The request of a trigger (a mixin of :class:`~echo_connhandler_provider.triggers.pull.
    RequestTrigger` and :class:`~echo_connhandler_provider.triggers.http.EchoHttpSensorTrigger`):
    one ``request`` argument (what :meth:`HttpRequestArguments.trigger_request` gives:
    ``conn_type``, ``conn_id``, ``method``, ``endpoint``, ``request_kwargs``, ``response_ok``,
    ``idempotent``), checked once and kept as plain JSON."""

    request: dict[str, Any]
    conn_type: str
    conn_id: str | None
    method: str
    endpoint: str
    request_kwargs: dict[str, Any]
    response_ok: int | list[int] | None
    idempotent: bool | None

    def set_request(self, request: Mapping[str, Any]) -> None:
        """Check ``request`` and keep it: ``method`` upper case (a POST or PATCH only when
        idempotent), ``request_kwargs`` (``params``, ``json``, ``data``, ``headers``) without
        None values and as plain JSON, ``response_ok`` as an int, a sorted list or None."""
        from echo_connhandler_provider._jobs import hook_class

        unknown = sorted(set(request) - set(_REQUEST_KEYS))
        if unknown or not {"conn_type", "method", "endpoint"} <= set(request):
            raise ValueError(
                f"a trigger's request needs conn_type, method and endpoint and takes only "
                f"{', '.join(_REQUEST_KEYS)}; got {sorted(request)}"
            )
        self.conn_type = str(request["conn_type"])
        hook_class(self.conn_type)  # an unknown type fails here, naming the known ones
        self.conn_id = request.get("conn_id")
        self.method = http_method(request["method"])
        self.idempotent = request.get("idempotent")
        check_deferred_method(self.method, self.idempotent)
        self.endpoint = str(request["endpoint"])
        given = {k: v for k, v in (request.get("request_kwargs") or {}).items() if v is not None}
        self.request_kwargs = json_arguments(given, "request argument")
        self.response_ok = status_codes(request.get("response_ok", 200), "response_ok")
        self.request = {
            "conn_type": self.conn_type,
            "conn_id": self.conn_id,
            "method": self.method,
            "endpoint": self.endpoint,
            "request_kwargs": self.request_kwargs,
            "response_ok": self.response_ok,
            "idempotent": self.idempotent,
        }


_REQUEST_KEYS = (
    "conn_type",
    "conn_id",
    "method",
    "endpoint",
    "request_kwargs",
    "response_ok",
    "idempotent",
)


def _is_text(content_type: str) -> bool:
    main, _, subtype = content_type.partition("/")
    return (
        not content_type
        or main == "text"
        or subtype in ("json", "xml", "csv", "javascript", "x-www-form-urlencoded")
        or subtype.endswith(("+json", "+xml"))
    )


def describe_response(
    response: httpx.Response,
    *,
    output: str | None,
    ship_body: bool,
    max_body_bytes: int,
) -> dict[str, Any]:
    """A small, JSON-able description of a response (what a request event carries).

    ``body`` is the text of a small textual body when there is no ``output`` (None otherwise);
    ``content_b64`` the whole body, base64, when ``ship_body`` (for callables run on resume).
    """
    content = response.content
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    # The event is stored in Airflow's database: a token the server issued (X-Subject-Token)
    # is no registered secret, so credential-carrying headers are masked here already.
    headers = xcom_headers(
        {k: redact(v) for k, v in response.headers.items() if k.lower() not in _HIDDEN_HEADERS}
    )
    request = response.request
    payload: dict[str, Any] = {
        "status": "success",
        "status_code": response.status_code,
        "reason": response.reason_phrase,
        "method": request.method,
        "url": redact(str(request.url)),
        "headers": headers,
        "content_type": content_type,
        "bytes": len(content),
        "output": output,
        "body": None,
    }
    if output is None and len(content) <= max_body_bytes and _is_text(content_type):
        payload["body"] = response.text
    if ship_body:
        if len(content) > max_body_bytes:
            raise ValueError(
                f"the response body ({len(content)} bytes) is larger than max_body_bytes "
                f"({max_body_bytes}) and cannot be sent back from the trigger for "
                "response_check/response_filter: raise max_body_bytes or use deferrable=False"
            )
        payload["content_b64"] = base64.b64encode(content).decode("ascii")
    return payload


def response_from_event(event: Mapping[str, Any]) -> httpx.Response:
    """An ``httpx.Response`` rebuilt from a request event (status, headers, content).

    The headers are those the event kept (no cookies, no authentication challenges); the
    request carries the method and the (redacted) URL only.
    """
    raw = event.get("content_b64")
    if raw is not None:
        content = base64.b64decode(raw)
    else:
        content = (event.get("body") or "").encode("utf-8")
    headers = {
        k: v
        for k, v in dict(event.get("headers") or {}).items()
        # the content is already decoded: no content-encoding, and its own length
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    }
    request = httpx.Request(str(event.get("method") or "GET"), str(event.get("url") or ""))
    return httpx.Response(
        int(event["status_code"]), headers=headers, content=content, request=request
    )


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


class HttpRequestArguments(BaseOperator):
    """The request of :class:`~echo_connhandler_provider.operators.EchoHttpOperator` and
    :class:`~echo_connhandler_provider.sensors.EchoHttpSensor` (a base of both): its
    arguments, written once, checked when the DAG is parsed and as rendered.

    Args:
        endpoint: the path after the connection's Base URL (or a full URL on the same host).
        conn_id: the connection (default: the connection type's ``<type>_default``).
        conn_type: ``echo_http``, ``bazefield``, ``ccee`` or ``ons`` (picks the hook).
        method: the HTTP method (any case); text that is not a method token (``" POST"``) is
            a ``ValueError``; deferred, a POST or PATCH needs ``idempotent=True``.
        query: the query string parameters (httpx's ``params``; not called ``params``, which
            is Airflow's own task argument).
        json: a JSON body.
        data: a form (mapping) or text body.
        headers: extra headers.
        response_ok: accepted status codes (an int, a collection, or None for any).
        idempotent: whether the request may be replayed (the handler's retries; and for
            deferral of a POST or PATCH, which requires True).
        max_body_bytes: the largest body returned in the XCom (or sent back from a trigger).
        **kwargs: the arguments of ``BaseOperator`` (``task_id``, ``retries``, ...).
    """

    request_template_fields: tuple[str, ...] = (
        "conn_id",
        "endpoint",
        "method",
        "query",
        "json",
        "data",
        "headers",
    )
    template_fields: Sequence[str] = request_template_fields
    template_fields_renderers = {"json": "json", "query": "py", "data": "py", "headers": "json"}

    def __init__(
        self,
        *,
        endpoint: str,
        conn_id: str | None = None,
        conn_type: str = "echo_http",
        method: str = "GET",
        query: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        response_ok: int | Sequence[int] | None = 200,
        idempotent: bool | None = None,
        max_body_bytes: int = 65_536,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from echo_connhandler_provider._jobs import hook_class

        hook_class(conn_type)  # a bad value fails when the DAG is parsed
        status_codes(response_ok, "response_ok")
        if not _is_template(method):
            http_method(method)  # a bad value fails when the DAG is parsed
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise TypeError(f"max_body_bytes must be an int, got {max_body_bytes!r}")
        self.endpoint = endpoint
        self.conn_id = conn_id
        self.conn_type = conn_type
        self.method = method
        self.query = query
        self.json = json
        self.data = data
        self.headers = headers
        self.response_ok = response_ok
        self.idempotent = idempotent
        self.max_body_bytes = max_body_bytes

    def trigger_request(self, method: str) -> dict[str, Any]:
        """The request as a trigger's ``request`` argument (see :class:`TriggerRequest`)."""
        return {
            "conn_type": self.conn_type,
            "conn_id": self.conn_id,
            "method": method,
            "endpoint": self.endpoint,
            "request_kwargs": self.request_kwargs(),
            "response_ok": self.response_ok,
            "idempotent": self.idempotent,
        }

    def request_kwargs(self) -> dict[str, Any]:
        """``params``, ``json``, ``data`` and ``headers`` as rendered (None left out)."""
        if isinstance(self.data, bytes | bytearray):
            raise TypeError("data must be a mapping or text (bytes cannot go to a trigger)")
        kwargs = {"params": self.query, "json": self.json, "data": self.data}
        kwargs["headers"] = self.headers
        return {k: v for k, v in kwargs.items() if v is not None}

    def rendered_method(self, *, deferred: bool) -> str:
        """The method as rendered, checked (and, ``deferred``, refused for a POST or PATCH that
        is not idempotent) before anything is sent: ``" POST"`` must not slip past it."""
        method = http_method(self.method)
        if deferred:
            check_deferred_method(method, self.idempotent)
        return method

    def result(self, payload: Mapping[str, Any], *, log: Any, output: bool) -> dict[str, Any]:
        """The task's XCom from a response's description: ``status_code``, ``headers``
        (credential-carrying values masked), ``bytes``, (with ``output``) ``output``, and
        ``body``: decoded JSON, the text of a small textual body, else None (a warning says
        why when the body is kept nowhere)."""
        body = payload.get("body")
        content_type = str(payload.get("content_type") or "")
        if body is not None and (
            content_type == "application/json" or content_type.endswith("+json")
        ):
            with contextlib.suppress(ValueError):
                body = jsonlib.loads(body)
        elif body is None and payload.get("output") is None and payload["bytes"]:
            log.warning(
                "The body (%d bytes, %s) is not returned: it is larger than max_body_bytes "
                "(%d) or not text%s",
                payload["bytes"],
                content_type or "no content type",
                self.max_body_bytes,
                "; set output to keep it" if output else "",
            )
        result = {
            "status_code": payload["status_code"],
            "headers": xcom_headers(payload.get("headers") or {}),
            "bytes": payload["bytes"],
        }
        if output:
            result["output"] = payload.get("output")
        result["body"] = body
        return result
