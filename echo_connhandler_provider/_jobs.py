"""What the provider's operators, sensors and triggers share: the jobs and their error events.

* The hook of each connection type (:data:`HOOKS`, :func:`hook_for`), and the hook a pull
  source reads through (:func:`hook_for_source`: the hook whose handler is the source's
  ``handler_class``).
* The jobs, on the handler's async path: a whole pull (:func:`run_pull_job`) and one request
  (:func:`request_job`). A trigger runs them in the triggerer, an operator's non-deferrable
  path in the worker (``asyncio.run``): one code path, the same checkpoint, the same file.
* Error events: a job's failure as a plain-JSON event ``{"status": "error", "error_type",
  "message"}`` (the message as the library wrote it, every registered secret removed:
  :func:`error_payload`), and the same exception type raised again on resume
  (:func:`rebuild_error`).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import httpx

import echo_connhandler
import echo_connhandler.pull as pull_module
from echo_connhandler import HttpResponseError, redact
from echo_connhandler.pull import (
    Progress,
    PullLog,
    PullSummary,
    Source,
    build_source,
    run_pull,
    storage_for,
)
from echo_connhandler_provider._requests import describe_response
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = [
    "HOOKS",
    "PROGRESS_EVERY_S",
    "error_payload",
    "hook_class",
    "hook_for",
    "hook_for_source",
    "rebuild_error",
    "request_job",
    "run_job",
    "run_pull_job",
    "write_output",
]

T = TypeVar("T")

#: The hook of each connection type.
HOOKS: dict[str, type[HandlerHook[Any]]] = {
    "echo_http": EchoHttpHook,
    "bazefield": BazefieldHook,
    "ccee": CceeHook,
    "ons": OnsHook,
}

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


def hook_class(conn_type: str) -> type[HandlerHook[Any]]:
    """The hook class of ``conn_type`` (``ValueError`` naming the known types)."""
    try:
        return HOOKS[conn_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown conn_type {conn_type!r}; expected one of {', '.join(sorted(HOOKS))}"
        ) from None


def hook_for(conn_type: str, conn_id: str | None) -> HandlerHook[Any]:
    """The hook of ``conn_type`` for ``conn_id`` (its default connection when None)."""
    return hook_class(conn_type)(conn_id)


def hook_for_source(source: type[Source]) -> type[HandlerHook[Any]]:
    """The hook whose handler ``source`` reads through (its ``handler_class``); the most
    specific one when several fit (a source of plain ``HttpHandler`` gets ``echo_http``)."""
    fitting = [
        hook for hook in HOOKS.values() if issubclass(hook.handler_class, source.handler_class)
    ]
    if not fitting:
        raise ValueError(
            f"pull source {source.name!r} reads through {source.handler_class.__name__}, which no "
            f"connection type of this provider gives ({', '.join(sorted(HOOKS))})"
        )
    # The hook whose handler is the source's own class, else the most general subclass.
    return min(fitting, key=lambda hook: len(hook.handler_class.__mro__))


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


def run_job(job: Coroutine[Any, Any, T]) -> T:
    """Run a job's coroutine to its end from a task's synchronous code: ``asyncio.run``, or,
    when this thread already runs an event loop (``airflow dags test`` resumes a deferred task
    from inside its own), in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(job)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="echo-job") as pool:
        return pool.submit(asyncio.run, job).result()


async def run_pull_job(
    *,
    conn_id: str | None,
    source: str,
    arguments: Mapping[str, Any],
    output: Any,
    format: str | None = None,
    concurrency: int | None = None,
    on_progress: Callable[[Progress], object] | None = None,
    log: PullLog | None = None,
    progress_every: float = PROGRESS_EVERY_S,
    stage: str = "all",
    where: str = "worker",
    decode: str = "thread",
) -> PullSummary:
    """A pull on the handler's async path: connect once, pull, always close.

    ``source`` is a registered source's name and ``arguments`` its keyword arguments
    (:meth:`~echo_connhandler.pull.Source.arguments`); the connection type is the one of the
    source's handler. ``concurrency=None`` takes the connection's ``concurrency`` option
    (default 4). The pull says what it does on ``log`` (a task's or a trigger's own logger: its
    lines reach the task log once); the summary's ``seconds`` count from before the connection
    is looked up. ``stage``, ``where`` and ``decode`` are :func:`~echo_connhandler.pull.
    run_pull`'s: a trigger runs ``stage="fetch"`` (it moves bytes), the resumed task the rest.
    """
    started = time.monotonic()
    pull_source = build_source(source, arguments)
    hook = hook_for_source(type(pull_source))(conn_id)
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
            stage=stage,
            where=where,
            decode=decode,
        )
    finally:
        await hook.aclose()


def write_output(output: Any, content: bytes) -> str:
    """Write ``content`` to ``output`` atomically (blocking: call it in a thread); its URL."""
    storage, path = storage_for(output)
    parent = storage.parent(path)
    if parent and parent != ".":
        storage.makedirs(parent)
    storage.write_atomic(path, content)
    return storage.url(path)


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
