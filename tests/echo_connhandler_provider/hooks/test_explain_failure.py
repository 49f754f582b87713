"""``explain_test_failure``: the cause of a failed connection test, decided by exception types.

Unit tests build the chains httpx really raises (HttpTransportError <- httpx <- httpcore <- the
OS or ssl error), with texts chosen to mislead any decision made by matching text. End-to-end
tests run ``test_connection()`` against real failures: TLS spoken to a plain HTTP port, a
self-signed certificate, and a server that accepts but never answers.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest

from echo_connhandler import AuthenticationError, HttpTransportError, ProfileSelectionError
from echo_connhandler._retry import needs_legacy_renegotiation
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.hooks import EchoHttpHook, OnsHook
from echo_connhandler_provider.hooks._base import explain_test_failure

TLS = "TLS error (certificate or handshake):"
UNREACHABLE = "Host unreachable (connection refused or no route):"


def _transport(*chain: BaseException) -> HttpTransportError:
    """An HttpTransportError raised from ``chain[0]``, itself raised from ``chain[1]``, ..."""
    top = HttpTransportError("GET https://api.example.com/ failed")
    link: BaseException = top
    for cause in chain:
        link.__cause__ = cause
        link = cause
    return top


def _legacy_renegotiation_error() -> ssl.SSLError:
    error = ssl.SSLError(
        1, "[SSL: UNSAFE_LEGACY_RENEGOTIATION_DISABLED] unsafe legacy renegotiation disabled"
    )
    error.reason = "UNSAFE_LEGACY_RENEGOTIATION_DISABLED"
    return error


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        # An SSL error deep in the chain, whose text does not say "SSL".
        (
            (httpx.ConnectError("handshake failure"), ssl.SSLError(1, "handshake failure")),
            TLS,
        ),
        (
            (
                httpx.ConnectError("certificate verify failed"),
                httpcore.ConnectError("certificate verify failed"),
                ssl.SSLCertVerificationError(1, "certificate verify failed"),
            ),
            TLS,
        ),
        # A read timeout on an https connection whose text mentions SSL: a timeout, not TLS.
        ((httpx.ReadTimeout("SSL read timed out"),), "Timed out:"),
        ((httpx.PoolTimeout("no connection free"),), "Timed out:"),
        ((httpx.ConnectTimeout("connection refused?"),), "Timed out connecting:"),
        # Refused, or a name that does not resolve: both ConnectError.
        (
            (httpx.ConnectError("[Errno 111]"), ConnectionRefusedError(111, "Connection refused")),
            UNREACHABLE,
        ),
        ((httpx.ConnectError("[Errno -2] Name or service not known"),), UNREACHABLE),
        # Other request errors, whatever their text says.
        ((httpx.RemoteProtocolError("server refused: SSL timeout"),), "Network error:"),
        ((httpx.TooManyRedirects("Exceeded maximum allowed redirects."),), "Network error:"),
        ((), "Network error:"),
    ],
)
def test_transport_failures_are_told_apart_by_type(
    chain: tuple[BaseException, ...], expected: str
) -> None:
    """TLS, timeout, unreachable, other: the exception types decide, not the texts."""
    message = explain_test_failure(_transport(*chain))
    assert message.startswith(expected), message
    assert "GET https://api.example.com/ failed" in message


def test_context_is_followed_as_well_as_cause() -> None:
    """An SSL error raised while handling (``__context__``) is found too."""
    top = _transport(httpx.ConnectError("connect failed"))
    assert top.__cause__ is not None
    top.__cause__.__context__ = ssl.SSLError(1, "handshake failure")
    assert explain_test_failure(top).startswith(TLS)


def test_cycle_in_the_chain_terminates() -> None:
    """A chain that loops back on itself does not hang."""
    inner = httpx.ConnectError("connect failed")
    top = _transport(inner)
    inner.__context__ = top
    assert explain_test_failure(top).startswith(UNREACHABLE)


def test_legacy_renegotiation_suggests_the_field() -> None:
    """UNSAFE_LEGACY_RENEGOTIATION_DISABLED: a TLS error that names legacy_tls_renegotiation."""
    error = _transport(
        httpx.ConnectError("unsafe legacy renegotiation disabled"), _legacy_renegotiation_error()
    )
    # The library decides it once, from the SSL error's reason, when it builds the error.
    assert needs_legacy_renegotiation(error)
    error.legacy_tls_renegotiation = True
    message = explain_test_failure(error)
    assert message.startswith(TLS)
    assert "legacy_tls_renegotiation" in message


def test_other_tls_errors_do_not_suggest_legacy_renegotiation() -> None:
    """The hint appears only for the renegotiation error."""
    message = explain_test_failure(
        _transport(httpx.ConnectError("x"), ssl.SSLCertVerificationError(1, "verify failed"))
    )
    assert message.startswith(TLS)
    assert "legacy_tls_renegotiation" not in message
    assert "verify_ssl" in message


def test_library_errors_keep_their_messages() -> None:
    """The library's own errors are still recognised first (an SSL cause does not matter)."""
    response = httpx.Response(401, request=httpx.Request("POST", "https://idp.example/token"))
    error = AuthenticationError("login refused", response=response)
    error.__cause__ = ssl.SSLError(1, "handshake failure")
    assert explain_test_failure(error).startswith("Login refused: bad user or password")
    profile = ProfileSelectionError("3 SINAPSE profiles")
    profile.__context__ = httpx.ConnectError("refused")
    assert explain_test_failure(profile).startswith("SINAPSE profile:")
    assert explain_test_failure(ValueError("bad")).startswith("Invalid connection settings:")


# -- end to end: test_connection() against real failures ----------------------------------------
def test_test_connection_tls_to_a_plain_http_port(conns: Any, sb: Sandbox) -> None:
    """https:// to a port that speaks plain HTTP: a TLS handshake error."""
    conns.define(
        "tls_to_http",
        {"conn_type": "echo_http", "host": sb.urls.bazefield.replace("http://", "https://")},
    )
    ok, message = EchoHttpHook("tls_to_http").test_connection()
    assert not ok
    assert message.startswith(TLS), message


def test_test_connection_tls_on_the_ons_login(conns: Any, sb: Sandbox) -> None:
    """The TLS failure of a login (ONS token request) is named the same way."""
    https = sb.urls.ons_auth_url.replace("http://", "https://")
    conns.define(
        "ons_tls",
        {
            "conn_type": "ons",
            "host": sb.urls.ons_sager,
            "login": "demo.user",
            "password": "demo-password",
            "extra": {"login_target": "SAGER", "auth_url": https},
        },
    )
    ok, message = OnsHook("ons_tls").test_connection()
    assert not ok
    assert message.startswith(TLS), message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_test_connection_server_never_answers(conns: Any, silent_port: int) -> None:
    """A server that takes the request and never answers: 'Timed out'."""
    conns.define(
        "silent",
        {
            "conn_type": "echo_http",
            "host": f"http://127.0.0.1:{silent_port}",
            "extra": {"request_timeout": 0.3},
        },
    )
    ok, message = EchoHttpHook("silent").test_connection()
    assert not ok
    assert message.startswith("Timed out:"), message


def test_test_connection_untrusted_certificate(conns: Any, tls_server: Any) -> None:
    """A certificate no trusted CA signed: a TLS error that points at verify_ssl."""
    conns.define("self_signed", {"conn_type": "echo_http", "host": tls_server.url})
    ok, message = EchoHttpHook("self_signed").test_connection()
    assert not ok
    assert message.startswith(TLS), message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "verify_ssl" in message
