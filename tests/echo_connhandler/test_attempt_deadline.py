"""A wall-clock deadline per attempt (``HttpConnProperties.attempt_deadline``; issue 15,
"Requests, triggers, secrets").

httpx's read timeout restarts with every byte: a server trickling its answer a byte at a time
kept a request with ``request_timeout=2`` open for as long as it liked. The server here is a raw
socket that answers a head announcing a large body, then sends one byte every 50 ms (or trickles
the head itself). Without a deadline the attempt would last until the server gives up (20 s) and
end with an incomplete-body error; with one, it ends with an ``HttpTransportError`` naming
``attempt_deadline``, retried as a timeout by the retry policy. No assertion measures time: the
checks are on the error, its cause, and how many attempts reached the server.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from echo_connhandler import HttpConnProperties, HttpHandler, HttpTransportError
from echo_connhandler._handler import AttemptDeadlineExceeded
from echo_connhandler._properties import AsyncTransportName

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
DEADLINE = 0.4
#: Bytes the server announces: far more than it sends before giving up.
ANNOUNCED = 1_000_000
#: The server's own safety valve, so that a client without a deadline still ends.
SERVER_GIVES_UP_S = 20.0
TRICKLE_EVERY_S = 0.05

try:
    import aiohttp  # noqa: F401

    TRANSPORTS: list[AsyncTransportName] = ["httpx", "aiohttp"]
except ImportError:  # pragma: no cover - depends on the environment
    TRANSPORTS = ["httpx"]


class TrickleServer:
    """A loopback HTTP/1.1 server that answers 200 and then trickles, one thread per connection.

    The path decides what is trickled: ``/head/...`` trickles the status line and headers,
    anything else sends the head at once and trickles the body. Requests are counted per path.
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed.set()
        self._socket.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> str | None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return None
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            ),
            0,
        )
        while len(body) < length:
            piece = conn.recv(65536)
            if not piece:
                return None
            body += piece
        return lines[0].split(" ")[1]

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(SERVER_GIVES_UP_S)
            path = self._read_request(conn)
            if path is None:
                return
            with self._lock:
                self.requests[path.split("?")[0]] += 1
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {ANNOUNCED}\r\n\r\n"
            ).encode()
            trickled = b"x" * ANNOUNCED
            if path.startswith("/head/"):
                trickled = head + trickled
            else:
                conn.sendall(head)
            gives_up = time.monotonic() + SERVER_GIVES_UP_S
            for index in range(len(trickled)):
                if self._closed.is_set() or time.monotonic() > gives_up:
                    return  # the client, without a deadline, gets an incomplete body
                conn.sendall(trickled[index : index + 1])  # a closed client: OSError, the end
                time.sleep(TRICKLE_EVERY_S)


@pytest.fixture(scope="module")
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer()
    yield server
    server.close()


def _path(kind: str = "body") -> str:
    return f"/{kind}/{uuid.uuid4().hex}"


def _handler(
    server: TrickleServer, transport: AsyncTransportName = "httpx", **kwargs: Any
) -> HttpHandler:
    props = HttpConnProperties(
        host=server.url, request_timeout=2, attempt_deadline=DEADLINE, async_transport=transport
    )
    return HttpHandler(props, skip_connect=True, **{**FAST, **kwargs})


def _check(error: HttpTransportError) -> None:
    assert f"attempt_deadline={DEADLINE:g} s" in str(error)
    assert isinstance(error.__cause__, AttemptDeadlineExceeded)


def test_trickled_body_is_cut_at_the_deadline_sync(
    trickle: TrickleServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A GET whose body trickles: each attempt ends at the deadline; retried as a timeout."""
    path = _path()
    with (
        _handler(trickle, max_retries=2) as handler,
        caplog.at_level(logging.WARNING),
        pytest.raises(HttpTransportError) as info,
    ):
        handler.get(path)
    _check(info.value)
    assert trickle.requests[path] == 3  # the first attempt and max_retries=2
    assert "AttemptDeadlineExceeded" in caplog.text  # the retry warnings name the cause
    assert handler.retry_count == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_trickled_body_is_cut_at_the_deadline_async(
    trickle: TrickleServer, transport: AsyncTransportName
) -> None:
    path = _path()
    handler = _handler(trickle, transport, max_retries=2)
    try:
        with pytest.raises(HttpTransportError) as info:
            await handler.async_get(path)
    finally:
        await handler.async_close()
    _check(info.value)
    assert trickle.requests[path] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_trickled_head_is_cut_at_the_deadline_async(
    trickle: TrickleServer, transport: AsyncTransportName
) -> None:
    """On the async path the deadline covers the whole attempt, the answer's head included."""
    path = _path("head")
    handler = _handler(trickle, transport, max_retries=0)
    try:
        with pytest.raises(HttpTransportError) as info:
            await handler.async_get(path)
    finally:
        await handler.async_close()
    _check(info.value)
    assert trickle.requests[path] == 1


@pytest.mark.parametrize("path_kind", ["sync", "async"])
async def test_a_post_cut_by_the_deadline_is_not_replayed(
    trickle: TrickleServer, path_kind: str
) -> None:
    """The deadline is an in-flight timeout: a POST may have been acted on, so it is not
    replayed (docs/retries.md, "POST and PATCH")."""
    path = _path()
    handler = _handler(trickle, max_retries=3)

    async def post() -> None:
        if path_kind == "sync":
            handler.post(path, json={"a": 1})
        else:
            await handler.async_post(path, json={"a": 1})

    try:
        with pytest.raises(HttpTransportError) as info:
            await post()
    finally:
        await handler.async_close()
        handler.close()
    _check(info.value)
    assert trickle.requests[path] == 1


@pytest.mark.parametrize("path_kind", ["sync", "async"])
async def test_a_trickled_download_is_cut_at_the_deadline(
    trickle: TrickleServer, path_kind: str
) -> None:
    """download() streams to a file object: the deadline bounds it too."""
    path = _path()
    sink = io.BytesIO()
    handler = _handler(trickle, max_retries=0)

    async def download() -> None:
        if path_kind == "sync":
            handler.download("GET", path, sink)
        else:
            await handler.async_download("GET", path, sink)

    try:
        with pytest.raises(HttpTransportError) as info:
            await download()
    finally:
        await handler.async_close()
        handler.close()
    _check(info.value)
    assert len(sink.getvalue()) < ANNOUNCED


async def test_answers_within_the_deadline_are_untouched(server: Any) -> None:
    """A prompt answer is read whole on both paths, with a deadline of a few seconds."""
    props = HttpConnProperties(host=server.url, attempt_deadline=30)
    with HttpHandler(props, skip_connect=True, **FAST) as handler:
        assert handler.get("echo", params={"a": "1"}).json()["query"] == {"a": "1"}
        response = await handler.async_get("echo", params={"b": "2"})
        assert response.json()["query"] == {"b": "2"}
        await handler.async_close()
