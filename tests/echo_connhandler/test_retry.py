"""Retries: RetryPolicy decisions and waits (unit), then both handler paths over loopback."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl
import time
from typing import Any

import httpx
import pytest
import tenacity

from echo_connhandler import (
    ApiError,
    HttpConnProperties,
    HttpHandler,
    HttpStatusError,
    HttpTransportError,
    RetryPolicy,
    SessionAuth,
)
from echo_connhandler._auth import LoginFlow, derive_request
from echo_connhandler._retry import (
    DEFAULT_RETRY_AFTER_CAP,
    NOT_ACTED_STATUSES,
    TRANSIENT_STATUSES,
    parse_retry_after,
)

TRANSIENT = [408, 425, 429, 500, 502, 503, 504]
NOT_ACTED = [408, 425, 429, 503]
ACTED = [500, 502, 504]
PERMANENT = [400, 401, 403, 404, 409, 422]
NOW = 1_700_000_000.0


def response_with(status: int = 503, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "https://api.example.com/x")
    return httpx.Response(status, headers=headers, request=request)


def status_error(status: int, **headers: str) -> HttpStatusError:
    return HttpStatusError("failed", response=response_with(status, **headers))


def transport_error(cause: BaseException | None) -> HttpTransportError:
    error = HttpTransportError("failed")
    error.__cause__ = cause
    return error


def http_date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


# -- the status sets ------------------------------------------------------------------------------
def test_status_sets_match_the_docs() -> None:
    """The statuses of docs/retries.md, "What is retried"; those safe for any method a subset."""
    assert frozenset(TRANSIENT) == TRANSIENT_STATUSES
    assert frozenset(NOT_ACTED) == NOT_ACTED_STATUSES
    assert NOT_ACTED_STATUSES <= TRANSIENT_STATUSES


# -- parse_retry_after ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        (http_date(90), 90.0),
        (http_date(-30), 0.0),
        ("", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no time zone: not an HTTP date
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    """Delta-seconds and HTTP dates are understood; anything else is None."""
    headers = {"Retry-After": value} if value else {}
    assert parse_retry_after(response_with(429, **headers), now=NOW) == expected


def test_parse_retry_after_without_header() -> None:
    """No Retry-After header: None."""
    assert parse_retry_after(response_with(503)) is None


def test_parse_retry_after_uses_the_clock_by_default() -> None:
    """Without now=, an HTTP date is measured against the current time."""
    value = email.utils.formatdate(time.time() + 60, usegmt=True)
    wait = parse_retry_after(response_with(429, **{"Retry-After": value}))
    assert wait is not None
    assert 55 <= wait <= 60


# -- wait_for / backoff ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retry_after", "cap", "expected"),
    [("3", 300.0, 3.0), ("3", 2.0, 2.0), ("100000", DEFAULT_RETRY_AFTER_CAP, 300.0), ("0", 5, 0)],
)
def test_wait_for_honours_retry_after_seconds_with_cap(
    retry_after: str, cap: float, expected: float
) -> None:
    """Retry-After seconds replace the backoff, cut at retry_after_cap."""
    policy = RetryPolicy(min_wait=10, max_wait=20, retry_after_cap=cap)
    error = status_error(429, **{"Retry-After": retry_after})
    assert policy.wait_for(error, 1) == expected


def test_wait_for_honours_retry_after_http_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Retry-After HTTP date becomes the seconds until then, capped."""
    monkeypatch.setattr(time, "time", lambda: NOW)
    error = status_error(503, **{"Retry-After": http_date(42)})
    assert RetryPolicy(min_wait=0, max_wait=0).wait_for(error, 1) == 42
    assert RetryPolicy(retry_after_cap=10).wait_for(error, 1) == 10


@pytest.mark.parametrize(
    "error",
    [
        status_error(503),
        status_error(503, **{"Retry-After": "garbage"}),
        transport_error(httpx.ConnectError("refused")),
        None,
    ],
)
def test_wait_for_falls_back_to_backoff(error: BaseException | None) -> None:
    """Without a usable Retry-After, the wait is the jittered backoff."""
    policy = RetryPolicy(min_wait=1, max_wait=1)
    assert policy.wait_for(error, 3) == 1


@pytest.mark.parametrize("attempt", range(1, 11))
@pytest.mark.parametrize(
    ("min_wait", "max_wait", "multiplier"), [(0.1, 30, 1), (0, 5, 0.5), (1, 60, 2), (0.5, 4, 3)]
)
def test_backoff_stays_within_bounds(
    attempt: int, min_wait: float, max_wait: float, multiplier: float
) -> None:
    """Full jitter: uniform between min_wait and min(max_wait, multiplier * 2**(n-1))."""
    policy = RetryPolicy(min_wait=min_wait, max_wait=max_wait, multiplier=multiplier)
    ceiling = max(min_wait, min(max_wait, multiplier * 2 ** (attempt - 1)))
    waits = [policy.backoff(attempt) for _ in range(300)]
    assert all(min_wait <= w <= ceiling for w in waits)
    if ceiling - min_wait > 0.5:
        assert max(waits) - min(waits) > (ceiling - min_wait) / 4  # it really jitters


def test_backoff_never_exceeds_max_wait() -> None:
    """Even with min_wait above max_wait, the wait is at most max_wait."""
    policy = RetryPolicy(min_wait=5, max_wait=2)
    assert {policy.backoff(n) for n in range(1, 6)} == {2}


def test_backoff_zero_waits() -> None:
    """retry_wait_time=0 and a zero minimum make retries instant."""
    policy = RetryPolicy(min_wait=0, max_wait=0)
    assert {policy.backoff(n) for n in range(1, 20)} == {0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"max_wait": -1},
        {"min_wait": -0.1},
        {"multiplier": "2"},
        {"retry_after_cap": -1},
    ],
)
def test_policy_validation(kwargs: dict[str, Any]) -> None:
    """Negative or non-numeric settings are a ValueError naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)


# -- is_retryable ---------------------------------------------------------------------------------
CONNECT_PHASE = [
    httpx.ConnectError("refused"),
    httpx.ConnectTimeout("slow connect"),
    httpx.PoolTimeout("pool full"),
]
IN_FLIGHT = [
    httpx.ReadTimeout("slow read"),
    httpx.WriteTimeout("slow write"),
    httpx.ReadError("reset by peer"),
    httpx.WriteError("broken pipe"),
    httpx.RemoteProtocolError("peer closed connection"),
]
NEVER = [
    httpx.LocalProtocolError("bad request line"),
    httpx.UnsupportedProtocol("gopher"),
    httpx.ProxyError("proxy said no"),
    None,
]


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("cause", CONNECT_PHASE, ids=lambda e: type(e).__name__)
def test_connect_phase_errors_are_always_retried(cause: Exception, idempotent: bool) -> None:
    """The server cannot have acted: any method is retried."""
    assert RetryPolicy().is_retryable(transport_error(cause), idempotent=idempotent)


@pytest.mark.parametrize("cause", IN_FLIGHT, ids=lambda e: type(e).__name__)
def test_in_flight_errors_are_retried_only_when_idempotent(cause: Exception) -> None:
    """Read/write failures may follow a request that was acted on."""
    policy = RetryPolicy()
    assert policy.is_retryable(transport_error(cause), idempotent=True)
    assert not policy.is_retryable(transport_error(cause), idempotent=False)


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("cause", NEVER, ids=lambda e: type(e).__name__)
def test_other_transport_errors_are_not_retried(cause: Exception | None, idempotent: bool) -> None:
    """Local mistakes (and a transport error without a cause) do not fix themselves."""
    assert not RetryPolicy().is_retryable(transport_error(cause), idempotent=idempotent)


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("chained", ["cause", "context"])
def test_tls_verification_failures_are_not_retried(idempotent: bool, chained: str) -> None:
    """A certificate failure is a ConnectError, yet never retried."""
    cert_error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    connect_error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    if chained == "cause":
        connect_error.__cause__ = cert_error
    elif chained == "context":
        connect_error.__context__ = cert_error
    assert not RetryPolicy().is_retryable(transport_error(connect_error), idempotent=idempotent)


@pytest.mark.parametrize("idempotent", [True, False])
def test_tls_handshake_failures_are_not_retried(idempotent: bool) -> None:
    """A handshake failure (legacy renegotiation refused) will not fix itself: no retry."""
    handshake = ssl.SSLError(1, "[SSL: UNSAFE_LEGACY_RENEGOTIATION_DISABLED] unsafe legacy")
    connect_error = httpx.ConnectError("handshake failed")
    connect_error.__cause__ = handshake
    assert not RetryPolicy().is_retryable(transport_error(connect_error), idempotent=idempotent)


def test_legacy_renegotiation_failure_names_the_option() -> None:
    """The error of a refused legacy renegotiation tells which option fixes it; one attempt."""
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        error = httpx.ConnectError("handshake failed", request=request)
        handshake = ssl.SSLError(1, "[SSL: UNSAFE_LEGACY_RENEGOTIATION_DISABLED] unsafe")
        handshake.reason = "UNSAFE_LEGACY_RENEGOTIATION_DISABLED"  # what OpenSSL sets
        error.__cause__ = handshake
        raise error

    class Refused(HttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(refuse)}

    handler = Refused(HttpConnProperties(host="https://integra.ons.test"), retry_wait_time=0)
    with pytest.raises(HttpTransportError, match="legacy_tls_renegotiation") as info:
        handler.get("api")
    assert info.value.legacy_tls_renegotiation is True
    handler.close()
    assert attempts == 1


def test_tls_failure_deep_in_the_chain_is_found() -> None:
    """The certificate error is found through httpcore's wrapping."""
    cert_error = ssl.SSLCertVerificationError(1, "verify failed")
    inner = httpx.ConnectError("wrapped")
    inner.__cause__ = cert_error
    outer = httpx.ConnectError("outer")
    outer.__cause__ = inner
    assert not RetryPolicy().is_retryable(transport_error(outer), idempotent=True)


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("status", NOT_ACTED)
def test_not_acted_statuses_are_always_retried(status: int, idempotent: bool) -> None:
    """408/425/429/503: the server did not act, any method is retried."""
    assert RetryPolicy().is_retryable(status_error(status), idempotent=idempotent)


@pytest.mark.parametrize("status", ACTED)
def test_server_errors_are_retried_only_when_idempotent(status: int) -> None:
    """500/502/504 may follow a request that was acted on."""
    policy = RetryPolicy()
    assert policy.is_retryable(status_error(status), idempotent=True)
    assert not policy.is_retryable(status_error(status), idempotent=False)


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("status", [*PERMANENT, 200, 301, 501])
def test_other_statuses_are_not_retried(status: int, idempotent: bool) -> None:
    """Client errors and the rest are raised at once."""
    assert not RetryPolicy().is_retryable(status_error(status), idempotent=idempotent)


@pytest.mark.parametrize(
    "error",
    [
        ApiError("service error", response=response_with(503)),
        ValueError("bug"),
        RuntimeError("bug"),
        tenacity.TryAgain(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_exceptions_are_not_retried(error: BaseException) -> None:
    """Only transport and status errors are retried (an ApiError is not, even with a 503)."""
    assert not RetryPolicy().is_retryable(error, idempotent=True)


# -- both handler paths over loopback -------------------------------------------------------------
# Each scenario is a pair: ``test_..._sync`` (plain function, sync API, no event loop) and
# ``test_..._async`` (coroutine, ``async_*`` API). Both start from an unconnected handler
# (``make_sync_handler`` / ``make_async_handler``: ``skip_connect=True``) unless stated.
def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("Retrying ")]


def check_attempts(server: Any, key: str, response: httpx.Response, attempts: int) -> None:
    """The response came from attempt ``attempts``, which was also the server's last request."""
    assert response.json()["attempt"] == attempts
    assert server.hits(key) == attempts


def check_raised_once(
    server: Any, key: str, info: pytest.ExceptionInfo[HttpStatusError], status: int
) -> None:
    assert info.value.status_code == status
    assert server.hits(key) == 1


@pytest.mark.parametrize("status", TRANSIENT)
def test_get_retries_transient_statuses_sync(
    make_sync_handler: Any, server: Any, key: str, status: int
) -> None:
    """A GET answered twice with a transient status succeeds on the third attempt (sync)."""
    handler = make_sync_handler(max_retries=3)
    response = handler.request("GET", f"flaky/{key}/2?status={status}")
    check_attempts(server, key, response, 3)


@pytest.mark.parametrize("status", TRANSIENT)
async def test_get_retries_transient_statuses_async(
    make_async_handler: Any, server: Any, key: str, status: int
) -> None:
    """A GET answered twice with a transient status succeeds on the third attempt (async)."""
    handler = make_async_handler(max_retries=3)
    response = await handler.async_request("GET", f"flaky/{key}/2?status={status}")
    check_attempts(server, key, response, 3)


@pytest.mark.parametrize("status", PERMANENT)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_permanent_statuses_raise_at_once_sync(
    make_sync_handler: Any, server: Any, key: str, status: int, method: str
) -> None:
    """A 4xx that is not transient raises HttpStatusError after one request (sync)."""
    handler = make_sync_handler(max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        handler.request(method, f"flaky/{key}/1?status={status}")
    check_raised_once(server, key, info, status)


@pytest.mark.parametrize("status", PERMANENT)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_permanent_statuses_raise_at_once_async(
    make_async_handler: Any, server: Any, key: str, status: int, method: str
) -> None:
    """A 4xx that is not transient raises HttpStatusError after one request (async)."""
    handler = make_async_handler(max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_request(method, f"flaky/{key}/1?status={status}")
    check_raised_once(server, key, info, status)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("status", ACTED)
def test_non_idempotent_not_retried_on_server_errors_sync(
    make_sync_handler: Any, server: Any, key: str, status: int, method: str
) -> None:
    """POST/PATCH on 500/502/504 may have been acted on: one request, then the error (sync)."""
    handler = make_sync_handler(max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        handler.request(method, f"flaky/{key}/1?status={status}")
    check_raised_once(server, key, info, status)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("status", ACTED)
async def test_non_idempotent_not_retried_on_server_errors_async(
    make_async_handler: Any, server: Any, key: str, status: int, method: str
) -> None:
    """POST/PATCH on 500/502/504 may have been acted on: one request, then the error (async)."""
    handler = make_async_handler(max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_request(method, f"flaky/{key}/1?status={status}")
    check_raised_once(server, key, info, status)


def check_replayed_body(server: Any, key: str, response: httpx.Response) -> None:
    assert response.json()["json"] == {"a": 1}
    assert server.hits(key) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("status", NOT_ACTED)
def test_non_idempotent_retried_when_not_acted_on_sync(
    make_sync_handler: Any, server: Any, key: str, status: int, method: str
) -> None:
    """POST/PATCH on 408/425/429/503 are replayed: the server did not act (sync)."""
    handler = make_sync_handler(max_retries=2)
    response = handler.request(method, f"flaky/{key}/1?status={status}", json={"a": 1})
    check_replayed_body(server, key, response)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("status", NOT_ACTED)
async def test_non_idempotent_retried_when_not_acted_on_async(
    make_async_handler: Any, server: Any, key: str, status: int, method: str
) -> None:
    """POST/PATCH on 408/425/429/503 are replayed: the server did not act (async)."""
    handler = make_async_handler(max_retries=2)
    endpoint = f"flaky/{key}/1?status={status}"
    response = await handler.async_request(method, endpoint, json={"a": 1})
    check_replayed_body(server, key, response)


@pytest.mark.parametrize("status", ACTED)
def test_idempotent_true_lifts_the_post_restriction_sync(
    make_sync_handler: Any, server: Any, key: str, status: int
) -> None:
    """idempotent=True: a read-only POST is retried like a GET (sync)."""
    handler = make_sync_handler(max_retries=2)
    response = handler.request(
        "POST", f"flaky/{key}/1?status={status}", idempotent=True, json={"q": 1}
    )
    check_attempts(server, key, response, 2)


@pytest.mark.parametrize("status", ACTED)
async def test_idempotent_true_lifts_the_post_restriction_async(
    make_async_handler: Any, server: Any, key: str, status: int
) -> None:
    """idempotent=True: a read-only POST is retried like a GET (async)."""
    handler = make_async_handler(max_retries=2)
    response = await handler.async_request(
        "POST", f"flaky/{key}/1?status={status}", idempotent=True, json={"q": 1}
    )
    check_attempts(server, key, response, 2)


@pytest.mark.parametrize("verb", ["post", "patch"])
def test_verbs_pass_idempotent_through_sync(
    make_sync_handler: Any, server: Any, key: str, verb: str
) -> None:
    """post/patch accept idempotent=True (sync)."""
    handler = make_sync_handler(max_retries=2)
    response = getattr(handler, verb)(f"flaky/{key}/1?status=502", idempotent=True)
    check_attempts(server, key, response, 2)


@pytest.mark.parametrize("verb", ["post", "patch"])
async def test_verbs_pass_idempotent_through_async(
    make_async_handler: Any, server: Any, key: str, verb: str
) -> None:
    """async_post/async_patch accept idempotent=True (async)."""
    handler = make_async_handler(max_retries=2)
    response = await getattr(handler, f"async_{verb}")(f"flaky/{key}/1?status=502", idempotent=True)
    check_attempts(server, key, response, 2)


def test_idempotent_false_stops_retrying_a_get_sync(
    make_sync_handler: Any, server: Any, key: str
) -> None:
    """idempotent=False: a GET with side effects is not replayed after a 500 (sync)."""
    handler = make_sync_handler(max_retries=2)
    with pytest.raises(HttpStatusError):
        handler.request("GET", f"flaky/{key}/1?status=500", idempotent=False)
    assert server.hits(key) == 1


async def test_idempotent_false_stops_retrying_a_get_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    """idempotent=False: a GET with side effects is not replayed after a 500 (async)."""
    handler = make_async_handler(max_retries=2)
    with pytest.raises(HttpStatusError):
        await handler.async_request("GET", f"flaky/{key}/1?status=500", idempotent=False)
    assert server.hits(key) == 1


def check_replayed_method(server: Any, key: str, response: httpx.Response, method: str) -> None:
    assert response.json()["method"] == method
    assert server.hits(key) == 2


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_dropped_connection_retried_for_idempotent_methods_sync(
    make_sync_handler: Any, server: Any, key: str, method: str
) -> None:
    """A connection dropped mid-response is replayed for idempotent methods (sync)."""
    handler = make_sync_handler(max_retries=2)
    response = handler.request(method, f"drop/{key}/1")
    check_replayed_method(server, key, response, method)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_dropped_connection_retried_for_idempotent_methods_async(
    make_async_handler: Any, server: Any, key: str, method: str
) -> None:
    """A connection dropped mid-response is replayed for idempotent methods (async)."""
    handler = make_async_handler(max_retries=2)
    response = await handler.async_request(method, f"drop/{key}/1")
    check_replayed_method(server, key, response, method)


def check_dropped_once(server: Any, key: str, info: pytest.ExceptionInfo[Exception]) -> None:
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert server.hits(key) == 1


def check_dropped_then_replayed(server: Any, key: str, response: httpx.Response) -> None:
    assert response.status_code == 200
    assert server.hits(key) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_dropped_connection_not_retried_for_post_sync(
    make_sync_handler: Any, server: Any, key: str, method: str
) -> None:
    """A POST whose connection dropped mid-response may have been acted on (sync)."""
    handler = make_sync_handler(max_retries=5)
    with pytest.raises(HttpTransportError) as info:
        handler.request(method, f"drop/{key}/1")
    check_dropped_once(server, key, info)
    response = handler.request(method, f"drop/{key}/1", idempotent=True)
    check_dropped_then_replayed(server, key, response)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_dropped_connection_not_retried_for_post_async(
    make_async_handler: Any, server: Any, key: str, method: str
) -> None:
    """A POST whose connection dropped mid-response may have been acted on (async)."""
    handler = make_async_handler(max_retries=5)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_request(method, f"drop/{key}/1")
    check_dropped_once(server, key, info)
    response = await handler.async_request(method, f"drop/{key}/1", idempotent=True)
    check_dropped_then_replayed(server, key, response)


def check_read_timeout(
    server: Any, key: str, info: pytest.ExceptionInfo[Exception], method: str
) -> None:
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert server.hits(key) == (2 if method == "GET" else 1)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_read_timeout_retried_only_when_idempotent_sync(
    make_sync_handler: Any, server: Any, key: str, method: str
) -> None:
    """A read timeout is replayed for a GET, not for a POST (sync)."""
    handler = make_sync_handler(max_retries=1, request_timeout=0.1)
    with pytest.raises(HttpTransportError) as info:
        handler.request(method, f"sleep/0.4?k={key}")
    check_read_timeout(server, key, info, method)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_read_timeout_retried_only_when_idempotent_async(
    make_async_handler: Any, server: Any, key: str, method: str
) -> None:
    """A read timeout is replayed for a GET, not for a POST (async)."""
    handler = make_async_handler(max_retries=1, request_timeout=0.1)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_request(method, f"sleep/0.4?k={key}")
    check_read_timeout(server, key, info, method)


def check_connect_retries(
    caplog: pytest.LogCaptureFixture, info: pytest.ExceptionInfo[Exception]
) -> None:
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(retry_records(caplog)) == 2
    assert all("ConnectError" in r.getMessage() for r in retry_records(caplog))


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
def test_connection_refused_is_retried_for_every_method_sync(
    make_sync_handler: Any, closed_port: int, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    """Connect errors are replayed even for POST; exhaustion re-raises the error (sync)."""
    handler = make_sync_handler(f"http://127.0.0.1:{closed_port}", max_retries=2)
    with (
        caplog.at_level(logging.WARNING, "echo_connhandler"),
        pytest.raises(HttpTransportError) as info,
    ):
        handler.request(method, "x")
    check_connect_retries(caplog, info)


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_connection_refused_is_retried_for_every_method_async(
    make_async_handler: Any, closed_port: int, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    """Connect errors are replayed even for POST; exhaustion re-raises the error (async)."""
    handler = make_async_handler(f"http://127.0.0.1:{closed_port}", max_retries=2)
    with (
        caplog.at_level(logging.WARNING, "echo_connhandler"),
        pytest.raises(HttpTransportError) as info,
    ):
        await handler.async_request(method, "x")
    check_connect_retries(caplog, info)


ONE_REQUEST_ENDPOINTS = ["flaky/{key}/5?status=503", "drop/{key}/5"]


@pytest.mark.parametrize("endpoint", ONE_REQUEST_ENDPOINTS)
def test_max_retries_zero_sends_exactly_one_request_sync(
    make_sync_handler: Any, server: Any, key: str, endpoint: str
) -> None:
    """max_retries=0: one request, then the typed error (sync)."""
    handler = make_sync_handler(max_retries=0)
    with pytest.raises((HttpStatusError, HttpTransportError)):
        handler.request("GET", endpoint.format(key=key))
    assert server.hits(key) == 1


@pytest.mark.parametrize("endpoint", ONE_REQUEST_ENDPOINTS)
async def test_max_retries_zero_sends_exactly_one_request_async(
    make_async_handler: Any, server: Any, key: str, endpoint: str
) -> None:
    """max_retries=0: one request, then the typed error (async)."""
    handler = make_async_handler(max_retries=0)
    with pytest.raises((HttpStatusError, HttpTransportError)):
        await handler.async_request("GET", endpoint.format(key=key))
    assert server.hits(key) == 1


def check_last_status_error(
    server: Any, key: str, info: pytest.ExceptionInfo[HttpStatusError], max_retries: int
) -> None:
    assert not isinstance(info.value, tenacity.RetryError)
    assert info.value.status_code == 503
    assert info.value.response.json() == {"attempt": max_retries + 1}
    assert server.hits(key) == max_retries + 1


@pytest.mark.parametrize("max_retries", [1, 3])
def test_exhaustion_reraises_the_last_status_error_sync(
    make_sync_handler: Any, server: Any, key: str, max_retries: int
) -> None:
    """After max_retries + 1 attempts the last HttpStatusError is raised (sync)."""
    handler = make_sync_handler(max_retries=max_retries)
    with pytest.raises(HttpStatusError) as info:
        handler.request("GET", f"flaky/{key}/99?status=503")
    check_last_status_error(server, key, info, max_retries)


@pytest.mark.parametrize("max_retries", [1, 3])
async def test_exhaustion_reraises_the_last_status_error_async(
    make_async_handler: Any, server: Any, key: str, max_retries: int
) -> None:
    """After max_retries + 1 attempts the last HttpStatusError is raised (async)."""
    handler = make_async_handler(max_retries=max_retries)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_request("GET", f"flaky/{key}/99?status=503")
    check_last_status_error(server, key, info, max_retries)


def check_last_transport_error(
    server: Any, key: str, info: pytest.ExceptionInfo[Exception]
) -> None:
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert server.hits(key) == 3


def test_exhaustion_reraises_the_last_transport_error_sync(
    make_sync_handler: Any, server: Any, key: str
) -> None:
    """A transport failure on every attempt ends in HttpTransportError (sync)."""
    handler = make_sync_handler(max_retries=2)
    with pytest.raises(HttpTransportError) as info:
        handler.request("GET", f"drop/{key}/99")
    check_last_transport_error(server, key, info)


async def test_exhaustion_reraises_the_last_transport_error_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    """A transport failure on every attempt ends in HttpTransportError (async)."""
    handler = make_async_handler(max_retries=2)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_request("GET", f"drop/{key}/99")
    check_last_transport_error(server, key, info)


# Ids of their own: the HTTP date changes every second, and pytest-xdist's workers must collect
# the same test ids.
RETRY_AFTER = pytest.mark.parametrize(
    "retry_after",
    ["100", email.utils.formatdate(time.time() + 3600, usegmt=True)],
    ids=["seconds", "http-date"],
)


def check_capped_wait(
    caplog: pytest.LogCaptureFixture, response: httpx.Response, started: float
) -> None:
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    [record] = retry_records(caplog)
    assert "in 0.20 s" in record.getMessage()


@RETRY_AFTER
def test_retry_after_is_honoured_and_capped_sync(
    make_sync_handler: Any, key: str, caplog: pytest.LogCaptureFixture, retry_after: str
) -> None:
    """A 429 with Retry-After (seconds or HTTP date) waits that long, cut at the cap (sync)."""
    handler = make_sync_handler(max_retries=1, retry_after_cap=0.2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "echo_connhandler"):
        response = handler.request(
            "POST", f"flaky/{key}/1?status=429", params={"retry_after": retry_after}
        )
    check_capped_wait(caplog, response, started)


@RETRY_AFTER
async def test_retry_after_is_honoured_and_capped_async(
    make_async_handler: Any, key: str, caplog: pytest.LogCaptureFixture, retry_after: str
) -> None:
    """A 429 with Retry-After (seconds or HTTP date) waits that long, cut at the cap (async)."""
    handler = make_async_handler(max_retries=1, retry_after_cap=0.2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "echo_connhandler"):
        response = await handler.async_request(
            "POST", f"flaky/{key}/1?status=429", params={"retry_after": retry_after}
        )
    check_capped_wait(caplog, response, started)


def secrets_for(key: str) -> tuple[str, str]:
    """A query secret and a header secret unique to the test."""
    return f"query-secret-{key}", f"header-secret-{key}"


def check_retry_log(
    caplog: pytest.LogCaptureFixture, server: Any, key: str, secrets: tuple[str, str]
) -> None:
    records = retry_records(caplog)
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert {r.name for r in records} == {"echo_connhandler.retry"}
    first, second = (r.getMessage() for r in records)
    url = f"{server.url}/flaky/{key}/2?status=503&api_key=***"
    assert first == f"Retrying GET {url} in 0.00 s (attempt 1 of 4 failed): HTTP 503"
    assert second == f"Retrying GET {url} in 0.00 s (attempt 2 of 4 failed): HTTP 503"
    query_secret, header_secret = secrets
    assert query_secret not in caplog.text
    assert header_secret not in caplog.text


def test_retries_are_logged_without_secrets_sync(
    make_sync_handler: Any, server: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry is a WARNING with method, redacted URL, cause and wait; no secret (sync)."""
    query_secret, header_secret = secrets = secrets_for(key)
    handler = make_sync_handler(max_retries=3, headers={"X-Auth-Token": header_secret})
    with caplog.at_level(logging.DEBUG, "echo_connhandler"):
        handler.request("GET", f"flaky/{key}/2?status=503&api_key={query_secret}")
    check_retry_log(caplog, server, key, secrets)


async def test_retries_are_logged_without_secrets_async(
    make_async_handler: Any, server: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry is a WARNING with method, redacted URL, cause and wait; no secret (async)."""
    query_secret, header_secret = secrets = secrets_for(key)
    handler = make_async_handler(max_retries=3, headers={"X-Auth-Token": header_secret})
    with caplog.at_level(logging.DEBUG, "echo_connhandler"):
        await handler.async_request("GET", f"flaky/{key}/2?status=503&api_key={query_secret}")
    check_retry_log(caplog, server, key, secrets)


def check_transport_retry_log(caplog: pytest.LogCaptureFixture) -> None:
    [record] = retry_records(caplog)
    assert "(attempt 1 of 2 failed): RemoteProtocolError: " in record.getMessage()


def test_transport_retry_log_names_the_cause_sync(
    make_sync_handler: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A retried transport failure is logged with the httpx exception's name (sync)."""
    handler = make_sync_handler(max_retries=1)
    with caplog.at_level(logging.WARNING, "echo_connhandler"):
        handler.request("GET", f"drop/{key}/1")
    check_transport_retry_log(caplog)


async def test_transport_retry_log_names_the_cause_async(
    make_async_handler: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A retried transport failure is logged with the httpx exception's name (async)."""
    handler = make_async_handler(max_retries=1)
    with caplog.at_level(logging.WARNING, "echo_connhandler"):
        await handler.async_request("GET", f"drop/{key}/1")
    check_transport_retry_log(caplog)


FAILING_ENDPOINTS = pytest.mark.parametrize(
    "endpoint", ["drop/{key}/1", "flaky/{key}/1?status=503"]
)
Client = httpx.Client | httpx.AsyncClient | None


def check_fresh_client_kept_cookies(
    before: Client, after: Client, response: httpx.Response
) -> None:
    assert after is not before
    assert before is not None
    assert before.is_closed
    assert after is not None
    assert after.cookies["sid"] == "keep-me"
    assert "sid=keep-me" in response.json()["headers"]["cookie"]


@FAILING_ENDPOINTS
def test_retry_uses_a_fresh_client_and_keeps_cookies_sync(
    make_handler: Any, key: str, endpoint: str
) -> None:
    """After a failure the next attempt runs on a new client with the cookies (sync)."""
    handler = make_handler(max_retries=2)  # connected by the constructor
    handler.request("GET", "cookie/sid/keep-me")
    before = handler.connection
    response = handler.request("GET", endpoint.format(key=key))
    check_fresh_client_kept_cookies(before, handler.connection, response)


@FAILING_ENDPOINTS
async def test_retry_uses_a_fresh_client_and_keeps_cookies_async(
    make_async_handler: Any, key: str, endpoint: str
) -> None:
    """After a failure the next attempt runs on a new client with the cookies (async)."""
    handler = make_async_handler(max_retries=2)
    await handler.async_reconnect()  # connected, as the async path connects
    await handler.async_request("GET", "cookie/sid/keep-me")
    before = handler.async_connection
    response = await handler.async_request("GET", endpoint.format(key=key))
    check_fresh_client_kept_cookies(before, handler.async_connection, response)


def test_success_keeps_the_client_sync(make_handler: Any) -> None:
    """Without failures the same client (and connection pool) serves every request (sync)."""
    handler = make_handler()  # connected by the constructor
    handler.request("GET", "x")
    before = handler.connection
    for _ in range(3):
        handler.request("GET", "x")
    assert handler.connection is before


async def test_success_keeps_the_client_async(make_async_handler: Any) -> None:
    """Without failures the same client (and connection pool) serves every request (async)."""
    handler = make_async_handler()
    await handler.async_reconnect()  # connected, as the async path connects
    await handler.async_request("GET", "x")
    before = handler.async_connection
    for _ in range(3):
        await handler.async_request("GET", "x")
    assert handler.async_connection is before


class FlakyLoginAuth(SessionAuth):
    """Logs in at a URL; a non-200 answer is a (retryable) HttpStatusError."""

    def __init__(self, login_url: str) -> None:
        super().__init__()
        self.login_url = login_url
        self.token: str | None = None

    def needs_login(self) -> bool:
        return self.token is None

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        response = yield derive_request(template, "POST", self.login_url)
        if response.status_code != 200:
            raise HttpStatusError.from_response(response, "login failed")
        self.token = f"token-{response.json()['attempt']}"

    def apply(self, request: httpx.Request) -> None:
        request.headers["X-Session"] = self.token or ""

    def invalidate(self) -> None:
        self.token = None


def flaky_login_handler(key: str, failures: int) -> type[HttpHandler]:
    class Handler(HttpHandler):
        def _build_auth(self) -> httpx.Auth | None:
            return FlakyLoginAuth(f"{self.props.host}/flaky/login-{key}/{failures}")

    return Handler


CONNECT_RETRIES = pytest.mark.parametrize(
    ("failures", "max_conn_retries"), [(0, 0), (2, 2), (3, 5)]
)


def check_logged_in_after(server: Any, key: str, failures: int, response: httpx.Response) -> None:
    assert server.hits(f"login-{key}") == failures + 1
    assert response.json()["headers"]["x-session"] == f"token-{failures + 1}"


@CONNECT_RETRIES
def test_connect_step_retries_up_to_max_conn_retries_sync(
    make_sync_handler: Any, server: Any, key: str, failures: int, max_conn_retries: int
) -> None:
    """A login answered 503 is retried max_conn_retries times; the token is then used."""
    handler = make_sync_handler(
        handler_cls=flaky_login_handler(key, failures), max_conn_retries=max_conn_retries
    )
    handler.reconnect()
    assert server.hits(f"login-{key}") == failures + 1
    check_logged_in_after(server, key, failures, handler.request("GET", "x"))


@CONNECT_RETRIES
async def test_connect_step_retries_up_to_max_conn_retries_async(
    make_async_handler: Any, server: Any, key: str, failures: int, max_conn_retries: int
) -> None:
    """A login answered 503 is retried max_conn_retries times; the token is then used."""
    handler = make_async_handler(
        handler_cls=flaky_login_handler(key, failures), max_conn_retries=max_conn_retries
    )
    await handler.async_reconnect()
    assert server.hits(f"login-{key}") == failures + 1
    check_logged_in_after(server, key, failures, await handler.async_request("GET", "x"))


def test_connect_step_gives_up_after_max_conn_retries_sync(
    make_sync_handler: Any, server: Any, key: str
) -> None:
    """More login failures than max_conn_retries: the last HttpStatusError is raised (sync)."""
    handler = make_sync_handler(handler_cls=flaky_login_handler(key, 5), max_conn_retries=1)
    with pytest.raises(HttpStatusError, match="login failed"):
        handler.reconnect()
    assert server.hits(f"login-{key}") == 2


async def test_connect_step_gives_up_after_max_conn_retries_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    """More login failures than max_conn_retries: the last HttpStatusError is raised (async)."""
    handler = make_async_handler(handler_cls=flaky_login_handler(key, 5), max_conn_retries=1)
    with pytest.raises(HttpStatusError, match="login failed"):
        await handler.async_reconnect()
    assert server.hits(f"login-{key}") == 2


def check_one_login(server: Any, key: str, response: httpx.Response) -> None:
    assert response.json()["headers"]["x-session"] == "token-1"
    assert server.hits(f"login-{key}") == 1


def test_request_retry_does_not_log_in_again_sync(
    make_sync_handler: Any, server: Any, key: str
) -> None:
    """A transient failure swaps the client but keeps the session: no second login (sync)."""
    handler = make_sync_handler(handler_cls=flaky_login_handler(key, 0), max_retries=2)
    check_one_login(server, key, handler.request("GET", f"drop/{key}/1"))


async def test_request_retry_does_not_log_in_again_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    """A transient failure swaps the client but keeps the session: no second login (async)."""
    handler = make_async_handler(handler_cls=flaky_login_handler(key, 0), max_retries=2)
    check_one_login(server, key, await handler.async_request("GET", f"drop/{key}/1"))


async def test_concurrent_requests_survive_each_others_retries(
    make_async_handler: Any, server: Any, key: str
) -> None:
    """Coroutines failing and retrying at once never see a client closed under them."""
    handler = make_async_handler(max_retries=3)
    endpoints = [f"drop/{key}-{i}/1" if i % 2 else f"x/{key}-{i}" for i in range(40)]
    responses = await asyncio.gather(*(handler.async_get(e) for e in endpoints))
    assert all(r.status_code == 200 for r in responses)
    assert server.hits(key) == 40 + 20


async def test_simultaneous_failures_swap_the_client_once(
    make_async_handler: Any, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """100 coroutines failing on one client cause one fresh client, not one per coroutine."""
    built: list[httpx.AsyncClient] = []
    original = HttpHandler._new_async_client

    def counting(self: HttpHandler, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
        built.append(original(self, cookies))
        return built[-1]

    monkeypatch.setattr(HttpHandler, "_new_async_client", counting)
    handler = make_async_handler(max_retries=2)
    responses = await asyncio.gather(
        *(handler.async_get(f"flaky/{key}-{i}/1?status=503") for i in range(100))
    )
    assert {r.json()["attempt"] for r in responses} == {2}
    assert len(built) == 2
    assert built[0].is_closed
    assert handler.async_connection is built[1]


def test_sync_threads_survive_each_others_retries(make_handler: Any, server: Any, key: str) -> None:
    """Threads failing and retrying on one handler never see a client closed under them."""
    from concurrent.futures import ThreadPoolExecutor

    handler = make_handler(max_retries=3)
    endpoints = [f"drop/{key}-{i}/1" if i % 2 else f"x/{key}-{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(handler.get, endpoints))
    assert all(r.status_code == 200 for r in responses)
    assert server.hits(key) == 40 + 20
