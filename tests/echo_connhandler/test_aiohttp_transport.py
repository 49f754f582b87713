"""The opt-in aiohttp transport (``HttpConnProperties(async_transport="aiohttp")``).

The whole handler suite also runs on it with ``pytest --async-transport=aiohttp`` (see
tests/conftest.py); this module holds what is specific to the transport, and a few behaviours
the retry policy depends on, checked on both transports side by side.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from echo_connhandler import HttpConnProperties, HttpHandler, HttpTransportError, RetryPolicy
from echo_connhandler._handler import POOL_SIZE, ssl_context
from echo_connhandler._retry import needs_legacy_renegotiation

aiohttp = pytest.importorskip("aiohttp")

from aiohttp.client_reqrep import ConnectionKey  # noqa: E402

from echo_connhandler._transports import AiohttpTransport, _map_error  # noqa: E402

BOTH = pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
KEY = ConnectionKey("api.example.test", 443, True, True, None, None, None, None)


def _transport_of(handler: HttpHandler) -> httpx.AsyncBaseTransport:
    client = handler.async_connection
    assert client is not None
    return client._transport  # type: ignore[no-any-return]


# -- the setting ----------------------------------------------------------------------------------
def test_default_is_httpx_and_the_setting_is_validated() -> None:
    """httpx's own transport unless asked; an unknown name is refused, naming the field."""
    assert HttpConnProperties(host="https://api.example.test").async_transport == "httpx"
    with pytest.raises(ValueError, match="async_transport must be one of httpx, aiohttp"):
        HttpConnProperties(host="https://api.example.test", async_transport="curl")  # type: ignore[arg-type]
    props = HttpConnProperties(host="https://api.example.test", async_transport="aiohttp")
    assert "async_transport='aiohttp'" in repr(props)


async def test_the_async_client_runs_on_aiohttp(make_async_handler: Any) -> None:
    """The handler's async client uses the transport: the handler's SSL context and pool size."""
    handler = make_async_handler(async_transport="aiohttp", verify_ssl=False)
    response = await handler.async_get("api/items")
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"
    transport = _transport_of(handler)
    assert isinstance(transport, AiohttpTransport)
    assert transport._ssl_context is ssl_context(False)
    session = transport._session
    assert session is not None
    assert session.connector is not None
    assert session.connector.limit == POOL_SIZE


async def test_the_sync_client_is_unchanged(make_async_handler: Any) -> None:
    """Only the async path moves to aiohttp; the sync client keeps httpx's transport."""
    handler = make_async_handler(async_transport="aiohttp")
    assert handler.get("api/items").status_code == 200
    assert isinstance(handler.connection._transport, httpx.HTTPTransport)


async def test_an_explicit_transport_wins(make_async_handler: Any) -> None:
    """``async_transport=`` given to the handler (tests, proxies) beats the properties."""
    mock = httpx.MockTransport(lambda request: httpx.Response(204))
    handler = make_async_handler(async_transport="aiohttp", transport=mock)
    assert (await handler.async_get("x", response_ok=204)).status_code == 204
    assert _transport_of(handler) is mock


async def test_a_retry_gets_a_fresh_pool(make_async_handler: Any, key: str) -> None:
    """The client swapped in between attempts has its own transport; the old one is closed."""
    handler = make_async_handler(async_transport="aiohttp")
    await handler.async_get("api/items")
    first = _transport_of(handler)
    assert isinstance(first, AiohttpTransport)
    await handler.async_get(f"flaky/{key}/1")
    second = _transport_of(handler)
    assert second is not first
    assert first._session is None  # closed: its last request had ended


async def test_close_closes_the_session(make_async_handler: Any) -> None:
    handler = make_async_handler(async_transport="aiohttp")
    await handler.async_get("api/items")
    session = _transport_of(handler)._session  # type: ignore[attr-defined]
    await handler.async_close()
    assert session.closed


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aiohttp installed, asking for it fails at construction, naming the extra."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "echo_connhandler._transports")
    props = HttpConnProperties(host="https://api.example.test", async_transport="aiohttp")
    with pytest.raises(ImportError, match=r"echo-connhandler-provider\[aiohttp\]"):
        HttpHandler(props, skip_connect=True)


# -- the request goes out as httpx built it -------------------------------------------------------
async def test_no_headers_of_aiohttps_own(make_async_handler: Any) -> None:
    """A bytes body gets no Content-Type, the User-Agent is httpx's, nothing is added."""
    handler = make_async_handler(async_transport="aiohttp")
    echoed = (await handler.async_post("api/raw", content=b"raw")).json()
    assert echoed["body"] == "raw"
    assert "content-type" not in echoed["headers"]
    assert echoed["headers"]["user-agent"].startswith("python-httpx/")
    assert echoed["headers"]["content-length"] == "3"


async def test_streamed_bodies(make_async_handler: Any) -> None:
    """A generator body goes out chunked, a multipart upload with its length."""

    async def parts() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    handler = make_async_handler(async_transport="aiohttp")
    echoed = (await handler.async_post("api/stream", content=parts())).json()
    assert echoed["body"] == "one,two"
    assert echoed["headers"]["transfer-encoding"] == "chunked"
    echoed = (await handler.async_post("api/upload", files={"f": ("a.csv", b"x,y\n")})).json()
    assert "a.csv" in echoed["body"]
    assert echoed["headers"]["content-type"].startswith("multipart/form-data")


async def test_cookies_stay_in_httpxs_jar(make_async_handler: Any, key: str) -> None:
    """aiohttp keeps no cookies: httpx's jar has them, and each is sent once."""
    handler = make_async_handler(async_transport="aiohttp")
    await handler.async_get(f"cookie/c{key[:8]}/v1")
    client = handler.async_connection
    assert client is not None
    assert client.cookies.get(f"c{key[:8]}") == "v1"
    echoed = (await handler.async_get("api/items")).json()
    assert echoed["headers"]["cookie"] == f"c{key[:8]}=v1"


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_aiohttp_never_replays_by_itself(
    make_async_handler: Any, server: Any, key: str, method: str
) -> None:
    """aiohttp's own replay of an idempotent request is off: the retry policy decides."""
    handler = make_async_handler(async_transport="aiohttp", max_retries=0)
    with pytest.raises(HttpTransportError):
        await handler.async_request(method, f"drop/{key}/1")
    assert server.hits(key) == 1
    assert handler.retry_count == 0


def test_environment_proxies_as_httpx_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY and NO_PROXY apply as with httpx's transport."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("NO_PROXY", "inside.example.test")
    transport = AiohttpTransport(ssl_context(True))
    proxied = transport._proxy(httpx.URL("https://api.example.test/x"))
    assert str(proxied["proxy"]) == "http://proxy.example.test:3128"
    assert transport._proxy(httpx.URL("https://inside.example.test/x")) == {}
    monkeypatch.delenv("HTTPS_PROXY")
    assert AiohttpTransport(ssl_context(True))._proxy(httpx.URL("https://api.example.test")) == {}


# -- errors: the httpx exception httpcore would raise ---------------------------------------------
def _legacy_refusal() -> ssl.SSLError:
    error = ssl.SSLError(1, "[SSL: UNSAFE_LEGACY_RENEGOTIATION_DISABLED] unsafe legacy")
    error.reason = "UNSAFE_LEGACY_RENEGOTIATION_DISABLED"  # what OpenSSL sets
    return error


CONNECT_PHASE = [
    (aiohttp.ConnectionTimeoutError("Connection timeout to host"), httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), httpx.ConnectError),
    (aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name not known")), httpx.ConnectError),
]
IN_FLIGHT = [
    (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError("Response payload is not completed"), httpx.RemoteProtocolError),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
    (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), httpx.ReadTimeout),
]


def _mapped(exc: BaseException) -> httpx.TransportError:
    request = httpx.Request("POST", "https://api.example.test/x")
    with pytest.raises(httpx.TransportError) as info:
        _map_error(exc, request)
    assert info.value.request is request
    return info.value


def _as_handler_error(error: httpx.TransportError) -> HttpTransportError:
    wrapped = HttpTransportError("failed")
    wrapped.__cause__ = error
    return wrapped


@pytest.mark.parametrize(("exc", "expected"), CONNECT_PHASE)
def test_connect_phase_errors_are_replayed_even_for_post(
    exc: BaseException, expected: type[Exception]
) -> None:
    """Before the request left: the httpx connect error, replayed for a POST too."""
    error = _mapped(exc)
    assert type(error) is expected
    assert RetryPolicy().is_retryable(_as_handler_error(error), idempotent=False)


@pytest.mark.parametrize(("exc", "expected"), IN_FLIGHT)
def test_in_flight_errors_are_replayed_only_when_idempotent(
    exc: BaseException, expected: type[Exception]
) -> None:
    """After the request may have left: replayed for a GET, never for a POST."""
    error = _mapped(exc)
    assert type(error) is expected
    assert RetryPolicy().is_retryable(_as_handler_error(error), idempotent=True)
    assert not RetryPolicy().is_retryable(_as_handler_error(error), idempotent=False)


def test_tls_errors_keep_the_ssl_error_as_their_cause() -> None:
    """Certificate and handshake failures: ConnectError caused by the ssl error, not retried,
    and a refused legacy renegotiation is still recognised (its hint names the setting)."""
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    error = _mapped(aiohttp.ClientConnectorCertificateError(KEY, cert))
    assert isinstance(error, httpx.ConnectError)
    assert error.__cause__ is cert
    assert not RetryPolicy().is_retryable(_as_handler_error(error), idempotent=True)
    legacy = _mapped(aiohttp.ClientConnectorSSLError(KEY, _legacy_refusal()))
    assert needs_legacy_renegotiation(legacy)
    assert not RetryPolicy().is_retryable(_as_handler_error(legacy), idempotent=True)


# -- the same behaviour on both transports, over loopback ---------------------------------------
@BOTH
async def test_untrusted_certificate_is_not_retried(
    make_async_handler: Any, tls_server: Any, transport: str
) -> None:
    handler = make_async_handler(tls_server.url, async_transport=transport, max_retries=3)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_get("api/items")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert handler.retry_count == 0
    trusted = make_async_handler(tls_server.url, async_transport=transport, verify_ssl=False)
    assert (await trusted.async_get("api/items")).status_code == 200


@BOTH
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_read_timeout_replayed_only_when_idempotent(
    make_async_handler: Any, server: Any, key: str, transport: str, method: str
) -> None:
    handler = make_async_handler(async_transport=transport, max_retries=1, request_timeout=0.1)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_request(method, f"sleep/0.4?k={key}")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert server.hits(key) == (2 if method == "GET" else 1)


@BOTH
async def test_connection_refused_replayed_for_post(
    make_async_handler: Any, closed_port: int, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    handler = make_async_handler(
        f"http://127.0.0.1:{closed_port}", async_transport=transport, max_retries=2
    )
    with (
        caplog.at_level(logging.WARNING, "echo_connhandler"),
        pytest.raises(HttpTransportError) as info,
    ):
        await handler.async_post("x", json={"a": 1})
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert handler.retry_count == 2


@BOTH
async def test_dropped_post_is_not_replayed(
    make_async_handler: Any, server: Any, key: str, transport: str
) -> None:
    handler = make_async_handler(async_transport=transport, max_retries=5)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_post(f"drop/{key}/1", json={"a": 1})
    # Either, by timing (the reset can come before the end of the head is read): both are
    # in-flight errors.
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError | httpx.ReadError)
    assert server.hits(key) == 1


# -- the Airflow connection field -----------------------------------------------------------------
@pytest.mark.parametrize("conn_type", ["echo_http", "bazefield", "ccee", "ons"])
def test_every_connection_type_has_the_field(conn_type: str) -> None:
    """The form offers it (httpx by default, two choices) and it reaches the properties."""
    from echo_connhandler_provider._fields import CONNECTION_TYPES, build_settings

    entry = CONNECTION_TYPES[conn_type].provider_entry()["conn-fields"]["async_transport"]
    assert entry["schema"]["default"] == "httpx"
    assert entry["schema"]["enum"] == ["httpx", "aiohttp"]
    extra = {"async_transport": "aiohttp"}
    if conn_type == "ons":
        extra["login_target"] = "SAGER"
    settings = build_settings(
        conn_type,
        conn_id="c",
        host="https://api.example.test",
        schema=None,
        port=None,
        login="u",
        password="p",
        extra=extra,
    )
    assert settings.properties["async_transport"] == "aiohttp"
    with pytest.raises(ValueError, match="must be one of httpx, aiohttp"):
        build_settings(
            conn_type,
            conn_id="c",
            host="https://api.example.test",
            schema=None,
            port=None,
            login=None,
            password=None,
            extra={**extra, "async_transport": "requests"},
        )
