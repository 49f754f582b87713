"""Fixtures of the sandbox tests.

One running :class:`Sandbox` per test module (``sandbox``); the ``sb`` fixture is the same
sandbox with its faults and counters reset after each test. Helpers are fixtures (not imports)
so this directory needs no package layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

_BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
    "Accept": "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8",
    "Accept-Language": "pt-BR,pt;q=0.9",
}
_ORIGINS = {"SAGER": "https://apps18.ons.org.br", "SINAPSE": "https://pops.ons.org.br"}

OnsLogin = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=42)) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox; its faults and counters are reset after each test."""
    yield sandbox
    sandbox.reset()


@pytest.fixture
def browser_headers() -> dict[str, str]:
    return dict(_BROWSER_HEADERS)


@pytest.fixture
def ons_login() -> OnsLogin:
    """``ons_login(client, auth_url, client_id="SAGER", user=None)`` -> token response."""

    def login(
        client: httpx.Client, auth_url: str, client_id: str = "SAGER", user: str | None = None
    ) -> dict[str, Any]:
        credentials = DEMO_CREDENTIALS["ons"]
        response = client.post(
            f"{auth_url}/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": client_id,
                "username": user or credentials["user"],
                "password": credentials["password"],
            },
            headers={"Origin": _ORIGINS[client_id]},
        )
        assert response.status_code == 200, response.text
        token: dict[str, Any] = response.json()
        return token

    return login


@pytest.fixture
def ccee_client(sb: Sandbox) -> Iterator[httpx.Client]:
    """A browser-like, cookie-keeping client on the CCEE portal, already warmed up."""
    with httpx.Client(base_url=sb.urls.ccee, headers=_BROWSER_HEADERS, timeout=30) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert "ak_bmsc" in response.cookies
        yield client
