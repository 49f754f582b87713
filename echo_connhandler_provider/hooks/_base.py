"""The one hook shape every connection type shares: Connection -> properties -> handler.

A hook reads its Airflow Connection, validates it against the connection type's field table
(:mod:`echo_connhandler_provider._fields`), builds the handler's properties and keeps one
handler: ``get_conn()`` connects its sync client, ``await aget_conn()`` its async client (no
sync connection opened). Both return the same handler, so a login happens once per hook.
``close()`` / ``await aclose()`` close it.

Secrets: the long-lived credentials the handler library registers (passwords, API keys) are
passed to Airflow's secrets masker (``mask_secret``). The tokens, session ids and cookies
obtained at run time are not: Airflow's masker recompiles one pattern of every secret it knows
for each new one and never forgets one, so in a triggerer that has run 5,000 pulls each login
would stall the loop for most of a second (docs/airflow/hooks.md, "Secret masking"). The
library's registry masks them instead, in the process that could print them, before a record
leaves it: its logging filter on the httpx/httpcore loggers and on the library's and this
provider's loggers (:func:`echo_connhandler._secrets.install_log_redaction`), and a structlog
processor added here to the chain Airflow configured (the task's and the trigger's
``self.log``, Airflow's own task and trigger logs), both checked again at every new token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from echo_connhandler import (
    AuthenticationError,
    EchoHttpError,
    HttpConnProperties,
    HttpHandler,
    HttpResponseError,
    HttpStatusError,
    HttpTransportError,
    ProfileSelectionError,
    WafBlockedError,
    add_secret_hook,
    redact,
)
from echo_connhandler_provider._fields import ConnectionSettings, build_settings

__all__ = ["HandlerHook", "explain_test_failure"]

HandlerT = TypeVar("HandlerT", bound=HttpHandler)
ExcT = TypeVar("ExcT", bound=BaseException)

_pending_masks: set[asyncio.Task[None]] = set()

# Inside an event loop, the process's own masker must learn a secret at once, before anything
# can log it; Airflow has no public call that does only that (mask_secret may block on the
# supervisor), so it is reached through a private module of the Task SDK. A future Airflow may
# move or rename it: importing the hooks must not fail then. The fallback does nothing locally;
# the amask_secret task still runs, adds the value to the local masker itself and tells the
# supervisor, so the value is masked from the moment the task runs (a loop turn later).
try:
    from airflow.sdk._shared.secrets_masker import _secrets_masker
except ImportError:  # pragma: no cover - depends on the Airflow version

    def _add_local_mask(secret: str) -> None:
        """No local masker to reach in this Airflow: the amask_secret task does the masking."""

else:

    def _add_local_mask(secret: str) -> None:
        """Teach the process's own masker ``secret`` at once, without blocking."""
        _secrets_masker().add_mask(secret)


def _mask_for_airflow(secret: str) -> None:
    """Register ``secret`` with Airflow's masker without ever blocking an event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        mask_secret(secret)
        return
    # In a trigger (or any coroutine) the sync variant may talk to the supervisor with a
    # blocking call; the async variant is the one made for the event loop (docs/airflow/hooks.md,
    # "Secret masking"). The process's own masker learns the value now, before anything can log
    # it (see _add_local_mask); the task tells the supervisor.
    _add_local_mask(secret)
    task = loop.create_task(amask_secret(secret))
    _pending_masks.add(task)
    task.add_done_callback(_pending_masks.discard)


#: Exceptions of one chain looked at, at most (a cycle or a very long chain stops there).
_MAX_CHAIN = 16


def _redact_chain(exc: BaseException) -> None:
    """Registered secrets masked in the ``args`` of ``exc`` and of its causes, in place: the
    console renderer prints the chain after this processor ran."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        masked = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        if masked != current.args:
            with contextlib.suppress(AttributeError, TypeError):  # a class refusing new args
                current.args = masked
        current = current.__cause__ or current.__context__


def _redact_any(value: Any) -> Any:
    """``value`` with registered secrets masked in every string it holds."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_any(item) for key, item in value.items()}
    if isinstance(value, list | tuple) and value:
        return type(value)(_redact_any(item) for item in value)
    if isinstance(value, BaseException):
        _redact_chain(value)
    return value


def _redact_event(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: registered secrets masked in every value of the event.

    Placed just before the renderer, so it sees the message with its arguments merged and, with
    JSON output, the traceback already turned into strings; with console output it masks the
    exception chain in place before the renderer prints it.
    """
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException):
        _redact_chain(exc_info)
    for key, value in event_dict.items():
        if key != "exc_info":
            event_dict[key] = _redact_any(value)
    return event_dict


def _cover_structlog() -> None:
    """Put :func:`_redact_event` in structlog's processor chain, before its renderer.

    The list is changed in place: with ``cache_logger_on_first_use`` (Airflow's setting outside
    tests) each logger already used holds that very list, and a new ``configure()`` would not
    reach it. A later ``configure()`` that replaces the list is caught at the next token.
    """
    try:
        import structlog
    except ImportError:  # pragma: no cover - Airflow depends on structlog
        return
    processors = structlog.get_config()["processors"]
    if _redact_event in processors:
        return
    if isinstance(processors, list):
        processors.insert(max(len(processors) - 1, 0), _redact_event)
    else:
        chain = list(processors)
        chain.insert(max(len(chain) - 1, 0), _redact_event)
        structlog.configure(processors=chain)


def _cover_loggers(_secret: str) -> None:
    """Before a run-time token can be sent anywhere, structlog's loggers mask it (the library
    itself puts its filter on the stdlib loggers that may print it, at the same moment)."""
    _cover_structlog()


# Credentials only: a run-time token would make Airflow recompile its whole pattern (0.1 s at
# 1,000 known secrets, 0.7 s at 5,000: benchmarks/masker.py) and stay there for good.
add_secret_hook(_mask_for_airflow, run_time=False)
add_secret_hook(_cover_loggers, run_time=True)
_cover_loggers("")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or while handling (``__cause__``/``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _find(exc: BaseException, kind: type[ExcT]) -> ExcT | None:
    """The first exception of type ``kind`` in the chain of ``exc``."""
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _explain_transport_failure(exc: HttpTransportError) -> str:
    """TLS, timeout, unreachable or other, decided by the types in the exception chain."""
    tls = _find(exc, ssl.SSLError)
    if tls is not None:  # before ConnectError: a failed handshake is a ConnectError too
        hint = ""
        if exc.legacy_tls_renegotiation:  # decided once by the library, from the SSL reason
            hint = (
                " (the server needs legacy TLS renegotiation, which OpenSSL 3 refuses: on an "
                "'ons' connection set the extra field legacy_tls_renegotiation to true)"
            )
        elif isinstance(tls, ssl.SSLCertVerificationError):
            hint = (
                " (the server's certificate is not trusted: install its CA; verify_ssl=false "
                "only for a trusted test host)"
            )
        return f"TLS error (certificate or handshake): {exc}{hint}"
    if _find(exc, httpx.ConnectTimeout) is not None:
        return f"Timed out connecting: {exc}"
    if _find(exc, httpx.TimeoutException) is not None:
        return f"Timed out: {exc}"
    if _find(exc, httpx.ConnectError) is not None:
        return f"Host unreachable (connection refused or no route): {exc}"
    return f"Network error: {exc}"


def explain_test_failure(exc: BaseException) -> str:
    """The cause of a failed connection test in plain words (``test_connection()``'s message).

    Decided by exception types, never by matching their text. Not to be confused with
    :func:`echo_connhandler._retry.describe_failure`, the short cause of the library's log lines.
    """
    if isinstance(exc, AuthenticationError):
        return f"Login refused: bad user or password ({exc})"
    if isinstance(exc, WafBlockedError):
        return f"Blocked by the CCEE web application firewall (Acesso bloqueado): {exc}"
    if isinstance(exc, ProfileSelectionError):
        return f"SINAPSE profile: {exc}"
    if isinstance(exc, HttpTransportError):
        return _explain_transport_failure(exc)
    if isinstance(exc, HttpStatusError) and exc.status_code in (401, 403):
        return f"Credentials rejected (HTTP {exc.status_code}): {exc}"
    if isinstance(exc, HttpResponseError):
        return f"Unexpected answer (HTTP {exc.status_code}): {exc}"
    if isinstance(exc, EchoHttpError | ValueError | TypeError):
        return f"Invalid connection settings: {exc}"
    return f"{type(exc).__name__}: {exc}"


class HandlerHook(BaseHook, Generic[HandlerT]):
    """Base of the provider's hooks: one cached handler built from the Connection."""

    conn_name_attr = "conn_id"
    default_conn_name = "echo_http_default"
    conn_type = "echo_http"
    hook_name = "Echo HTTP"

    #: The handler and properties classes this hook builds.
    handler_class: ClassVar[type[HttpHandler]] = HttpHandler
    properties_class: ClassVar[type[HttpConnProperties]] = HttpConnProperties
    #: Timeouts of ``test_connection()`` (seconds): quick, and no retries.
    test_timeouts: ClassVar[tuple[float, float]] = (5.0, 15.0)

    def __init__(self, conn_id: str | None = None, **handler_kwargs: Any) -> None:
        """``handler_kwargs`` override the connection's retry settings for this hook."""
        super().__init__()
        self.conn_id = conn_id or self.default_conn_name
        self._handler_overrides = handler_kwargs
        self._handler: HandlerT | None = None
        self._settings: ConnectionSettings | None = None

    # -- Connection -> settings -------------------------------------------------------------------
    def _settings_from(self, conn: Any, extra: dict[str, Any]) -> ConnectionSettings:
        return build_settings(
            self.conn_type,
            conn_id=self.conn_id,
            host=conn.host,
            schema=conn.schema,
            port=conn.port,
            login=conn.login,
            password=conn.password,
            extra=extra,
        )

    def _load_settings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = self.get_connection(self.conn_id)
            self._settings = self._settings_from(conn, conn.extra_dejson)
        return self._settings

    async def _aload_settings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = await self.aget_connection(self.conn_id)
            # Airflow >= 3.3.2: never block the loop (docs/airflow/hooks.md, "Getting the handler")
            extra = await conn.aextra_dejson()
            self._settings = self._settings_from(conn, extra)
        return self._settings

    @property
    def options(self) -> dict[str, Any]:
        """Hook-level options of the connection (e.g. ``concurrency``), read when asked for.

        Reads the Connection on first use (a blocking call): in a coroutine, use
        :meth:`aget_options`.
        """
        return dict(self._load_settings().hook_options)

    async def aget_options(self) -> dict[str, Any]:
        """:attr:`options` without blocking the event loop."""
        return dict((await self._aload_settings()).hook_options)

    def _make_handler(self, settings: ConnectionSettings, **overrides: Any) -> HandlerT:
        props = self.properties_class(**settings.properties)
        kwargs = {**settings.handler_kwargs, **self._handler_overrides, **overrides}
        return self.handler_class(props, **kwargs)  # type: ignore[return-value]

    # -- handlers -------------------------------------------------------------------------------
    def get_conn(self) -> HandlerT:
        """The handler, with its sync client connected (login / warm-up done)."""
        if self._handler is None:
            self._handler = self._make_handler(self._load_settings(), skip_connect=True)
        if not self._handler.is_connected:
            self._handler.reconnect()
        return self._handler

    async def aget_conn(self) -> HandlerT:
        """The handler, with its async client connected; no sync connection is opened."""
        if self._handler is None:
            self._handler = self._make_handler(await self._aload_settings(), skip_connect=True)
        if self._handler.async_connection is None:
            await self._handler.async_reconnect()
        return self._handler

    def close(self) -> None:
        """Close the handler's sync client (call :meth:`aclose` on the async path)."""
        if self._handler is not None:
            self._handler.close()

    async def aclose(self) -> None:
        """Close the handler's clients."""
        if self._handler is not None:
            await self._handler.async_close()
            self._handler.close()

    # -- test connection -------------------------------------------------------------------------
    def _probe(self, handler: HandlerT) -> str:
        """One quick read-only request after the connect step; returns what it saw."""
        endpoint = str(self.options.get("health_endpoint") or "")
        response = handler.get(endpoint, response_ok=range(200, 400))
        return f"GET {endpoint or '/'} answered HTTP {response.status_code}"

    def test_connection(self) -> tuple[bool, str]:
        """Log in (where the service has a login) and make one quick read-only request.

        Short timeouts, no retries; on failure the message says the cause in plain words.
        """
        handler: HandlerT | None = None
        try:
            settings = self._load_settings()
            connect, read = self.test_timeouts
            props = dict(settings.properties)
            props["conn_timeout"] = min(float(props.get("conn_timeout", connect)), connect)
            props["request_timeout"] = min(float(props.get("request_timeout", read)), read)
            # A slow (trickling) server must not hold the Test button for a minute either.
            quick_deadline = connect + 2 * read
            given = props.get("attempt_deadline")
            props["attempt_deadline"] = min(
                float(given) if given is not None else quick_deadline, quick_deadline
            )
            quick = ConnectionSettings(props, settings.handler_kwargs, settings.hook_options)
            handler = self._make_handler(quick, max_retries=0, max_conn_retries=0)
            seen = self._probe(handler)
        except Exception as exc:
            return False, explain_test_failure(exc)
        finally:
            if handler is not None:
                handler.close()
        return True, f"Connection to {settings.properties['host']} works: {seen}"
