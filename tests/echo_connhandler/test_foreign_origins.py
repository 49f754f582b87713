"""Credential headers never leave the connection's origins (redirects and full URLs), both paths."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from echo_connhandler import OnsHttpConnProperties, OnsHttpHandler

CREDENTIAL_HEADERS = {"x-api-key": "header-key-12345", "x-ss-id": "session-id-12345"}


@pytest.mark.parametrize("path", ["sync", "async"])
async def test_credentials_withheld_from_another_origin(
    make_handler: Any, tls_server: Any, key: str, path: str
) -> None:
    """A redirect to another origin carries no API key, session id or credential header."""
    handler = make_handler(headers=CREDENTIAL_HEADERS, verify_ssl=False, skip_connect=True)
    redirect = {"params": {"to": f"{tls_server.url}/echo/{key}"}}
    if path == "sync":
        foreign = handler.get("redirect", **redirect).json()["headers"]
        own = handler.get(f"echo/{key}").json()["headers"]
    else:
        foreign = (await handler.async_get("redirect", **redirect)).json()["headers"]
        own = (await handler.async_get(f"echo/{key}")).json()["headers"]
        await handler.async_close()
    assert not set(CREDENTIAL_HEADERS) & set(foreign)
    # The same headers still reach the connection's own host.
    assert {name: own[name] for name in CREDENTIAL_HEADERS} == CREDENTIAL_HEADERS


@pytest.mark.parametrize("path", ["sync", "async"])
async def test_full_url_to_another_origin_gets_no_api_key(
    make_handler: Any, tls_server: Any, key: str, path: str
) -> None:
    """A full URL naming another host is sent without the connection's Bearer API key."""
    handler = make_handler(api_key="api-key-12345", verify_ssl=False, skip_connect=True)
    url = f"{tls_server.url}/echo/{key}"
    if path == "sync":
        seen = handler.get(url).json()["headers"]
    else:
        seen = (await handler.async_get(url)).json()["headers"]
        await handler.async_close()
    assert "authorization" not in seen


def test_ons_trusts_its_identity_provider_and_profile_list() -> None:
    """SINAPSE on three origins: the bearer reaches the profile list, not a foreign host."""
    seen: dict[str, httpx.Headers] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "access-token-789", "expires_in": 900})
        if request.url.host == "profiles.ons.test":
            if request.headers.get("authorization") != "Bearer access-token-789":
                return httpx.Response(401, json={"error": "invalid_token"})
            profile = {
                "perfil": "Apurador",
                "tipoEscopo": "AGENTES",
                "idEscopo": 1,
                "nomeEscopo": "E",
            }
            return httpx.Response(200, json=[profile])
        return httpx.Response(200, text="ok")

    class Fake(OnsHttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(handle)}

    props = OnsHttpConnProperties(
        host="https://sinapse.ons.test/api",
        user="u",
        password="pw-12345",
        login_target="SINAPSE",
        auth_url="https://pops.ons.test/ons.pop.federation",
        profile_url="https://profiles.ons.test/perfis",
    )
    handler = Fake(props, max_retries=0)
    handler.get("https://elsewhere.test/page")
    handler.close()
    assert seen["profiles.ons.test"]["authorization"] == "Bearer access-token-789"
    assert "authorization" not in seen["elsewhere.test"]
    assert "perfil-selecionado" in seen["elsewhere.test"]  # not a credential: only the token is
