"""``HttpHandler``: one object, a sync and an async API over httpx, one retry policy.

Every decision that does no I/O (URL, payload merge, idempotency, status check) lives in shared
helpers; the sync and ``async_`` methods are the thin I/O spine around them (the layout of
httpx's ``BaseClient``/``Client``/``AsyncClient``).

Clients
    The sync ``httpx.Client`` is opened by the constructor (unless ``skip_connect=True``) or on
    first sync use; the ``httpx.AsyncClient`` on first async use. Both share the handler's auth
    flow, default headers, timeouts and one SSL context (built once per process and per TLS
    setting: building one costs ~26 ms, see reference/anchors.md). Many coroutines may call
    ``async_*`` at once: the async client is created once, under a lock.

Retries
    Every request runs under :class:`echo_connhandler.RetryPolicy`. Between attempts the handler
    swaps in a fresh client (new connection pool, same cookies, same SSL context); the client
    that failed is closed as soon as no other request is still using it, so concurrent callers
    are never cut off. Authentication state lives in the auth flow and survives the swap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import certifi
import httpx

from echo_connhandler._auth import BearerAuth, SessionAuth
from echo_connhandler._exceptions import (
    HttpStatusError,
    HttpTransportError,
    UnexpectedContentError,
)
from echo_connhandler._properties import HttpConnProperties, is_sensitive_name
from echo_connhandler._retry import (
    DEFAULT_RETRY_AFTER_CAP,
    IDEMPOTENT_METHODS,
    RetryPolicy,
    tls_error_in,
)
from echo_connhandler._secrets import redact_url

__all__ = ["HttpHandler", "ResponseOk", "expect_json", "is_html", "ssl_context"]

logger = logging.getLogger("echo_connhandler")

ResponseOk = int | Collection[int] | None
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# For a payload in json=/data=: the body arguments httpx would prefer to it, or drop for it.
_BODY_RIVALS = {"json": ("data", "content", "files"), "data": ("json", "content")}

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)


@functools.cache
def ssl_context(verify: bool, legacy_renegotiation: bool = False) -> ssl.SSLContext:
    """The SSL context for a TLS setting, built once per process and shared by every client."""
    context = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if legacy_renegotiation:
        # integra.ons.org.br needs it under OpenSSL 3 (UNSAFE_LEGACY_RENEGOTIATION_DISABLED),
        # services.md "ONS / TLS". Opt-in only: it weakens TLS.
        context.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
    return context


def is_html(response: httpx.Response) -> bool:
    """Whether the response is an HTML page (a WAF block, a login, maintenance or preview page)."""
    return "html" in response.headers.get("content-type", "").lower()


def expect_json(response: httpx.Response) -> Any:
    """``response.json()``, or :class:`UnexpectedContentError` for HTML and non-JSON bodies.

    All three services can answer an HTML page (WAF block, login, maintenance, preview) where
    JSON was expected (services.md, "Cross-cutting"): never call ``.json()`` blindly.
    """
    content_type = response.headers.get("content-type", "").lower()
    if is_html(response):
        raise UnexpectedContentError.from_response(
            response, f"expected JSON, got an HTML page ({content_type})"
        )
    try:
        return response.json()
    except ValueError as exc:
        raise UnexpectedContentError.from_response(
            response, f"expected JSON, got undecodable content ({content_type or 'no type'})"
        ) from exc


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


#: Credential headers beyond the generic names (``is_sensitive_name``): Bazefield's session id.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-ss-id"})


def _is_credential_header(name: str) -> bool:
    lowered = name.lower()
    if lowered == "cookie":  # httpx rebuilds it per origin from the domain-scoped jar
        return False
    return lowered in _CREDENTIAL_HEADERS or is_sensitive_name(lowered)


def _raise_error(outcome: httpx.Response | BaseException) -> httpx.Response:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _accepted_statuses(response_ok: ResponseOk) -> frozenset[int] | None:
    if response_ok is None:
        return None
    if isinstance(response_ok, int) and not isinstance(response_ok, bool):
        return frozenset((response_ok,))
    if isinstance(response_ok, Collection) and all(
        isinstance(s, int) and not isinstance(s, bool) for s in response_ok
    ):
        return frozenset(response_ok)
    raise TypeError(
        f"response_ok must be an int, a collection of ints or None, got {response_ok!r}"
    )


@dataclass(slots=True)
class _Call:
    """One request, prepared without I/O, replayed as is by every attempt."""

    method: str
    url: str
    kwargs: dict[str, Any]
    accepted: frozenset[int] | None
    idempotent: bool
    #: False for bodies that cannot be sent twice (``files=``, a generator as ``content=``).
    replayable: bool = True

    @property
    def label(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """Method and redacted URL, for log lines and errors (built only when needed)."""
        return f"{self.method} {redact_url(self.url)}"


class _Slot(Generic[ClientT]):
    """A client and the requests in flight on it, so that a retired client closes when idle."""

    __slots__ = ("client", "in_flight", "loop", "retired")
    client: ClientT
    loop: asyncio.AbstractEventLoop | None
    in_flight: int
    retired: bool

    def __init__(self, client: ClientT, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.client = client
        self.loop = loop
        self.in_flight = 0
        self.retired = False


class HttpHandler:
    """HTTP handler for any REST API: sync and async verbs, retries, typed errors.

    Args:
        props: where and how to connect (an :class:`HttpConnProperties`).
        skip_connect: open nothing and send nothing in the constructor.
        max_retries: attempts after the first for each request (``0``: exactly one request).
        max_conn_retries: attempts after the first to open the connection (login, warm-up).
        retry_wait_time: longest backoff wait, seconds.
        exponential_min_retry_wait_time: shortest backoff wait, seconds.
        exponential_multiplier: backoff multiplier (``multiplier * 2**(attempt-1)``).
        retry_after_cap: longest ``Retry-After`` honoured, seconds (default 300).
    """

    #: The properties class this handler accepts.
    properties_type: ClassVar[type[HttpConnProperties]] = HttpConnProperties
    #: Headers sent by default (the connection's ``headers`` are applied over them).
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        props: HttpConnProperties,
        *,
        skip_connect: bool = False,
        max_retries: int = 8,
        max_conn_retries: int = 3,
        retry_wait_time: float = 30,
        exponential_min_retry_wait_time: float = 0.1,
        exponential_multiplier: float = 1,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
    ) -> None:
        if not isinstance(props, self.properties_type):
            raise TypeError(
                f"{type(self).__name__} needs {self.properties_type.__name__}, "
                f"got {type(props).__name__}"
            )
        if isinstance(max_conn_retries, bool) or not isinstance(max_conn_retries, int):
            raise ValueError(f"max_conn_retries must be an integer, got {max_conn_retries!r}")
        if max_conn_retries < 0:
            raise ValueError(f"max_conn_retries must be >= 0, got {max_conn_retries!r}")
        self.props = props
        self.retry_policy = RetryPolicy(
            max_retries=max_retries,
            max_wait=retry_wait_time,
            min_wait=exponential_min_retry_wait_time,
            multiplier=exponential_multiplier,
            retry_after_cap=retry_after_cap,
        )
        self.max_conn_retries = max_conn_retries
        self._auth = self._build_auth()
        self._trusted = self._trusted_origins()
        self._sync_slot: _Slot[httpx.Client] | None = None
        self._async_slot: _Slot[httpx.AsyncClient] | None = None
        self._sync_lock = threading.RLock()
        self._async_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        if not skip_connect:
            self.reconnect()

    # -- what subclasses customise (no I/O) ---------------------------------------------------
    def _build_auth(self) -> httpx.Auth | None:
        """The auth flow shared by both clients: API key as Bearer, or HTTP Basic."""
        if self.props.api_key:
            return BearerAuth(self.props.api_key)
        if self.props.user is not None and self.props.password is not None:
            return httpx.BasicAuth(self.props.user, self.props.password)
        return None

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl_context(self.props.verify_ssl)

    def _is_idempotent(self, method: str, url: str) -> bool:
        """Whether a request may be replayed after it may have reached the server."""
        return method in IDEMPOTENT_METHODS

    def _check_response(self, response: httpx.Response) -> None:
        """Raise for errors a service reports in a response body (none here).

        Called before the status check, for every checked response (not with response_ok=None).
        """

    def _trusted_origins(self) -> frozenset[tuple[str, str, int | None]]:
        """Origins that may receive the connection's credential headers: the host's own."""
        return frozenset({_origin(httpx.URL(self.props.host))})

    # -- shared, no I/O ------------------------------------------------------------------------
    def _withhold_foreign_credentials(self, request: httpx.Request) -> None:
        """Strip credential headers from a request to another origin (a redirect, a full URL).

        httpx drops only ``Authorization`` (and rebuilds ``Cookie`` from the jar, which is
        domain-scoped) on a cross-origin redirect: a Bazefield ``x-ss-id`` session id or an
        ``X-Api-Key`` from ``headers`` would follow the redirect to any host. Runs as a request
        event hook, so it sees every request the client sends, redirects included.
        """
        if _origin(request.url) in self._trusted:
            return
        withheld = [name for name in request.headers if _is_credential_header(name)]
        for name in withheld:
            del request.headers[name]
        if withheld:
            logger.info(
                "Not sending %s to %s: not the connection's host",
                ", ".join(withheld),
                redact_url(str(request.url.copy_with(query=None))),
            )

    def _client_settings(self) -> dict[str, Any]:
        headers = dict(self.default_headers)
        headers.update(self.props.headers or {})
        return {
            "base_url": self.props.host + "/",
            "headers": headers,
            "timeout": httpx.Timeout(self.props.request_timeout, connect=self.props.conn_timeout),
            "verify": self._ssl_context(),
            "auth": self._auth,
            "follow_redirects": True,
        }

    def _url(self, endpoint: str) -> str:
        if endpoint[:8].lower().startswith(("http://", "https://")):
            return endpoint
        return f"{self.props.host}/{endpoint.lstrip('/')}"

    def _merge_payload(self, method: str, kwargs: dict[str, Any]) -> None:
        payload = self.props.payload_kwargs
        if not payload:
            return
        key = self.props.payload_kwargs_key
        given = kwargs.get(key)
        # json/data go into bodies; a GET/DELETE gets them only if the call itself passes one.
        if key == "params" or (given is None and method not in _BODY_METHODS):
            return  # params: see _merge_params
        # httpx encodes one body: content= beats files=/data=, which beat json=. A payload (or
        # the caller's own body) that httpx would drop is an error, never a silent loss.
        clash = [k for k in _BODY_RIVALS[key] if kwargs.get(k) is not None]
        if clash:
            raise ValueError(
                f"payload_kwargs go into the {key}= body, but this call also sends "
                f"{', '.join(k + '=' for k in clash)}: httpx would drop one of them. Send the "
                f"body as {key}=, or set payload_kwargs_key to another place"
            )
        if given is not None and not isinstance(given, Mapping):
            raise ValueError(
                f"cannot merge payload_kwargs into {key}= of type {type(given).__name__}: "
                f"pass {key}= as a mapping, or set payload_kwargs_key to another place"
            )
        kwargs[key] = {**payload, **(given or {})}

    def _merge_params(self, url: str, kwargs: dict[str, Any]) -> None:
        """Query = payload_kwargs (if they go to params) < the endpoint's own query < params=.

        httpx's ``params=`` would *replace* a query written in the endpoint: merge instead.
        """
        payload = self.props.payload_kwargs if self.props.payload_kwargs_key == "params" else None
        given = kwargs.get("params")
        in_url = "?" in url
        if not payload and (given is None or not in_url):
            return
        merged = httpx.QueryParams(payload or {})
        if in_url:
            merged = merged.merge(httpx.URL(url).params)
        kwargs["params"] = merged.merge(given) if given is not None else merged

    def _prepare(
        self,
        method: str,
        endpoint: str,
        response_ok: ResponseOk,
        idempotent: bool | None,
        kwargs: dict[str, Any],
    ) -> _Call:
        method = method.upper()
        url = self._url(endpoint)
        self._merge_payload(method, kwargs)
        self._merge_params(url, kwargs)
        if idempotent is None:
            idempotent = self._is_idempotent(method, url)
        content = kwargs.get("content")
        replayable = kwargs.get("files") is None and isinstance(content, bytes | str | None)
        return _Call(method, url, kwargs, _accepted_statuses(response_ok), idempotent, replayable)

    def _check(self, response: httpx.Response, call: _Call) -> httpx.Response:
        if call.accepted is None:  # response_ok=None: no check at all, as the guide says
            return response
        # Service errors first: CKAN reports them with 404/409 and a body worth more than a status.
        self._check_response(response)
        if response.status_code not in call.accepted:
            expected = ", ".join(str(s) for s in sorted(call.accepted))
            raise HttpStatusError.from_response(response, f"expected status {expected}")
        return response

    @staticmethod
    def _transport_error(call: _Call, exc: httpx.RequestError) -> HttpTransportError:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        tls = tls_error_in(exc)
        if tls is not None and "UNSAFE_LEGACY_RENEGOTIATION_DISABLED" in str(tls):
            # integra.ons.org.br under OpenSSL 3 (services.md, ONS "TLS").
            cause += "; the server needs legacy TLS renegotiation: set legacy_tls_renegotiation"
        try:
            request: httpx.Request | None = exc.request
        except RuntimeError:
            request = None
        return HttpTransportError(f"{call.label} failed: {cause}", request=request)

    # -- sync client lifecycle -------------------------------------------------------------------
    def _new_sync_client(self, cookies: httpx.Cookies | None = None) -> httpx.Client:
        hooks = {"request": [self._withhold_foreign_credentials]}
        return httpx.Client(cookies=cookies, event_hooks=hooks, **self._client_settings())

    @property
    def _connect_call(self) -> _Call:
        """What log lines and errors call the connect step (login, warm-up)."""
        return _Call("CONNECT", self.props.host, {}, None, True)

    def _connect(self) -> None:
        """Open the sync client and run the service's connect step (login, warm-up)."""
        slot = _Slot(self._new_sync_client())
        old, self._sync_slot = self._sync_slot, slot
        if old is not None:
            self._retire_sync(old)
        if not isinstance(self._auth, SessionAuth):
            return
        auth = self._auth
        try:
            for attempt in self.retry_policy.sync_attempts(
                idempotent=True, label=self._connect_call.label, retries=self.max_conn_retries
            ):
                with attempt:
                    try:
                        auth.sync_connect(slot.client)
                    except httpx.RequestError as exc:
                        raise self._transport_error(self._connect_call, exc) from exc
        except BaseException:
            # A failed login or warm-up leaves no half-open client behind.
            self._sync_slot = None
            slot.client.close()
            raise

    def reconnect(self) -> None:
        """Close the sync client, if any, and open a new one (with the connect step)."""
        with self._sync_lock:
            self._connect()

    def close(self) -> None:
        """Close the sync client. The async one, if any, needs :meth:`async_close`."""
        with self._sync_lock:
            slot, self._sync_slot = self._sync_slot, None
            if slot is not None:
                self._retire_sync(slot)

    @staticmethod
    def _retire_sync(slot: _Slot[httpx.Client]) -> None:
        slot.retired = True
        if slot.in_flight == 0:
            slot.client.close()

    @property
    def is_connected(self) -> bool:
        """Whether the sync client is open (``connection`` would not open one)."""
        return self._sync_slot is not None

    @property
    def connection(self) -> httpx.Client:
        """The live ``httpx.Client`` (opened now if it is not open yet)."""
        return self._sync_client_slot().client

    def _sync_client_slot(self, failed: _Slot[httpx.Client] | None = None) -> _Slot[httpx.Client]:
        slot = self._sync_slot
        if slot is not None and slot is not failed:
            return slot
        with self._sync_lock:
            slot = self._sync_slot
            if slot is None:
                self._connect()
            elif slot is failed:
                # Fresh pool for the next attempt; cookies kept, auth state kept in the flow.
                self._sync_slot = _Slot(self._new_sync_client(slot.client.cookies))
                self._retire_sync(slot)
            assert self._sync_slot is not None
            return self._sync_slot

    def _send_sync(
        self, call: _Call, used: _Slot[httpx.Client] | None
    ) -> tuple[_Slot[httpx.Client], httpx.Response | BaseException]:
        """One attempt. Returns the client slot it used (so that a retry replaces exactly that
        client, not one another caller has just swapped in) and the response or the error."""
        with self._sync_lock:  # take and count at once: a swap cannot close it in between
            slot = self._sync_client_slot(used)
            slot.in_flight += 1
        try:
            return slot, slot.client.request(call.method, call.url, **call.kwargs)
        except httpx.RequestError as exc:
            error = self._transport_error(call, exc)
            error.__cause__ = exc
            return slot, error
        finally:
            with self._sync_lock:
                slot.in_flight -= 1
                close_now = slot.retired and slot.in_flight == 0
            if close_now:
                slot.client.close()

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        response_ok: ResponseOk = 200,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request with retries; return the response once its status is accepted.

        ``kwargs`` go to ``httpx.Client.request`` (``json``, ``data``, ``params``, ``headers``,
        ``content``, ``files``, ``timeout``, ...). ``idempotent`` overrides the method's default
        for retry decisions (POST/PATCH are not replayed after they may have reached the server).
        """
        call = self._prepare(method, endpoint, response_ok, idempotent, kwargs)
        used: _Slot[httpx.Client] | None = None
        for attempt in self.retry_policy.sync_attempts(
            idempotent=call.idempotent,
            label=call.describe,
            retries=None if call.replayable else 0,
        ):
            with attempt:
                used, outcome = self._send_sync(call, used)
                return self._check(_raise_error(outcome), call)
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    def get(self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any) -> httpx.Response:
        """``GET endpoint``; see :meth:`request`."""
        return self.request("GET", endpoint, response_ok=response_ok, **kwargs)

    def post(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """``POST endpoint``; see :meth:`request` (not replayed after it may have been acted on)."""
        return self.request("POST", endpoint, response_ok=response_ok, **kwargs)

    def put(self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any) -> httpx.Response:
        """``PUT endpoint``; see :meth:`request`."""
        return self.request("PUT", endpoint, response_ok=response_ok, **kwargs)

    def patch(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """``PATCH endpoint``; see :meth:`request` (replayed only where not acted on)."""
        return self.request("PATCH", endpoint, response_ok=response_ok, **kwargs)

    def delete(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """``DELETE endpoint``; see :meth:`request`."""
        return self.request("DELETE", endpoint, response_ok=response_ok, **kwargs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- async client lifecycle ------------------------------------------------------------------
    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._async_locks.get(loop)
        if lock is None:
            # Forget locks of closed loops (a handler reused across asyncio.run() calls).
            self._async_locks = {
                lp: lk for lp, lk in self._async_locks.items() if not lp.is_closed()
            }
            lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    def _new_async_client(self, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
        async def withhold(request: httpx.Request) -> None:
            self._withhold_foreign_credentials(request)

        hooks = {"request": [withhold]}
        return httpx.AsyncClient(cookies=cookies, event_hooks=hooks, **self._client_settings())

    async def _async_connect(self) -> None:
        slot = _Slot(self._new_async_client(), asyncio.get_running_loop())
        old, self._async_slot = self._async_slot, slot
        if old is not None:
            await self._retire_async(old)
        if not isinstance(self._auth, SessionAuth):
            return
        auth = self._auth
        try:
            async for attempt in self.retry_policy.async_attempts(
                idempotent=True, label=self._connect_call.label, retries=self.max_conn_retries
            ):
                with attempt:
                    try:
                        await auth.async_connect(slot.client)
                    except httpx.RequestError as exc:
                        raise self._transport_error(self._connect_call, exc) from exc
        except BaseException:
            self._async_slot = None
            await slot.client.aclose()
            raise

    async def async_reconnect(self) -> None:
        """Close the async client, if any, and open a new one (with the connect step)."""
        async with self._async_lock():
            await self._async_connect()

    async def async_close(self) -> None:
        """Close the async client (the sync one, if any, stays open)."""
        slot, self._async_slot = self._async_slot, None
        if slot is not None:
            await self._retire_async(slot)

    @staticmethod
    async def _retire_async(slot: _Slot[httpx.AsyncClient]) -> None:
        slot.retired = True
        if slot.in_flight == 0 and slot.loop is not None and not slot.loop.is_closed():
            await slot.client.aclose()

    @property
    def async_connection(self) -> httpx.AsyncClient | None:
        """The live ``httpx.AsyncClient``; ``None`` before the first async use."""
        return self._async_slot.client if self._async_slot is not None else None

    async def _async_client_slot(
        self, failed: _Slot[httpx.AsyncClient] | None = None
    ) -> _Slot[httpx.AsyncClient]:
        loop = asyncio.get_running_loop()
        slot = self._async_slot
        if slot is not None and slot is not failed and slot.loop is loop:
            return slot
        async with self._async_lock():
            slot = self._async_slot
            if slot is None or slot.loop is not loop:
                # First async use, or a new event loop: a client cannot outlive its loop.
                await self._async_connect()
            elif slot is failed:
                self._async_slot = _Slot(self._new_async_client(slot.client.cookies), loop)
                await self._retire_async(slot)
            assert self._async_slot is not None
            return self._async_slot

    async def _send_async(
        self, call: _Call, used: _Slot[httpx.AsyncClient] | None
    ) -> tuple[_Slot[httpx.AsyncClient], httpx.Response | BaseException]:
        """The async :meth:`_send_sync`."""
        slot = await self._async_client_slot(used)
        slot.in_flight += 1
        try:
            return slot, await slot.client.request(call.method, call.url, **call.kwargs)
        except httpx.RequestError as exc:
            error = self._transport_error(call, exc)
            error.__cause__ = exc
            return slot, error
        finally:
            slot.in_flight -= 1
            if slot.retired and slot.in_flight == 0:
                await slot.client.aclose()

    async def async_request(
        self,
        method: str,
        endpoint: str,
        *,
        response_ok: ResponseOk = 200,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """The async :meth:`request`."""
        call = self._prepare(method, endpoint, response_ok, idempotent, kwargs)
        used: _Slot[httpx.AsyncClient] | None = None
        async for attempt in self.retry_policy.async_attempts(
            idempotent=call.idempotent,
            label=call.describe,
            retries=None if call.replayable else 0,
        ):
            with attempt:
                used, outcome = await self._send_async(call, used)
                return self._check(_raise_error(outcome), call)
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    async def async_get(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """The async :meth:`get`."""
        return await self.async_request("GET", endpoint, response_ok=response_ok, **kwargs)

    async def async_post(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """The async :meth:`post`."""
        return await self.async_request("POST", endpoint, response_ok=response_ok, **kwargs)

    async def async_put(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """The async :meth:`put`."""
        return await self.async_request("PUT", endpoint, response_ok=response_ok, **kwargs)

    async def async_patch(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """The async :meth:`patch`."""
        return await self.async_request("PATCH", endpoint, response_ok=response_ok, **kwargs)

    async def async_delete(
        self, endpoint: str, *, response_ok: ResponseOk = 200, **kwargs: Any
    ) -> httpx.Response:
        """The async :meth:`delete`."""
        return await self.async_request("DELETE", endpoint, response_ok=response_ok, **kwargs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.async_close()
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.props!r})"
