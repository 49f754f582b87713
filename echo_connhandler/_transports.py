"""The opt-in aiohttp transport of the async client (``HttpConnProperties(async_transport=...)``).

httpx stays the client: the auth flows, cookies, redirects, event hooks, decoding,
``max_response_bytes`` and the retry policy all run as with httpx's own transport. Only the
wire moves to aiohttp, whose connection pool and HTTP parser are faster under concurrency than
httpcore's (docs/performance.md, "Async throughput").

What is kept equal to httpx's own transport, and how:

* TLS: aiohttp gets the handler's own ``ssl.SSLContext`` (verification, CA bundle, client
  certificates and ONS's legacy renegotiation are settings of that context).
* Timeouts: connect (TCP and TLS) and read (between two reads of the socket) as in httpx; the
  pool wait is bounded by the pool timeout plus the connect timeout (aiohttp times them as one).
  aiohttp has no write timeout: a stalled upload is bounded by the read timeout of its answer.
* Errors: every aiohttp failure is raised as the httpx exception httpcore raises for the same
  event, so that the retry policy classifies it alike: a failure before the request left
  (connect, DNS, TLS, connect timeout) is a *connect-phase* error, replayed even for a POST; one
  after it may have left (reset, server gone, read timeout, truncated body) is an *in-flight*
  error, replayed only when idempotent (docs/retries.md, "POST and PATCH"). The TLS error
  stays the cause, so certificate failures are not retried and the legacy-renegotiation hint
  still names its setting.
* No second client inside: aiohttp follows no redirects, keeps no cookies, decodes nothing,
  adds no headers of its own, never replays a request by itself and reads no proxy or
  ``.netrc`` from the environment beyond the proxies httpx would use.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import httpx

from echo_connhandler._pool import environment_proxies

try:
    import aiohttp
    import yarl
    from aiohttp import helpers as _aiohttp_helpers
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "async_transport='aiohttp' needs aiohttp: install the 'aiohttp' extra "
        "(pip install 'echo-connhandler-provider[aiohttp]')"
    ) from exc

__all__ = ["AiohttpTransport"]

#: Response heads as large as httpcore accepts (h11's ``max_incomplete_event_size``, 100 KiB);
#: aiohttp's default of 8 KiB per line would refuse a long ``Set-Cookie`` httpx reads fine.
_MAX_HEAD_LINE = 100 * 1024
#: Headers aiohttp would add when httpx did not send them (a bytes body's
#: ``Content-Type: application/octet-stream``, say): the request goes out as httpx built it.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def _map_error(exc: BaseException, request: httpx.Request) -> NoReturn:
    """The httpx exception httpcore raises for the same failure (see the module docstring)."""
    message = str(exc) or type(exc).__name__
    error: httpx.TransportError
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        error = httpx.ConnectTimeout(message, request=request)
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        error = httpx.ProxyError(message, request=request)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = httpx.ConnectError(message, request=request)
        if isinstance(exc.os_error, ssl.SSLError):
            # The retry policy reads the ssl.SSLError in the chain (its ``reason`` tells a
            # legacy-renegotiation refusal, docs/services/ons.md, "TLS"); aiohttp's wrapper is
            # an SSLError subclass without that reason, so the original goes first.
            raise error from exc.os_error
    elif isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        error = httpx.ReadTimeout(message, request=request)
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        # httpcore: "Server disconnected without sending a response" / "peer closed connection
        # without sending complete message body", both RemoteProtocolError.
        error = httpx.RemoteProtocolError(message, request=request)
    elif isinstance(exc, aiohttp.ClientResponseError):  # an unparsable answer
        error = httpx.RemoteProtocolError(message, request=request)
    elif isinstance(exc, aiohttp.ClientConnectionError | OSError):  # reset, broken pipe
        error = httpx.ReadError(message, request=request)
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        error = httpx.UnsupportedProtocol(message, request=request)
    else:  # another aiohttp.ClientError: not retried, as an unknown failure should not be
        error = httpx.TransportError(message, request=request)
    raise error from exc


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body, read as httpx reads a body: chunks as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            _map_error(exc, self._request)

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end, else the connection is closed
        # (aiohttp decides by the parser's state, as httpcore does).
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession`` (one pool).

    One transport per httpx client, as httpx's own: a retry's fresh client gets a fresh pool.
    The session is opened on the first request, inside the event loop that uses it.

    Args:
        ssl_context: the context of every TLS connection (the handler's shared one).
        max_connections: the pool's size (connections open at once, all hosts).
        keepalive_expiry: seconds an idle connection is kept (httpx's default: 5).
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int | None = 100,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._closed = False
        # httpx reads HTTP(S)_PROXY/ALL_PROXY/NO_PROXY for its own transport; read them here
        # too (once, as httpx does), but not ``.netrc`` credentials for the target host, which
        # aiohttp's ``trust_env`` would add and httpx never sends.
        self._env_proxies = environment_proxies()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            ssl=self._ssl_context,
            limit=self._max_connections or 0,
            keepalive_timeout=self._keepalive_expiry,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
            auto_decompress=False,  # httpx decodes (and max_response_bytes counts decoded)
            skip_auto_headers=_NO_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=_MAX_HEAD_LINE,
            max_field_size=_MAX_HEAD_LINE,
        )
        # aiohttp replays an idempotent method once when a kept-alive connection turns out
        # closed; httpcore never replays: the handler's retry policy decides every replay
        # (and counts it against max_retries), so aiohttp's own is turned off.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        return session

    def _proxy(self, url: httpx.URL) -> dict[str, Any]:
        if not self._env_proxies:
            return {}
        try:
            proxy, auth = _aiohttp_helpers.get_env_proxy_for_url(yarl.URL(str(url)))
        except LookupError:
            return {}
        return {"proxy": proxy, "proxy_auth": auth}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        session = self._session
        if session is None:
            session = self._session = self._open()
        timeout = request.extensions.get("timeout", {})
        key = (timeout.get("connect"), timeout.get("pool"), timeout.get("read"))
        client_timeout = self._timeouts.get(key)
        if client_timeout is None:  # one per distinct setting: most clients have one
            connect, pool, read = key
            client_timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None,
                # aiohttp's ``connect`` spans the pool wait and the connection: both bounds.
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=read,
            )
        headers = list(request.headers.multi_items())
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # type: ignore[assignment]  # aiohttp reads async iterables
            # aiohttp frames the body itself (chunked when there is no Content-Length).
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        try:
            response = await session.request(
                request.method,
                # Already encoded by httpx: sent as is, not parsed and quoted a second time.
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=client_timeout,
                server_hostname=request.extensions.get("sni_hostname"),
                **self._proxy(request.url),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            _map_error(exc, request)
        reason = response.reason
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                **({"reason_phrase": reason.encode("latin-1", "replace")} if reason else {}),
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
