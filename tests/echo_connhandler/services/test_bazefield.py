"""BazeHttpHandler against the Bazefield emulator, over real sockets, sync and async.

Each scenario is a pair: ``test_..._sync`` (plain function, sync API, no event loop) and
``test_..._async`` (coroutine, ``async_*`` API); their non-I/O checks are shared helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
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
WRONG_API_KEY = "not-the-api-key-7731"

SyncConnect = Callable[..., Any]
AsyncConnect = Callable[..., Awaitable[Any]]
Recording = Callable[..., type]

BAD_PASSWORD_IDS = ["on-connect", "on-first-request"]
API_ERRORS = pytest.mark.parametrize(
    ("endpoint", "params", "expected"),
    [
        ("objects/structure", {"type": "turbines"}, "ArgumentException"),
        ("objects/getschemas", {"objectIds": "424242"}, "Object 424242 not found"),
        ("objects/timeseries/aggregated", {"ObjectIds": "1001"}, "'Points' is required"),
    ],
    ids=["responseStatus", "replyInfo", "missing-argument"],
)
BEARER_OR_SESSION = pytest.mark.parametrize("bearer", [True, False], ids=["bearer", "session"])


def login_props(sb: Sandbox, password: str = CREDS["password"]) -> HttpConnProperties:
    return HttpConnProperties(host=sb.urls.bazefield, user=CREDS["user"], password=password)


def api_key_props(sb: Sandbox, api_key: str = CREDS["api_key"]) -> HttpConnProperties:
    return HttpConnProperties(host=sb.urls.bazefield, api_key=api_key)


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


def cookies_sent(request: httpx.Request) -> dict[str, str]:
    return dict(part.split("=", 1) for part in request.headers["Cookie"].split("; "))


# -- API key --------------------------------------------------------------------------------------
def check_api_key_bearer(sb: Sandbox, response: httpx.Response) -> None:
    assert response.request.headers["Authorization"] == f"Bearer {CREDS['api_key']}"
    assert len(response.json()["allocationTypes"]) == 6
    assert logins(sb) == 0
    assert hits(sb, "auth/baze") == 0


def test_api_key_is_sent_as_bearer_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """An API key goes out as ``Authorization: Bearer <key>`` and needs no login (sync)."""
    handler = sync_connect(BazeHttpHandler, api_key_props(sb))
    check_api_key_bearer(sb, handler.get(f"{API}/allocationTypes"))


async def test_api_key_is_sent_as_bearer_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """An API key goes out as ``Authorization: Bearer <key>`` and needs no login (async)."""
    handler = await async_connect(BazeHttpHandler, api_key_props(sb))
    check_api_key_bearer(sb, await handler.async_get(f"{API}/allocationTypes"))


def check_bad_api_key(sb: Sandbox, caught: pytest.ExceptionInfo[HttpStatusError]) -> None:
    assert caught.value.status_code == 401
    assert WRONG_API_KEY not in str(caught.value)
    assert hits(sb, "allocationtypes") == 1


def test_bad_api_key_is_rejected_once_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """A refused API key is a 401 raised at once: there is nothing to log in to again (sync)."""
    handler = sync_connect(BazeHttpHandler, api_key_props(sb, WRONG_API_KEY))
    with pytest.raises(HttpStatusError) as caught:
        handler.get(f"{API}/allocationTypes")
    check_bad_api_key(sb, caught)


async def test_bad_api_key_is_rejected_once_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """A refused API key is a 401 raised at once: there is nothing to log in to again (async)."""
    handler = await async_connect(BazeHttpHandler, api_key_props(sb, WRONG_API_KEY))
    with pytest.raises(HttpStatusError) as caught:
        await handler.async_get(f"{API}/allocationTypes")
    check_bad_api_key(sb, caught)


# -- login ----------------------------------------------------------------------------------------
def check_logged_in_once(sb: Sandbox) -> None:
    assert logins(sb) == 1
    assert hits(sb, "auth/baze") == 1


def check_structure(response: httpx.Response) -> None:
    assert len(response.json()["objects"]) == 3


def test_login_runs_once_on_connect_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """User/password: one login on connect, none for the following requests (sync)."""
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    check_logged_in_once(sb)
    for _ in range(3):
        check_structure(handler.get(f"{API}/objects/structure", params={"type": 1}))
    assert logins(sb) == 1


async def test_login_runs_once_on_connect_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """User/password: one login on connect, none for the following requests (async)."""
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    check_logged_in_once(sb)
    for _ in range(3):
        check_structure(await handler.async_get(f"{API}/objects/structure", params={"type": 1}))
    assert logins(sb) == 1


def check_lazy_login(sb: Sandbox) -> None:
    assert logins(sb) == 1
    assert hits(sb, "allocationtypes") == 2


def test_skip_connect_logs_in_on_first_request_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """With skip_connect nothing is sent until the first request, which logs in first (sync)."""
    handler = sync_connect(BazeHttpHandler, login_props(sb), connect=False)
    assert sb.faults("bazefield").stats["requests"] == {}
    handler.get(f"{API}/allocationTypes")
    handler.get(f"{API}/allocationTypes")
    check_lazy_login(sb)


async def test_skip_connect_logs_in_on_first_request_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """With skip_connect nothing is sent until the first request, which logs in first (async)."""
    handler = await async_connect(BazeHttpHandler, login_props(sb), connect=False)
    assert sb.faults("bazefield").stats["requests"] == {}
    await handler.async_get(f"{API}/allocationTypes")
    await handler.async_get(f"{API}/allocationTypes")
    check_lazy_login(sb)


def check_bearer_preferred(sent: list[httpx.Request], response: httpx.Response) -> None:
    login = next(r for r in sent if r.url.path.lower().endswith("/auth/baze"))
    assert login.method == "POST"
    assert login.url.params["format"] == "json"
    scheme, _, token = response.request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert token.count(".") == 2  # the emulator's JWT-shaped bearerToken
    assert token != CREDS["api_key"]
    assert "x-ss-id" not in response.request.headers


def test_bearer_token_is_preferred_sync(
    sb: Sandbox, sync_connect: SyncConnect, recording: Recording
) -> None:
    """When the login answers a bearerToken, requests carry it, not the session id (sync)."""
    handler = sync_connect(recording(BazeHttpHandler), login_props(sb))
    response = handler.get(f"{API}/allocationTypes")
    check_bearer_preferred(handler.sent, response)


async def test_bearer_token_is_preferred_async(
    sb: Sandbox, async_connect: AsyncConnect, recording: Recording
) -> None:
    """When the login answers a bearerToken, requests carry it, not the session id (async)."""
    handler = await async_connect(recording(BazeHttpHandler), login_props(sb))
    response = await handler.async_get(f"{API}/allocationTypes")
    check_bearer_preferred(handler.sent, response)


def check_session_id_and_cookies(sb: Sandbox, response: httpx.Response) -> None:
    headers = response.request.headers
    assert "Authorization" not in headers
    session_id = headers["x-ss-id"]
    assert len(session_id) >= 15
    cookies = cookies_sent(response.request)
    assert cookies["ss-id"] == session_id
    assert cookies["ss-pid"]
    assert logins(sb) == 1


def test_session_id_and_cookies_without_bearer_token_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect
) -> None:
    """Without a bearerToken the session id goes as ``x-ss-id`` with ss-id/ss-pid (sync)."""
    sb = make_sb(baze_issue_bearer_token=False)
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    check_session_id_and_cookies(sb, handler.get(f"{API}/allocationTypes"))


async def test_session_id_and_cookies_without_bearer_token_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect
) -> None:
    """Without a bearerToken the session id goes as ``x-ss-id`` with ss-id/ss-pid (async)."""
    sb = make_sb(baze_issue_bearer_token=False)
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    check_session_id_and_cookies(sb, await handler.async_get(f"{API}/allocationTypes"))


def check_relogged_in(sb: Sandbox, response: httpx.Response) -> None:
    assert response.status_code == 200
    assert logins(sb) == 2
    assert hits(sb, "allocationtypes") == 3  # ok, 401, ok after the re-login


@BEARER_OR_SESSION
def test_expired_credential_relogs_in_once_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect, bearer: bool
) -> None:
    """After the server expires every session, a 401 causes one re-login and one resend (sync)."""
    sb = make_sb(baze_issue_bearer_token=bearer)
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    handler.get(f"{API}/allocationTypes")
    sb.faults("bazefield").expire_tokens()
    check_relogged_in(sb, handler.get(f"{API}/allocationTypes"))
    handler.get(f"{API}/allocationTypes")
    assert logins(sb) == 2


@BEARER_OR_SESSION
async def test_expired_credential_relogs_in_once_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect, bearer: bool
) -> None:
    """After the server expires every session, a 401 causes one re-login and one resend (async)."""
    sb = make_sb(baze_issue_bearer_token=bearer)
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    await handler.async_get(f"{API}/allocationTypes")
    sb.faults("bazefield").expire_tokens()
    check_relogged_in(sb, await handler.async_get(f"{API}/allocationTypes"))
    await handler.async_get(f"{API}/allocationTypes")
    assert logins(sb) == 2


def check_bad_password(sb: Sandbox, caught: pytest.ExceptionInfo[AuthenticationError]) -> None:
    message = str(caught.value)
    assert caught.value.status_code == 401
    assert "refused the user name or password" in message
    assert WRONG_PASSWORD not in message
    assert hits(sb, "auth/baze") == 1
    assert hits(sb, "allocationtypes") == 0
    assert logins(sb) == 0


@pytest.mark.parametrize("lazy", [False, True], ids=BAD_PASSWORD_IDS)
def test_bad_password_fails_at_once_sync(
    sb: Sandbox, sync_connect: SyncConnect, lazy: bool
) -> None:
    """A refused login raises AuthenticationError after one attempt; password hidden (sync)."""
    props = login_props(sb, password=WRONG_PASSWORD)
    if lazy:
        handler = sync_connect(BazeHttpHandler, props, connect=False)
        with pytest.raises(AuthenticationError) as caught:
            handler.get(f"{API}/allocationTypes")
    else:
        with pytest.raises(AuthenticationError) as caught:
            sync_connect(BazeHttpHandler, props)
    check_bad_password(sb, caught)


@pytest.mark.parametrize("lazy", [False, True], ids=BAD_PASSWORD_IDS)
async def test_bad_password_fails_at_once_async(
    sb: Sandbox, async_connect: AsyncConnect, lazy: bool
) -> None:
    """A refused login raises AuthenticationError after one attempt; password hidden (async)."""
    props = login_props(sb, password=WRONG_PASSWORD)
    if lazy:
        handler = await async_connect(BazeHttpHandler, props, connect=False)
        with pytest.raises(AuthenticationError) as caught:
            await handler.async_get(f"{API}/allocationTypes")
    else:
        with pytest.raises(AuthenticationError) as caught:
            await async_connect(BazeHttpHandler, props)
    check_bad_password(sb, caught)


def test_login_error_inside_http_200_is_authentication_error_sync(
    sb: Sandbox, sync_connect: SyncConnect
) -> None:
    """A login answered HTTP 200 with a responseStatus error is refused credentials (sync)."""
    sb.faults("bazefield").script("auth/baze", status=200)
    with pytest.raises(AuthenticationError, match="Bazefield login refused"):
        sync_connect(BazeHttpHandler, login_props(sb))
    assert hits(sb, "auth/baze") == 1


async def test_login_error_inside_http_200_is_authentication_error_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """A login answered HTTP 200 with a responseStatus error is refused credentials (async)."""
    sb.faults("bazefield").script("auth/baze", status=200)
    with pytest.raises(AuthenticationError, match="Bazefield login refused"):
        await async_connect(BazeHttpHandler, login_props(sb))
    assert hits(sb, "auth/baze") == 1


# -- errors and content ---------------------------------------------------------------------------
def check_api_error(
    sb: Sandbox, caught: pytest.ExceptionInfo[ApiError], endpoint: str, expected: str
) -> None:
    assert caught.value.status_code == 200
    assert expected in str(caught.value)
    assert hits(sb, endpoint) == 1


@API_ERRORS
def test_errors_inside_http_200_raise_api_error_sync(
    sb: Sandbox, sync_connect: SyncConnect, endpoint: str, params: dict[str, str], expected: str
) -> None:
    """Errors ServiceStack reports inside an HTTP 200 body are ApiError, never retried (sync)."""
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    with pytest.raises(ApiError) as caught:
        handler.get(f"{API}/{endpoint}", params=params)
    check_api_error(sb, caught, endpoint, expected)


@API_ERRORS
async def test_errors_inside_http_200_raise_api_error_async(
    sb: Sandbox,
    async_connect: AsyncConnect,
    endpoint: str,
    params: dict[str, str],
    expected: str,
) -> None:
    """Errors ServiceStack reports inside an HTTP 200 body are ApiError, never retried (async)."""
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    with pytest.raises(ApiError) as caught:
        await handler.async_get(f"{API}/{endpoint}", params=params)
    check_api_error(sb, caught, endpoint, expected)


def check_json_asked(response: httpx.Response) -> None:
    assert response.request.headers["Accept"] == "application/json"
    assert response.headers["content-type"].startswith("application/json")
    assert {o["typeName"] for o in response.json()["objects"]} == {"MetMast"}


HTML_PLEASE = {"Accept": "text/html"}


def test_json_is_asked_for_by_default_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """``Accept: application/json`` is sent; overriding it gets the HTML preview, an error."""
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    check_json_asked(handler.get(f"{API}/objects/structure", params={"type": 3}))
    with pytest.raises(UnexpectedContentError, match="HTML page"):
        handler.get(f"{API}/allocationTypes", headers=HTML_PLEASE)
    assert hits(sb, "allocationtypes") == 1


async def test_json_is_asked_for_by_default_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """``Accept: application/json`` is sent; overriding it gets the HTML preview, an error."""
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    check_json_asked(await handler.async_get(f"{API}/objects/structure", params={"type": 3}))
    with pytest.raises(UnexpectedContentError, match="HTML page"):
        await handler.async_get(f"{API}/allocationTypes", headers=HTML_PLEASE)
    assert hits(sb, "allocationtypes") == 1


def check_timeseries_after_502(sb: Sandbox, response: httpx.Response) -> None:
    objects = response.json()["objects"]
    assert set(objects) == {"1001", "1002"}
    series = objects["1001"]["points"]["ActivePower"][0]
    assert series["aggregate"] == "Average"
    assert len(series["timeSeries"]) == 24
    assert series["timeSeries"][0]["t"] == 1704067200000
    assert hits(sb, "objects/timeseries/aggregated") == 2
    assert sb.faults("bazefield").stats["faults"] == {"error": 1}


def test_timeseries_post_is_retried_on_502_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """POST objects/timeseries/aggregated is a read-only query: replayed after a 502 (sync)."""
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    sb.faults("bazefield").script("timeseries/aggregated", status=502)
    response = handler.post(
        f"{API}/objects/timeseries/aggregated", json=series_body(["1001", "1002"])
    )
    check_timeseries_after_502(sb, response)


async def test_timeseries_post_is_retried_on_502_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """POST objects/timeseries/aggregated is a read-only query: replayed after a 502 (async)."""
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    sb.faults("bazefield").script("timeseries/aggregated", status=502)
    response = await handler.async_post(
        f"{API}/objects/timeseries/aggregated", json=series_body(["1001", "1002"])
    )
    check_timeseries_after_502(sb, response)


def check_not_replayed(sb: Sandbox, caught: pytest.ExceptionInfo[HttpStatusError]) -> None:
    assert caught.value.status_code == 502
    assert hits(sb, "allocationtypes") == 1


def test_generic_post_is_not_retried_on_502_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """Any other POST may have been acted on: a 502 is raised, not replayed (sync)."""
    handler = sync_connect(BazeHttpHandler, login_props(sb))
    sb.faults("bazefield").script("allocationtypes", status=502)
    with pytest.raises(HttpStatusError) as caught:
        handler.post(f"{API}/allocationTypes", json={"name": "x"})
    check_not_replayed(sb, caught)


async def test_generic_post_is_not_retried_on_502_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """Any other POST may have been acted on: a 502 is raised, not replayed (async)."""
    handler = await async_connect(BazeHttpHandler, login_props(sb))
    sb.faults("bazefield").script("allocationtypes", status=502)
    with pytest.raises(HttpStatusError) as caught:
        await handler.async_post(f"{API}/allocationTypes", json={"name": "x"})
    check_not_replayed(sb, caught)


# -- secrets --------------------------------------------------------------------------------------
def runtime_secrets(response: httpx.Response, bearer: bool) -> tuple[str, list[str]]:
    """The credential the request carried, and every secret obtained at run time."""
    sent = response.request.headers
    cookies = cookies_sent(response.request)
    credential = sent["Authorization"].split(" ", 1)[1] if bearer else sent["x-ss-id"]
    secrets = [credential, cookies["ss-id"], cookies["ss-pid"], CREDS["password"]]
    for secret in secrets:
        assert redact(f"value={secret};") == "value=***;"
    return credential, secrets


def check_secrets_hidden(
    handler: BazeHttpHandler, caught: pytest.ExceptionInfo[ApiError], secrets: list[str]
) -> None:
    message = str(caught.value)
    assert "***" in message
    assert all(secret not in message for secret in secrets)
    assert all(secret not in repr(handler) for secret in secrets)


@BEARER_OR_SESSION
def test_runtime_credentials_are_redacted_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect, recording: Recording, bearer: bool
) -> None:
    """Tokens, session ids and cookies obtained at run time never reach messages (sync)."""
    sb = make_sb(baze_issue_bearer_token=bearer)
    handler = sync_connect(recording(BazeHttpHandler), login_props(sb))
    credential, secrets = runtime_secrets(handler.get(f"{API}/allocationTypes"), bearer)
    # The emulator echoes a bad "type" argument in its error body: a token would leak there.
    with pytest.raises(ApiError) as caught:
        handler.get(f"{API}/objects/structure", params={"type": credential})
    check_secrets_hidden(handler, caught, secrets)


@BEARER_OR_SESSION
async def test_runtime_credentials_are_redacted_async(
    make_sb: Callable[..., Sandbox],
    async_connect: AsyncConnect,
    recording: Recording,
    bearer: bool,
) -> None:
    """Tokens, session ids and cookies obtained at run time never reach messages (async)."""
    sb = make_sb(baze_issue_bearer_token=bearer)
    handler = await async_connect(recording(BazeHttpHandler), login_props(sb))
    response = await handler.async_get(f"{API}/allocationTypes")
    credential, secrets = runtime_secrets(response, bearer)
    # The emulator echoes a bad "type" argument in its error body: a token would leak there.
    with pytest.raises(ApiError) as caught:
        await handler.async_get(f"{API}/objects/structure", params={"type": credential})
    check_secrets_hidden(handler, caught, secrets)


# -- concurrency ----------------------------------------------------------------------------------
async def test_hundred_coroutines_log_in_once(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """100 coroutines starting at once on a fresh handler cause exactly one login."""
    handler = async_handlers(BazeHttpHandler(login_props(sb), skip_connect=True, **fast))
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


async def test_hundred_coroutines_after_expiry_relog_in_once(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """100 coroutines all rejected with 401 at once share one re-login."""
    handler = async_handlers(BazeHttpHandler(login_props(sb), skip_connect=True, **fast))
    await handler.async_get(f"{API}/allocationTypes")
    sb.faults("bazefield").expire_tokens()
    responses = await asyncio.gather(
        *(handler.async_get(f"{API}/allocationTypes") for _ in range(100))
    )
    assert all(r.status_code == 200 for r in responses)
    assert logins(sb) == 2


async def test_sync_login_serves_the_async_client(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """The login done by the sync connect also authenticates async calls: one login.

    The sync parts run in a worker thread, as an async caller would run them, never on the loop.
    """
    handler = async_handlers(
        await asyncio.to_thread(BazeHttpHandler, login_props(sb), **fast)  # sync connect
    )
    response = await handler.async_get(f"{API}/allocationTypes")
    assert response.status_code == 200
    sync_response = await asyncio.to_thread(handler.get, f"{API}/allocationTypes")
    assert sync_response.status_code == 200
    assert logins(sb) == 1
