"""The async client's default transport: httpx's own, over a connection pool of O(1) per request.

httpcore's ``AsyncConnectionPool`` walks every connection and every queued request each time a
request arrives or a response closes, asking each idle connection's socket whether it is
readable (httpx#3215): with 100 connections that walk is most of a request's CPU time
(docs/performance.md, "Async throughput"). This pool keeps the same connections (httpcore's
``AsyncHTTPConnection``: the same HTTP/1.1 code, TLS, timeouts and errors) and the same rules,
but finds a connection in constant time:

* idle connections are kept per origin, most recently used first: a request takes the last one
  returned, after the checks httpcore makes (keep-alive expiry, the server closed it);
* a request opens a new connection while fewer than ``max_connections`` are open, closes an idle
  connection of another origin to make room when all are open, else waits (first come, first
  served) for one to come back, at most the ``pool`` timeout (``httpx.PoolTimeout``);
* at most ``max_keepalive_connections`` stay idle; the others close when their answer ends;
* idle connections past their keep-alive expiry or closed by the server are swept once a second
  at most (httpcore sweeps them on every request), so a long-lived client does not keep dead
  sockets.

httpx's transport does the rest as before (request and response mapping, httpcore's exceptions
mapped to httpx's). With proxies from the environment the handler keeps httpx's stock transport
(httpx mounts them only when it builds the transport itself).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable

import anyio
import httpcore
import httpx

__all__ = ["PooledHTTPTransport", "environment_proxies"]

#: Seconds between two sweeps of the idle connections for expired or server-closed ones.
_SWEEP_INTERVAL = 1.0
_SCHEMES = ("http", "https", "ws", "wss")
#: Bytes received and not yet read above which the socket is no longer read (flow control):
#: twice httpcore's read size (64 KiB), as asyncio's streams keep twice their limit.
_HIGH_WATER = 128 * 1024
#: anyio's delay between two address families' connection attempts (RFC 8305), kept.
_HAPPY_EYEBALLS_DELAY = 0.25


# -- the network backend: asyncio's own transports ------------------------------------------------
class _Protocol(asyncio.Protocol):
    """Received bytes, end of stream and write flow control of one connection, for
    :class:`_Stream`: a read that finds bytes already received returns them without waiting."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        #: The connection is gone; its error (``None``: closed cleanly).
        self.lost = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.paused_reading = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.paused_writing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and self.transport is not None:
            with contextlib.suppress(RuntimeError, AttributeError):  # closing meanwhile
                self.transport.pause_reading()
                self.paused_reading = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport: HTTP/1.1 never half-closes a client connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def read_waiter(self) -> asyncio.Future[None]:
        self._read_waiter = asyncio.get_running_loop().create_future()
        return self._read_waiter

    def drain_waiter(self) -> asyncio.Future[None]:
        self._drain_waiter = asyncio.get_running_loop().create_future()
        return self._drain_waiter


async def _wait(
    waiter: asyncio.Future[None],
    timeout: float | None,  # noqa: ASYNC109 - httpcore's timeouts, passed on
    error: type[httpcore.TimeoutException],
    message: str,
) -> None:
    """Wait for ``waiter`` at most ``timeout`` seconds, else raise ``error(message)``."""
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        raise error(message) from None


def _closed_message(protocol: _Protocol) -> str:
    """A write's error on a connection that is gone: its cause, or that it closed cleanly."""
    return str(protocol.error) if protocol.error else "the connection is closed"


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's network stream on an asyncio transport, with anyio's errors and timeouts
    (``ReadTimeout``, ``ReadError``, ``WriteError``, ...; an end of stream reads ``b""``)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof and not protocol.lost:
            await _wait(
                protocol.read_waiter(),
                timeout,
                httpcore.ReadTimeout,
                "timed out reading the answer",
            )
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            if protocol.paused_reading and len(protocol.buffer) <= _HIGH_WATER // 2:
                protocol.paused_reading = False
                with contextlib.suppress(RuntimeError, AttributeError):
                    self._transport.resume_reading()
            return data
        if protocol.error is not None:
            error = protocol.error
            raise httpcore.ReadError(str(error) or type(error).__name__) from error
        return b""  # end of stream, or closed

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise httpcore.WriteError(_closed_message(protocol)) from protocol.error
        self._transport.write(buffer)
        if protocol.paused_writing:
            await _wait(
                protocol.drain_waiter(),
                timeout,
                httpcore.WriteTimeout,
                "timed out writing the request",
            )
            if protocol.lost:
                raise httpcore.WriteError(_closed_message(protocol)) from protocol.error

    async def aclose(self) -> None:
        # As anyio's streams: close (a TLS connection sends its close_notify), let the loop
        # run the closing callbacks, then drop the socket without waiting for the server's
        # answer; the socket is closed when this returns, even if the loop stops right after.
        transport = self._transport
        if transport.is_closing():
            return
        transport.close()
        await asyncio.sleep(0)
        transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (ssl.SSLError, OSError) as exc:
            # The SSLError stays the cause: the retry policy reads its reason.
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable":
            # An idle connection with bytes or an end waiting: the server closed it (httpcore
            # asks before reusing one). Known from the loop's callbacks, no system call.
            protocol = self._protocol
            return bool(protocol.buffer) or protocol.eof or protocol.lost
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio's transports (anyio's costs a cancel scope and an
    attribute table per read and write, and a ``getpeername`` per reuse check)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # local_address and socket_options are httpcore's interface: the pool's connections
        # set neither (nor a unix socket: the base class refuses those).
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # Happy eyeballs only between several addresses: Python 3.11's race
                # (asyncio.staggered) can leave a socket unclosed when the connect is cancelled
                # (a pull that fails cancels its fetches in flight), and one address needs no race.
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                single = len(infos) == 1
                transport, protocol = await loop.create_connection(
                    _Protocol,
                    str(infos[0][4][0]) if single else host,
                    port,
                    happy_eyeballs_delay=None if single else _HAPPY_EYEBALLS_DELAY,
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Stream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_BACKEND = _Backend()


def environment_proxies() -> bool:
    """Whether httpx would mount proxies from the environment (HTTP(S)_PROXY, ALL_PROXY): the
    handler then keeps httpx's stock transport, and the aiohttp transport reads them too."""
    found = urllib.request.getproxies()
    return any(found.get(scheme) for scheme in ("http", "https", "all"))


_Key = tuple[bytes, bytes, int]


def _reusable(connection: httpcore.AsyncHTTPConnection) -> bool:
    return connection.is_idle() and not connection.is_closed()


class _Pool:
    """A connection pool with httpcore's ``handle_async_request`` interface; one event loop."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        max_connections: int | None,
        max_keepalive_connections: int | None,
        keepalive_expiry: float | None,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_idle = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        #: Every open connection (idle, busy or connecting): its origin's key.
        self._connections: dict[httpcore.AsyncHTTPConnection, _Key] = {}
        #: Idle connections per origin, the most recently returned last.
        self._idle: dict[_Key, list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        #: Requests waiting for a connection, first come first served.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._next_sweep = 0.0

    # -- bookkeeping (no I/O) ------------------------------------------------------------------
    def _take_idle(
        self, key: _Key, closing: list[httpcore.AsyncHTTPConnection]
    ) -> httpcore.AsyncHTTPConnection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.has_expired() or not _reusable(connection):
                self._drop(connection, closing)
                continue
            return connection
        return None

    def _drop(
        self, connection: httpcore.AsyncHTTPConnection, closing: list[httpcore.AsyncHTTPConnection]
    ) -> None:
        """Forget a connection (it is closed by the caller, outside the bookkeeping)."""
        if self._connections.pop(connection, None) is not None:
            closing.append(connection)
            self._wake()

    def _evict_idle(self, closing: list[httpcore.AsyncHTTPConnection]) -> bool:
        """Close an idle connection to make room (called when the request's own origin has
        none: another origin's, the one of its origin's idle ones returned longest ago)."""
        for key, idle in self._idle.items():
            if idle:
                self._idle_count -= 1
                connection = idle.pop(0)
                if not idle:
                    del self._idle[key]
                self._connections.pop(connection, None)
                closing.append(connection)
                return True
        return False

    def _sweep(self, closing: list[httpcore.AsyncHTTPConnection]) -> None:
        """Drop idle connections past their keep-alive or closed by the server."""
        for key in list(self._idle):
            idle = self._idle[key]
            kept = [c for c in idle if _reusable(c) and not c.has_expired()]
            for connection in idle:
                if connection not in kept:
                    self._connections.pop(connection, None)
                    closing.append(connection)
            self._idle_count -= len(idle) - len(kept)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    def _wake(self) -> None:
        """A connection came back or a place freed: the first waiter looks again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _acquire_now(
        self, key: _Key, origin: httpcore.Origin, closing: list[httpcore.AsyncHTTPConnection]
    ) -> httpcore.AsyncHTTPConnection | None:
        now = time.monotonic()
        if now >= self._next_sweep and self._idle_count:
            self._next_sweep = now + _SWEEP_INTERVAL
            self._sweep(closing)
        connection = self._take_idle(key, closing)
        if connection is not None:
            return connection
        room = self._max_connections is None or len(self._connections) < self._max_connections
        if room or self._evict_idle(closing):
            connection = httpcore.AsyncHTTPConnection(
                origin=origin,
                ssl_context=self._ssl_context,
                keepalive_expiry=self._keepalive_expiry,
                http1=True,
                http2=False,
                network_backend=_BACKEND,
            )
            self._connections[connection] = key
            return connection
        return None

    def _release(
        self, connection: httpcore.AsyncHTTPConnection, closing: list[httpcore.AsyncHTTPConnection]
    ) -> None:
        """A request on ``connection`` ended: keep it idle for the next one, or close it."""
        key = self._connections.get(connection)
        if key is None:  # the pool was closed meanwhile
            closing.append(connection)
            return
        full = self._max_idle is not None and self._idle_count >= self._max_idle
        # A connection that failed to connect says it is idle, and closed: dropped.
        if not _reusable(connection) or full:
            self._drop(connection, closing)
            return
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1
        self._wake()

    # -- I/O -----------------------------------------------------------------------------------
    @staticmethod
    async def _close(closing: Iterable[httpcore.AsyncHTTPConnection]) -> None:
        # Shielded as httpcore's pool does: a cancelled request still closes its sockets.
        with anyio.CancelScope(shield=True):
            for connection in closing:
                with contextlib.suppress(Exception):
                    await connection.aclose()

    async def _acquire(
        self, key: _Key, origin: httpcore.Origin, pool_timeout: float | None
    ) -> httpcore.AsyncHTTPConnection:
        closing: list[httpcore.AsyncHTTPConnection] = []
        try:
            # Requests already waiting go first: a newcomer takes a connection only if none is.
            connection = None if self._waiters else self._acquire_now(key, origin, closing)
            if connection is not None:
                return connection
            loop = asyncio.get_running_loop()
            deadline = None if pool_timeout is None else loop.time() + pool_timeout
            first = False
            while True:
                waiter = loop.create_future()
                if first:  # woken but beaten to it: keep its place at the head of the line
                    self._waiters.appendleft(waiter)
                else:
                    self._waiters.append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except BaseException as exc:
                    if waiter.done() and not waiter.cancelled():
                        self._wake()  # woken, but leaving: the next waiter takes the turn
                    else:
                        waiter.cancel()
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(waiter)
                    if isinstance(exc, TimeoutError):
                        raise httpcore.PoolTimeout(
                            "no connection of the pool became free within the pool timeout"
                        ) from None
                    raise
                first = True
                connection = self._acquire_now(key, origin, closing)
                if connection is not None:
                    return connection
        finally:
            if closing:
                await self._close(closing)

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        scheme = request.url.scheme.decode()
        if scheme == "":
            raise httpcore.UnsupportedProtocol(
                "Request URL is missing an 'http://' or 'https://' protocol."
            )
        if scheme not in _SCHEMES:
            raise httpcore.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'."
            )
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        timeout = request.extensions.get("timeout", {}).get("pool")
        while True:
            connection = await self._acquire(key, origin, timeout)
            try:
                response = await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                # Taken by the pool as idle, then found not to be (httpcore's pool retries
                # alike): another connection.
                await self._give_back(connection)
                continue
            except BaseException:
                await self._give_back(connection)
                raise
            break
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_PooledStream(response.stream, self, connection),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def _give_back(self, connection: httpcore.AsyncHTTPConnection) -> None:
        closing: list[httpcore.AsyncHTTPConnection] = []
        self._release(connection, closing)
        if closing:
            await self._close(closing)

    async def aclose(self) -> None:
        """Close every connection, busy ones included (as httpcore's pool does)."""
        closing = list(self._connections)
        self._connections.clear()
        self._idle.clear()
        self._idle_count = 0
        await self._close(closing)

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.aclose()


class _PooledStream:
    """A response body: the connection goes back to the pool when the body is closed."""

    def __init__(
        self, stream: AsyncIterator[bytes], pool: _Pool, connection: httpcore.AsyncHTTPConnection
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        await self._pool._give_back(self._connection)


class PooledHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's ``AsyncHTTPTransport`` (HTTP/1.1, no proxy) over :class:`_Pool`.

    Args:
        ssl_context: the context of every TLS connection (the handler's shared one).
        limits: the pool's size, idle connections kept and their expiry, as httpx's.
    """

    def __init__(self, ssl_context: ssl.SSLContext, *, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        # httpx's transport only calls handle_async_request/aclose/__aenter__/__aexit__ on its
        # ``_pool``; tests/echo_connhandler/test_transports.py checks this still holds.
        self._pool = _Pool(  # type: ignore[assignment]
            ssl_context,
            limits.max_connections,
            limits.max_keepalive_connections,
            limits.keepalive_expiry,
        )
