"""The exception tree: classes, attributes, messages with a short redacted excerpt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from echo_connhandler import (
    ApiError,
    AuthenticationError,
    DataConsistencyError,
    EchoHttpError,
    HttpResponseError,
    HttpStatusError,
    HttpTransportError,
    ProfileSelectionError,
    UnexpectedContentError,
    WafBlockedError,
    register_secret,
)
from echo_connhandler._exceptions import EXCERPT_CHARS, body_excerpt


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (HttpTransportError, (EchoHttpError,)),
        (HttpResponseError, (EchoHttpError, RuntimeError)),
        (HttpStatusError, (HttpResponseError, RuntimeError)),
        (ApiError, (HttpResponseError, RuntimeError)),
        (UnexpectedContentError, (HttpResponseError, RuntimeError)),
        (WafBlockedError, (UnexpectedContentError, HttpResponseError)),
        (AuthenticationError, (HttpResponseError, RuntimeError)),
        (ProfileSelectionError, (EchoHttpError, ValueError)),
        (DataConsistencyError, (EchoHttpError,)),
        (EchoHttpError, (Exception,)),
    ],
)
def test_exception_tree(cls: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    """Each class sits where the tree in _exceptions.py draws it."""
    assert all(issubclass(cls, base) for base in bases)


def test_transport_error_is_not_a_runtime_error() -> None:
    """No response arrived: a transport error is not an HttpResponseError."""
    assert not issubclass(HttpTransportError, RuntimeError)
    assert not issubclass(HttpTransportError, HttpResponseError)


def make_response(
    status: int = 503, body: str = '{"error": "busy"}', url: str = "https://api.example.com/x"
) -> httpx.Response:
    request = httpx.Request("POST", url)
    return httpx.Response(status, text=body, request=request)


def test_from_response_carries_status_request_response() -> None:
    """from_response builds the standard message and keeps status, request and response."""
    response = make_response(503)
    error = HttpStatusError.from_response(response, "expected status 200")
    assert isinstance(error, HttpStatusError)
    assert error.status_code == 503
    assert error.response is response
    assert error.request is response.request
    assert str(error) == (
        'POST https://api.example.com/x -> HTTP 503: expected status 200 | body: {"error": "busy"}'
    )


@pytest.mark.parametrize("cls", [HttpStatusError, ApiError, UnexpectedContentError])
def test_from_response_returns_the_subclass(cls: type[HttpResponseError]) -> None:
    """from_response is a classmethod: each subclass builds itself."""
    assert type(cls.from_response(make_response(), "why")) is cls


def test_empty_body_has_no_excerpt() -> None:
    """No body: the message ends with the reason."""
    error = HttpStatusError.from_response(make_response(404, ""), "expected status 200")
    assert str(error) == "POST https://api.example.com/x -> HTTP 404: expected status 200"


def test_excerpt_is_short_and_on_one_line() -> None:
    """The excerpt is cut at EXCERPT_CHARS, with whitespace collapsed to single spaces."""
    body = "line one\n\n   line\ttwo " + "y" * 1000
    error = HttpStatusError.from_response(make_response(500, body), "why")
    excerpt = str(error).split(" | body: ", 1)[1]
    assert excerpt.startswith("line one line two yyy")
    assert len(excerpt) == EXCERPT_CHARS + 1
    assert excerpt.endswith("…")
    assert "\n" not in str(error)


def test_message_and_excerpt_are_redacted() -> None:
    """Registered secrets, URL user info and sensitive query values never reach the message."""
    secret = "exceptions-test-secret-9f8e7d"
    register_secret(secret)
    response = make_response(
        401,
        body=f'{{"echo": "{secret}"}}',
        url=f"https://user:pw-in-url@api.example.com/x?token=tok-in-query&page=2&q={secret}",
    )
    message = str(AuthenticationError.from_response(response, f"refused {secret}"))
    for leaked in (secret, "pw-in-url", "tok-in-query", "user:"):
        assert leaked not in message
    assert "https://api.example.com/x?token=***&page=2&q=***" in message
    assert "refused ***" in message
    assert '"echo": "***"' in message


def test_response_without_request() -> None:
    """A response built by hand (no request) still gives a message."""
    error = ApiError.from_response(httpx.Response(200, text="oops"), "service error")
    assert str(error) == "response -> HTTP 200: service error | body: oops"
    assert error.request is None
    assert error.status_code == 200


async def test_unread_streamed_body_gives_no_excerpt() -> None:
    """A streamed body that was never read is not read by the error."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"never read"

    request = httpx.Request("GET", "https://api.example.com/x")
    response = httpx.Response(500, content=chunks(), request=request)
    assert body_excerpt(response) == ""
    assert str(HttpStatusError.from_response(response, "why")).endswith("HTTP 500: why")


def test_direct_construction_redacts() -> None:
    """Building an error by hand also redacts registered secrets."""
    secret = "exceptions-direct-secret-1a2b3c"
    register_secret(secret)
    assert secret not in str(HttpStatusError(f"bad {secret}", response=make_response()))
    transport = HttpTransportError(f"GET x failed: {secret}")
    assert str(transport) == "GET x failed: ***"
    assert transport.request is None


def test_transport_error_keeps_request() -> None:
    """HttpTransportError carries the request when known."""
    request = httpx.Request("GET", "https://api.example.com/x")
    assert HttpTransportError("failed", request=request).request is request


def test_profile_selection_error_is_caught_as_value_error() -> None:
    """Code that catches ValueError catches ProfileSelectionError."""
    with pytest.raises(ValueError, match="choose"):
        raise ProfileSelectionError("choose a profile")


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def test_binary_body_is_summarised_not_dumped() -> None:
    """An .xlsx body shows as its size and type, not as decoded garbage."""
    request = httpx.Request("POST", "https://svc.test/export")
    content = b"PK\x03\x04" + bytes(range(256)) * 4
    response = httpx.Response(
        500,
        content=content,
        headers={"content-type": XLSX},
        request=request,
    )
    assert body_excerpt(response) == f"<{len(content)} bytes of {XLSX}>"
