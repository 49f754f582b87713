"""HttpHandler, async path, against the loopback server (mirror of test_handler_sync.py)."""

from __future__ import annotations

import asyncio
import gc
import http.cookiejar
import logging
import time
from typing import Any

import httpx
import pytest

from echo_connhandler import (
    HttpConnProperties,
    HttpHandler,
    HttpStatusError,
    HttpTransportError,
    RetryPolicy,
    SessionAuth,
)
from echo_connhandler._auth import LoginFlow, derive_request

VERBS = ["get", "post", "put", "patch", "delete"]


class LoginAuth(SessionAuth):
    """A session login against the loopback server's ``/login/{key}``."""

    def __init__(self, login_url: str) -> None:
        super().__init__()
        self.login_url = login_url
        self.token: str | None = None
        self.logins = 0

    def needs_login(self) -> bool:
        return self.token is None

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        response = yield derive_request(template, "POST", self.login_url)
        self.token = response.json()["token"]
        self.logins += 1

    def apply(self, request: httpx.Request) -> None:
        request.headers["X-Session"] = self.token or ""

    def invalidate(self) -> None:
        self.token = None


def login_handler(key: str) -> type[HttpHandler]:
    """An HttpHandler subclass that logs in at ``/login/{key}`` on connect."""

    class LoginHandler(HttpHandler):
        def _build_auth(self) -> httpx.Auth | None:
            return LoginAuth(f"{self.props.host}/login/{key}")

    return LoginHandler


def count_async_clients(monkeypatch: pytest.MonkeyPatch) -> list[httpx.AsyncClient]:
    """Record every AsyncClient a handler builds."""
    built: list[httpx.AsyncClient] = []
    original = HttpHandler._new_async_client

    def counting(self: HttpHandler, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
        built.append(original(self, cookies))
        return built[-1]

    monkeypatch.setattr(HttpHandler, "_new_async_client", counting)
    return built


# -- verbs and endpoints --------------------------------------------------------------------------
@pytest.mark.parametrize("verb", VERBS)
async def test_every_verb_reaches_the_server(make_async_handler: Any, verb: str, key: str) -> None:
    """async_get/.../async_delete send their method to the endpoint and return the response."""
    handler = make_async_handler()
    response = await getattr(handler, f"async_{verb}")(f"api/resource/{key}")
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert response.json()["method"] == verb.upper()
    assert response.json()["path"] == f"/api/resource/{key}"


@pytest.mark.parametrize("method", ["get", "Post", "DELETE"])
async def test_request_accepts_any_case(make_async_handler: Any, method: str) -> None:
    """async_request() upper-cases the method."""
    response = await make_async_handler().async_request(method, "x")
    assert response.json()["method"] == method.upper()


@pytest.mark.parametrize("verb", ["post", "put", "patch"])
async def test_body_verbs_send_json(make_async_handler: Any, verb: str) -> None:
    """json= reaches the server on body verbs."""
    handler = make_async_handler()
    response = await getattr(handler, f"async_{verb}")("api/resource/1", json={"key": "value"})
    assert response.json()["json"] == {"key": "value"}


@pytest.mark.parametrize(
    ("host_suffix", "endpoint", "path"),
    [
        ("", "api/items", "/api/items"),
        ("", "/api/items", "/api/items"),
        ("/prefix", "api/items", "/prefix/api/items"),
        ("/prefix/", "//api/items", "/prefix/api/items"),
    ],
)
async def test_relative_endpoints_are_joined_to_host(
    make_async_handler: Any, server: Any, host_suffix: str, endpoint: str, path: str
) -> None:
    """Relative endpoints (with or without a leading slash) are appended to the host."""
    handler = make_async_handler(server.url + host_suffix)
    assert (await handler.async_get(endpoint)).json()["path"] == path


async def test_full_url_endpoints_are_used_as_is(make_async_handler: Any, server: Any) -> None:
    """A full URL ignores the host's path prefix."""
    handler = make_async_handler(server.url + "/prefix")
    response = await handler.async_get(f"{server.url}/other/place?x=1")
    assert response.json()["path"] == "/other/place"
    assert response.json()["query"] == {"x": "1"}


# -- response_ok ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "response_ok"),
    [(200, 200), (201, 201), (201, (200, 201)), (404, [404]), (404, None), (500, None)],
)
async def test_response_ok_accepts(make_async_handler: Any, status: int, response_ok: Any) -> None:
    """An int, a collection or None (no check) accept the status."""
    handler = make_async_handler(max_retries=0)
    response = await handler.async_get(f"status/{status}", response_ok=response_ok)
    assert response.status_code == status


@pytest.mark.parametrize(
    ("status", "response_ok"), [(201, 200), (200, 201), (404, (200, 201)), (400, {200})]
)
async def test_response_ok_mismatch_raises_status_error(
    make_async_handler: Any, status: int, response_ok: Any
) -> None:
    """A mismatch raises HttpStatusError (a RuntimeError) carrying status, response, request."""
    handler = make_async_handler(max_retries=0)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_post(f"status/{status}", response_ok=response_ok)
    error = info.value
    assert isinstance(error, RuntimeError)
    assert error.status_code == status
    assert error.response.status_code == status
    assert error.request is not None
    assert error.request.method == "POST"
    assert f"HTTP {status}" in str(error)


async def test_default_response_ok_is_200(make_async_handler: Any) -> None:
    """Without response_ok, a 201 is a mismatch."""
    with pytest.raises(HttpStatusError, match="expected status 200"):
        await make_async_handler().async_get("status/201")


async def test_status_error_message_is_a_short_redacted_excerpt(make_async_handler: Any) -> None:
    """The message quotes a short excerpt of the body, with every registered secret removed."""
    api_key = "async-excerpt-api-key-0123456789"
    handler = make_async_handler(api_key=api_key)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_get(
            "echo", params={"value": api_key, "pad": "x" * 500}, response_ok=201
        )
    message = str(info.value)
    _, excerpt = message.split(" | body: ")
    assert api_key not in message
    assert '"value":"***"' in excerpt
    assert len(excerpt) == 301
    assert api_key in info.value.response.text


# -- client lifecycle -----------------------------------------------------------------------------
async def test_async_client_is_lazy(make_async_handler: Any) -> None:
    """async_connection is None until the first async request, then the live AsyncClient."""
    handler = make_async_handler(skip_connect=False)
    assert handler.async_connection is None
    await handler.async_get("x")
    client = handler.async_connection
    assert isinstance(client, httpx.AsyncClient)
    await handler.async_get("y")
    assert handler.async_connection is client


async def test_skip_connect_sends_nothing(make_async_handler: Any, server: Any, key: str) -> None:
    """skip_connect=True: nothing is sent until the first async request, which logs in once."""
    handler = make_async_handler(handler_cls=login_handler(key))
    assert server.hits(key) == 0
    assert handler.async_connection is None
    body = (await handler.async_get("whoami")).json()
    assert server.hits(key) == 1
    assert body["headers"]["x-session"] == f"sess-{key}"
    assert f"session=sess-{key}" in body["headers"]["cookie"]


async def test_async_reconnect_and_close(make_async_handler: Any) -> None:
    """async_reconnect() opens (or replaces) the client; async_close() closes it."""
    handler = make_async_handler()
    await handler.async_reconnect()
    first = handler.async_connection
    assert first is not None
    await handler.async_reconnect()
    second = handler.async_connection
    assert second is not first
    assert first.is_closed
    assert (await handler.async_get("x")).status_code == 200
    assert handler.async_connection is second
    await handler.async_close()
    assert handler.async_connection is None
    assert second.is_closed
    await handler.async_close()  # idempotent
    assert (await handler.async_get("x")).status_code == 200


async def test_async_close_leaves_the_sync_client_open(make_async_handler: Any) -> None:
    """async_close() only closes the async client."""
    handler = make_async_handler(skip_connect=False)
    await handler.async_get("x")
    await handler.async_close()
    assert not handler.connection.is_closed
    assert (await asyncio.to_thread(handler.get, "x")).status_code == 200  # sync off the loop


async def test_async_context_manager_closes_both(make_async_handler: Any) -> None:
    """`async with` returns the handler and closes both clients on exit, also on error."""
    async with make_async_handler(skip_connect=False) as handler:
        assert (await handler.async_get("x")).status_code == 200
        async_client, sync_client = handler.async_connection, handler.connection
    assert async_client.is_closed
    assert sync_client.is_closed
    assert handler.async_connection is None
    handler = make_async_handler(max_retries=0)
    await handler.async_reconnect()
    async_client = handler.async_connection

    async def fail_inside() -> None:
        async with handler:
            await handler.async_get("status/404")

    with pytest.raises(HttpStatusError):
        await fail_inside()
    assert async_client.is_closed


async def test_mixed_sync_and_async_on_one_instance(make_async_handler: Any) -> None:
    """Sync and async clients are independent; both work on one handler."""
    handler = make_async_handler(skip_connect=False, api_key="mixed-mode-key-123")
    sync_body = (await asyncio.to_thread(handler.get, "api/resource")).json()  # off the loop
    assert handler.async_connection is None
    async_body = (await handler.async_get("api/resource")).json()
    assert handler.async_connection is not None
    assert sync_body["path"] == async_body["path"] == "/api/resource"
    assert sync_body["headers"]["authorization"] == "Bearer mixed-mode-key-123"
    assert async_body["headers"]["authorization"] == "Bearer mixed-mode-key-123"
    assert isinstance(handler.connection, httpx.Client)


async def test_cookies_are_kept_on_the_async_client(make_async_handler: Any) -> None:
    """A Set-Cookie is visible on async_connection.cookies and sent back."""
    handler = make_async_handler()
    await handler.async_get("cookie/sid/abc123")
    assert handler.async_connection.cookies["sid"] == "abc123"
    assert "sid=abc123" in (await handler.async_get("x")).json()["headers"]["cookie"]


async def test_many_coroutines_share_one_client(
    make_async_handler: Any, monkeypatch: pytest.MonkeyPatch, key: str, server: Any
) -> None:
    """100 coroutines calling async_get at once all succeed over one lazily built AsyncClient."""
    built = count_async_clients(monkeypatch)
    handler = make_async_handler()
    responses = await asyncio.gather(*(handler.async_get(f"x/{key}/{i}") for i in range(100)))
    assert [r.json()["path"] for r in responses] == [f"/x/{key}/{i}" for i in range(100)]
    assert len(built) == 1
    assert handler.async_connection is built[0]
    assert server.hits(key) == 100


async def test_many_coroutines_log_in_once(make_async_handler: Any, server: Any, key: str) -> None:
    """100 coroutines on a handler with a session login: one login, all requests authenticated."""
    handler = make_async_handler(handler_cls=login_handler(key))
    responses = await asyncio.gather(*(handler.async_get(f"data/{i}") for i in range(100)))
    assert {r.json()["headers"]["x-session"] for r in responses} == {f"sess-{key}"}
    assert server.hits(f"/login/{key}") == 1
    assert handler._auth.logins == 1


def test_handler_reused_across_event_loops(make_handler: Any) -> None:
    """One handler serves two asyncio.run() calls, each closing its client at the end."""
    handler = make_handler(skip_connect=True)
    clients: list[httpx.AsyncClient] = []

    async def main() -> int:
        response = await handler.async_get("x")
        clients.append(handler.async_connection)
        await handler.async_close()
        return response.status_code

    assert asyncio.run(main()) == 200
    assert asyncio.run(main()) == 200
    assert clients[0] is not clients[1]
    assert all(c.is_closed for c in clients)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_client_of_a_finished_loop_is_replaced(make_handler: Any) -> None:
    """A client left open when its loop ended is not reused by the next loop."""
    handler = make_handler(skip_connect=True)
    clients: list[httpx.AsyncClient] = []

    async def main() -> int:
        response = await handler.async_get("x")
        clients.append(handler.async_connection)
        return response.status_code

    assert asyncio.run(main()) == 200
    assert asyncio.run(main()) == 200
    assert clients[0] is not clients[1]

    async def close() -> None:
        await handler.async_close()

    asyncio.run(close())
    # The first client's sockets cannot be closed once its loop is gone: collect them here,
    # where their ResourceWarning is expected (see the report on reuse across loops).
    clients.clear()
    gc.collect()


# -- what every request carries -------------------------------------------------------------------
async def test_api_key_is_sent_as_bearer(make_async_handler: Any) -> None:
    """api_key goes out as Authorization: Bearer <key> on every request."""
    handler = make_async_handler(api_key="async-bearer-key-123")
    for verb in VERBS:
        headers = (await getattr(handler, f"async_{verb}")("x")).json()["headers"]
        assert headers["authorization"] == "Bearer async-bearer-key-123"


async def test_headers_from_props_and_call(make_async_handler: Any) -> None:
    """Connection headers go on every request; per-call headers add to and override them."""
    handler = make_async_handler(headers={"Accept": "application/json", "X-Tenant": "echo"})
    response = await handler.async_get("x", headers={"X-Tenant": "other", "X-Call": "1"})
    headers = response.json()["headers"]
    assert headers["accept"] == "application/json"
    assert headers["x-tenant"] == "other"
    assert headers["x-call"] == "1"


async def test_timeouts_are_applied_to_the_client(make_async_handler: Any) -> None:
    """conn_timeout is the connect timeout, request_timeout the others."""
    handler = make_async_handler(conn_timeout=2, request_timeout=7)
    await handler.async_reconnect()
    assert handler.async_connection.timeout == httpx.Timeout(7, connect=2)


# -- payload_kwargs -------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["post", "put", "patch"])
async def test_payload_kwargs_merged_into_json(make_async_handler: Any, verb: str) -> None:
    """payload_kwargs go into the json body; per-call values win."""
    handler = make_async_handler(payload_kwargs={"api_token": "xyz", "page": 1})
    send = getattr(handler, f"async_{verb}")
    assert (await send("x", json={"page": 2, "q": "a"})).json()["json"] == {
        "api_token": "xyz",
        "page": 2,
        "q": "a",
    }
    assert (await send("x")).json()["json"] == {"api_token": "xyz", "page": 1}


async def test_payload_kwargs_merged_into_data(make_async_handler: Any) -> None:
    """payload_kwargs_key='data' merges into a form body."""
    handler = make_async_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key="data")
    body = (await handler.async_post("x", data={"a": "1", "api_token": "mine"})).json()
    assert sorted(body["body"].split("&")) == ["a=1", "api_token=mine"]


@pytest.mark.parametrize("verb", VERBS)
async def test_payload_kwargs_merged_into_params(make_async_handler: Any, verb: str) -> None:
    """payload_kwargs_key='params' adds query parameters to every verb, keeping the endpoint's."""
    handler = make_async_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key="params")
    send = getattr(handler, f"async_{verb}")
    assert (await send("x")).json()["query"] == {"api_token": "xyz"}
    assert (await send("x?q=1", params={"api_token": "mine"})).json()["query"] == {
        "api_token": "mine",
        "q": "1",
    }


@pytest.mark.parametrize(("payload_key", "given"), [("json", [1, 2]), ("data", "a=1")])
async def test_payload_kwargs_into_non_mapping_is_a_clear_error(
    make_async_handler: Any, server: Any, payload_key: str, given: Any, key: str
) -> None:
    """Merging into a non-mapping raises ValueError before anything is sent."""
    handler = make_async_handler(
        payload_kwargs={"api_token": "xyz"}, payload_kwargs_key=payload_key
    )
    with pytest.raises(ValueError, match=rf"cannot merge payload_kwargs into {payload_key}="):
        await handler.async_post(f"x/{key}", **{payload_key: given})
    assert server.hits(key) == 0
    assert handler.async_connection is None


# -- transport failures ---------------------------------------------------------------------------
async def test_read_timeout_is_a_transport_error_after_retries(
    make_async_handler: Any, server: Any, key: str
) -> None:
    """request_timeout on a slow endpoint: HttpTransportError caused by httpx.ReadTimeout."""
    handler = make_async_handler(request_timeout=0.1, max_retries=1)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_get(f"sleep/0.5?k={key}")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert f"GET {server.url}/sleep/0.5" in str(info.value)
    assert server.hits(key) == 2


async def test_tls_verification_failure_is_raised_at_once(
    make_async_handler: Any, tls_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """verify_ssl=True against a self-signed certificate fails without retries."""
    handler = make_async_handler(tls_server.url, max_retries=3)
    with (
        caplog.at_level(logging.WARNING, "echo_connhandler"),
        pytest.raises(HttpTransportError) as info,
    ):
        await handler.async_get("x")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert [r for r in caplog.records if "Retrying" in r.getMessage()] == []


async def test_verify_ssl_false_accepts_a_self_signed_certificate(
    make_async_handler: Any, tls_server: Any
) -> None:
    """verify_ssl=False reaches an HTTPS server whose certificate is not trusted."""
    handler = make_async_handler(tls_server.url, verify_ssl=False)
    assert (await handler.async_get("secure")).json()["path"] == "/secure"


async def test_connection_refused_is_a_transport_error(
    make_async_handler: Any, closed_port: int
) -> None:
    """Nothing listening: HttpTransportError caused by httpx.ConnectError."""
    handler = make_async_handler(f"http://127.0.0.1:{closed_port}", max_retries=1)
    with pytest.raises(HttpTransportError) as info:
        await handler.async_get("x")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_cancelled_request_leaves_the_handler_usable(make_async_handler: Any) -> None:
    """A request cancelled by asyncio.wait_for is not retried and leaves the client usable."""
    handler = make_async_handler(max_retries=3)
    await handler.async_get("x")
    client = handler.async_connection
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler.async_get("sleep/0.5"), timeout=0.05)
    assert (await handler.async_get("x")).status_code == 200
    assert handler.async_connection is client
    assert handler._async.current is not None
    assert handler._async.current.in_flight == 0


async def test_retry_replaces_only_the_client_that_failed() -> None:
    """50 coroutines failing once on one client cause one swap: two clients in all, not fifty."""
    failed_once: set[str] = set()

    async def transport(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # let every coroutine start on the first client
        key = request.url.path
        if key not in failed_once:
            failed_once.add(key)
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={"ok": key})

    class Counting(HttpHandler):
        built = 0

        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(transport)}

        def _new_async_client(self, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
            Counting.built += 1
            return super()._new_async_client(cookies)

    props = HttpConnProperties(host="https://svc.test")
    handler = Counting(
        props, skip_connect=True, retry_wait_time=0, exponential_min_retry_wait_time=0
    )
    responses = await asyncio.gather(*(handler.async_get(f"item/{i}") for i in range(50)))
    await handler.async_close()
    assert [r.json()["ok"] for r in responses] == [f"/item/{i}" for i in range(50)]
    assert Counting.built == 2


# -- per-request costs: the first attempt outside the retry loop, cookies, parsed URLs ------------
async def test_a_request_that_succeeds_builds_no_retry_loop(
    make_async_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt runs outside tenacity (docs/performance.md, "Async throughput")."""

    def no_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a retry loop was built for a request that did not fail")

    monkeypatch.setattr(RetryPolicy, "async_attempts", no_loop)
    monkeypatch.setattr(RetryPolicy, "sync_attempts", no_loop)
    handler = make_async_handler()
    assert (await handler.async_get("x")).status_code == 200
    assert handler.get("x").status_code == 200


async def test_a_first_failure_enters_the_loop_as_its_first_attempt(
    make_async_handler: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed twice: three attempts in all, two retries counted and logged as attempts 1 and 2
    of 3, and max_retries counts the attempt that ran before the loop."""
    handler = make_async_handler(max_retries=2)
    with caplog.at_level(logging.WARNING, logger="echo_connhandler.retry"):
        response = await handler.async_get(f"flaky/{key}/2")
    assert response.json()["attempt"] == 3
    assert handler.retry_count == 2
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert ["attempt 1 of 3" in retries[0], "attempt 2 of 3" in retries[1]] == [True, True]
    failing = make_async_handler(max_retries=1)
    with pytest.raises(HttpStatusError) as info:
        await failing.async_get(f"flaky/{key}-b/5")
    assert any("gave up after 2 attempts" in note for note in info.value.__notes__)


def _fail_once_then_succeed(policy: RetryPolicy, started: float | None) -> int:
    """Attempts made when the first one fails with HTTP 503 (a retryable answer)."""
    attempts = 0
    for attempt in policy.sync_attempts(idempotent=True, label="GET /", started=started):
        with attempt:
            attempts += 1
            if attempts == 1:
                raise HttpStatusError(
                    "HTTP 503",
                    response=httpx.Response(503, request=httpx.Request("GET", "http://h/")),
                )
    return attempts


def test_the_time_budget_counts_the_attempt_before_the_loop() -> None:
    """``started`` (the first attempt's start) is where the budget runs from: 10 s ago with a
    5 s budget, the first failure ends the operation with the budget's note. Without it, the
    budget runs from the loop's own start and the same failure is retried."""
    policy = RetryPolicy(time_budget=5, min_wait=0, max_wait=0)
    with pytest.raises(HttpStatusError) as info:
        _fail_once_then_succeed(policy, started=time.monotonic() - 10)
    assert any("time budget of 5 s" in note for note in info.value.__notes__)
    assert _fail_once_then_succeed(policy, started=None) == 2
    assert _fail_once_then_succeed(policy, started=time.monotonic()) == 2


async def test_responses_without_set_cookie_skip_the_cookie_jar(
    make_async_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standard library's jar parses only answers that set a cookie; those still do."""
    parsed: list[object] = []
    original = http.cookiejar.CookieJar.extract_cookies

    def counting(self: http.cookiejar.CookieJar, response: Any, request: Any) -> None:
        parsed.append(response)
        original(self, response, request)

    monkeypatch.setattr(http.cookiejar.CookieJar, "extract_cookies", counting)
    handler = make_async_handler()
    await handler.async_get("x")
    assert parsed == []
    await handler.async_get("cookie/sid/abc123")
    assert len(parsed) == 1
    assert handler.async_connection.cookies["sid"] == "abc123"
    assert "sid=abc123" in (await handler.async_get("x")).json()["headers"]["cookie"]
    handler.get("cookie/sync/1")  # the sync client alike
    assert handler.connection.cookies["sync"] == "1"
    assert len(parsed) == 2


async def test_cookies_survive_the_retry_swap_of_client(
    make_async_handler: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = count_async_clients(monkeypatch)
    handler = make_async_handler()
    await handler.async_get("cookie/sid/abc123")
    echoed = (await handler.async_get(f"flaky/{key}/1")).json()
    assert len(built) == 2  # a fresh client for the retry
    assert "sid=abc123" in echoed["headers"]["cookie"]
    assert handler.async_connection.cookies["sid"] == "abc123"


def test_urls_are_parsed_once_and_the_cache_is_bounded(make_handler: Any) -> None:
    handler = make_handler(skip_connect=True)
    url = handler._url("api/items?page=1")
    assert handler._parsed_url(url) is handler._parsed_url(url)
    assert handler._parsed_url(url) == httpx.URL(url)
    for page in range(1000):
        handler._parsed_url(handler._url(f"api/items?page={page}"))
    assert len(handler._urls) <= 256
