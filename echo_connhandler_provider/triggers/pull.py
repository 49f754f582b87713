"""Triggers of the provider: a whole pull in one trigger, and one HTTP request.

:class:`PullTrigger` runs a complete :func:`echo_connhandler.pull.run_pull` in the triggerer:
the connection is opened once (one login), every chunk is fetched, written and checkpointed
there, and one event comes back with the pull's summary. The operator never defers once per
page. A trigger may run again after a triggerer restart: the engine's checkpoint then fetches
only the chunks still missing, and the output appears atomically.

:class:`RequestTrigger` sends one request (for :class:`~echo_connhandler_provider.operators.http.
EchoHttpOperator`), optionally writes the body atomically to ``output``, and sends back a small
description of the response.

Both serialise only plain JSON values (connection type and id, the source's registry name and
its keyword arguments with dates as ISO strings, the output as a string), never a handler, a
response or a secret. Failures come back as an event ``{"status": "error", "error_type",
"message"}`` (the message as the library wrote it, with every registered secret removed); the
operator's ``execute_complete`` raises that same exception type again (:func:`rebuild_error`).

This module also holds what the operators share with the triggers: the registry of hooks by
connection type (:data:`HOOKS`), the registry of pull sources (:data:`SOURCES`), the
conversions of source arguments to and from JSON, and the coroutines that run a pull
(:func:`run_pull_job`) or a request (:func:`request_job`) on the handler's async path, used by
the triggers and by the operators' non-deferrable path alike.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

import echo_connhandler
import echo_connhandler.pull as pull_module
from echo_connhandler import HttpResponseError, redact
from echo_connhandler.pull import (
    Progress,
    PullLog,
    PullSummary,
    Source,
    run_pull,
    storage_for,
    summary_line,
)
from echo_connhandler_provider._requests import http_method, xcom_headers
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = [
    "HOOKS",
    "SOURCES",
    "PullTrigger",
    "RequestTrigger",
    "build_source",
    "error_payload",
    "hook_for",
    "parse_duration",
    "parse_moment",
    "rebuild_error",
    "request_job",
    "run_pull_job",
    "source_kwargs_to_json",
    "summary_line",
]

#: The hook of each connection type.
HOOKS: dict[str, type[HandlerHook[Any]]] = {
    "echo_http": EchoHttpHook,
    "bazefield": BazefieldHook,
    "ccee": CceeHook,
    "ons": OnsHook,
}

#: Pull sources by registry name: the class name in :mod:`echo_connhandler.pull`, and the
#: connection type it reads from.
SOURCES: dict[str, tuple[str, str]] = {
    "ccee_datastore": ("CceeDatastoreSource", "ccee"),
    "bazefield_timeseries": ("BazefieldTimeseriesSource", "bazefield"),
    "ons_sager_report": ("OnsSagerReportSource", "ons"),
    "ons_sinapse_export": ("OnsSinapseExportSource", "ons"),
}

#: Source arguments that are moments: sent as ISO strings, turned back into date/datetime.
DATE_KEYS = frozenset({"start", "end"})
#: Source arguments that are durations: sent as seconds, turned back into timedelta.
DURATION_KEYS = frozenset({"window"})

#: Seconds between progress lines of a pull, by default.
PROGRESS_EVERY_S = 5.0

#: Builtin exception types an error event may name (besides the library's and Airflow's).
_BUILTIN_ERRORS = frozenset(
    {
        "ConnectionError",
        "FileExistsError",
        "FileNotFoundError",
        "ImportError",
        "IndexError",
        "IsADirectoryError",
        "KeyError",
        "LookupError",
        "ModuleNotFoundError",
        "NotADirectoryError",
        "NotImplementedError",
        "OSError",
        "PermissionError",
        "RuntimeError",
        "TimeoutError",
        "TypeError",
        "ValueError",
    }
)

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

#: Methods a request trigger replays only when told they are idempotent.
NON_IDEMPOTENT_METHODS = frozenset({"POST", "PATCH"})


# -- registries ----------------------------------------------------------------------------------
def hook_for(conn_type: str, conn_id: str | None) -> HandlerHook[Any]:
    """The hook of ``conn_type`` for ``conn_id`` (its default connection when None)."""
    try:
        hook_cls = HOOKS[conn_type]
    except KeyError:
        raise ValueError(
            f"unknown conn_type {conn_type!r}; expected one of {', '.join(sorted(HOOKS))}"
        ) from None
    return hook_cls(conn_id)


def source_class(name: str) -> type[Source]:
    """The :class:`~echo_connhandler.pull.Source` class registered as ``name``."""
    try:
        class_name, _ = SOURCES[name]
    except KeyError:
        raise ValueError(
            f"unknown pull source {name!r}; expected one of {', '.join(sorted(SOURCES))}"
        ) from None
    cls = getattr(pull_module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise ValueError(
            f"pull source {name!r} needs echo_connhandler.pull.{class_name}, which this "
            f"version of echo_connhandler does not have"
        )
    return cls


def _to_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, datetime | date):  # pendulum's DateTime too
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_to_json(v, where) for v in value)
    if isinstance(value, list | tuple | range):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where}: {type(value).__name__} cannot be sent to a trigger; use plain values "
        "(text, numbers, lists, mappings, dates)"
    )


def source_kwargs_to_json(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A source's keyword arguments as plain JSON values (dates as ISO strings)."""
    return {str(k): _to_json(v, f"source argument {k!r}") for k, v in kwargs.items()}


def parse_moment(value: Any, what: str) -> date | datetime:
    """A date or datetime from itself or an ISO-8601 string (``YYYY-MM-DD`` gives a date)."""
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"{what}: expected a date, a datetime or an ISO-8601 string, got {value!r}")


def parse_duration(value: Any, what: str) -> timedelta:
    """A timedelta from itself or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return timedelta(seconds=value)
    raise ValueError(f"{what}: expected a timedelta or a number of seconds, got {value!r}")


def build_source(name: str, kwargs: Mapping[str, Any]) -> Source:
    """The source ``name`` from JSON keyword arguments (ISO strings of dates parsed back,
    durations in seconds back into timedelta)."""
    cls = source_class(name)
    decoded = dict(kwargs)
    for key, value in kwargs.items():
        if value is None:
            continue
        if key in DATE_KEYS:
            decoded[key] = parse_moment(value, f"source argument {key!r}")
        elif key in DURATION_KEYS:
            decoded[key] = parse_duration(value, f"source argument {key!r}")
    return cls(**decoded)


# -- errors --------------------------------------------------------------------------------------
def error_payload(exc: BaseException) -> dict[str, Any]:
    """An error event's payload: the exception's type name and (redacted) message."""
    payload: dict[str, Any] = {
        "status": "error",
        "error_type": type(exc).__name__,
        "message": redact(str(exc)),
    }
    if isinstance(exc, HttpResponseError):
        payload["status_code"] = exc.status_code
    return payload


def _known_error(error_type: str) -> type[Exception] | None:
    """The exception class an error event names, when it is one we can raise again."""
    for module, names in (
        (echo_connhandler, echo_connhandler.__all__),
        (pull_module, pull_module.__all__),
    ):
        if error_type in names:
            cls = getattr(module, error_type)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls
    if error_type in _BUILTIN_ERRORS:
        builtin = getattr(builtins, error_type)
        if isinstance(builtin, type) and issubclass(builtin, Exception):
            return builtin
    from airflow.sdk import exceptions as airflow_exceptions

    cls = getattr(airflow_exceptions, error_type, None)
    if isinstance(cls, type) and issubclass(cls, airflow_exceptions.AirflowException):
        return cls
    return None


def rebuild_error(event: Mapping[str, Any]) -> Exception:
    """The exception an error event describes: the library's own type with its message.

    Errors of :mod:`echo_connhandler` need a response to be built normally; like the library's
    own ``copy``/``pickle`` support, they are made without calling ``__init__``. An
    :class:`~echo_connhandler.HttpResponseError` gets ``status_code`` (when the event has one)
    and ``response``/``request`` set to None. An unknown type gives a ``RuntimeError`` whose
    message starts with the type's name.
    """
    error_type = str(event.get("error_type") or "RuntimeError")
    message = str(event.get("message") or "")
    cls = _known_error(error_type)
    if cls is None:
        return RuntimeError(f"{error_type}: {message}")
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if isinstance(error, HttpResponseError):
        error.status_code = int(event.get("status_code") or 0)
        error.response = None  # type: ignore[assignment]
        error.request = None
    return error


# -- pulls ---------------------------------------------------------------------------------------
async def run_pull_job(
    *,
    conn_type: str,
    conn_id: str | None,
    source: str,
    source_kwargs: Mapping[str, Any],
    output: Any,
    format: str | None = None,
    concurrency: int | None = None,
    on_progress: Callable[[Progress], object] | None = None,
    log: PullLog | None = None,
    progress_every: float = PROGRESS_EVERY_S,
) -> PullSummary:
    """A whole pull on the handler's async path: connect once, pull, always close.

    ``concurrency=None`` takes the connection's ``concurrency`` option (default 4). The pull
    says what it does on ``log`` (a task's or a trigger's own logger: its lines reach the task
    log once); the summary's ``seconds`` count from before the connection is looked up.
    """
    started = time.monotonic()
    pull_source = build_source(source, source_kwargs)
    hook = hook_for(conn_type, conn_id)
    try:
        handler = await hook.aget_conn()
        if concurrency is None:
            concurrency = int((await hook.aget_options()).get("concurrency") or 4)
        return await run_pull(
            handler,
            pull_source,
            output,
            format=format,
            concurrency=concurrency,
            on_progress=on_progress,
            progress_every=progress_every,
            log=log,
            started=started,
        )
    finally:
        await hook.aclose()


class PullTrigger(BaseTrigger):
    """Runs a whole pull in the triggerer and fires once, with its summary or its error.

    Args:
        conn_type: ``echo_http``, ``bazefield``, ``ccee`` or ``ons`` (picks the hook).
        conn_id: the Airflow connection.
        source: the source's registry name (:data:`SOURCES`, e.g. ``ccee_datastore``).
        source_kwargs: the source's keyword arguments as JSON (dates as ISO strings).
        output: where the pull writes (a local path on a volume the workers share, or a URL).
        format: the output format (default: from the output's name).
        concurrency: chunks in flight (None: the connection's ``concurrency`` option).
        progress_every: seconds between progress lines in the task log.
    """

    def __init__(
        self,
        *,
        conn_type: str,
        conn_id: str | None,
        source: str,
        source_kwargs: Mapping[str, Any],
        output: str,
        format: str | None = None,
        concurrency: int | None = None,
        progress_every: float = PROGRESS_EVERY_S,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if conn_type not in HOOKS:
            raise ValueError(f"unknown conn_type {conn_type!r}")
        if source not in SOURCES:
            raise ValueError(f"unknown pull source {source!r}")
        if not isinstance(output, str):
            raise TypeError(f"a trigger's output must be a string path or URL, got {output!r}")
        self.conn_type = conn_type
        self.conn_id = conn_id
        self.source = source
        self.source_kwargs = source_kwargs_to_json(source_kwargs)
        self.output = output
        self.format = format
        self.concurrency = concurrency
        self.progress_every = float(progress_every)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_type": self.conn_type,
                "conn_id": self.conn_id,
                "source": self.source,
                "source_kwargs": dict(self.source_kwargs),
                "output": self.output,
                "format": self.format,
                "concurrency": self.concurrency,
                "progress_every": self.progress_every,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Pulling in the triggerer through connection %r", self.conn_id)
        try:
            summary = await run_pull_job(
                conn_type=self.conn_type,
                conn_id=self.conn_id,
                source=self.source,
                source_kwargs=self.source_kwargs,
                output=self.output,
                format=self.format,
                concurrency=self.concurrency,
                log=self.log,
                progress_every=self.progress_every,
            )
        except Exception as exc:
            payload = error_payload(exc)
            self.log.error("The pull failed: %s: %s", payload["error_type"], payload["message"])
        else:
            payload = {"status": "success", "summary": dict(summary)}
        yield TriggerEvent(payload)  # type: ignore[no-untyped-call]


# -- one request ---------------------------------------------------------------------------------
def response_ok_to_json(response_ok: Any) -> int | list[int] | None:
    """``response_ok`` as JSON: an int, a sorted list of ints, or None (any status)."""
    if response_ok is None or (isinstance(response_ok, int) and not isinstance(response_ok, bool)):
        return response_ok
    if isinstance(response_ok, Collection) and not isinstance(response_ok, str | bytes):
        statuses = list(response_ok)
        if all(isinstance(s, int) and not isinstance(s, bool) for s in statuses):
            return sorted(set(statuses))
    raise TypeError(
        f"response_ok must be an int, a collection of ints or None, got {response_ok!r}"
    )


def write_output(output: Any, content: bytes) -> str:
    """Write ``content`` to ``output`` atomically (blocking: call it in a thread); its URL."""
    storage, path = storage_for(output)
    parent = storage.parent(path)
    if parent and parent != ".":
        storage.makedirs(parent)
    storage.write_atomic(path, content)
    return storage.url(path)


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


async def request_job(
    *,
    conn_type: str,
    conn_id: str | None,
    method: str,
    endpoint: str,
    request_kwargs: Mapping[str, Any],
    response_ok: Any = 200,
    idempotent: bool | None = None,
    output: str | None = None,
    ship_body: bool = False,
    max_body_bytes: int = 65_536,
) -> tuple[dict[str, Any], httpx.Response]:
    """One request on the handler's async path; the body goes to ``output`` (atomically) if
    given. Returns the response's description (see :func:`describe_response`) and itself."""
    hook = hook_for(conn_type, conn_id)
    try:
        handler = await hook.aget_conn()
        kwargs = {k: v for k, v in request_kwargs.items() if v is not None}
        response = await handler.async_request(
            method, endpoint, response_ok=response_ok, idempotent=idempotent, **kwargs
        )
        written = None
        if output is not None:
            written = await asyncio.to_thread(write_output, output, response.content)
        # Decoding (and base64 for ship_body) may take a while for a large body: in a thread.
        payload = await asyncio.to_thread(
            describe_response,
            response,
            output=written,
            ship_body=ship_body,
            max_body_bytes=max_body_bytes,
        )
        return payload, response
    finally:
        await hook.aclose()


class RequestTrigger(BaseTrigger):
    """Sends one request in the triggerer and fires once with a small description of it.

    ``request_kwargs`` holds ``params``, ``json``, ``data`` and ``headers`` (plain JSON values).
    With ``output`` the body is written there atomically and not sent back. With ``ship_body``
    the whole body comes back base64-encoded (for a ``response_check``/``response_filter``
    run on resume), up to ``max_body_bytes``. A POST or PATCH is sent by a trigger only when
    ``idempotent`` is True: a triggerer restart runs the trigger again.
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
        idempotent: bool | None = None,
        output: str | None = None,
        ship_body: bool = False,
        max_body_bytes: int = 65_536,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if conn_type not in HOOKS:
            raise ValueError(f"unknown conn_type {conn_type!r}")
        method = http_method(method)
        if method in NON_IDEMPOTENT_METHODS and idempotent is not True:
            raise ValueError(
                f"a {method} is not sent from a trigger unless idempotent=True: a triggerer "
                "restart would send it again"
            )
        if output is not None and not isinstance(output, str):
            raise TypeError(f"a trigger's output must be a string path or URL, got {output!r}")
        self.conn_type = conn_type
        self.conn_id = conn_id
        self.method = method
        self.endpoint = endpoint
        self.request_kwargs = {
            str(k): _to_json(v, f"request argument {k!r}")
            for k, v in (request_kwargs or {}).items()
            if v is not None
        }
        self.response_ok = response_ok_to_json(response_ok)
        self.idempotent = idempotent
        self.output = output
        self.ship_body = bool(ship_body)
        self.max_body_bytes = int(max_body_bytes)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_type": self.conn_type,
                "conn_id": self.conn_id,
                "method": self.method,
                "endpoint": self.endpoint,
                "request_kwargs": dict(self.request_kwargs),
                "response_ok": self.response_ok,
                "idempotent": self.idempotent,
                "output": self.output,
                "ship_body": self.ship_body,
                "max_body_bytes": self.max_body_bytes,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            payload, _ = await request_job(
                conn_type=self.conn_type,
                conn_id=self.conn_id,
                method=self.method,
                endpoint=self.endpoint,
                request_kwargs=self.request_kwargs,
                response_ok=self.response_ok,
                idempotent=self.idempotent,
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
