"""Hardening of responses: a body size limit, and short status messages.

- ``max_response_bytes``: a body larger than the limit once decoded (a gzip bomb) raises
  ``ResponseTooLargeError`` instead of filling the memory, on both paths, and is not retried;
  a body under the limit is kept and usable (``.content``, ``.json()``); no limit by default.
- ``HttpStatusError`` messages describe the accepted statuses in a few characters
  (``2xx or 3xx``), not as the repr of a range or a list of two hundred numbers.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

import echo_connhandler
from echo_connhandler import HttpConnProperties, HttpHandler, HttpResponseError, HttpStatusError
from echo_connhandler._exceptions import ResponseTooLargeError
from echo_connhandler._handler import describe_statuses

HOST = "https://api.example.com"
LIMIT = 1_000_000
#: 20 MB of zeros, about 20 kB once compressed.
BOMB = gzip.compress(b"0" * 20_000_000)
#: Raw bytes per chunk of a served body: a chunk of the bomb decodes to about 256 kB.
CHUNK = 256


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body sent in small raw chunks, as from a socket (httpx does not preload it), counting
    how many raw bytes the client pulled."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size
        self.pulled = 0

    def _pieces(self) -> list[bytes]:
        return [self.data[i : i + self.size] for i in range(0, len(self.data), self.size)]

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces():
            self.pulled += len(piece)
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces():
            self.pulled += len(piece)
            yield piece


class Served:
    """A MockTransport handler that answers one fixed body and counts the requests."""

    def __init__(self, content: bytes, headers: dict[str, str] | None = None) -> None:
        self.content = content
        self.headers = headers or {}
        self.calls = 0
        self.streams: list[Chunks] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        stream = Chunks(self.content, CHUNK)
        self.streams.append(stream)
        return httpx.Response(200, stream=stream, headers=self.headers)


def _handler_on(served: Served, **kwargs: Any) -> HttpHandler:
    """An HttpHandler whose clients (sync and async) send through ``served``."""
    transport = httpx.MockTransport(served)

    class MockedHandler(HttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": transport}

    settings = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0, **kwargs}
    return MockedHandler(HttpConnProperties(host=HOST), skip_connect=True, **settings)


@pytest.fixture
def handler_on() -> Any:
    """``handler_on(served, **kwargs)``; every handler made is closed afterwards (both paths)."""
    made: list[HttpHandler] = []

    def factory(served: Served, **kwargs: Any) -> HttpHandler:
        handler = _handler_on(served, **kwargs)
        made.append(handler)
        return handler

    yield factory
    for handler in made:
        handler.close()


def _gzip_bomb() -> Served:
    return Served(BOMB, {"content-encoding": "gzip", "content-type": "text/plain"})


def _small_json() -> tuple[Served, dict[str, Any]]:
    body = {"rows": list(range(1000)), "name": "Disponível"}
    data = gzip.compress(json.dumps(body, ensure_ascii=False).encode())
    served = Served(data, {"content-encoding": "gzip", "content-type": "application/json"})
    return served, body


def _check_too_large(exc: ResponseTooLargeError) -> None:
    assert isinstance(exc, HttpResponseError)
    assert exc.status_code == 200
    assert "max_response_bytes" in str(exc)
    assert str(LIMIT) in str(exc)
    assert len(str(exc)) < 400, str(exc)


# -- max_response_bytes --------------------------------------------------------------------------
def test_response_too_large_error_is_public() -> None:
    """The error a caller must catch is importable from the package, like its siblings."""
    assert echo_connhandler.ResponseTooLargeError is ResponseTooLargeError
    assert "ResponseTooLargeError" in echo_connhandler.__all__


def test_response_too_large_error_is_a_response_error() -> None:
    assert issubclass(ResponseTooLargeError, HttpResponseError)
    assert issubclass(ResponseTooLargeError, echo_connhandler.EchoHttpError)


def test_gzip_bomb_is_refused_sync(handler_on: Callable[..., HttpHandler]) -> None:
    """20 MB decoded from 20 kB on the wire, with a 1 MB limit: ResponseTooLargeError."""
    served = _gzip_bomb()
    handler = handler_on(served, max_response_bytes=LIMIT)
    with pytest.raises(ResponseTooLargeError) as info:
        handler.get("bomb")
    _check_too_large(info.value)


async def test_gzip_bomb_is_refused_async(handler_on: Callable[..., HttpHandler]) -> None:
    served = _gzip_bomb()
    handler = handler_on(served, max_response_bytes=LIMIT)
    try:
        with pytest.raises(ResponseTooLargeError) as info:
            await handler.async_get("bomb")
    finally:
        await handler.async_close()
    _check_too_large(info.value)


def _check_stopped_early(served: Served) -> None:
    """The client stopped pulling the body soon after the limit: not the whole bomb."""
    (stream,) = served.streams
    assert 0 < stream.pulled < len(BOMB) // 2, (stream.pulled, len(BOMB))


def test_reading_stops_at_the_limit_sync(handler_on: Callable[..., HttpHandler]) -> None:
    """The limit bounds memory: the body is not read to its end before being refused."""
    served = _gzip_bomb()
    with pytest.raises(ResponseTooLargeError):
        handler_on(served, max_response_bytes=LIMIT).get("bomb")
    _check_stopped_early(served)


async def test_reading_stops_at_the_limit_async(handler_on: Callable[..., HttpHandler]) -> None:
    served = _gzip_bomb()
    handler = handler_on(served, max_response_bytes=LIMIT)
    try:
        with pytest.raises(ResponseTooLargeError):
            await handler.async_get("bomb")
    finally:
        await handler.async_close()
    _check_stopped_early(served)


def test_too_large_is_not_retried_sync(handler_on: Callable[..., HttpHandler]) -> None:
    """A body that is too large will be as large again: one request, even with retries left."""
    served = _gzip_bomb()
    handler = handler_on(served, max_response_bytes=LIMIT, max_retries=3)
    with pytest.raises(ResponseTooLargeError):
        handler.get("bomb")
    assert served.calls == 1


async def test_too_large_is_not_retried_async(handler_on: Callable[..., HttpHandler]) -> None:
    served = _gzip_bomb()
    handler = handler_on(served, max_response_bytes=LIMIT, max_retries=3)
    try:
        with pytest.raises(ResponseTooLargeError):
            await handler.async_get("bomb")
    finally:
        await handler.async_close()
    assert served.calls == 1


def test_plain_body_over_the_limit_is_refused(handler_on: Callable[..., HttpHandler]) -> None:
    """Not only compressed bodies: an identity body one byte over the limit is refused too."""
    served = Served(b"x" * 101, {"content-type": "text/plain"})
    with pytest.raises(ResponseTooLargeError):
        handler_on(served, max_response_bytes=100).get("plain")


def test_body_exactly_at_the_limit_is_kept(handler_on: Callable[..., HttpHandler]) -> None:
    served = Served(b"x" * 100, {"content-type": "text/plain"})
    response = handler_on(served, max_response_bytes=100).get("plain")
    assert response.content == b"x" * 100


def test_body_under_the_limit_is_usable_sync(handler_on: Callable[..., HttpHandler]) -> None:
    """Under the limit, the response is returned as usual: .content, .text and .json() work."""
    served, body = _small_json()
    response = handler_on(served, max_response_bytes=LIMIT).get("small")
    assert response.status_code == 200
    assert response.json() == body
    assert response.content == json.dumps(body, ensure_ascii=False).encode()
    assert "Disponível" in response.text


async def test_body_under_the_limit_is_usable_async(
    handler_on: Callable[..., HttpHandler],
) -> None:
    served, body = _small_json()
    handler = handler_on(served, max_response_bytes=LIMIT)
    try:
        response = await handler.async_get("small")
    finally:
        await handler.async_close()
    assert response.status_code == 200
    assert response.json() == body
    assert response.content == json.dumps(body, ensure_ascii=False).encode()


def test_no_limit_by_default(handler_on: Callable[..., HttpHandler]) -> None:
    """Default max_response_bytes=None: a 5 MB (decoded) body is read whole."""
    served = Served(gzip.compress(b"0" * 5_000_000), {"content-encoding": "gzip"})
    handler = handler_on(served)
    assert handler.max_response_bytes is None
    response = handler.get("big")
    assert len(response.content) == 5_000_000


async def test_no_limit_by_default_async(handler_on: Callable[..., HttpHandler]) -> None:
    served = Served(gzip.compress(b"0" * 5_000_000), {"content-encoding": "gzip"})
    handler = handler_on(served)
    try:
        response = await handler.async_get("big")
    finally:
        await handler.async_close()
    assert len(response.content) == 5_000_000


# -- status messages -----------------------------------------------------------------------------
def test_status_error_message_is_short_sync(make_handler: Any) -> None:
    """A 404 with response_ok=range(200, 400): 'expected status 2xx or 3xx', not a long list."""
    handler = make_handler(max_retries=0)
    with pytest.raises(HttpStatusError) as info:
        handler.get("status/404", response_ok=range(200, 400))
    message = str(info.value)
    assert info.value.status_code == 404
    assert "expected status 2xx or 3xx" in message, message
    assert len(message) < 400, message
    assert "range(" not in message


async def test_status_error_message_is_short_async(make_async_handler: Any) -> None:
    handler = make_async_handler(max_retries=0)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_get("status/404", response_ok=range(200, 400))
    message = str(info.value)
    assert "expected status 2xx or 3xx" in message, message
    assert len(message) < 400, message


def test_status_error_message_for_a_single_status(make_handler: Any) -> None:
    handler = make_handler(max_retries=0)
    with pytest.raises(HttpStatusError) as info:
        handler.get("status/404")
    assert "expected status 200" in str(info.value)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({200}, "200"),
        ([200], "200"),
        (range(200, 300), "2xx"),
        (range(200, 400), "2xx or 3xx"),
        (set(range(100, 600)), "1xx, 2xx, 3xx, 4xx, 5xx"),
        ({200, 201, 202, 204}, "200-202 or 204"),
        ({200, 201}, "200, 201"),
        ({200, 204}, "200 or 204"),
        ({200, 201, 204}, "200, 201 or 204"),
        ({200, 201, 202}, "200-202"),
        ({*range(200, 300), 304}, "2xx or 304"),
        ({*range(200, 300), 404, 405, 406}, "2xx or 404-406"),
        ({204, 200, 404}, "200, 204, 404"),
    ],
)
def test_describe_statuses(statuses: Any, expected: str) -> None:
    """Short, exact descriptions of the accepted statuses."""
    assert describe_statuses(statuses) == expected


@pytest.mark.parametrize(
    "statuses",
    [
        range(100, 600),
        range(200, 400),
        set(range(200, 600, 2)),
        set(range(100, 600, 3)),
        {*range(200, 300), *range(301, 600, 2)},
    ],
)
def test_describe_statuses_is_short_whatever_the_collection(statuses: Any) -> None:
    """The docstring's promise: short, whatever the collection's size or shape."""
    assert len(describe_statuses(statuses)) <= 100, describe_statuses(statuses)


def test_status_error_message_is_short_for_a_scattered_collection(make_handler: Any) -> None:
    """Even for an odd response_ok (every even status), the message stays short."""
    handler = make_handler(max_retries=0)
    with pytest.raises(HttpStatusError) as info:
        handler.get("status/401", response_ok=range(200, 600, 2))
    assert len(str(info.value)) < 400, str(info.value)
