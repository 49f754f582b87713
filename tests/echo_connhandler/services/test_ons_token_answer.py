"""How OnsOAuth2 reads the token answer (narrow unit tests over MockTransport)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from echo_connhandler import OnsHttpConnProperties, OnsHttpHandler, UnexpectedContentError


def _handler(token_answer: dict[str, Any]) -> OnsHttpHandler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json=token_answer)
        if request.url.path.endswith("/ons.pop.federation/"):
            return httpx.Response(
                200, text="<html>login</html>", headers={"content-type": "text/html"}
            )
        return httpx.Response(200, content=b"PK\x03\x04data")

    class Fake(OnsHttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(handle)}

    props = OnsHttpConnProperties(
        host="https://integra.ons.test/api",
        user="u",
        password="pw-12345",
        login_target="SAGER",
        auth_url="https://pops.ons.test/ons.pop.federation",
    )
    return Fake(props, skip_connect=True, max_retries=0, max_conn_retries=0)


@pytest.mark.parametrize("expires_in", ["soon", -5, "inf", True])
def test_invalid_expires_in_is_an_unexpected_content_error(expires_in: Any) -> None:
    """A token answer with an unusable expires_in is an error of the tree, naming the field."""
    handler = _handler({"access_token": "access-token-123", "expires_in": expires_in})
    with pytest.raises(UnexpectedContentError, match="expires_in"):
        handler.reconnect()


def test_missing_expires_in_means_the_usual_twenty_minutes() -> None:
    """Without expires_in the token is kept (ONS's ~1199 s), not refreshed on every call."""
    handler = _handler({"access_token": "access-token-456"})
    handler.reconnect()
    assert handler.export_sager_report("2024-01-01", "2024-01-02")[:2] == b"PK"
    assert not handler._auth.needs_login()  # type: ignore[union-attr]
    handler.close()
