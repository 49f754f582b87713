"""The async client's default transport: httpx's own over :mod:`echo_connhandler._pool`.

The pool and its asyncio network backend against a raw HTTP/1.1 server in the test's own event
loop, which counts the connections it sees: reuse, the size bound, the pool timeout, keep-alive
expiry and limits, connections closed by the server, another origin's idle connection making
room, cancellation, errors mapped to httpx's, flow control on a large body, closing. Whatever
runs through the handler (retries, TLS, redirects, limits) is covered by the handler test
modules, which run on this transport by default.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore
import httpx
import pytest

from echo_connhandler import HttpConnProperties, HttpHandler
from echo_connhandler._handler import ssl_context
from echo_connhandler._pool import _BACKEND, PooledHTTPTransport, _Pool

BIG = 1024 * 1024 + 7  # bytes: several times the backend's read-pause threshold


class RawServer:
    """HTTP/1.1 on loopback: ``/`` answers at once, ``/sleep/<s>`` after ``s`` seconds,
    ``/drop`` answers then closes the connection (keep-alive announced), ``/big`` sends
    :data:`BIG` bytes. Counts connections: accepted, open now, most open at once."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.peak = 0
        self.dropped = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                path = head.split(b" ", 2)[1].decode()
                body = b'{"ok": true}'
                if path.startswith("/sleep/"):
                    await asyncio.sleep(float(path.rsplit("/", 1)[1]))
                elif path == "/big":
                    body = b"x" * BIG
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if path == "/drop":
                    writer.close()
                    self.dropped.set()
                    return
        finally:
            self.open -= 1
            self._writers.discard(writer)
            with contextlib.suppress(ConnectionError):
                writer.close()

    async def wait_open(self, count: int) -> None:
        """Until ``count`` connections are open (closing ones close when the client's closing
        reaches the server: a loop iteration or a few)."""
        await until(lambda: self.open == count)


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (5 s at most, then it is asserted)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer()
    await server.start()
    yield server
    await server.stop()


def client(
    url: str,
    *,
    max_connections: int | None = 10,
    max_keepalive: int | None = 10,
    expiry: float | None = 5.0,
    timeout: httpx.Timeout | None = None,
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive,
        keepalive_expiry=expiry,
    )
    return httpx.AsyncClient(
        base_url=url,
        transport=PooledHTTPTransport(ssl_context(True), limits=limits),
        timeout=timeout or httpx.Timeout(10),
    )


def pool_of(http: httpx.AsyncClient) -> _Pool:
    pool = http._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool, _Pool)
    return pool


# -- the handler's choice -------------------------------------------------------------------------
def test_the_transport_keeps_the_pool() -> None:
    """httpx's transport calls only handle_async_request/aclose on its ``_pool``: if a new httpx
    stopped using that attribute, this fails instead of the pool silently not being used."""
    transport = PooledHTTPTransport(ssl_context(True), limits=httpx.Limits())
    assert isinstance(transport._pool, _Pool)


async def test_the_handler_uses_it_by_default(
    monkeypatch: pytest.MonkeyPatch, raw_server: RawServer
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    handler = HttpHandler(HttpConnProperties(host=raw_server.url), skip_connect=True)
    try:
        await handler.async_get("")
        http = handler.async_connection
        assert http is not None
        assert isinstance(http._transport, PooledHTTPTransport)
    finally:
        await handler.async_close()


async def test_proxies_in_the_environment_keep_httpx_stock_transport(
    monkeypatch: pytest.MonkeyPatch, raw_server: RawServer
) -> None:
    """httpx mounts environment proxies only on a client that builds its own transport: then
    the handler lets it (NO_PROXY covers the loopback server, so the request still goes out)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    handler = HttpHandler(HttpConnProperties(host=raw_server.url), skip_connect=True)
    try:
        assert (await handler.async_get("")).status_code == 200
        http = handler.async_connection
        assert http is not None
        assert type(http._transport) is httpx.AsyncHTTPTransport
        assert any(t is not None for t in http._mounts.values())  # the proxy, mounted
    finally:
        await handler.async_close()


# -- the pool -------------------------------------------------------------------------------------
async def test_requests_one_after_the_other_share_one_connection(raw_server: RawServer) -> None:
    async with client(raw_server.url) as http:
        for _ in range(5):
            assert (await http.get("/")).json() == {"ok": True}
    assert raw_server.accepted == 1


async def test_at_most_max_connections_at_once(raw_server: RawServer) -> None:
    """12 requests at once on a pool of 2: all answered, two connections, never more."""
    async with client(raw_server.url, max_connections=2) as http:
        answers = await asyncio.gather(*(http.get("/sleep/0.02") for _ in range(12)))
        assert all(a.status_code == 200 for a in answers)
        assert not pool_of(http)._waiters
    assert raw_server.accepted == 2
    assert raw_server.peak == 2


async def test_no_free_connection_within_the_pool_timeout(raw_server: RawServer) -> None:
    timeout = httpx.Timeout(10, pool=0.05)
    async with client(raw_server.url, max_connections=1, timeout=timeout) as http:
        busy = asyncio.create_task(http.get("/sleep/1"))
        await until(lambda: raw_server.accepted == 1)
        with pytest.raises(httpx.PoolTimeout):
            await http.get("/")
        assert (await busy).status_code == 200
        assert (await http.get("/")).status_code == 200  # the pool is whole again
        assert not pool_of(http)._waiters
    assert raw_server.accepted == 1


async def test_a_cancelled_waiter_leaves_no_trace(raw_server: RawServer) -> None:
    async with client(raw_server.url, max_connections=1) as http:
        busy = asyncio.create_task(http.get("/sleep/0.2"))
        await until(lambda: raw_server.accepted == 1)
        waiting = asyncio.create_task(http.get("/"))
        await until(lambda: bool(pool_of(http)._waiters))
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not pool_of(http)._waiters
        assert (await busy).status_code == 200
        assert (await http.get("/")).status_code == 200
    assert raw_server.accepted == 1


async def test_a_connection_the_server_closed_is_not_reused(raw_server: RawServer) -> None:
    """Closed after its answer, keep-alive announced: the next request takes a new connection
    instead of failing on the dead one (the backend knows of the end without a system call)."""
    async with client(raw_server.url) as http:
        assert (await http.get("/drop")).status_code == 200
        await raw_server.dropped.wait()
        await raw_server.wait_open(0)
        await asyncio.sleep(0.05)  # the end of stream reaches the client's loop
        assert (await http.get("/")).status_code == 200
    assert raw_server.accepted == 2


async def test_an_expired_connection_is_closed_and_replaced(raw_server: RawServer) -> None:
    async with client(raw_server.url, expiry=0.0) as http:
        assert (await http.get("/")).status_code == 200
        await asyncio.sleep(0.01)
        assert (await http.get("/")).status_code == 200
        await raw_server.wait_open(1)  # the first one closed by the client
    assert raw_server.accepted == 2


async def test_idle_connections_beyond_the_keepalive_limit_close(raw_server: RawServer) -> None:
    async with client(raw_server.url, max_connections=5, max_keepalive=1) as http:
        await asyncio.gather(*(http.get("/sleep/0.05") for _ in range(5)))
        await raw_server.wait_open(1)
        assert pool_of(http)._idle_count == 1
    assert raw_server.accepted == 5


async def test_another_origins_idle_connection_makes_room(raw_server: RawServer) -> None:
    other = RawServer()
    await other.start()
    try:
        async with client(raw_server.url, max_connections=1) as http:
            assert (await http.get("/")).status_code == 200
            assert (await http.get(other.url + "/")).status_code == 200
            await raw_server.wait_open(0)  # closed to open the other origin's
            assert (await http.get("/")).status_code == 200
        assert (raw_server.accepted, other.accepted) == (2, 1)
    finally:
        await other.stop()


async def test_closing_the_client_closes_every_connection(raw_server: RawServer) -> None:
    http = client(raw_server.url)
    await asyncio.gather(*(http.get("/sleep/0.02") for _ in range(3)))
    assert raw_server.open == 3
    await http.aclose()
    await raw_server.wait_open(0)


async def test_a_large_body_arrives_whole(raw_server: RawServer) -> None:
    """More than the backend buffers before it stops reading the socket: paused, resumed."""
    async with client(raw_server.url) as http:
        chunks = [
            chunk
            async for chunk in (
                await http.send(http.build_request("GET", "/big"), stream=True)
            ).aiter_raw()
        ]
        assert sum(map(len, chunks)) == BIG
        assert (await http.get("/big")).content == b"x" * BIG
    assert raw_server.accepted == 1


# -- errors: httpx's, as with anyio's backend -----------------------------------------------------
async def test_connection_refused_is_a_connect_error(closed_port: int) -> None:
    async with client(f"http://127.0.0.1:{closed_port}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")
        assert not pool_of(http)._connections


async def test_a_slow_answer_is_a_read_timeout(raw_server: RawServer) -> None:
    async with client(raw_server.url, timeout=httpx.Timeout(10, read=0.05)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/sleep/2")
        assert not pool_of(http)._connections  # a broken exchange closes its connection
        assert (await http.get("/")).status_code == 200


async def test_a_write_on_a_closed_connection_is_a_write_error(raw_server: RawServer) -> None:
    """Closed cleanly: the message says so, and no cause is chained."""
    port = int(raw_server.url.rsplit(":", 1)[1])
    stream = await _BACKEND.connect_tcp("127.0.0.1", port, timeout=5)
    await stream.aclose()
    with pytest.raises(httpcore.WriteError) as caught:
        await stream.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert str(caught.value) == "the connection is closed"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


async def test_a_request_the_server_does_not_read_is_a_write_timeout() -> None:
    """More than the socket buffers hold, to a server that never reads: the write waits for
    the transport to drain, at most the write timeout."""
    release = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = await _BACKEND.connect_tcp("127.0.0.1", port, timeout=5)
        with pytest.raises(httpcore.WriteTimeout) as caught:
            await stream.write(b"x" * (64 * 1024 * 1024), timeout=0.05)
        assert str(caught.value) == "timed out writing the request"
        assert caught.value.__cause__ is None
        await stream.aclose()
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_unsupported_scheme() -> None:
    pool = _Pool(ssl_context(True), 1, 1, 5.0)
    request: Any = httpx.Request("GET", "ftp://127.0.0.1/")
    transport = PooledHTTPTransport(ssl_context(True), limits=httpx.Limits())
    transport._pool = pool  # type: ignore[assignment]
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(request)


async def test_one_address_connects_without_the_happy_eyeballs_race(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.11's happy-eyeballs race (``asyncio.staggered``) can leave a socket unclosed
    when the connect is cancelled: seen as a ResourceWarning when a failing pull cancelled its
    fetches in flight. One address needs no race, so it is not used for one."""
    import asyncio.staggered

    def no_race(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the happy-eyeballs race was used for a single address")

    monkeypatch.setattr(asyncio.staggered, "staggered_race", no_race)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = await _BACKEND.connect_tcp("127.0.0.1", port, timeout=5)
        assert stream.get_extra_info("server_addr")[1] == port
        await stream.aclose()
    finally:
        server.close()
        await server.wait_closed()
