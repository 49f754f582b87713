"""BazeHttpHandler against the Bazefield emulator, over real sockets, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from echo_connhandler import (
    ApiError,
    AuthenticationError,
    BazeHttpHandler,
    HttpConnProperties,
    HttpStatusError,
    UnexpectedContentError,
    redact,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox

API = "BazeField.Services/api"
CREDS = DEMO_CREDENTIALS["bazefield"]
WRONG_PASSWORD = "not-the-baze-password-8317"

Connect = Callable[..., Awaitable[Any]]
Call = Callable[..., Awaitable[Any]]


def login_props(sb: Sandbox, password: str = CREDS["password"]) -> HttpConnProperties:
    return HttpConnProperties(host=sb.urls.bazefield, user=CREDS["user"], password=password)


def logins(sb: Sandbox) -> int:
    return sb.faults("bazefield").stats["logins"].get("password", 0)


def hits(sb: Sandbox, path: str) -> int:
    return sb.faults("bazefield").stats["requests"].get(f"/{API}/{path}".lower(), 0)


def series_body(object_ids: list[str]) -> dict[str, Any]:
    return {
        "ObjectIds": object_ids,
        "Points": ["ActivePower", "WindSpeed"],
        "Aggregates": ["Average"],
        "From": "2024-01-01T00:00:00Z",
        "To": "2024-01-02T00:00:00Z",
        "Interval": "1h",
    }


async def test_api_key_is_sent_as_bearer(sb: Sandbox, connect: Connect, call: Call) -> None:
    """An API key goes out as ``Authorization: Bearer <key>`` and needs no login."""
    props = HttpConnProperties(host=sb.urls.bazefield, api_key=CREDS["api_key"])
    handler = await connect(BazeHttpHandler, props)
    response = await call(handler, "get", f"{API}/allocationTypes")
    assert response.request.headers["Authorization"] == f"Bearer {CREDS['api_key']}"
    assert len(response.json()["allocationTypes"]) == 6
    assert logins(sb) == 0
    assert hits(sb, "auth/baze") == 0


async def test_login_runs_once_on_connect(sb: Sandbox, connect: Connect, call: Call) -> None:
    """User/password: one login on connect, none for the following requests."""
    handler = await connect(BazeHttpHandler, login_props(sb))
    assert logins(sb) == 1
    assert hits(sb, "auth/baze") == 1
    for _ in range(3):
        response = await call(handler, "get", f"{API}/objects/structure", params={"type": 1})
        assert len(response.json()["objects"]) == 3
    assert logins(sb) == 1


async def test_skip_connect_logs_in_on_first_request(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """With skip_connect nothing is sent until the first request, which logs in first."""
    handler = await connect(BazeHttpHandler, login_props(sb), connect=False)
    assert sb.faults("bazefield").stats["requests"] == {}
    await call(handler, "get", f"{API}/allocationTypes")
    await call(handler, "get", f"{API}/allocationTypes")
    assert logins(sb) == 1
    assert hits(sb, "allocationtypes") == 2


async def test_bearer_token_is_preferred(
    sb: Sandbox, connect: Connect, call: Call, recording: Callable[..., type]
) -> None:
    """When the login answers a bearerToken, requests carry it instead of the session id."""
    handler = await connect(recording(BazeHttpHandler), login_props(sb))
    response = await call(handler, "get", f"{API}/allocationTypes")
    login = next(r for r in handler.sent if r.url.path.lower().endswith("/auth/baze"))
    assert login.method == "POST"
    assert login.url.params["format"] == "json"
    scheme, _, token = response.request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert token.count(".") == 2  # the emulator's JWT-shaped bearerToken
    assert token != CREDS["api_key"]
    assert "x-ss-id" not in response.request.headers


async def test_session_id_and_cookies_without_bearer_token(
    make_sb: Callable[..., Sandbox], connect: Connect, call: Call
) -> None:
    """Without a bearerToken the session id goes as ``x-ss-id`` with the ss-id/ss-pid cookies."""
    sb = make_sb(baze_issue_bearer_token=False)
    handler = await connect(BazeHttpHandler, login_props(sb))
    response = await call(handler, "get", f"{API}/allocationTypes")
    headers = response.request.headers
    assert "Authorization" not in headers
    session_id = headers["x-ss-id"]
    assert len(session_id) >= 15
    cookies = dict(part.split("=", 1) for part in headers["Cookie"].split("; "))
    assert cookies["ss-id"] == session_id
    assert cookies["ss-pid"]
    assert logins(sb) == 1


@pytest.mark.parametrize("bearer", [True, False], ids=["bearer", "session"])
async def test_expired_credential_relogs_in_once(
    make_sb: Callable[..., Sandbox], connect: Connect, call: Call, bearer: bool
) -> None:
    """After the server expires every session, a 401 causes one re-login and one resend."""
    sb = make_sb(baze_issue_bearer_token=bearer)
    handler = await connect(BazeHttpHandler, login_props(sb))
    await call(handler, "get", f"{API}/allocationTypes")
    sb.faults("bazefield").expire_tokens()
    response = await call(handler, "get", f"{API}/allocationTypes")
    assert response.status_code == 200
    assert logins(sb) == 2
    assert hits(sb, "allocationtypes") == 3  # ok, 401, ok after the re-login
    await call(handler, "get", f"{API}/allocationTypes")
    assert logins(sb) == 2


@pytest.mark.parametrize("lazy", [False, True], ids=["on-connect", "on-first-request"])
async def test_bad_password_fails_at_once(
    sb: Sandbox, connect: Connect, call: Call, lazy: bool
) -> None:
    """A refused login raises AuthenticationError after one attempt; the password is hidden."""
    props = login_props(sb, password=WRONG_PASSWORD)
    if lazy:
        handler = await connect(BazeHttpHandler, props, connect=False)
        with pytest.raises(AuthenticationError) as caught:
            await call(handler, "get", f"{API}/allocationTypes")
    else:
        with pytest.raises(AuthenticationError) as caught:
            await connect(BazeHttpHandler, props)
    message = str(caught.value)
    assert caught.value.status_code == 401
    assert "refused the user name or password" in message
    assert WRONG_PASSWORD not in message
    assert hits(sb, "auth/baze") == 1
    assert hits(sb, "allocationtypes") == 0
    assert logins(sb) == 0


@pytest.mark.parametrize(
    ("endpoint", "params", "expected"),
    [
        ("objects/structure", {"type": "turbines"}, "ArgumentException"),
        ("objects/getschemas", {"objectIds": "424242"}, "Object 424242 not found"),
        ("objects/timeseries/aggregated", {"ObjectIds": "1001"}, "'Points' is required"),
    ],
    ids=["responseStatus", "replyInfo", "missing-argument"],
)
async def test_errors_inside_http_200_raise_api_error(
    sb: Sandbox,
    connect: Connect,
    call: Call,
    endpoint: str,
    params: dict[str, str],
    expected: str,
) -> None:
    """Errors that ServiceStack reports inside an HTTP 200 body are ApiError, never retried."""
    handler = await connect(BazeHttpHandler, login_props(sb))
    with pytest.raises(ApiError) as caught:
        await call(handler, "get", f"{API}/{endpoint}", params=params)
    assert caught.value.status_code == 200
    assert expected in str(caught.value)
    assert hits(sb, endpoint) == 1


async def test_json_is_asked_for_by_default(sb: Sandbox, connect: Connect, call: Call) -> None:
    """``Accept: application/json`` is sent; overriding it gets the HTML preview, an error."""
    handler = await connect(BazeHttpHandler, login_props(sb))
    response = await call(handler, "get", f"{API}/objects/structure", params={"type": 3})
    assert response.request.headers["Accept"] == "application/json"
    assert response.headers["content-type"].startswith("application/json")
    assert {o["typeName"] for o in response.json()["objects"]} == {"MetMast"}
    with pytest.raises(UnexpectedContentError, match="HTML page"):
        await call(handler, "get", f"{API}/allocationTypes", headers={"Accept": "text/html"})
    assert hits(sb, "allocationtypes") == 1


async def test_timeseries_post_is_retried_on_502(sb: Sandbox, connect: Connect, call: Call) -> None:
    """POST objects/timeseries/aggregated is a read-only query: replayed after a 502."""
    handler = await connect(BazeHttpHandler, login_props(sb))
    sb.faults("bazefield").script("timeseries/aggregated", status=502)
    response = await call(
        handler, "post", f"{API}/objects/timeseries/aggregated", json=series_body(["1001", "1002"])
    )
    objects = response.json()["objects"]
    assert set(objects) == {"1001", "1002"}
    series = objects["1001"]["points"]["ActivePower"][0]
    assert series["aggregate"] == "Average"
    assert len(series["timeSeries"]) == 24
    assert series["timeSeries"][0]["t"] == 1704067200000
    assert hits(sb, "objects/timeseries/aggregated") == 2
    assert sb.faults("bazefield").stats["faults"] == {"error": 1}


async def test_generic_post_is_not_retried_on_502(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """Any other POST may have been acted on: a 502 is raised, not replayed."""
    handler = await connect(BazeHttpHandler, login_props(sb))
    sb.faults("bazefield").script("allocationtypes", status=502)
    with pytest.raises(HttpStatusError) as caught:
        await call(handler, "post", f"{API}/allocationTypes", json={"name": "x"})
    assert caught.value.status_code == 502
    assert hits(sb, "allocationtypes") == 1


async def test_hundred_coroutines_log_in_once(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """100 coroutines starting at once on a fresh handler cause exactly one login."""
    handler = handlers(BazeHttpHandler(login_props(sb), skip_connect=True, **fast))
    responses = await asyncio.gather(
        *(handler.async_get(f"{API}/allocationTypes") for _ in range(100))
    )
    assert all(r.status_code == 200 for r in responses)
    assert logins(sb) == 1
    assert hits(sb, "auth/baze") == 1
    assert hits(sb, "allocationtypes") == 100


def test_threads_log_in_once(sb: Sandbox, fast: dict[str, Any]) -> None:
    """20 threads sharing a fresh sync handler cause exactly one login."""
    with (
        BazeHttpHandler(login_props(sb), skip_connect=True, **fast) as handler,
        ThreadPoolExecutor(20) as pool,
    ):
        responses = list(pool.map(lambda _: handler.get(f"{API}/allocationTypes"), range(40)))
    assert all(r.status_code == 200 for r in responses)
    assert logins(sb) == 1


@pytest.mark.parametrize("bearer", [True, False], ids=["bearer", "session"])
async def test_runtime_credentials_are_redacted(
    make_sb: Callable[..., Sandbox],
    connect: Connect,
    call: Call,
    recording: Callable[..., type],
    bearer: bool,
) -> None:
    """Tokens, session ids and cookies obtained at run time never reach exception messages."""
    sb = make_sb(baze_issue_bearer_token=bearer)
    handler = await connect(recording(BazeHttpHandler), login_props(sb))
    response = await call(handler, "get", f"{API}/allocationTypes")
    sent = response.request.headers
    cookies = dict(part.split("=", 1) for part in sent["Cookie"].split("; "))
    credential = sent["Authorization"].split(" ", 1)[1] if bearer else sent["x-ss-id"]
    secrets = [credential, cookies["ss-id"], cookies["ss-pid"], CREDS["password"]]
    for secret in secrets:
        assert redact(f"value={secret};") == "value=***;"
    # The emulator echoes a bad "type" argument in its error body: a token would leak there.
    with pytest.raises(ApiError) as caught:
        await call(handler, "get", f"{API}/objects/structure", params={"type": credential})
    message = str(caught.value)
    assert "***" in message
    assert all(secret not in message for secret in secrets)
    assert all(secret not in repr(handler) for secret in secrets)


async def test_hundred_coroutines_after_expiry_relog_in_once(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """100 coroutines all rejected with 401 at once share one re-login."""
    handler = handlers(BazeHttpHandler(login_props(sb), skip_connect=True, **fast))
    await handler.async_get(f"{API}/allocationTypes")
    sb.faults("bazefield").expire_tokens()
    responses = await asyncio.gather(
        *(handler.async_get(f"{API}/allocationTypes") for _ in range(100))
    )
    assert all(r.status_code == 200 for r in responses)
    assert logins(sb) == 2


async def test_login_error_inside_http_200_is_authentication_error(
    sb: Sandbox, connect: Connect
) -> None:
    """A login answered HTTP 200 with a responseStatus error is refused credentials."""
    sb.faults("bazefield").script("auth/baze", status=200)
    with pytest.raises(AuthenticationError, match="Bazefield login refused"):
        await connect(BazeHttpHandler, login_props(sb))
    assert hits(sb, "auth/baze") == 1


async def test_bad_api_key_is_rejected_once(sb: Sandbox, connect: Connect, call: Call) -> None:
    """A refused API key is a 401 raised at once: there is nothing to log in to again."""
    props = HttpConnProperties(host=sb.urls.bazefield, api_key="not-the-api-key-7731")
    handler = await connect(BazeHttpHandler, props)
    with pytest.raises(HttpStatusError) as caught:
        await call(handler, "get", f"{API}/allocationTypes")
    assert caught.value.status_code == 401
    assert "not-the-api-key-7731" not in str(caught.value)
    assert hits(sb, "allocationtypes") == 1


async def test_sync_login_serves_the_async_client(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """The login done by the sync connect also authenticates async calls: one login."""
    handler = handlers(BazeHttpHandler(login_props(sb), **fast))
    response = await handler.async_get(f"{API}/allocationTypes")
    assert response.status_code == 200
    assert handler.get(f"{API}/allocationTypes").status_code == 200
    assert logins(sb) == 1
