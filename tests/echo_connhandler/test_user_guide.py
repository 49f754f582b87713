"""Every snippet of the user guide (http-handlers-user-guide.txt), in order, against loopback.

Each test is named after the guide's section and runs the snippet as written, with the host
replaced by the loopback server (``/api/session/start`` becomes ``cookie/session/started`` so
that the server sets a cookie). The snippets that log in (Bazefield user/password, ONS OAuth2)
run against the project's sandbox instead, with its demo credentials in place of the guide's
``my.user``/``my-password`` (the sandbox only accepts its own made-up accounts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

import echo_connhandler
from echo_connhandler import (
    BazeHttpHandler,
    HttpConnProperties,
    HttpHandler,
    OnsHttpConnProperties,
    OnsHttpHandler,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

Track = Callable[[HttpHandler], HttpHandler]
BAZE_CREDS = DEMO_CREDENTIALS["bazefield"]
ONS_CREDS = DEMO_CREDENTIALS["ons"]
BAZE_LOGIN = "/BazeField.Services/api/auth/baze"
ONS_FEDERATION = "/ons.pop.federation/"
ONS_TOKEN = "/ons.pop.federation/oauth2/token"
#: The sandbox demo user's only SINAPSE profile (the guide's example is made up).
SINAPSE_PROFILE = "Apurador Agente/AGENTES/189/ECHO ENERGIA"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The sandbox for the login snippets; Bazefield answers a session id, not a bearer token,
    so that the session the guide describes is what travels (``x-ss-id``)."""
    with Sandbox(SandboxConfig(seed=42, baze_issue_bearer_token=False)) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox, faults and counters reset before and after the test."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def sandbox_requests(sb: Sandbox, service: str) -> dict[str, int]:
    """Requests the sandbox's ``service`` emulator received since the last reset, by path."""
    return dict(sb.faults(service).stats["requests"])


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """``(method, path)`` of every request the sync transport sends, in order (logins too)."""
    requests: list[tuple[str, str]] = []
    original = httpx.HTTPTransport.handle_request

    def record(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path))
        return original(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", record)
    return requests


@pytest.fixture
def track() -> Iterator[Track]:
    """Close the sync client of every handler a snippet builds."""
    handlers: list[HttpHandler] = []

    def keep(handler: HttpHandler) -> HttpHandler:
        handlers.append(handler)
        return handler

    yield keep
    for handler in handlers:
        handler.close()


@pytest.fixture
def props(server: Any) -> HttpConnProperties:
    """The guide's Bazefield properties, on loopback."""
    return HttpConnProperties(host=server.url, api_key="my-api-key")


# -- Choosing the right handler ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["HttpHandler", "BazeHttpHandler", "CceeHttpHandler", "OnsHttpHandler"]
)
def test_choosing_the_right_handler(name: str) -> None:
    """The four handlers of the table exist and take properties as their first argument."""
    handler_cls = getattr(echo_connhandler, name)
    assert issubclass(handler_cls, HttpHandler)
    assert next(iter(handler_cls.__init__.__annotations__)) == "props"


# -- Connection properties ------------------------------------------------------------------------
def test_connection_properties(server: Any, track: Track) -> None:
    """All documented fields are accepted and reach every request."""
    props = HttpConnProperties(
        host=server.url,
        api_key="my-secret-key",  # preferred auth
        # user="...", password="...",   # alternative auth (cannot use both)
        conn_timeout=30,  # seconds to establish a connection
        request_timeout=300,  # seconds to wait for a response
        verify_ssl=False,  # disable SSL verification
        headers={"accept": "application/json"},
        payload_kwargs={"api_token": "xyz"},  # merged into every request body
        payload_kwargs_key="json",  # where to merge payload_kwargs
    )
    handler = track(HttpHandler(props))
    body = handler.post("endpoint", json={"a": 1}).json()
    assert body["headers"]["authorization"] == "Bearer my-secret-key"
    assert body["headers"]["accept"] == "application/json"
    assert body["json"] == {"api_token": "xyz", "a": 1}
    assert handler.connection.timeout == httpx.Timeout(300, connect=30)
    with pytest.raises(ValueError, match="cannot use both"):
        HttpConnProperties(host=server.url, api_key="my-secret-key", user="u", password="p-12345")


# -- ONS - extended properties --------------------------------------------------------------------
def test_ons_extended_properties(sb: Sandbox, server: Any, track: Track) -> None:
    """OnsHttpHandler takes OnsHttpConnProperties with login_target, and logs in on construction."""
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sager,
        user=ONS_CREDS["user"],  # the guide's "my.user"
        password=ONS_CREDS["password"],  # the guide's "my-password"
        login_target="SAGER",  # or "SINAPSE"
        auth_url=sb.urls.ons_auth_url,  # the sandbox instead of pops.ons.org.br
    )
    handler = track(OnsHttpHandler(props))
    assert sandbox_requests(sb, "ons").get(ONS_TOKEN) == 1
    assert sb.faults("ons").stats["logins"] == {"password": 1}
    with pytest.raises(TypeError, match="OnsHttpConnProperties"):
        OnsHttpHandler(HttpConnProperties(host=server.url), skip_connect=True)
    assert isinstance(handler.props, OnsHttpConnProperties)


# -- Synchronous usage ----------------------------------------------------------------------------
def test_sync_basic_requests(props: HttpConnProperties, server: Any, track: Track) -> None:
    """BazeHttpHandler(props).get(...) returns a response whose .json() is the body."""
    handler = track(BazeHttpHandler(props))
    response = handler.get("BazeField.Services/api/allocationTypes")
    data = response.json()
    assert data["path"] == "/BazeField.Services/api/allocationTypes"
    # "Endpoints can be relative (appended to host) or full URLs"
    full = handler.get(f"{server.url}/BazeField.Services/api/allocationTypes").json()
    assert full["path"] == data["path"]


def test_sync_all_http_verbs(props: HttpConnProperties, track: Track) -> None:
    """The five verbs; response_ok defaults to 200, a mismatch is a RuntimeError, None skips."""
    handler = track(BazeHttpHandler(props, max_retries=0))
    assert handler.get("api/resource").json()["method"] == "GET"
    assert handler.post("api/resource", json={"key": "value"}).json()["json"] == {"key": "value"}
    assert handler.put("api/resource/1", json={"key": "updated"}).json()["method"] == "PUT"
    assert handler.patch("api/resource/1", json={"key": "patched"}).json()["method"] == "PATCH"
    assert handler.delete("api/resource/1").json()["method"] == "DELETE"
    with pytest.raises(RuntimeError):
        handler.get("status/404")
    assert handler.get("status/404", response_ok=None).status_code == 404
    assert handler.get("status/201", response_ok=201).status_code == 201


def test_sync_context_manager(props: HttpConnProperties) -> None:
    """`with BazeHttpHandler(props) as handler:` closes the connection on exit."""
    with BazeHttpHandler(props) as handler:
        data = handler.get("api/endpoint").json()
        client = handler.connection
    # connection is closed automatically
    assert client.is_closed
    assert data["path"] == "/api/endpoint"


def test_sync_accessing_the_underlying_client(props: HttpConnProperties, track: Track) -> None:
    """handler.connection is the live httpx.Client, with the cookies the server set."""
    handler = track(BazeHttpHandler(props))
    handler.get("cookie/session/started")  # the guide's "api/session/start"
    print(handler.connection.cookies)
    assert isinstance(handler.connection, httpx.Client)
    assert handler.connection.cookies["session"] == "started"


# -- Asynchronous usage ---------------------------------------------------------------------------
def test_async_basic_requests(props: HttpConnProperties) -> None:
    """asyncio.run(main()) with `async with BazeHttpHandler(props, skip_connect=True)`."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with BazeHttpHandler(props, skip_connect=True) as handler:
            assert handler.async_connection is None  # lazy
            response = await handler.async_get("BazeField.Services/api/allocationTypes")
            data = response.json()
            seen.update(data=data, client=handler.async_connection)

    asyncio.run(main())
    assert seen["data"]["path"] == "/BazeField.Services/api/allocationTypes"
    assert seen["data"]["headers"]["authorization"] == "Bearer my-api-key"
    assert seen["client"].is_closed


async def test_async_all_http_verbs(props: HttpConnProperties) -> None:
    """The five async verbs."""
    async with BazeHttpHandler(props, skip_connect=True) as handler:
        assert (await handler.async_get("api/resource")).json()["method"] == "GET"
        posted = await handler.async_post("api/resource", json={"key": "value"})
        assert posted.json()["json"] == {"key": "value"}
        put = await handler.async_put("api/resource/1", json={"key": "updated"})
        assert put.json()["json"] == {"key": "updated"}
        patched = await handler.async_patch("api/resource/1", json={"key": "patched"})
        assert patched.json()["json"] == {"key": "patched"}
        assert (await handler.async_delete("api/resource/1")).json()["method"] == "DELETE"
        with pytest.raises(RuntimeError):
            await handler.async_get("status/404", response_ok=200)


async def test_async_context_manager(props: HttpConnProperties) -> None:
    """`async with` calls async_close() automatically."""
    async with BazeHttpHandler(props, skip_connect=True) as handler:
        data = (await handler.async_get("api/endpoint")).json()
        client = handler.async_connection
    # async_close() called automatically
    assert client is not None
    assert client.is_closed
    assert handler.async_connection is None
    assert data["path"] == "/api/endpoint"


async def test_async_explicit_lifecycle(props: HttpConnProperties) -> None:
    """async_reconnect() connects explicitly, async_close() closes explicitly."""
    handler = BazeHttpHandler(props, skip_connect=True)
    await handler.async_reconnect()  # connect explicitly
    client = handler.async_connection
    data = (await handler.async_get("api/endpoint")).json()
    assert handler.async_connection is client
    await handler.async_close()  # close explicitly
    assert client is not None
    assert client.is_closed
    assert data["path"] == "/api/endpoint"


async def test_async_accessing_the_async_client(props: HttpConnProperties) -> None:
    """handler.async_connection is the live httpx.AsyncClient after the first async request."""
    async with BazeHttpHandler(props, skip_connect=True) as handler:
        await handler.async_get("cookie/session/started")  # the guide's "api/session/start"
        print(handler.async_connection.cookies)
        assert isinstance(handler.async_connection, httpx.AsyncClient)
        assert handler.async_connection.cookies["session"] == "started"


async def test_async_mixed_sync_and_async_on_the_same_instance(props: HttpConnProperties) -> None:
    """One instance serves sync (connected in the constructor) and async (lazy) requests."""
    handler = BazeHttpHandler(props)  # sync connects here
    try:
        sync_data = handler.get("api/resource").json()  # uses sync client
        assert handler.async_connection is None
        async_data = (await handler.async_get("api/resource")).json()  # lazy async connect
        assert sync_data["path"] == async_data["path"] == "/api/resource"
        assert handler.async_connection is not None
        assert handler.connection is not handler.async_connection
    finally:
        await handler.async_close()
        handler.close()


async def test_async_mixed_warning_is_lifted(
    props: HttpConnProperties, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's warning is lifted: concurrent async_* on one instance are safe.

    See docs/handlers.md, "Many coroutines on one handler".
    """
    created: list[int] = []
    original = HttpHandler._new_async_client

    def counting(self: HttpHandler, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
        created.append(1)
        return original(self, cookies)

    monkeypatch.setattr(HttpHandler, "_new_async_client", counting)
    async with BazeHttpHandler(props, skip_connect=True) as handler:
        responses = await asyncio.gather(*(handler.async_get(f"api/r/{i}") for i in range(50)))
    assert [r.json()["path"] for r in responses] == [f"/api/r/{i}" for i in range(50)]
    assert created == [1]


# -- Authentication patterns ----------------------------------------------------------------------
def test_authentication_api_key(server: Any, track: Track) -> None:
    """Authorization: Bearer my-key is set on every request automatically."""
    props = HttpConnProperties(host=server.url, api_key="my-key")
    handler = track(BazeHttpHandler(props))
    for endpoint in ("a", "b/c"):
        assert handler.get(endpoint).json()["headers"]["authorization"] == "Bearer my-key"


def test_authentication_user_password(sb: Sandbox, track: Track) -> None:
    """The login POST is called during _connect(), once; its session serves later requests."""
    props = HttpConnProperties(
        host=sb.urls.bazefield,
        user=BAZE_CREDS["user"],  # the guide's "my.user"
        password=BAZE_CREDS["password"],  # the guide's "my-password"
    )
    handler = track(BazeHttpHandler(props))
    # Login POST is called during _connect()
    assert sandbox_requests(sb, "bazefield") == {BAZE_LOGIN.lower(): 1}
    response = handler.get("BazeField.Services/api/allocationTypes")
    assert response.json()["allocationTypes"]  # the session was accepted
    headers = response.request.headers
    assert len(headers["x-ss-id"]) >= 15  # the session id the login answered
    assert "authorization" not in headers
    assert sandbox_requests(sb, "bazefield").get(BAZE_LOGIN.lower()) == 1
    assert sb.faults("bazefield").stats["logins"] == {"password": 1}


def test_authentication_per_request_token_payload_kwargs(server: Any, track: Track) -> None:
    """Every handler.post("endpoint", json={...}) automatically includes api_token."""
    props = HttpConnProperties(
        host=server.url,
        payload_kwargs={"api_token": "xyz"},
        payload_kwargs_key="json",  # merges into the json= body
    )
    handler = track(HttpHandler(props))
    assert handler.post("endpoint", json={"q": 1}).json()["json"] == {"api_token": "xyz", "q": 1}
    assert handler.post("endpoint").json()["json"] == {"api_token": "xyz"}


@pytest.mark.parametrize(
    ("target", "extra", "profile"),
    [
        ("SAGER", {}, None),
        ("SINAPSE", {"selected_profile": SINAPSE_PROFILE}, SINAPSE_PROFILE),
    ],
)
def test_authentication_oauth2_ons(
    sb: Sandbox,
    sent: list[tuple[str, str]],
    track: Track,
    target: str,
    extra: dict[str, str],
    profile: str | None,
) -> None:
    """GET federation (cookies), POST token, Bearer on every request, SINAPSE profile header."""
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sager if target == "SAGER" else sb.urls.ons_sinapse,
        user=ONS_CREDS["user"],  # the guide's "my.user"
        password=ONS_CREDS["password"],  # the guide's "my-password"
        login_target=target,  # type: ignore[arg-type]
        auth_url=sb.urls.ons_auth_url,
        **extra,
    )
    handler = track(OnsHttpHandler(props))
    assert sent == [("GET", ONS_FEDERATION), ("POST", ONS_TOKEN)]
    assert ".ONSPOPAUTH" in handler.connection.cookies  # the federation page's cookie is kept
    if target == "SAGER":
        endpoint = "RelatorioApuracaoUsinasRenovaveis/exportarRelatorio"
        day = "2024-01-01T00:00:00.000Z"
        body: dict[str, Any] = {"dataInicio": day, "dataFim": day, "tipoRelatorio": 1}
    else:
        endpoint = "solicitacao/pesquisa/exportar"
        body = {"periodoInicial": "2024-01-01", "periodoFinal": "2024-01-02"}
    response = handler.post(endpoint, json=body)  # 200: the sandbox accepted token and profile
    headers = response.request.headers
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert token.count(".") == 2  # the sandbox's JWT-shaped access token
    if profile is None:
        assert "perfil-selecionado" not in headers
    else:
        assert unquote(headers["perfil-selecionado"]) == profile


# -- Retry behaviour ------------------------------------------------------------------------------
def test_retry_behaviour_default_parameters(props: HttpConnProperties) -> None:
    """The documented defaults: 8 retries, 3 connection retries, 30 s, 0.1 s, multiplier 1."""
    handler = BazeHttpHandler(props, skip_connect=True)
    policy = handler.retry_policy
    assert policy.max_retries == 8
    assert handler.max_conn_retries == 3
    assert policy.max_wait == 30
    assert policy.min_wait == 0.1
    assert policy.multiplier == 1


def test_retry_behaviour_fail_fast_and_resilient(
    props: HttpConnProperties, server: Any, key: str, track: Track
) -> None:
    """max_retries=0 fails fast; max_retries=12, retry_wait_time=60 keeps retrying longer."""
    # Low-latency endpoint: fail fast
    handler = track(BazeHttpHandler(props, max_retries=0))
    with pytest.raises(RuntimeError):
        handler.get(f"flaky/{key}/1?status=503")
    assert server.hits(key) == 1
    # Resilient background job: keep retrying for longer
    handler = track(BazeHttpHandler(props, max_retries=12, retry_wait_time=60))
    assert (handler.retry_policy.max_retries, handler.retry_policy.max_wait) == (12, 60)


def test_retry_behaviour_reconnects_between_attempts(
    props: HttpConnProperties, server: Any, key: str, track: Track
) -> None:
    """A failed attempt is retried on a fresh connection and then succeeds."""
    handler = track(BazeHttpHandler(props, retry_wait_time=0, exponential_min_retry_wait_time=0))
    before = handler.connection
    assert handler.get(f"flaky/{key}/2?status=503").json()["attempt"] == 3
    assert handler.connection is not before
    assert server.hits(key) == 3
