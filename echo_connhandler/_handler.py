"""``HttpHandler``: one object, a sync and an async API over httpx, one retry policy.

Every decision that does no I/O (URL, payload merge, idempotency, status check) lives in shared
helpers; the sync and ``async_`` methods are the thin I/O spine around them (the layout of
httpx's ``BaseClient``/``Client``/``AsyncClient``).

Clients
    The sync ``httpx.Client`` is opened by the constructor (unless ``skip_connect=True``) or on
    first sync use; the ``httpx.AsyncClient`` on first async use, one per event loop. Both share
    the handler's auth flow, default headers, timeouts and one SSL context (built once per
    process and per TLS setting: building one costs ~26 ms, docs/handlers.md, "The SSL
    context"). One :class:`_ClientHolder` per path keeps the live client and the retired ones
    still finishing requests; many threads or coroutines may use a handler at once.

Requests in flight
    At most :data:`POOL_SIZE` requests per client are inside httpx at once (the pool's size): a
    request takes a permit *before* its auth flow adds the credential, so when a session expires
    only the requests really on the wire carry the stale one, and a login never queues behind
    hundreds of requests waiting for a pooled connection (docs/retries.md, "Logins under load").

Retries
    Every request runs under :class:`echo_connhandler.RetryPolicy`. Between attempts the handler
    swaps in a fresh client (new connection pool, same cookies, same SSL context); the client
    that failed is closed as soon as no other request is still using it, so concurrent callers
    are never cut off. Authentication state lives in the auth flow and survives the swap. The
    connect step (login, warm-up) is a call like any other, under the same policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from types import TracebackType
from typing import Any, BinaryIO, ClassVar, Generic, Self, TypeVar, cast

import certifi
import httpx

from echo_connhandler._auth import ALLOW_CROSS_ORIGIN_BODY, BearerAuth, SessionAuth
from echo_connhandler._exceptions import (
    HttpStatusError,
    HttpTransportError,
    ResponseTooLargeError,
    UnexpectedContentError,
    UnsafeRedirectError,
)
from echo_connhandler._pace import pace
from echo_connhandler._pool import PooledHTTPTransport, environment_proxies
from echo_connhandler._properties import HttpConnProperties, is_sensitive_name
from echo_connhandler._retry import (
    DEFAULT_RETRY_AFTER_CAP,
    DEFAULT_TIME_BUDGET,
    IDEMPOTENT_METHODS,
    LOGIN_STEP,
    RetryPolicy,
    check_retry_number,
    needs_legacy_renegotiation,
)
from echo_connhandler._secrets import redact_url, register_secret

__all__ = [
    "POOL_SIZE",
    "AttemptDeadlineExceeded",
    "HttpHandler",
    "ResponseOk",
    "describe_statuses",
    "expect_json",
    "is_html",
    "ssl_context",
]

logger = logging.getLogger("echo_connhandler")

ResponseOk = int | Collection[int] | None
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# For a payload in json=/data=: the body arguments httpx would prefer to it, or drop for it.
_BODY_RIVALS = {"json": ("data", "content", "files"), "data": ("json", "content")}

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)
#: Connections per client, and requests per client inside httpx at once.
POOL_SIZE = 100
#: Parsed URLs a handler keeps (see ``HttpHandler._parsed_url``).
_URL_CACHE_SIZE = 256


@functools.cache
def ssl_context(verify: bool, legacy_renegotiation: bool = False) -> ssl.SSLContext:
    """The SSL context for a TLS setting, built once per process and shared by every client."""
    context = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if legacy_renegotiation:
        # integra.ons.org.br needs it under OpenSSL 3 (UNSAFE_LEGACY_RENEGOTIATION_DISABLED),
        # docs/services/ons.md, "TLS". Opt-in only: it weakens TLS.
        context.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
    return context


def is_html(response: httpx.Response) -> bool:
    """Whether the response is an HTML page (a WAF block, a login, maintenance or preview page)."""
    return "html" in response.headers.get("content-type", "").lower()


def expect_json(response: httpx.Response) -> Any:
    """``response.json()``, or :class:`UnexpectedContentError` for HTML and non-JSON bodies.

    All three services can answer an HTML page (WAF block, login, maintenance, preview) where
    JSON was expected (docs/errors.md, "expect_json"): never call ``.json()`` blindly.
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


class AttemptDeadlineExceeded(httpx.TimeoutException):
    """One attempt of a request lasted longer than the connection's ``attempt_deadline``.

    An ``httpx.TimeoutException``: the retry policy treats it as the read timeouts it stands in
    for (replayed when the request is idempotent, docs/retries.md, "What is retried"). The
    handler raises it as the cause of an :class:`HttpTransportError`.
    """


def _deadline_message(seconds: float) -> str:
    return (
        f"no complete answer within attempt_deadline={seconds:g} s (the limit on one attempt, "
        "however steadily the server trickles its answer)"
    )


@dataclass(frozen=True, slots=True)
class _Deadline:
    """The wall-clock end of one sync attempt, checked as each piece of the body arrives."""

    seconds: float
    ends: float

    @classmethod
    def start(cls, seconds: float) -> _Deadline:
        return cls(seconds, time.monotonic() + seconds)

    def check(self, request: httpx.Request) -> None:
        if time.monotonic() > self.ends:
            raise AttemptDeadlineExceeded(_deadline_message(self.seconds), request=request)

    def chunks(self, response: httpx.Response) -> Iterator[bytes]:
        """``response.iter_bytes()``, ended by the deadline (httpx's read timeout restarts
        with every byte: a server sending one byte a second never trips it)."""
        self.check(response.request)
        for chunk in response.iter_bytes():
            self.check(response.request)
            yield chunk


_CookieTypes = httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]


class _Cookies(httpx.Cookies):
    """httpx's cookies, but a response without ``Set-Cookie`` skips the cookie jar.

    httpx hands every response to the standard library's ``CookieJar``, through a
    ``urllib.request.Request`` and an ``email.message.Message`` built for it: about 25 µs a
    response, for nothing when there is no cookie to keep (docs/performance.md,
    "Async throughput"). The jar would find none either: the result is the same.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class _HandlerCookies:
    """The cookies of :class:`_Client` and :class:`_AsyncClient`: a :class:`_Cookies` jar
    (httpx's clients read and set them as ``self.cookies``)."""

    def __init__(self, *, cookies: _CookieTypes | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cookies = cookies

    @property
    def cookies(self) -> httpx.Cookies:
        return self._handler_cookies

    @cookies.setter
    def cookies(self, cookies: _CookieTypes | None) -> None:
        self._handler_cookies: httpx.Cookies = _Cookies(cookies)


class _Client(_HandlerCookies, httpx.Client):
    """``httpx.Client`` with :class:`_Cookies`."""


class _AsyncClient(_HandlerCookies, httpx.AsyncClient):
    """``httpx.AsyncClient`` with :class:`_Cookies`."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


#: Credential headers beyond the generic names (``is_sensitive_name``): Bazefield's session id.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-ss-id"})


def _is_credential_header(name: str) -> bool:
    lowered = name.lower()
    if lowered == "cookie":  # httpx rebuilds it per origin from the domain-scoped jar
        return False
    return lowered in _CREDENTIAL_HEADERS or is_sensitive_name(lowered)


def _result_or_raise(outcome: httpx.Response | BaseException) -> httpx.Response:
    """The response of an attempt, or its error raised (inside tenacity's ``with attempt``)."""
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


_MAX_STATUS_PARTS = 6


def describe_statuses(statuses: Collection[int]) -> str:
    """``2xx or 3xx``, ``200-204, 301`` or ``200``: short, whatever the collection's size."""
    remaining = set(statuses)
    parts: list[str] = []
    for hundred in range(100, 600, 100):
        block = set(range(hundred, hundred + 100))
        if block <= remaining:
            parts.append(f"{hundred // 100}xx")
            remaining -= block
    runs: list[list[int]] = []
    for status in sorted(remaining):
        if runs and status == runs[-1][-1] + 1:
            runs[-1].append(status)
        else:
            runs.append([status])
    parts += [f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs]
    if len(parts) > _MAX_STATUS_PARTS:  # a scattered collection: the start, and how many
        shown = ", ".join(parts[:_MAX_STATUS_PARTS])
        return f"{shown}, ... ({len(set(statuses))} statuses)"
    return " or ".join(parts) if len(parts) <= 2 else ", ".join(parts)


def _streams_to_sink(response: httpx.Response, call: _Call) -> bool:
    """Whether a download's answer is the file (else it is an error to read and raise)."""
    accepted = call.accepted is None or response.status_code in call.accepted
    return accepted and not (call.accepted is not None and is_html(response))


def _carries_body(request: httpx.Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )


def _redirect_keeps_body(request: httpx.Request, response: httpx.Response) -> bool:
    """Whether httpx re-sends the body on this redirect: 307/308 keep the method and the body;
    301 keeps them except for POST; 302 and 303 turn the request into a GET without a body."""
    status = response.status_code
    kept = status in (307, 308) or (status == 301 and request.method != "POST")
    return kept and _carries_body(request)


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
    #: ``Client.send`` options (``auth``, ``follow_redirects``), apart from the request's own.
    send_options: dict[str, Any] = field(default_factory=dict)
    #: Where a download streams its body (rewound by every attempt); ``None``: read in memory.
    sink: BinaryIO | None = None

    @property
    def is_connect_step(self) -> bool:
        return self.method == _CONNECT

    def describe(self) -> str:
        """Method and redacted URL, for log lines and errors (built only when needed)."""
        return f"{self.method} {redact_url(self.url)}"


#: The method name log lines and errors give the connect step (login, warm-up).
_CONNECT = "CONNECT"
_SEND_OPTIONS = ("auth", "follow_redirects")


@dataclass(eq=False, slots=True)
class _Slot(Generic[ClientT]):
    """A client, the requests in flight on it, and the limit on how many it sends at once."""

    client: ClientT
    #: The event loop an async client belongs to (``None`` for the sync client).
    loop: asyncio.AbstractEventLoop | None
    #: ``POOL_SIZE`` permits: a request takes one before its auth flow adds a credential.
    limiter: threading.BoundedSemaphore | asyncio.Semaphore
    in_flight: int = 0
    retired: bool = False


class _ClientHolder(Generic[ClientT]):
    """The live client of one path (sync or async) and the retired ones still in use.

    Bookkeeping only, under one mutex that is never held across I/O, so threads and coroutines
    share it alike; what to close is handed back to the caller, who closes it on its path
    (``close()`` or ``await aclose()``). A retired client closes when its last request ends, so
    a retry's swap never cuts off a concurrent caller.
    """

    def __init__(
        self,
        open_client: Callable[[httpx.Cookies | None], ClientT],
        new_limiter: Callable[[], threading.BoundedSemaphore | asyncio.Semaphore],
    ) -> None:
        self._open: Callable[[httpx.Cookies | None], ClientT] = open_client
        self._new_limiter = new_limiter
        self._mutex = threading.Lock()
        self.current: _Slot[ClientT] | None = None

    def _retire(self, slot: _Slot[ClientT]) -> _Slot[ClientT] | None:
        slot.retired = True
        return slot if slot.in_flight == 0 else None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> tuple[_Slot[ClientT], Any]:
        """A new client in place of the current one. Returns it and a client to close now."""
        slot = _Slot(self._open(None), loop, self._new_limiter())
        with self._mutex:
            old, self.current = self.current, slot
            idle = self._retire(old) if old is not None else None
        return slot, idle

    def checkout(
        self, failed: _Slot[ClientT] | None, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[_Slot[ClientT], _Slot[ClientT] | None]:
        """The slot for the next attempt, counted in flight, and a retired slot to close now.

        A new client when there is none, when the current one belongs to another event loop
        (a client cannot outlive its loop), or when it is the one that just failed (a fresh
        pool for the retry; the cookies and the auth flow's state are kept).
        """
        with self._mutex:
            slot, idle = self.current, None
            if slot is None or slot.loop is not loop or slot is failed:
                cookies = slot.client.cookies if slot is not None and slot is failed else None
                fresh = _Slot(self._open(cookies), loop, self._new_limiter())
                if slot is not None:
                    idle = self._retire(slot)
                self.current = slot = fresh
            slot.in_flight += 1
            return slot, idle

    def release(self, slot: _Slot[ClientT]) -> bool:
        """A request on ``slot`` ended. True when the slot is retired and idle: close it now."""
        with self._mutex:
            slot.in_flight -= 1
            return slot.retired and slot.in_flight == 0

    def take(self) -> _Slot[ClientT] | None:
        """Retire the current client (close). Returns it when it can be closed now."""
        with self._mutex:
            slot, self.current = self.current, None
            return self._retire(slot) if slot is not None else None

    def discard(self, slot: _Slot[ClientT]) -> bool:
        """Drop ``slot`` if it is still the current one (a failed connect step)."""
        with self._mutex:
            if self.current is slot:
                self.current = None
            slot.retired = True
            return slot.in_flight == 0


def _close_async_elsewhere(slot: _Slot[httpx.AsyncClient]) -> None:
    """Close an async client of another event loop on that loop, if it still runs."""
    loop = slot.loop
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            asyncio.run_coroutine_threadsafe(slot.client.aclose(), loop)


def endpoint_url(base_url: str, endpoint: str) -> str:
    """The URL a request to ``endpoint`` goes to: an absolute ``http(s)://`` endpoint as it is,
    any other appended to ``base_url`` (a connection's ``host``) with one slash between."""
    if endpoint[:8].lower().startswith(("http://", "https://")):
        return endpoint
    return f"{base_url.rstrip('/')}/{endpoint.lstrip('/')}"


class HttpHandler:
    """HTTP handler for any REST API: sync and async verbs, retries, typed errors.

    Args:
        props: where and how to connect (an :class:`HttpConnProperties`).
        skip_connect: open nothing and send nothing in the constructor.
        max_retries: attempts after the first for each request (``0``: exactly one request).
        max_conn_retries: attempts after the first of a login (or warm-up), wherever it runs:
            on the connect step or inside a request (see :mod:`echo_connhandler._retry`).
        retry_wait_time: longest backoff wait, seconds.
        exponential_min_retry_wait_time: shortest backoff wait, seconds.
        exponential_multiplier: backoff multiplier (``multiplier * 2**(attempt-1)``).
        retry_after_cap: longest ``Retry-After`` honoured, seconds (default 300).
        retry_time_budget: no new attempt of a request starts once this many seconds would have
            passed since its first attempt (default 900; ``None``: no budget).
        max_response_bytes: refuse a response whose body, decoded, is larger than this
            (:class:`ResponseTooLargeError`; default ``None``: no limit).
        transport: the httpx transport of the sync client (tests: ``httpx.MockTransport``,
            which serves the async client too; a proxy or a custom ``HTTPTransport``).
        async_transport: the httpx transport of the async client (default: ``transport`` when
            it can serve both paths, else the one ``props.async_transport`` names: httpx's own
            over the handler's connection pool, :class:`echo_connhandler._pool.
            PooledHTTPTransport` (httpx's stock one when the environment names proxies), or
            aiohttp's, :class:`echo_connhandler._transports.AiohttpTransport`).
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
        retry_time_budget: float | None = DEFAULT_TIME_BUDGET,
        max_response_bytes: int | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(props, self.properties_type):
            raise TypeError(
                f"{type(self).__name__} needs {self.properties_type.__name__}, "
                f"got {type(props).__name__}"
            )
        # Checked under the names the caller used (RetryPolicy checks its own fields again).
        for name, value, integer in (
            ("max_retries", max_retries, True),
            ("max_conn_retries", max_conn_retries, True),
            ("retry_wait_time", retry_wait_time, False),
            ("exponential_min_retry_wait_time", exponential_min_retry_wait_time, False),
            ("exponential_multiplier", exponential_multiplier, False),
            ("retry_after_cap", retry_after_cap, False),
        ):
            check_retry_number(name, value, integer=integer)
        if retry_time_budget is not None:
            check_retry_number("retry_time_budget", retry_time_budget)
        if max_response_bytes is not None:
            check_retry_number("max_response_bytes", max_response_bytes, integer=True)
            if max_response_bytes == 0:
                raise ValueError("max_response_bytes must be > 0, or None for no limit")
        self.props = props
        self.retry_policy = RetryPolicy(
            max_retries=max_retries,
            max_wait=retry_wait_time,
            min_wait=exponential_min_retry_wait_time,
            multiplier=exponential_multiplier,
            retry_after_cap=retry_after_cap,
            max_login_retries=max_conn_retries,
            time_budget=retry_time_budget,
        )
        self.max_conn_retries = max_conn_retries
        self.max_response_bytes = max_response_bytes
        self._transport = transport
        if async_transport is None and isinstance(transport, httpx.AsyncBaseTransport):
            async_transport = transport  # httpx.MockTransport serves both paths
        self._async_transport = async_transport
        self._aiohttp_transport: Callable[..., httpx.AsyncBaseTransport] | None = None
        if props.async_transport == "aiohttp" and async_transport is None:
            # Imported here, not on first use: a missing extra fails at once, with its name.
            from echo_connhandler._transports import AiohttpTransport

            self._aiohttp_transport = AiohttpTransport
        #: Retries this handler has made so far (every request, both paths).
        self.retry_count = 0
        self._ssl_context_built = False
        self._urls: dict[str, httpx.URL] = {}
        self._auth = self._build_auth()
        self._trusted = self._trusted_origins()
        self._sync: _ClientHolder[httpx.Client] = _ClientHolder(
            self._new_sync_client, lambda: threading.BoundedSemaphore(POOL_SIZE)
        )
        self._async: _ClientHolder[httpx.AsyncClient] = _ClientHolder(
            self._new_async_client, lambda: asyncio.Semaphore(POOL_SIZE)
        )
        if not skip_connect:
            self.reconnect()

    # -- what subclasses customise (no I/O) ---------------------------------------------------
    def _build_auth(self) -> httpx.Auth | None:
        """The auth flow shared by both clients: API key as Bearer, or HTTP Basic."""
        if self.props.api_key:
            return BearerAuth(self.props.api_key)
        if self.props.user is not None and self.props.password is not None:
            basic = httpx.BasicAuth(self.props.user, self.props.password)
            # The header is base64 of user:password: a server echoing it must not reveal it.
            request = next(basic.auth_flow(httpx.Request("GET", self.props.host)))
            register_secret(request.headers["Authorization"].partition(" ")[2])
            return basic
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

    @staticmethod
    def _refuse_unsafe_redirect(response: httpx.Response) -> None:
        """Stop a redirect that would carry a login, or a request body, to another origin.

        httpx re-sends the body on 307/308 (and 301 but for POST), wherever the ``Location``
        points: a login's password, an ONS token request or a body holding a token would reach
        a foreign host. A login step never leaves its origin; a user request does only with
        ``allow_cross_origin_body=True``. Runs as a response event hook, before httpx follows.
        """
        if not response.has_redirect_location:
            return
        request = response.request
        target = request.url.join(response.headers["location"])
        if _origin(target) == _origin(request.url):
            return
        where = f"{target.scheme}://{target.netloc.decode('ascii', 'replace')}"
        if request.extensions.get(LOGIN_STEP) and _carries_body(request):
            raise UnsafeRedirectError.from_response(
                response,
                f"a login request was redirected to another origin ({where}); its credentials "
                "are never sent there",
            )
        if request.extensions.get(ALLOW_CROSS_ORIGIN_BODY) or not _redirect_keeps_body(
            request, response
        ):
            return
        raise UnsafeRedirectError.from_response(
            response,
            f"the redirect would send this request's body to another origin ({where}); call "
            "with allow_cross_origin_body=True if it may go there",
        )

    def _client_settings(self) -> dict[str, Any]:
        headers = dict(self.default_headers)
        headers.update(self.props.headers or {})
        return {
            "base_url": self.props.host + "/",
            "headers": headers,
            "timeout": httpx.Timeout(self.props.request_timeout, connect=self.props.conn_timeout),
            # Every connection may stay alive: with httpx's default of 20, a burst of 100
            # requests closes 80 connections as they go idle and opens them again for the next
            # requests (docs/performance.md, "Async throughput").
            "limits": httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
            "verify": self._ssl_context(),
            "auth": self._auth,
            "follow_redirects": True,
        }

    def _url(self, endpoint: str) -> str:
        return endpoint_url(self.props.host, endpoint)

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
            merged = merged.merge(self._parsed_url(url).params)
        kwargs["params"] = merged.merge(given) if given is not None else merged

    def _prepare(
        self,
        method: str,
        endpoint: str,
        response_ok: ResponseOk,
        idempotent: bool | None,
        allow_cross_origin_body: bool,
        kwargs: dict[str, Any],
    ) -> _Call:
        method = method.upper()
        url = self._url(endpoint)
        self._merge_payload(method, kwargs)
        self._merge_params(url, kwargs)
        if idempotent is None:
            idempotent = self._is_idempotent(method, url)
        if allow_cross_origin_body:
            kwargs["extensions"] = {**(kwargs.get("extensions") or {}), ALLOW_CROSS_ORIGIN_BODY: 1}
        content = kwargs.get("content")
        replayable = kwargs.get("files") is None and isinstance(content, bytes | str | None)
        options = {k: kwargs.pop(k) for k in _SEND_OPTIONS if k in kwargs}
        accepted = _accepted_statuses(response_ok)
        return _Call(method, url, kwargs, accepted, idempotent, replayable, options)

    def _check(self, response: httpx.Response, call: _Call) -> httpx.Response:
        if call.accepted is None:  # response_ok=None: no check at all, as the guide says
            return response
        if (
            call.sink is not None
            and response.is_stream_consumed
            and not hasattr(response, "_content")
        ):
            return response  # streamed to the sink after its status and type were checked
        if call.sink is not None and is_html(response):
            raise UnexpectedContentError.from_response(
                response, "an HTML page where a file was expected"
            )
        # Service errors first: CKAN reports them with 404/409 and a body worth more than a status.
        self._check_response(response)
        if response.status_code not in call.accepted:
            expected = describe_statuses(call.accepted)
            raise HttpStatusError.from_response(response, f"expected status {expected}")
        return response

    @staticmethod
    def _transport_error(call: _Call, exc: httpx.RequestError) -> HttpTransportError:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        legacy = needs_legacy_renegotiation(exc)
        if legacy:  # integra.ons.org.br under OpenSSL 3 (docs/services/ons.md, "TLS")
            cause += "; the server needs legacy TLS renegotiation: set legacy_tls_renegotiation"
        try:
            request: httpx.Request | None = exc.request
        except RuntimeError:
            request = None
        return HttpTransportError(
            f"{call.describe()} failed: {cause}", request=request, legacy_tls_renegotiation=legacy
        )

    def _too_large(self, response: httpx.Response) -> ResponseTooLargeError:
        return ResponseTooLargeError.from_response(
            response, f"the body is larger than max_response_bytes={self.max_response_bytes}"
        )

    def _keep_body(self, response: httpx.Response, chunks: list[bytes], size: int) -> None:
        """Store a body read under the size limit where ``response.content`` finds it.

        httpx has no public way to read a body with a limit and keep the response usable; it
        stores what ``read()`` gathered in ``_content`` (httpx 0.28), and so does this.
        """
        if size > (self.max_response_bytes or size):
            raise self._too_large(response)
        response._content = b"".join(chunks)

    def _parsed_url(self, url: str) -> httpx.URL:
        """``httpx.URL(url)``, parsed once per URL: httpx's parser costs as much as the rest of
        building a request, and a handler sends the same few URLs again and again (URLs are
        immutable, so one parse serves every request and thread)."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)
            if len(self._urls) >= _URL_CACHE_SIZE:  # paged queries: bounded, newest kept
                self._urls.clear()
            self._urls[url] = parsed
        return parsed

    def _count_retry(self) -> None:
        self.retry_count += 1

    def _connect_step_call(self) -> _Call:
        """The connect step as a call: a login (or warm-up), retried under the same rules."""
        return _Call(_CONNECT, self.props.host, {}, None, True)

    # -- sync ----------------------------------------------------------------------------------
    def _new_sync_client(self, cookies: httpx.Cookies | None = None) -> httpx.Client:
        hooks: dict[str, list[Callable[..., Any]]] = {
            "request": [self._withhold_foreign_credentials],
            "response": [self._refuse_unsafe_redirect],
        }
        settings = self._client_settings()
        if self._transport is not None:
            settings.setdefault("transport", self._transport)
        return _Client(cookies=cookies, event_hooks=hooks, **settings)

    def _exchange_sync(
        self, client: httpx.Client, call: _Call, deadline: _Deadline
    ) -> httpx.Response | None:
        """Send ``call`` on ``client`` (or run the connect step) and read the body.

        The body is always streamed, so that ``deadline`` is checked as it arrives (the sync
        path has no timer that could interrupt a blocking read: the answer's head and a login's
        own requests are bounded by the timeouts only, docs/handlers.md, "Connection
        properties").
        """
        if call.is_connect_step:
            if isinstance(self._auth, SessionAuth):
                self._auth.sync_connect(client)
            return None
        request = client.build_request(call.method, self._parsed_url(call.url), **call.kwargs)
        response = client.send(request, stream=True, **call.send_options)
        with contextlib.closing(response):
            if call.sink is not None:
                if not _streams_to_sink(response, call):
                    # An error: kept in memory for the exception's excerpt.
                    response._content = b"".join(deadline.chunks(response))
                    return response
                call.sink.seek(0)
                call.sink.truncate()
                for chunk in deadline.chunks(response):
                    call.sink.write(chunk)
                return response
            chunks: list[bytes] = []
            size = 0
            for chunk in deadline.chunks(response):
                chunks.append(chunk)
                size += len(chunk)
                if self.max_response_bytes is not None and size > self.max_response_bytes:
                    raise self._too_large(response)
        self._keep_body(response, chunks, size)
        return response

    def _send_sync(
        self, call: _Call, used: _Slot[httpx.Client] | None
    ) -> tuple[_Slot[httpx.Client], httpx.Response | BaseException | None]:
        """One attempt. Returns the client slot it used (so that a retry replaces exactly that
        client, not one another caller has just swapped in) and the response or the error."""
        slot, idle = self._sync.checkout(used)
        if idle is not None:
            idle.client.close()
        try:
            with cast(threading.BoundedSemaphore, slot.limiter):
                # The wait for a permit is not the server's time: the deadline starts here.
                deadline = _Deadline.start(self.props.effective_attempt_deadline)
                return slot, self._exchange_sync(slot.client, call, deadline)
        except httpx.RequestError as exc:
            error = self._transport_error(call, exc)
            error.__cause__ = exc
            return slot, error
        finally:
            if self._sync.release(slot):
                slot.client.close()

    def _run_sync(self, call: _Call) -> httpx.Response | None:
        # The first attempt outside tenacity, as on the async path (see _run_async).
        started = time.monotonic()
        used: _Slot[httpx.Client] | None = None
        try:
            used, outcome = self._send_sync(call, used)
            return outcome if outcome is None else self._check(_result_or_raise(outcome), call)
        except Exception as exc:
            first: Exception | None = exc
        policy = self.retry_policy if call.replayable else self.retry_policy.single_attempt()
        for attempt in policy.sync_attempts(
            idempotent=call.idempotent,
            label=call.describe,
            on_retry=self._count_retry,
            started=started,
        ):
            with attempt:
                if first is not None:
                    failure, first = first, None
                    raise failure
                used, outcome = self._send_sync(call, used)
                return outcome if outcome is None else self._check(_result_or_raise(outcome), call)
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    def reconnect(self) -> None:
        """Close the sync client, if any, and open a new one (with the connect step)."""
        slot, idle = self._sync.install()
        if idle is not None:
            idle.client.close()
        try:
            self._run_sync(self._connect_step_call())
        except BaseException:
            # A failed login or warm-up leaves no half-open client behind.
            if self._sync.discard(slot):
                slot.client.close()
            raise

    def close(self) -> None:
        """Close the sync client. The async one, if any, needs :meth:`async_close`."""
        idle = self._sync.take()
        if idle is not None:
            idle.client.close()
        self._end_session_if_closed()

    def _end_session_if_closed(self) -> None:
        """With both clients closed, the auth flow forgets its session and its secrets."""
        idle = self._sync.current is None and self._async.current is None
        if idle and isinstance(self._auth, SessionAuth):
            self._auth.close()

    @property
    def is_connected(self) -> bool:
        """Whether the sync client is open (``connection`` would not open one)."""
        return self._sync.current is not None

    @property
    def connection(self) -> httpx.Client:
        """The live ``httpx.Client`` (opened now, with the connect step, if it is not open)."""
        slot = self._sync.current
        if slot is None:
            self.reconnect()
            slot = self._sync.current
        assert slot is not None
        return slot.client

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        response_ok: ResponseOk = 200,
        idempotent: bool | None = None,
        allow_cross_origin_body: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request with retries; return the response once its status is accepted.

        ``kwargs`` go to ``httpx.Client.request`` (``json``, ``data``, ``params``, ``headers``,
        ``content``, ``files``, ``timeout``, ...). ``idempotent`` overrides the method's default
        for retry decisions (POST/PATCH are not replayed after they may have reached the server).
        ``allow_cross_origin_body=True`` lets a redirect carry the body to another origin.
        """
        call = self._prepare(
            method, endpoint, response_ok, idempotent, allow_cross_origin_body, kwargs
        )
        response = self._run_sync(call)
        assert response is not None
        return response

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

    def download(
        self,
        method: str,
        endpoint: str,
        sink: BinaryIO,
        *,
        response_ok: ResponseOk = 200,
        idempotent: bool | None = None,
        allow_cross_origin_body: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Stream the response body into ``sink`` (a binary file object), with retries.

        The body never sits in memory whole. Every attempt rewinds and truncates ``sink``, so a
        retried download never leaves parts of two answers in it. The returned response has the
        status and headers; its body is in ``sink``. An error status or an HTML page is read
        and raised as for :meth:`request`, never written to ``sink``.
        """
        call = self._prepare(
            method, endpoint, response_ok, idempotent, allow_cross_origin_body, kwargs
        )
        call.sink = sink
        response = self._run_sync(call)
        assert response is not None
        return response

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- async ---------------------------------------------------------------------------------
    def _new_async_client(self, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
        async def withhold(request: httpx.Request) -> None:
            self._withhold_foreign_credentials(request)

        async def refuse(response: httpx.Response) -> None:
            self._refuse_unsafe_redirect(response)

        hooks: dict[str, list[Callable[..., Any]]] = {"request": [withhold], "response": [refuse]}
        settings = self._client_settings()
        if self._async_transport is not None:
            settings.setdefault("transport", self._async_transport)
        elif "transport" in settings:
            pass  # a subclass's own
        elif self._aiohttp_transport is not None:
            # One pool per client, as httpx's own transport: a retry's fresh client gets a
            # fresh pool. Same SSL context, same size (POOL_SIZE) and idle expiry.
            limits: httpx.Limits = settings["limits"]
            settings["transport"] = self._aiohttp_transport(
                settings["verify"],
                max_connections=limits.max_connections,
                keepalive_expiry=limits.keepalive_expiry,
            )
        elif not environment_proxies():
            # httpx's transport over a pool that finds a connection in constant time
            # (httpcore's walks them all on every request; docs/performance.md,
            # "Async throughput"). With proxies in the environment, httpx's stock transport:
            # httpx mounts them only on a client that builds its own transport.
            settings["transport"] = PooledHTTPTransport(
                settings["verify"], limits=settings["limits"]
            )
        return _AsyncClient(cookies=cookies, event_hooks=hooks, **settings)

    async def _close_async(self, slot: _Slot[httpx.AsyncClient] | None) -> None:
        if slot is None:
            return
        if slot.loop is asyncio.get_running_loop():
            await slot.client.aclose()
        else:
            _close_async_elsewhere(slot)

    async def _exchange_async(
        self, client: httpx.AsyncClient, call: _Call
    ) -> httpx.Response | None:
        """The async :meth:`_exchange_sync`."""
        if call.is_connect_step:
            if isinstance(self._auth, SessionAuth):
                await self._auth.async_connect(client)
            return None
        # Many requests of one loop (a triggerer's pulls) are prepared over several turns, not
        # one long turn (docs/performance.md, "Start-up burst").
        await pace()
        request = client.build_request(call.method, self._parsed_url(call.url), **call.kwargs)
        if call.sink is not None:
            response = await client.send(request, stream=True, **call.send_options)
            try:
                if not _streams_to_sink(response, call):
                    await response.aread()  # an error: kept for the exception's excerpt
                    return response
                call.sink.seek(0)
                call.sink.truncate()
                async for chunk in response.aiter_bytes():
                    call.sink.write(chunk)  # one chunk at a time: short, bounded writes
            finally:
                await response.aclose()
            return response
        if self.max_response_bytes is None:
            response = await client.send(request, **call.send_options)
            await pace()  # the answers handled in one turn are bounded the same way
            return response
        response = await client.send(request, stream=True, **call.send_options)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise self._too_large(response)
        finally:
            await response.aclose()
        self._keep_body(response, chunks, size)
        await pace()
        return response

    async def _send_async(
        self, call: _Call, used: _Slot[httpx.AsyncClient] | None
    ) -> tuple[_Slot[httpx.AsyncClient], httpx.Response | BaseException | None]:
        """The async :meth:`_send_sync`."""
        slot, idle = self._async.checkout(used, asyncio.get_running_loop())
        await self._close_async(idle)
        seconds = self.props.effective_attempt_deadline
        timer: asyncio.Timeout | None = None
        try:
            async with cast(asyncio.Semaphore, slot.limiter):
                # The wait for a permit is not the server's time: the deadline starts here, and
                # covers everything the attempt awaits (connect, a login, the head, the body),
                # whichever transport carries it.
                timer = asyncio.timeout(seconds)
                async with timer:
                    return slot, await self._exchange_async(slot.client, call)
        except (TimeoutError, httpx.RequestError) as exc:
            cause: httpx.RequestError
            if timer is not None and timer.expired():
                # TimeoutError from the timer; or a library turned the cancellation into its
                # own error: either way, the deadline ended the attempt.
                cause = AttemptDeadlineExceeded(_deadline_message(seconds))
            elif isinstance(exc, httpx.RequestError):
                cause = exc
            else:
                raise
            error = self._transport_error(call, cause)
            error.__cause__ = cause
            return slot, error
        finally:
            if self._async.release(slot):
                await self._close_async(slot)

    async def _run_async(self, call: _Call) -> httpx.Response | None:
        """The async :meth:`_run_sync`."""
        if not self._ssl_context_built:
            # The first SSL context loads the CA bundle: 0.1 to 0.4 s that would stall the
            # event loop (a triggerer's, shared by every trigger), docs/performance.md,
            # "First use on an event loop". Built once per process and setting, then cached.
            await asyncio.to_thread(self._ssl_context)
            self._ssl_context_built = True
        # The first attempt runs outside tenacity: most requests succeed at once, and a
        # tenacity loop costs more than the rest of the handler's own work per request
        # (docs/performance.md, "Async throughput"). A failure enters the loop as its first
        # attempt's outcome, so that every retry decision, wait, log line and note is the same.
        started = time.monotonic()
        used: _Slot[httpx.AsyncClient] | None = None
        try:
            used, outcome = await self._send_async(call, used)
            return outcome if outcome is None else self._check(_result_or_raise(outcome), call)
        except Exception as exc:
            first: Exception | None = exc
        policy = self.retry_policy if call.replayable else self.retry_policy.single_attempt()
        async for attempt in policy.async_attempts(
            idempotent=call.idempotent,
            label=call.describe,
            on_retry=self._count_retry,
            started=started,
        ):
            with attempt:
                if first is not None:
                    failure, first = first, None
                    raise failure
                used, outcome = await self._send_async(call, used)
                return outcome if outcome is None else self._check(_result_or_raise(outcome), call)
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    async def async_reconnect(self) -> None:
        """Close the async client, if any, and open a new one (with the connect step)."""
        slot, idle = self._async.install(asyncio.get_running_loop())
        await self._close_async(idle)
        try:
            await self._run_async(self._connect_step_call())
        except BaseException:
            if self._async.discard(slot):
                await self._close_async(slot)
            raise

    async def async_close(self) -> None:
        """Close the async client (the sync one, if any, stays open)."""
        await self._close_async(self._async.take())
        self._end_session_if_closed()

    @property
    def async_connection(self) -> httpx.AsyncClient | None:
        """The live ``httpx.AsyncClient``; ``None`` before the first async use."""
        slot = self._async.current
        return slot.client if slot is not None else None

    async def async_request(
        self,
        method: str,
        endpoint: str,
        *,
        response_ok: ResponseOk = 200,
        idempotent: bool | None = None,
        allow_cross_origin_body: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """The async :meth:`request`."""
        call = self._prepare(
            method, endpoint, response_ok, idempotent, allow_cross_origin_body, kwargs
        )
        response = await self._run_async(call)
        assert response is not None
        return response

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

    async def async_download(
        self,
        method: str,
        endpoint: str,
        sink: BinaryIO,
        *,
        response_ok: ResponseOk = 200,
        idempotent: bool | None = None,
        allow_cross_origin_body: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """The async :meth:`download` (each chunk is written as it arrives)."""
        call = self._prepare(
            method, endpoint, response_ok, idempotent, allow_cross_origin_body, kwargs
        )
        call.sink = sink
        response = await self._run_async(call)
        assert response is not None
        return response

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
