"""Credential headers never leave the connection's origins (redirects and full URLs), both paths."""

from __future__ import annotations

from typing import Any

import httpx

from echo_connhandler import OnsHttpConnProperties, OnsHttpHandler

CREDENTIAL_HEADERS = {"x-api-key": "header-key-12345", "x-ss-id": "session-id-12345"}


def check_withheld(foreign: dict[str, str], own: dict[str, str]) -> None:
    assert not set(CREDENTIAL_HEADERS) & set(foreign)
    # The same headers still reach the connection's own host.
    assert {name: own[name] for name in CREDENTIAL_HEADERS} == CREDENTIAL_HEADERS


def test_credentials_withheld_from_another_origin_sync(
    make_sync_handler: Any, tls_server: Any, key: str
) -> None:
    """A redirect to another origin carries no API key, session id or credential header (sync)."""
    handler = make_sync_handler(headers=CREDENTIAL_HEADERS, verify_ssl=False)
    redirect = {"params": {"to": f"{tls_server.url}/echo/{key}"}}
    foreign = handler.get("redirect", **redirect).json()["headers"]
    own = handler.get(f"echo/{key}").json()["headers"]
    check_withheld(foreign, own)


async def test_credentials_withheld_from_another_origin_async(
    make_async_handler: Any, tls_server: Any, key: str
) -> None:
    """A redirect to another origin carries no API key, session id or credential header (async)."""
    handler = make_async_handler(headers=CREDENTIAL_HEADERS, verify_ssl=False)
    redirect = {"params": {"to": f"{tls_server.url}/echo/{key}"}}
    foreign = (await handler.async_get("redirect", **redirect)).json()["headers"]
    own = (await handler.async_get(f"echo/{key}")).json()["headers"]
    check_withheld(foreign, own)


def test_full_url_to_another_origin_gets_no_api_key_sync(
    make_sync_handler: Any, tls_server: Any, key: str
) -> None:
    """A full URL naming another host is sent without the connection's Bearer API key (sync)."""
    handler = make_sync_handler(api_key="api-key-12345", verify_ssl=False)
    seen = handler.get(f"{tls_server.url}/echo/{key}").json()["headers"]
    assert "authorization" not in seen


async def test_full_url_to_another_origin_gets_no_api_key_async(
    make_async_handler: Any, tls_server: Any, key: str
) -> None:
    """A full URL naming another host is sent without the connection's Bearer API key (async)."""
    handler = make_async_handler(api_key="api-key-12345", verify_ssl=False)
    seen = (await handler.async_get(f"{tls_server.url}/echo/{key}")).json()["headers"]
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
