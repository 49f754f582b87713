"""One SSL context per TLS setting, reused by every client; ONS's opt-in legacy renegotiation."""

from __future__ import annotations

import ssl

from echo_connhandler import HttpConnProperties, HttpHandler, OnsHttpConnProperties, OnsHttpHandler
from echo_connhandler._handler import ssl_context

LEGACY = getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)


def _ons(**kwargs: object) -> OnsHttpHandler:
    props = OnsHttpConnProperties(
        host="https://integra.ons.test/api",
        user="u",
        password="p-12345",
        login_target="SAGER",
        **kwargs,  # type: ignore[arg-type]
    )
    return OnsHttpHandler(props, skip_connect=True)


def test_legacy_renegotiation_is_opt_in() -> None:
    """Without the option the context refuses legacy renegotiation; with it, allows it."""
    assert not _ons()._ssl_context().options & LEGACY
    assert _ons(legacy_tls_renegotiation=True)._ssl_context().options & LEGACY


def test_unverified_context_checks_nothing() -> None:
    """verify_ssl=False turns off both the certificate and the host name checks."""
    context = ssl_context(False)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert ssl_context(True).verify_mode == ssl.CERT_REQUIRED


def _context_of(handler: HttpHandler) -> ssl.SSLContext:
    """The SSL context the live client's connection pool really uses."""
    return handler.connection._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]


def test_one_context_shared_by_handlers_and_reconnects() -> None:
    """Handlers with the same setting, and every reconnect, reuse one SSL context object."""
    props = HttpConnProperties(host="https://api.example.test")
    first, second = HttpHandler(props), HttpHandler(props)
    try:
        before = _context_of(first)
        first.reconnect()
        assert _context_of(first) is before
        assert _context_of(second) is before
    finally:
        first.close()
        second.close()
