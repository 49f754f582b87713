"""Hardening of the service flows: logins that never leave their origin, one login rule, Bazefield
idempotency decided on the path, one Accept header, shared refusals, no deadlock, secret scopes.

Narrow flow checks run over ``httpx.MockTransport``; the rest over the sandbox.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from echo_connhandler import (
    AuthenticationError,
    BazeHttpHandler,
    HttpConnProperties,
    HttpHandler,
    HttpStatusError,
    OnsHttpConnProperties,
    OnsHttpHandler,
    UnsafeRedirectError,
    redact,
    register_secret,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox

Handle = Callable[[httpx.Request], httpx.Response]
FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
EVIL = "https://evil.test/steal"


def _mocked(cls: type[HttpHandler], handle: Handle) -> type[HttpHandler]:
    class Mocked(cls):  # type: ignore[valid-type,misc]
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(handle)}

    return Mocked


def _baze(handle: Handle, **kwargs: Any) -> HttpHandler:
    props = HttpConnProperties(
        host="https://baze.test", user="baze.user", password="baze-password-1"
    )
    return _mocked(BazeHttpHandler, handle)(props, skip_connect=True, **{**FAST, **kwargs})


def _ons(handle: Handle, **kwargs: Any) -> HttpHandler:
    props = OnsHttpConnProperties(
        host="https://integra.ons.test/api",
        user="ons.user",
        password="ons-password-1",
        login_target="SAGER",
        auth_url="https://pops.ons.test/ons.pop.federation",
    )
    return _mocked(OnsHttpHandler, handle)(props, skip_connect=True, **{**FAST, **kwargs})


def _federation_ok(request: httpx.Request) -> httpx.Response | None:
    if request.url.path.endswith("/ons.pop.federation/"):
        return httpx.Response(200, text="<html/>", headers={"content-type": "text/html"})
    return None


# -- logins never leave their origin ---------------------------------------------------------------
def _redirecting_login(seen: Counter[str]) -> Handle:
    def handle(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] += 1
        page = _federation_ok(request)
        if page is not None:
            return page
        if request.url.path.endswith(("/auth/baze", "/oauth2/token")):
            return httpx.Response(307, headers={"location": EVIL})
        return httpx.Response(200, json={})

    return handle


@pytest.mark.parametrize("make", [_baze, _ons])
def test_login_redirected_elsewhere_is_refused_sync(make: Callable[..., HttpHandler]) -> None:
    seen: Counter[str] = Counter()
    handler = make(_redirecting_login(seen), max_retries=2, max_conn_retries=2)
    with pytest.raises(UnsafeRedirectError, match=r"evil\.test") as info:
        handler.reconnect()
    assert seen["evil.test"] == 0
    assert "password-1" not in str(info.value)
    with pytest.raises(UnsafeRedirectError, match=r"evil\.test"):
        handler.get("anything")  # the lazy login inside a request: the same refusal
    assert seen["evil.test"] == 0
    handler.close()


@pytest.mark.parametrize("make", [_baze, _ons])
async def test_login_redirected_elsewhere_is_refused_async(
    make: Callable[..., HttpHandler],
) -> None:
    seen: Counter[str] = Counter()
    handler = make(_redirecting_login(seen), max_retries=2, max_conn_retries=2)
    with pytest.raises(UnsafeRedirectError, match=r"evil\.test"):
        await handler.async_get("anything")
    with pytest.raises(UnsafeRedirectError, match=r"evil\.test"):
        await handler.async_reconnect()
    assert seen["evil.test"] == 0
    await handler.async_close()


# -- one rule for login retries --------------------------------------------------------------------
def _token_always_503(calls: Counter[str]) -> Handle:
    def handle(request: httpx.Request) -> httpx.Response:
        page = _federation_ok(request)
        if page is not None:
            return page
        calls[request.url.path] += 1
        return httpx.Response(503, json={"error": "unavailable"})

    return handle


@pytest.mark.parametrize("lazy", [False, True], ids=["connect-step", "inside-a-request"])
def test_a_login_gets_max_conn_retries_wherever_it_runs(lazy: bool) -> None:
    """max_retries=5, max_conn_retries=1: two token requests, on connect or inside a request."""
    calls: Counter[str] = Counter()
    handler = _ons(_token_always_503(calls), max_retries=5, max_conn_retries=1)
    with pytest.raises(HttpStatusError) as info:
        handler.get("x") if lazy else handler.reconnect()
    assert calls["/ons.pop.federation/oauth2/token"] == 2
    assert any("max_conn_retries=1" in note for note in info.value.__notes__)
    handler.close()


async def test_a_login_gets_max_conn_retries_on_the_async_path() -> None:
    calls: Counter[str] = Counter()
    handler = _ons(_token_always_503(calls), max_retries=5, max_conn_retries=1)
    with pytest.raises(HttpStatusError):
        await handler.async_get("x")
    assert calls["/ons.pop.federation/oauth2/token"] == 2
    await handler.async_close()


# -- a refused password is not tried again by every waiter ---------------------------------------
async def test_waiters_of_a_refused_login_fail_without_trying_again() -> None:
    """20 coroutines start with no session; the password is refused: one token request."""
    calls: Counter[str] = Counter()

    async def slow_refusal(request: httpx.Request) -> httpx.Response:
        page = _federation_ok(request)
        if page is not None:
            return page
        calls[request.url.path] += 1
        await asyncio.sleep(0.05)  # every coroutine is waiting when the answer comes
        return httpx.Response(400, json={"error": "invalid_grant"})

    class Refusing(OnsHttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(slow_refusal)}

    props = OnsHttpConnProperties(
        host="https://integra.ons.test/api",
        user="ons.user",
        password="ons-password-1",
        login_target="SAGER",
        auth_url="https://pops.ons.test/ons.pop.federation",
    )
    handler = Refusing(props, skip_connect=True, **FAST)
    outcomes = await asyncio.gather(
        *(handler.async_get(f"x/{i}") for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, AuthenticationError) for o in outcomes), outcomes
    assert calls["/ons.pop.federation/oauth2/token"] == 1
    await handler.async_close()


# -- Bazefield idempotency: the path, exactly ---------------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "sent"),
    [
        ("BazeField.Services/api/objects/write?next=/objects/timeseries/", 1),
        ("BazeField.Services/api/objects/write?next=/objects/timeseries/aggregated", 1),
        ("BazeField.Services/api/objects/timeseries/aggregatedx", 1),
        ("BazeField.Services/api/objects/timeseries/aggregated", 4),
        ("BazeField.Services/api/objects/timeseries/aggregated?format=json", 4),
        ("bazefield.services/API/Objects/TimeSeries/Aggregated/", 4),
    ],
)
def test_bazefield_replays_only_the_time_series_query(endpoint: str, sent: int) -> None:
    """A POST answered 500 is replayed only when its path is the read-only time-series query."""
    posts: Counter[str] = Counter()

    def handle(request: httpx.Request) -> httpx.Response:
        posts[request.method] += 1
        return httpx.Response(500, json={})

    props = HttpConnProperties(host="https://baze.test", api_key="baze-api-key-123")
    handler = _mocked(BazeHttpHandler, handle)(props, skip_connect=True, max_retries=3, **FAST)
    with pytest.raises(HttpStatusError):
        handler.post(endpoint, json={"ObjectIds": [1]})
    assert posts["POST"] == sent
    handler.close()


# -- ONS login requests carry one Accept header ----------------------------------------------------
def test_ons_token_request_has_one_accept_header() -> None:
    accepts: list[list[str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        page = _federation_ok(request)
        if page is not None:
            return page
        if request.url.path.endswith("/oauth2/token"):
            accepts.append(request.headers.get_list("accept"))
            return httpx.Response(200, json={"access_token": "t-123456789", "expires_in": 600})
        return httpx.Response(200, content=b"PK\x03\x04")

    handler = _ons(handle)
    handler.reconnect()
    assert accepts == [["application/json"]]
    handler.close()


# -- a sync call made inside the loop that is logging in does not deadlock ----------------------
def _baze_props(sb: Sandbox) -> HttpConnProperties:
    creds = DEMO_CREDENTIALS["bazefield"]
    return HttpConnProperties(
        host=sb.urls.bazefield, user=creds["user"], password=creds["password"]
    )


def test_sync_call_inside_a_logging_in_loop_does_not_deadlock(make_sb: Any) -> None:
    """A coroutine is logging in (suspended); the same thread makes a sync call: it must not wait
    for that login (the loop cannot run while it waits), so it logs in itself."""
    sb = make_sb(latency_ms=150)
    handler = BazeHttpHandler(_baze_props(sb), skip_connect=True, **FAST)
    endpoint = "BazeField.Services/api/allocationtypes"
    outcome: list[Any] = []

    async def scenario() -> None:
        login = asyncio.ensure_future(handler.async_get(endpoint))
        await asyncio.sleep(0.05)  # the coroutine now waits for the login answer
        outcome.append(handler.get(endpoint).status_code)  # the point of it
        outcome.append((await login).status_code)
        await handler.async_close()

    worker = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "deadlock: the sync call waited for its own loop"
    assert outcome == [200, 200]
    handler.close()


# -- run-time secrets live as long as the handler --------------------------------------------------
def test_session_id_stays_redacted_while_the_handler_lives(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many tokens other code registers, a live handler's session id stays masked; it is
    forgotten when the handler closes."""
    handler = BazeHttpHandler(_baze_props(sb), **FAST)
    sent: list[str] = []
    handler.connection.event_hooks["request"].append(
        lambda request: sent.append(
            request.headers.get("x-ss-id")
            or request.headers.get("authorization", "").partition(" ")[2]
        )
    )
    handler.get("BazeField.Services/api/allocationtypes")
    session_id = sent[-1]
    assert len(session_id) >= 8
    import echo_connhandler._secrets as registry

    # A small bound for the unscoped run-time values (256 by default; each registration also
    # costs Airflow's masker a pattern rebuild when the provider is loaded).
    monkeypatch.setattr(registry, "MAX_EPHEMERAL_SECRETS", 3)
    others = [f"other-run-time-token-{i:04d}" for i in range(10)]
    for other in others:
        register_secret(other, ephemeral=True)
    assert redact(others[0]) == others[0]  # the unscoped ones did fall out
    assert redact(f"id={session_id}") == "id=***"
    handler.close()
    assert redact(f"id={session_id}") == f"id={session_id}"
