"""Authentication as ``httpx.Auth`` flows, written once and driven by the sync and async clients.

:class:`BearerAuth` puts an API key on every request. :class:`SessionAuth` is the base of the
service flows that must *log in* (Bazefield, ONS) or *warm up* (CCEE's WAF) before the API
answers. A subclass writes its login as a plain generator (``login_flow``) that yields requests
and receives responses, the shape of ``httpx.Auth.auth_flow``.

How it is driven
    Everything that decides (is a login due, who runs it, re-login once on rejection, cookies,
    the login counter) lives in one generator, :meth:`SessionAuth._session_flow`. Besides
    requests it yields two kinds of step that only I/O can settle: ``_Read`` (read this response's
    body) and ``_Wait`` (wait until the login someone else runs has finished). One small driver
    per path settles them: :meth:`~SessionAuth.sync_auth_flow` (``read()``, blocking wait) and
    :meth:`~SessionAuth.async_auth_flow` (``aread()``, awaited wait). The handler's connect step
    runs the same generator through the same drivers (:meth:`~SessionAuth.sync_connect`,
    :meth:`~SessionAuth.async_connect`), sending its requests itself.

One login at a time
    :class:`LoginGate` lets one caller (a thread or a coroutine, on any event loop) log in;
    everybody else waits on a ``concurrent.futures.Future`` that the login resolves: a thread
    blocks on it, a coroutine awaits a loop future that the login's done-callback wakes with
    ``call_soon_threadsafe`` (no polling). Afterwards each waiter re-checks: 1 000 coroutines
    that find the session expired cause one login, not 1 000. An ONS refresh token is single-use:
    two concurrent refreshes would force a second full login. If the login was refused for bad
    credentials, its waiters fail with the same error instead of trying the password again (an
    identity provider may lock the account).

Rejected requests
    A request rejected by the service (``is_rejected``: 401, CCEE's WAF page) has its body read
    *before* it waits for the re-login: an unread response keeps its pooled connection, and with
    a pool full of rejected requests waiting, the login itself found no connection and every
    caller stalled until the pool timeout (docs/retries.md, "Logins under load"). It is resent
    once after the re-login (unless another caller already logged in again meanwhile); a second
    rejection goes to ``on_still_rejected`` or to the handler's status check.

Every credential obtained at run time goes to the flow's :class:`SecretScope` (``self.secrets``):
registered for redaction while the handler lives, forgotten when it closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from echo_connhandler._exceptions import AuthenticationError
from echo_connhandler._retry import LOGIN_STEP
from echo_connhandler._secrets import SecretScope

__all__ = [
    "ALLOW_CROSS_ORIGIN_BODY",
    "BearerAuth",
    "LoginFlow",
    "LoginGate",
    "SessionAuth",
    "derive_request",
]

#: A login written once: yields the requests to send, receives their (read) responses.
LoginFlow = Generator[httpx.Request, httpx.Response, None]
#: Request extension set by a caller that lets a redirect carry its body to another origin.
ALLOW_CROSS_ORIGIN_BODY = "echo_connhandler.allow_cross_origin_body"

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
    ``headers`` replace inherited ones of the same name, whatever their case.
    """
    inherited = httpx.Headers(
        {k: v for k, v in template.headers.items() if k.lower() not in _NOT_INHERITED}
    )
    inherited.update(headers or {})
    request = httpx.Request(method, url, headers=inherited, **kwargs)  # type: ignore[arg-type]
    request.extensions = _login_extensions(template.extensions)
    return request


def _login_extensions(extensions: dict[str, Any]) -> dict[str, Any]:
    """A login step's extensions: the template's timeouts, marked, never the caller's opt-ins."""
    marked = {k: v for k, v in extensions.items() if k != ALLOW_CROSS_ORIGIN_BODY}
    marked[LOGIN_STEP] = True
    return marked


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


class LoginGate:
    """Lets one caller log in at a time; the others wait for its end without polling.

    :meth:`try_enter` returns ``None`` to the caller that is to log in (it must call
    :meth:`leave`), or the ``Future`` of the login under way, resolved by :meth:`leave` with
    that login's failure (``None`` when it succeeded). The mutex is held for a few instructions,
    never across I/O, so taking it from a coroutine does not stall the event loop.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._running: concurrent.futures.Future[BaseException | None] | None = None
        self._owner_thread: int | None = None

    def try_enter(self) -> concurrent.futures.Future[BaseException | None] | None:
        """``None``: log in now, then :meth:`leave`. A future: wait for it, then check again."""
        with self._mutex:
            if self._running is not None:
                return self._running
            self._running = concurrent.futures.Future()
            self._owner_thread = threading.get_ident()
            return None

    def leave(self, failure: BaseException | None) -> None:
        """End the login under way and wake its waiters with its outcome."""
        with self._mutex:
            running, self._running, self._owner_thread = self._running, None, None
        if running is not None:
            running.set_result(failure)

    def held_by_this_thread(self) -> bool:
        """Whether the login under way runs on the calling thread (as a suspended coroutine)."""
        return self._owner_thread == threading.get_ident()


@dataclass(slots=True)
class _Read:
    """Step: read this response's body, then carry on."""

    response: httpx.Response


@dataclass(slots=True)
class _Wait:
    """Step: wait until the login under way ends; the flow receives its failure (or ``None``)."""

    gate: LoginGate
    ticket: concurrent.futures.Future[BaseException | None]


#: What a sync caller answers to ``_Wait`` when the login it would wait for is a coroutine
#: suspended on its own thread: waiting would deadlock, so it logs in itself (a sync call made
#: inside a running event loop, which production code never does).
_LOG_IN_ANYWAY = object()

_Step = httpx.Request | _Read | _Wait
_SessionFlow = Generator[_Step, Any, None]


_Yielded = TypeVar("_Yielded")


def _advance(flow: Generator[_Yielded, Any, None], reply: Any) -> _Yielded | None:
    """The generator's next step, or ``None`` once it has finished."""
    try:
        return flow.send(reply)
    except StopIteration:
        return None


def _settle_sync(step: _Read | _Wait) -> Any:
    if isinstance(step, _Read):
        step.response.read()
        return None
    if step.gate.held_by_this_thread():
        return _LOG_IN_ANYWAY
    return step.ticket.result()


async def _settle_async(step: _Read | _Wait) -> Any:
    if isinstance(step, _Read):
        await step.response.aread()
        return None
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[BaseException | None] = loop.create_future()

    def wake(ticket: concurrent.futures.Future[BaseException | None]) -> None:
        with contextlib.suppress(RuntimeError):  # the waiter's loop has closed meanwhile
            loop.call_soon_threadsafe(_resolve, woken, ticket.result())

    step.ticket.add_done_callback(wake)
    return await woken


def _resolve(future: asyncio.Future[BaseException | None], value: BaseException | None) -> None:
    if not future.done():  # the waiter may have been cancelled
        future.set_result(value)


class SessionAuth(httpx.Auth):
    """Base of the flows that log in (or warm up) once and re-authenticate once on rejection."""

    requires_response_body = False

    def __init__(self) -> None:
        self._gate = LoginGate()
        #: Bumped by every completed login; lets a caller see that someone else re-authenticated.
        self.generation = 0
        #: Cookies set by login / warm-up responses, added to every request of both clients.
        self.cookies = httpx.Cookies()
        #: The tokens, session ids and cookies this flow obtained, masked in logs and errors.
        self.secrets = SecretScope()

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

    def close(self) -> None:
        """End the session: forget the credential, the cookies and their registered secrets."""
        self.invalidate()
        self.cookies.clear()
        self.secrets.release()

    # -- the logic, once (no I/O) -------------------------------------------------------------
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

    def _login_due(self, rejected_under: int | None) -> bool:
        """Log in now? Before a first send: when no usable credential is held. After a request
        sent under login number ``rejected_under`` was rejected: unless someone logged in since."""
        if rejected_under is None:
            return self.needs_login()
        return self.generation == rejected_under

    def _login_steps(self, template: httpx.Request) -> _SessionFlow:
        """The service's ``login_flow``, its requests marked as login steps, bodies read."""
        # Closed explicitly: a login step left without an answer learns it (GeneratorExit).
        with contextlib.closing(self.login_flow(template)) as flow:
            request = _advance(flow, None)
            while request is not None:
                request.extensions = _login_extensions(request.extensions)
                if self.cookies:
                    self.cookies.set_cookie_header(request)
                response = yield request
                yield _Read(response)
                self.cookies.extract_cookies(response)
                for cookie in self.cookies.jar:  # session and WAF cookies are credentials
                    self.secrets.add(cookie.value)
                request = _advance(flow, response)
        self.generation += 1

    def _ensure_login(self, template: httpx.Request, rejected_under: int | None) -> _SessionFlow:
        """Log in if due: run the login, or wait for the one under way and check again."""
        while self._login_due(rejected_under):
            ticket = self._gate.try_enter()
            if ticket is not None:
                outcome = yield _Wait(self._gate, ticket)
                if isinstance(outcome, AuthenticationError):
                    raise copy.copy(outcome) from None  # never retry a refused password at once
                if outcome is not _LOG_IN_ANYWAY:
                    continue
                yield from self._login_steps(template)
                return
            failure: BaseException | None = None
            try:
                if self._login_due(rejected_under):  # someone may have finished meanwhile
                    if rejected_under is not None:
                        self.invalidate()
                    yield from self._login_steps(template)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._gate.leave(failure)
            return

    def _session_flow(self, request: httpx.Request) -> _SessionFlow:
        """The auth flow of one request: log in if due, send, re-login once if rejected."""
        rejected_under: int | None = None
        for _ in range(2):  # the request, and once more after a re-login if it is rejected
            yield from self._ensure_login(request, rejected_under)
            rejected_under = self.generation
            self._prepare(request)
            response = yield request
            if not self.is_rejected(response):
                return
            # Give the connection back to the pool before waiting for the re-login.
            yield _Read(response)
        self.on_still_rejected(response)

    # -- the drivers, one per path ------------------------------------------------------------
    def _drive_sync(self, flow: _SessionFlow) -> Generator[httpx.Request, httpx.Response, None]:
        with contextlib.closing(flow):
            reply: Any = None
            while (step := _advance(flow, reply)) is not None:
                reply = (yield step) if isinstance(step, httpx.Request) else _settle_sync(step)

    async def _drive_async(
        self, flow: _SessionFlow
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        with contextlib.closing(flow):
            reply: Any = None
            while (step := _advance(flow, reply)) is not None:
                if isinstance(step, httpx.Request):
                    reply = yield step
                else:
                    reply = await _settle_async(step)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        return self._drive_sync(self._session_flow(request))

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._drive_async(self._session_flow(request))

    def sync_connect(self, client: httpx.Client) -> None:
        """Log in through ``client`` now, unless a usable credential is held already."""
        template = client.build_request("GET", client.base_url)
        with contextlib.closing(self._drive_sync(self._ensure_login(template, None))) as steps:
            request = next(steps, None)
            while request is not None:
                request = _send_to(steps, client.send(request, auth=None))

    async def async_connect(self, client: httpx.AsyncClient) -> None:
        """Log in through ``client`` now, unless a usable credential is held already."""
        template = client.build_request("GET", client.base_url)
        steps = self._drive_async(self._ensure_login(template, None))
        try:
            request = await anext(steps, None)
            while request is not None:
                request = await _asend_to(steps, await client.send(request, auth=None))
        finally:
            await steps.aclose()


def _send_to(
    steps: Generator[httpx.Request, httpx.Response, None], response: httpx.Response
) -> httpx.Request | None:
    try:
        return steps.send(response)
    except StopIteration:
        return None


async def _asend_to(
    steps: AsyncGenerator[httpx.Request, httpx.Response], response: httpx.Response
) -> httpx.Request | None:
    try:
        return await steps.asend(response)
    except StopAsyncIteration:
        return None
