"""Authentication as ``httpx.Auth`` flows, written once and driven by the sync and async clients.

:class:`BearerAuth` puts an API key on every request. :class:`SessionAuth` is the base of the
service flows that must *log in* (Bazefield, ONS) or *warm up* (CCEE's WAF) before the API
answers. A subclass writes its login as a plain generator (``login_flow``) that yields requests
and receives responses, the shape of ``httpx.Auth.auth_flow``; this base class

- runs that generator inside a request's auth flow when no valid credential is held (and
  before, on the handler's connect step, through :meth:`SessionAuth.sync_connect` /
  :meth:`SessionAuth.async_connect`);
- serialises logins with a ``threading.RLock`` (sync) and a per-event-loop ``asyncio.Lock``
  plus that same RLock, polled (async), and re-checks after taking them, so that 100
  coroutines starting at once cause one login, not 100, and a sync caller and a coroutine
  never log in at the same time (the pattern of httpx's own docs on token refresh);
- re-authenticates *once* when a response is rejected (``is_rejected``), unless another caller
  already did it meanwhile, then resends the request once; a second rejection is left to the
  subclass (``on_still_rejected``) or to the handler's status check;
- keeps the cookies that the login responses set and adds them to every request, so a
  session or WAF cookie obtained on the sync client also serves the async one.

Every credential obtained at run time goes to :func:`echo_connhandler._secrets.register_secret`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator

import httpx

__all__ = ["BearerAuth", "LoginFlow", "SessionAuth", "derive_request"]

#: How often a coroutine retries the thread lock held by a sync login (seconds).
_THREAD_LOCK_POLL_S = 0.005

#: A login written once: yields the requests to send, receives their (read) responses.
LoginFlow = Generator[httpx.Request, httpx.Response, None]

# Headers of the original request that must not leak into a login request built from it.
_NOT_INHERITED = frozenset(
    {"authorization", "content-type", "content-length", "cookie", "transfer-encoding", "host"}
)


def derive_request(
    template: httpx.Request,
    method: str,
    url: str | httpx.URL,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: object,
) -> httpx.Request:
    """A request for a login step that inherits the template's headers and timeouts.

    Requests yielded by an auth flow bypass ``Client.build_request``: without this they would
    lose the client's default headers (User-Agent, Accept, ...) and, worse, its timeouts.
    """
    inherited = {k: v for k, v in template.headers.items() if k.lower() not in _NOT_INHERITED}
    inherited.update(headers or {})
    request = httpx.Request(method, url, headers=inherited, **kwargs)  # type: ignore[arg-type]
    request.extensions = dict(template.extensions)
    return request


def _parse_cookie_header(header: str) -> dict[str, str]:
    """``a=1; b=2`` as a dict, by hand: ``SimpleCookie`` drops values with spaces or JSON."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            cookies[name] = value
    return cookies


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request (the API key of HttpConnProperties)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class SessionAuth(httpx.Auth):
    """Base of the flows that log in (or warm up) once and re-authenticate once on rejection."""

    requires_response_body = False

    def __init__(self) -> None:
        self._thread_lock = threading.RLock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        #: Bumped by every completed login; lets a caller see that someone else re-authenticated.
        self.generation = 0
        #: Cookies set by login / warm-up responses, added to every request of both clients.
        self.cookies = httpx.Cookies()

    # -- to be written by each service -------------------------------------------------------
    def needs_login(self) -> bool:
        """Whether no usable credential is held (none yet, expired, or about to expire)."""
        raise NotImplementedError

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        """Obtain a credential. ``template`` gives headers, timeouts and the base URL."""
        raise NotImplementedError

    def apply(self, request: httpx.Request) -> None:
        """Add the held credential to ``request``."""
        raise NotImplementedError

    def is_rejected(self, response: httpx.Response) -> bool:
        """Whether the service refused the credential (decided from status and headers only)."""
        return response.status_code == 401

    def invalidate(self) -> None:
        """Forget the held credential so that the next login starts afresh."""
        raise NotImplementedError

    def on_still_rejected(self, response: httpx.Response) -> None:
        """Called (with the body read) when the request is rejected again after a re-login."""

    # -- shared machinery ---------------------------------------------------------------------
    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._async_locks.get(loop)
        if lock is None:
            lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def _async_serialised(self) -> AsyncIterator[None]:
        """This loop's ``asyncio.Lock``, then the thread lock as well, taken without blocking.

        The thread lock is what the sync path takes: holding both makes a login happen once
        even when sync callers, coroutines and other event loops share the handler (an ONS
        refresh token is single-use: two concurrent refreshes would force a second full login).
        The thread lock is polled, never waited on, so the event loop keeps running.
        """
        async with self._async_lock():
            while not self._thread_lock.acquire(blocking=False):  # noqa: ASYNC110 - no event to wait on: the holder is a thread
                await asyncio.sleep(_THREAD_LOCK_POLL_S)
            try:
                yield
            finally:
                self._thread_lock.release()

    def _prepare(self, request: httpx.Request) -> None:
        self.apply(request)
        if not self.cookies:
            return
        probe = httpx.Request(request.method, request.url)
        self.cookies.set_cookie_header(probe)
        if "cookie" not in probe.headers:
            return
        merged = _parse_cookie_header(request.headers.get("cookie", ""))
        merged.update(_parse_cookie_header(probe.headers["cookie"]))
        request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in merged.items())

    def _record(self, response: httpx.Response) -> None:
        self.cookies.extract_cookies(response)

    def _finish_login(self) -> None:
        self.generation += 1

    # sync ------------------------------------------------------------------------------------
    def _sync_login(
        self, template: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self.login_flow(template)
        try:
            request = next(flow)
            while True:
                self._prepare_login_request(request)
                response = yield request
                response.read()
                self._record(response)
                request = flow.send(response)
        except StopIteration:
            self._finish_login()

    def _prepare_login_request(self, request: httpx.Request) -> None:
        if self.cookies:
            self.cookies.set_cookie_header(request)

    def _login_due(self, rejected: int | None) -> bool:
        """Log in now? On the first pass: when no usable credential is held. After a rejection
        of a request sent under login ``rejected``: unless someone logged in again since."""
        return self.needs_login() if rejected is None else self.generation == rejected

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        rejected: int | None = None
        for _ in range(2):  # the request, and once more after a re-login if it is rejected
            if self._login_due(rejected):
                with self._thread_lock:
                    if self._login_due(rejected):
                        if rejected is not None:
                            self.invalidate()
                        yield from self._sync_login(request)
            rejected = self.generation
            self._prepare(request)
            response = yield request
            if not self.is_rejected(response):
                return
        response.read()
        self.on_still_rejected(response)

    def sync_connect(self, client: httpx.Client) -> None:
        """Log in through ``client`` now, unless a usable credential is held already."""
        if not self.needs_login():
            return
        with self._thread_lock:
            if not self.needs_login():
                return
            flow = self._sync_login(client.build_request("GET", client.base_url))
            try:
                request = next(flow)
                while True:
                    request = flow.send(client.send(request, auth=None))
            except StopIteration:
                pass

    # async -----------------------------------------------------------------------------------
    # The mirror of the sync half. An async generator cannot ``yield from``, so delegation to
    # ``_async_login`` is spelled out with ``asend`` in ``_relay``.
    async def _async_login(
        self, template: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self.login_flow(template)
        try:
            request = next(flow)
            while True:
                self._prepare_login_request(request)
                response = yield request
                await response.aread()
                self._record(response)
                request = flow.send(response)
        except StopIteration:
            self._finish_login()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        rejected: int | None = None
        for _ in range(2):  # the request, and once more after a re-login if it is rejected
            if self._login_due(rejected):
                async with self._async_serialised():
                    if self._login_due(rejected):
                        if rejected is not None:
                            self.invalidate()
                        login = self._async_login(request)
                        try:
                            step = await anext(login)
                            while True:
                                step = await login.asend((yield step))
                        except StopAsyncIteration:
                            pass
            rejected = self.generation
            self._prepare(request)
            response = yield request
            if not self.is_rejected(response):
                return
        await response.aread()
        self.on_still_rejected(response)

    async def async_connect(self, client: httpx.AsyncClient) -> None:
        """Log in through ``client`` now, unless a usable credential is held already."""
        if not self.needs_login():
            return
        async with self._async_serialised():
            if not self.needs_login():
                return
            login = self._async_login(client.build_request("GET", client.base_url))
            try:
                step = await anext(login)
                while True:
                    step = await login.asend(await client.send(step, auth=None))
            except StopAsyncIteration:
                pass
