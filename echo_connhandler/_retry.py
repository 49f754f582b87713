"""The retry policy: one object, built once per handler, driving tenacity on both paths.

What is retried (docs/retries.md, "What is retried"):

- transport failures: connect errors and timeouts, read/write errors and timeouts, pool timeouts,
  connection resets, protocol errors from the server; TLS failures (certificate, handshake,
  renegotiation) are *not* retried: they will not fix themselves;
- the statuses in :data:`TRANSIENT_STATUSES`, when they fail the ``response_ok`` check.

Non-idempotent requests (POST, PATCH) are replayed only where the server cannot have acted on
them: connect-phase failures and the statuses in :data:`NOT_ACTED_STATUSES`; the call may say
``idempotent=True`` to lift that (the service handlers do it for known read-only POST queries).

Waits: full-jitter exponential backoff, ``uniform(min_wait, min(max_wait, multiplier * 2**(n-1)))``;
a ``Retry-After`` header (seconds or HTTP date) replaces it, capped at ``retry_after_cap``
(default :data:`DEFAULT_RETRY_AFTER_CAP`, 300 s) so that a server cannot park a task for hours.

Budgets, one rule wherever a login runs (the connect step or inside a request):

- a failure of a login step (a request marked :data:`LOGIN_STEP`: Bazefield login, ONS token,
  CCEE warm-up, ...) counts against ``max_login_retries``; any other failure against
  ``max_retries``; whichever budget runs out first ends the operation;
- no new attempt starts once ``time_budget`` seconds (default :data:`DEFAULT_TIME_BUDGET`) would
  have passed since the first one began: eight ``Retry-After: 300`` answers cannot hold one
  request for 40 minutes. An attempt under way is bounded by the connection's timeouts.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import math
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from echo_connhandler._exceptions import HttpResponseError, HttpStatusError, HttpTransportError
from echo_connhandler._secrets import redact

__all__ = [
    "DEFAULT_RETRY_AFTER_CAP",
    "DEFAULT_TIME_BUDGET",
    "IDEMPOTENT_METHODS",
    "LOGIN_STEP",
    "NOT_ACTED_STATUSES",
    "TRANSIENT_STATUSES",
    "RetryPolicy",
    "check_retry_number",
    "is_login_failure",
    "needs_legacy_renegotiation",
    "parse_retry_after",
]

logger = logging.getLogger("echo_connhandler.retry")

#: Statuses worth another attempt (docs/retries.md): timeouts, rate limits, gateway hiccups.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Statuses that say the server did not act on the request, so even a POST may be replayed.
NOT_ACTED_STATUSES = frozenset({408, 425, 429, 503})
#: Methods that RFC 9110 defines as idempotent.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: The longest ``Retry-After`` honoured, in seconds; a longer one is cut to this.
DEFAULT_RETRY_AFTER_CAP = 300.0
#: No new attempt of one request starts after this many seconds (from its first attempt).
DEFAULT_TIME_BUDGET = 900.0
#: Request extension that marks the requests of a login flow (login, token, warm-up, profile).
LOGIN_STEP = "echo_connhandler.login_step"
#: The OpenSSL reason of a handshake refused for want of legacy renegotiation.
_LEGACY_RENEGOTIATION_REASON = "UNSAFE_LEGACY_RENEGOTIATION_DISABLED"
#: 2**64 s is past any max_wait: a larger exponent would only overflow a float.
_MAX_EXPONENT = 64

# Failures before the request left the client: the server cannot have acted.
_CONNECT_PHASE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after it may have left: safe to replay only for idempotent requests.
_IN_FLIGHT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def parse_retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), else ``None``."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def tls_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind a transport error (httpx -> httpcore -> ssl), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def needs_legacy_renegotiation(exc: BaseException) -> bool:
    """Whether ``exc`` is a TLS failure because the server needs legacy renegotiation.

    Decided by the ``ssl.SSLError``'s ``reason`` (integra.ons.org.br under OpenSSL 3,
    docs/services/ons.md, "TLS"), never by matching message text.
    """
    tls = tls_error_in(exc)
    return tls is not None and getattr(tls, "reason", None) == _LEGACY_RENEGOTIATION_REASON


def is_login_failure(exc: BaseException) -> bool:
    """Whether ``exc`` failed a login step (a request marked :data:`LOGIN_STEP`)."""
    request = getattr(exc, "request", None)
    if request is None and isinstance(exc, httpx.RequestError):
        try:
            request = exc.request
        except RuntimeError:
            return False
    return isinstance(request, httpx.Request) and bool(request.extensions.get(LOGIN_STEP))


def check_retry_number(name: str, value: object, *, integer: bool = False) -> float:
    """A retry setting as a finite, non-negative number (an ``int`` where ``integer``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def describe_failure(exc: BaseException) -> str:
    """A short cause for log lines: ``HTTP 503`` or ``ReadTimeout: ...``, never a body."""
    if isinstance(exc, HttpResponseError):
        return f"HTTP {exc.status_code}"
    cause = exc.__cause__ if isinstance(exc, HttpTransportError) and exc.__cause__ else exc
    text = redact(str(cause).strip())
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures to retry, how long to wait, how many times. Shared by sync and async.

    ``max_retries`` counts the attempts *after* the first: ``0`` sends exactly one request.
    ``max_login_retries`` is the same for failures of login steps (see the module docstring);
    ``time_budget`` (seconds, ``None``: none) stops retrying once it would be exceeded.
    """

    max_retries: int = 8
    max_wait: float = 30.0
    min_wait: float = 0.1
    multiplier: float = 1.0
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    max_login_retries: int = 3
    time_budget: float | None = DEFAULT_TIME_BUDGET

    def __post_init__(self) -> None:
        for name in ("max_retries", "max_login_retries"):
            check_retry_number(name, getattr(self, name), integer=True)
        for name in ("max_wait", "min_wait", "multiplier", "retry_after_cap"):
            check_retry_number(name, getattr(self, name))
        if self.time_budget is not None:
            check_retry_number("time_budget", self.time_budget)

    # -- decisions (no I/O) ------------------------------------------------------------------
    def is_retryable(self, exc: BaseException, *, idempotent: bool) -> bool:
        """Whether ``exc`` is worth another attempt of a request that is (not) idempotent.

        A login step may always be replayed: the user's request was not sent, or was refused.
        """
        idempotent = idempotent or is_login_failure(exc)
        if isinstance(exc, HttpTransportError):
            cause = exc.__cause__
            # TLS failures (certificate, handshake, renegotiation) do not fix themselves.
            if cause is None or tls_error_in(cause) is not None:
                return False
            if isinstance(cause, _CONNECT_PHASE):
                return True
            return idempotent and isinstance(cause, _IN_FLIGHT)
        if isinstance(exc, HttpStatusError):
            if exc.status_code in NOT_ACTED_STATUSES:
                return True
            return idempotent and exc.status_code in TRANSIENT_STATUSES
        return False

    def backoff(self, attempt_number: int) -> float:
        """Full-jitter exponential wait before attempt ``attempt_number + 1``."""
        exponent = min(max(attempt_number - 1, 0), _MAX_EXPONENT)
        ceiling = min(self.max_wait, self.multiplier * 2.0**exponent)
        return min(self.max_wait, random.uniform(self.min_wait, max(self.min_wait, ceiling)))

    def wait_for(self, exc: BaseException | None, attempt_number: int) -> float:
        """The wait after a failure: ``Retry-After`` (capped) when the server sent one."""
        if isinstance(exc, HttpResponseError):
            retry_after = parse_retry_after(exc.response)
            if retry_after is not None:
                return min(retry_after, self.retry_after_cap)
        return self.backoff(attempt_number)

    # -- tenacity ----------------------------------------------------------------------------
    def _settings(
        self,
        *,
        idempotent: bool,
        label: str | Callable[[], str],
        on_retry: Callable[[], object] | None,
        started: float | None,
    ) -> dict[str, Any]:
        failures = {"login": 0, "request": 0}

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.wait_for(exc, state.attempt_number)

        def retry(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return exc is not None and self.is_retryable(exc, idempotent=idempotent)

        def budget(exc: BaseException | None) -> tuple[str, int]:
            if exc is not None and is_login_failure(exc):
                return "login", self.max_login_retries
            return "request", self.max_retries

        def elapsed(state: tenacity.RetryCallState) -> float:
            if started is not None:  # the first attempt ran before the loop (see the handler)
                return time.monotonic() - started
            return state.seconds_since_start or 0.0

        def stop(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            kind, allowed = budget(exc)
            failures[kind] += 1
            if failures[kind] > allowed:
                # Named as users set them: the handler's and the connection's max_conn_retries
                # is this policy's max_login_retries.
                setting = "max_conn_retries" if kind == "login" else "max_retries"
                note = f"gave up after {state.attempt_number} attempts ({setting}={allowed})"
            elif (
                self.time_budget is not None
                and elapsed(state) + state.upcoming_sleep > self.time_budget
            ):
                note = (
                    f"gave up after {state.attempt_number} attempts: the next one would start "
                    f"past the time budget of {self.time_budget:g} s"
                )
            else:
                return False
            if exc is not None:
                exc.add_note(note)
            return True

        def log(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            kind, allowed = budget(exc)
            if on_retry is not None:
                on_retry()
            logger.warning(
                "Retrying %s in %.2f s (%sattempt %d of %d failed): %s",
                label() if callable(label) else label,
                state.upcoming_sleep,
                "login " if kind == "login" else "",
                failures[kind],
                allowed + 1,
                describe_failure(exc) if exc else "unknown",
            )

        return {"stop": stop, "wait": wait, "retry": retry, "before_sleep": log, "reraise": True}

    def sync_attempts(
        self,
        *,
        idempotent: bool,
        label: str | Callable[[], str],
        on_retry: Callable[[], object] | None = None,
        started: float | None = None,
    ) -> tenacity.Retrying:
        """``for attempt in policy.sync_attempts(...): with attempt: ...``.

        ``label`` names the operation in log lines (method and redacted URL); ``on_retry`` is
        called before each wait (the handler counts its retries with it). ``started``: the
        ``time.monotonic()`` at which the operation's first attempt began, when that attempt ran
        before the loop (the handler's fast path: the loop's first attempt then re-raises its
        failure); the time budget counts from it.
        """
        settings = self._settings(
            idempotent=idempotent, label=label, on_retry=on_retry, started=started
        )
        return tenacity.Retrying(**settings)

    def async_attempts(
        self,
        *,
        idempotent: bool,
        label: str | Callable[[], str],
        on_retry: Callable[[], object] | None = None,
        started: float | None = None,
    ) -> tenacity.AsyncRetrying:
        """``async for attempt in policy.async_attempts(...): with attempt: ...``."""
        settings = self._settings(
            idempotent=idempotent, label=label, on_retry=on_retry, started=started
        )
        return tenacity.AsyncRetrying(**settings)

    def single_attempt(self) -> RetryPolicy:
        """This policy without retries: for a body that cannot be sent twice (``files=``, a
        generator), nor can a login replay the request that carries it."""
        return dataclasses.replace(self, max_retries=0, max_login_retries=0)
