"""HttpHandler, sync path, against the loopback server (mirrored by test_handler_async.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from echo_connhandler import (
    HttpConnProperties,
    HttpHandler,
    HttpStatusError,
    HttpTransportError,
    OnsHttpConnProperties,
    SessionAuth,
    UnexpectedContentError,
    expect_json,
)
from echo_connhandler._auth import LoginFlow, derive_request

VERBS = ["get", "post", "put", "patch", "delete"]


class LoginAuth(SessionAuth):
    """A session login against the loopback server's ``/login/{key}``."""

    def __init__(self, login_url: str) -> None:
        super().__init__()
        self.login_url = login_url
        self.token: str | None = None

    def needs_login(self) -> bool:
        return self.token is None

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        response = yield derive_request(template, "POST", self.login_url)
        self.token = response.json()["token"]

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


# -- verbs and endpoints --------------------------------------------------------------------------
@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_reaches_the_server(make_handler: Any, verb: str, key: str) -> None:
    """get/post/put/patch/delete send their method to the endpoint and return the response."""
    handler = make_handler()
    response = getattr(handler, verb)(f"api/resource/{key}")
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert response.json()["method"] == verb.upper()
    assert response.json()["path"] == f"/api/resource/{key}"


@pytest.mark.parametrize("method", ["get", "Post", "DELETE"])
def test_request_accepts_any_case(make_handler: Any, method: str) -> None:
    """request() upper-cases the method."""
    assert make_handler().request(method, "x").json()["method"] == method.upper()


@pytest.mark.parametrize("verb", ["post", "put", "patch"])
def test_body_verbs_send_json(make_handler: Any, verb: str) -> None:
    """json= reaches the server on body verbs."""
    response = getattr(make_handler(), verb)("api/resource/1", json={"key": "value"})
    assert response.json()["json"] == {"key": "value"}


@pytest.mark.parametrize(
    ("host_suffix", "endpoint", "path"),
    [
        ("", "api/items", "/api/items"),
        ("", "/api/items", "/api/items"),
        ("/", "api/items", "/api/items"),
        ("/prefix", "api/items", "/prefix/api/items"),
        ("/prefix", "/api/items", "/prefix/api/items"),
        ("/prefix/", "//api/items", "/prefix/api/items"),
        ("/prefix", "", "/prefix/"),
    ],
)
def test_relative_endpoints_are_joined_to_host(
    make_handler: Any, server: Any, host_suffix: str, endpoint: str, path: str
) -> None:
    """Relative endpoints (with or without a leading slash) are appended to the host."""
    handler = make_handler(server.url + host_suffix)
    assert handler.get(endpoint).json()["path"] == path


def test_full_url_endpoints_are_used_as_is(make_handler: Any, server: Any) -> None:
    """A full URL ignores the host's path prefix."""
    handler = make_handler(server.url + "/prefix")
    assert handler.get(f"{server.url}/other/place?x=1").json()["path"] == "/other/place"


def test_query_in_endpoint(make_handler: Any) -> None:
    """A query string written in the endpoint reaches the server."""
    assert make_handler().get("search?q=wind&page=2").json()["query"] == {"q": "wind", "page": "2"}


# -- response_ok ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "response_ok"),
    [
        (200, 200),
        (201, 201),
        (204, 204),
        (201, (200, 201)),
        (202, {200, 202}),
        (404, [404]),
        (206, range(200, 300)),
        (404, None),
        (500, None),
        (302, None),
    ],
)
def test_response_ok_accepts(make_handler: Any, status: int, response_ok: Any) -> None:
    """An int, a collection or None (no check) accept the status."""
    response = make_handler(max_retries=0).get(f"status/{status}", response_ok=response_ok)
    assert response.status_code == status


@pytest.mark.parametrize(
    ("status", "response_ok"),
    [(201, 200), (200, 201), (404, (200, 201)), (400, frozenset({200})), (204, [200])],
)
def test_response_ok_mismatch_raises_status_error(
    make_handler: Any, status: int, response_ok: Any
) -> None:
    """A mismatch raises HttpStatusError (a RuntimeError) carrying status, response, request."""
    with pytest.raises(HttpStatusError) as info:
        make_handler(max_retries=0).post(f"status/{status}", response_ok=response_ok)
    error = info.value
    assert isinstance(error, RuntimeError)
    assert error.status_code == status
    assert isinstance(error.response, httpx.Response)
    assert error.response.status_code == status
    assert error.request is not None
    assert error.request.method == "POST"
    assert f"/status/{status}" in str(error)
    assert f"HTTP {status}" in str(error)


def test_default_response_ok_is_200(make_handler: Any) -> None:
    """Without response_ok, a 201 is a mismatch."""
    with pytest.raises(HttpStatusError, match="expected status 200"):
        make_handler().get("status/201")


@pytest.mark.parametrize("response_ok", ["200", True, [200, "201"], 200.0])
def test_bad_response_ok_is_a_type_error(make_handler: Any, response_ok: Any) -> None:
    """response_ok must be an int, a collection of ints or None."""
    with pytest.raises(TypeError, match="response_ok"):
        make_handler().get("x", response_ok=response_ok)


def test_status_error_message_is_a_short_redacted_excerpt(make_handler: Any) -> None:
    """The message quotes a short excerpt of the body, with every registered secret removed."""
    api_key = "sync-excerpt-api-key-0123456789"
    handler = make_handler(api_key=api_key)
    with pytest.raises(HttpStatusError) as info:
        handler.get("echo", params={"value": api_key, "pad": "x" * 500}, response_ok=201)
    message = str(info.value)
    where, excerpt = message.split(" | body: ")
    assert where.startswith(f"GET {handler.props.host}/echo?value=***&pad=xxx")
    assert where.endswith("-> HTTP 200: expected status 201")
    assert api_key not in message
    assert '"value":"***"' in excerpt
    assert len(excerpt) == 301
    assert excerpt.endswith("…")
    # The full response is still there for whoever needs it.
    assert api_key in info.value.response.text


# -- client lifecycle -----------------------------------------------------------------------------
def test_connection_is_the_live_client(make_handler: Any) -> None:
    """connection is an httpx.Client, the same one across requests; no async client yet."""
    handler = make_handler()
    client = handler.connection
    assert isinstance(client, httpx.Client)
    handler.get("x")
    handler.get("y")
    assert handler.connection is client
    assert handler.async_connection is None


def test_skip_connect_sends_nothing(make_handler: Any, server: Any, key: str) -> None:
    """skip_connect=True: no login in the constructor; the first request logs in."""
    handler = make_handler(handler_cls=login_handler(key), skip_connect=True)
    assert server.hits(key) == 0
    assert handler.async_connection is None
    body = handler.get("whoami").json()
    assert server.hits(key) == 1
    assert body["headers"]["x-session"] == f"sess-{key}"


def test_constructor_connects_by_default(make_handler: Any, server: Any, key: str) -> None:
    """Without skip_connect the connect step (login) runs in the constructor, once."""
    handler = make_handler(handler_cls=login_handler(key))
    assert server.hits(key) == 1
    body = handler.get("whoami").json()
    assert server.hits(key) == 1
    assert body["headers"]["x-session"] == f"sess-{key}"
    assert f"session=sess-{key}" in body["headers"]["cookie"]


def test_skip_connect_opens_no_client(make_handler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """skip_connect=True builds no httpx.Client until the first request."""
    built: list[httpx.Client] = []
    original = HttpHandler._new_sync_client

    def counting(self: HttpHandler, cookies: httpx.Cookies | None = None) -> httpx.Client:
        built.append(original(self, cookies))
        return built[-1]

    monkeypatch.setattr(HttpHandler, "_new_sync_client", counting)
    handler = make_handler(skip_connect=True)
    assert built == []
    handler.get("x")
    assert len(built) == 1
    make_handler()
    assert len(built) == 2


def test_reconnect_replaces_and_closes_the_client(make_handler: Any) -> None:
    """reconnect() closes the old client and opens a new one that works."""
    handler = make_handler()
    old = handler.connection
    handler.reconnect()
    assert handler.connection is not old
    assert old.is_closed
    assert handler.get("x").status_code == 200


def test_close_then_use_reopens(make_handler: Any) -> None:
    """close() closes the client; a later request opens a new one."""
    handler = make_handler()
    old = handler.connection
    handler.close()
    assert old.is_closed
    handler.close()  # idempotent
    assert handler.get("x").status_code == 200
    assert handler.connection is not old
    assert not handler.connection.is_closed


def test_context_manager_closes(make_handler: Any) -> None:
    """`with` returns the handler and closes its client on exit, also on error."""
    with make_handler() as handler:
        client = handler.connection
        assert handler.get("x").status_code == 200
    assert client.is_closed
    handler = make_handler(max_retries=0)
    client = handler.connection

    def fail_inside() -> None:
        with handler:
            handler.get("status/404")

    with pytest.raises(HttpStatusError):
        fail_inside()
    assert client.is_closed


def test_cookies_are_kept_on_the_client(make_handler: Any) -> None:
    """A Set-Cookie is visible on connection.cookies and sent back on the next request."""
    handler = make_handler()
    handler.get("cookie/sid/abc123")
    assert handler.connection.cookies["sid"] == "abc123"
    assert "sid=abc123" in handler.get("x").json()["headers"]["cookie"]


# -- what every request carries -------------------------------------------------------------------
def test_api_key_is_sent_as_bearer(make_handler: Any) -> None:
    """api_key goes out as Authorization: Bearer <key> on every request."""
    handler = make_handler(api_key="sync-bearer-key-123")
    for verb in VERBS:
        headers = getattr(handler, verb)("x").json()["headers"]
        assert headers["authorization"] == "Bearer sync-bearer-key-123"


def test_no_authorization_without_api_key(make_handler: Any) -> None:
    """Without api_key no Authorization header is sent."""
    assert "authorization" not in make_handler().get("x").json()["headers"]


def test_headers_from_props_and_call(make_handler: Any) -> None:
    """Connection headers go on every request; per-call headers add to and override them."""
    handler = make_handler(headers={"Accept": "application/json", "X-Tenant": "echo"})
    headers = handler.get("x", headers={"X-Tenant": "other", "X-Call": "1"}).json()["headers"]
    assert headers["accept"] == "application/json"
    assert headers["x-tenant"] == "other"
    assert headers["x-call"] == "1"
    assert handler.get("x").json()["headers"]["x-tenant"] == "echo"


def test_timeouts_are_applied_to_the_client(make_handler: Any) -> None:
    """conn_timeout is the connect timeout, request_timeout the others."""
    handler = make_handler(conn_timeout=2, request_timeout=7)
    assert handler.connection.timeout == httpx.Timeout(7, connect=2)


def test_redirects_are_followed(make_handler: Any) -> None:
    """A redirect is followed and the final response returned."""
    response = make_handler().get("redirect?to=/final/place")
    assert response.json()["path"] == "/final/place"
    assert [r.status_code for r in response.history] == [307]


# -- payload_kwargs -------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["post", "put", "patch"])
def test_payload_kwargs_merged_into_json(make_handler: Any, verb: str) -> None:
    """payload_kwargs go into the json body; per-call values win."""
    handler = make_handler(payload_kwargs={"api_token": "xyz", "page": 1})
    body = getattr(handler, verb)("x", json={"page": 2, "q": "a"}).json()
    assert body["json"] == {"api_token": "xyz", "page": 2, "q": "a"}
    assert getattr(handler, verb)("x").json()["json"] == {"api_token": "xyz", "page": 1}


def test_payload_kwargs_merged_into_data(make_handler: Any) -> None:
    """payload_kwargs_key='data' merges into a form body."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key="data")
    body = handler.post("x", data={"a": "1", "api_token": "mine"}).json()
    assert sorted(body["body"].split("&")) == ["a=1", "api_token=mine"]
    assert handler.post("x").json()["body"] == "api_token=xyz"


@pytest.mark.parametrize("verb", VERBS)
def test_payload_kwargs_merged_into_params(make_handler: Any, verb: str) -> None:
    """payload_kwargs_key='params' adds query parameters to every verb."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key="params")
    assert getattr(handler, verb)("x").json()["query"] == {"api_token": "xyz"}
    body = getattr(handler, verb)("x", params={"api_token": "mine", "b": "2"}).json()
    assert body["query"] == {"api_token": "mine", "b": "2"}


@pytest.mark.parametrize(
    ("endpoint", "params", "query"),
    [
        ("search?q=wind&page=2", None, {"api_token": "xyz", "q": "wind", "page": "2"}),
        ("search?api_token=mine", None, {"api_token": "mine"}),
        ("search?q=wind&page=2", {"page": "3"}, {"api_token": "xyz", "q": "wind", "page": "3"}),
    ],
)
def test_payload_kwargs_params_keep_the_endpoint_query(
    make_handler: Any, endpoint: str, params: Any, query: dict[str, str]
) -> None:
    """A query written in the endpoint survives the params merge; the call's values win."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key="params")
    assert handler.get(endpoint, params=params).json()["query"] == query


@pytest.mark.parametrize("verb", ["get", "delete"])
def test_payload_kwargs_json_not_forced_on_bodyless_verbs(make_handler: Any, verb: str) -> None:
    """A GET/DELETE gets a json body only when the call passes one."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"})
    assert getattr(handler, verb)("x").json()["body"] == ""
    assert getattr(handler, verb)("x", json={"a": 1}).json()["json"] == {
        "api_token": "xyz",
        "a": 1,
    }


@pytest.mark.parametrize(
    ("payload_key", "given"),
    [("json", [1, 2]), ("json", "raw"), ("data", "a=1"), ("data", b"raw")],
)
def test_payload_kwargs_into_non_mapping_is_a_clear_error(
    make_handler: Any, server: Any, payload_key: str, given: Any, key: str
) -> None:
    """Merging into a non-mapping raises ValueError before anything is sent."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key=payload_key)
    with pytest.raises(ValueError, match=rf"cannot merge payload_kwargs into {payload_key}="):
        handler.post(f"x/{key}", **{payload_key: given})
    assert server.hits(key) == 0


def test_payload_kwargs_do_not_leak_between_calls(make_handler: Any) -> None:
    """A call's json dict is not changed and the defaults stay as configured."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"})
    mine = {"a": 1}
    handler.post("x", json=mine)
    assert mine == {"a": 1}
    assert handler.props.payload_kwargs == {"api_token": "xyz"}


# -- transport failures ---------------------------------------------------------------------------
def test_read_timeout_is_a_transport_error_after_retries(
    make_handler: Any, server: Any, key: str
) -> None:
    """request_timeout on a slow endpoint: HttpTransportError caused by httpx.ReadTimeout."""
    handler = make_handler(request_timeout=0.1, max_retries=1)
    with pytest.raises(HttpTransportError) as info:
        handler.get(f"sleep/0.5?k={key}")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert not isinstance(info.value, RuntimeError)
    assert f"GET {server.url}/sleep/0.5" in str(info.value)
    assert server.hits(key) == 2


def test_tls_verification_failure_is_raised_at_once(
    make_handler: Any, tls_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """verify_ssl=True against a self-signed certificate fails without retries."""
    handler = make_handler(tls_server.url, max_retries=3)
    with (
        caplog.at_level(logging.WARNING, "echo_connhandler"),
        pytest.raises(HttpTransportError) as info,
    ):
        handler.get("x")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert [r for r in caplog.records if "Retrying" in r.getMessage()] == []


def test_verify_ssl_false_accepts_a_self_signed_certificate(
    make_handler: Any, tls_server: Any
) -> None:
    """verify_ssl=False reaches an HTTPS server whose certificate is not trusted."""
    handler = make_handler(tls_server.url, verify_ssl=False)
    assert handler.get("secure").json()["path"] == "/secure"


def test_connection_refused_is_a_transport_error(make_handler: Any, closed_port: int) -> None:
    """Nothing listening: HttpTransportError caused by httpx.ConnectError."""
    handler = make_handler(f"http://127.0.0.1:{closed_port}", max_retries=1)
    with pytest.raises(HttpTransportError) as info:
        handler.get("x")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


# -- construction ---------------------------------------------------------------------------------
def test_wrong_properties_type_is_a_type_error() -> None:
    """A handler refuses what is not an HttpConnProperties."""
    with pytest.raises(TypeError, match="HttpHandler needs HttpConnProperties, got dict"):
        HttpHandler({"host": "https://api.example.com"})  # type: ignore[arg-type]


def test_subclass_properties_are_accepted(make_handler: Any) -> None:
    """OnsHttpConnProperties is an HttpConnProperties: the base handler accepts it."""
    props = OnsHttpConnProperties(
        host="https://api.example.com", user="u", password="p-123456", login_target="SAGER"
    )
    handler = make_handler(props=props, skip_connect=True)
    assert handler.props is props


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_conn_retries": -1}, "max_conn_retries"),
        ({"max_conn_retries": 1.5}, "max_conn_retries"),
        ({"max_conn_retries": True}, "max_conn_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 2.5}, "max_retries"),
        ({"retry_wait_time": -1}, "retry_wait_time"),
        ({"exponential_min_retry_wait_time": -0.1}, "exponential_min_retry_wait_time"),
        ({"exponential_multiplier": "2"}, "exponential_multiplier"),
    ],
)
def test_bad_retry_settings_are_value_errors(kwargs: dict[str, Any], message: str) -> None:
    """Retry settings are validated in the constructor."""
    props = HttpConnProperties(host="https://api.example.com")
    with pytest.raises(ValueError, match=message):
        HttpHandler(props, skip_connect=True, **kwargs)


def test_retry_settings_reach_the_policy() -> None:
    """Constructor retry settings build the handler's RetryPolicy."""
    props = HttpConnProperties(host="https://api.example.com")
    handler = HttpHandler(
        props,
        skip_connect=True,
        max_retries=12,
        retry_wait_time=60,
        exponential_min_retry_wait_time=0.5,
        exponential_multiplier=2,
    )
    policy = handler.retry_policy
    assert (policy.max_retries, policy.max_wait, policy.min_wait, policy.multiplier) == (
        12,
        60,
        0.5,
        2,
    )
    assert handler.max_conn_retries == 3


def test_handler_repr_hides_secrets() -> None:
    """repr(handler) shows the properties without the API key."""
    props = HttpConnProperties(host="https://api.example.com", api_key="repr-hidden-key-42")
    text = repr(HttpHandler(props, skip_connect=True))
    assert text.startswith("HttpHandler(HttpConnProperties(host='https://api.example.com'")
    assert "repr-hidden-key-42" not in text


# -- expect_json ----------------------------------------------------------------------------------
def test_expect_json_returns_the_body(make_handler: Any) -> None:
    """expect_json decodes a JSON response."""
    assert expect_json(make_handler().get("status/200"))["status"] == 200


def test_expect_json_refuses_html(make_handler: Any) -> None:
    """An HTML page where JSON was expected raises UnexpectedContentError."""
    response = make_handler().get("html")
    with pytest.raises(UnexpectedContentError, match="HTML page") as info:
        expect_json(response)
    assert isinstance(info.value, RuntimeError)
    assert info.value.status_code == 200
    assert "Maintenance" in str(info.value)


def test_expect_json_refuses_undecodable_content() -> None:
    """A non-JSON, non-HTML body raises UnexpectedContentError too."""
    request = httpx.Request("GET", "https://api.example.com/x")
    response = httpx.Response(200, text="not json", request=request)
    with pytest.raises(UnexpectedContentError, match="undecodable") as info:
        expect_json(response)
    assert isinstance(info.value.__cause__, ValueError)


def test_client_swapped_by_another_thread_is_not_closed_under_a_request(
    make_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry's client swap in one thread never closes the client another thread just took."""
    import threading

    from echo_connhandler._handler import _ClientHolder

    handler = make_handler(max_retries=0)
    first = handler._sync.current
    took_slot, go = threading.Event(), threading.Event()
    original = _ClientHolder.checkout

    def slow_checkout(self: Any, failed: Any = None, loop: Any = None) -> Any:
        taken = original(self, failed, loop)
        if threading.current_thread().name == "request":
            took_slot.set()
            go.wait(0.5)  # the window between taking the slot and using it
        return taken

    monkeypatch.setattr(_ClientHolder, "checkout", slow_checkout)
    outcome: list[object] = []

    def request() -> None:
        try:
            outcome.append(handler.get("x").status_code)
        except Exception as exc:  # reported below
            outcome.append(exc)

    def swap() -> None:  # what a failed request in another thread does before its retry
        slot, idle = original(handler._sync, first)
        assert idle is None  # the request thread still uses the first client
        if handler._sync.release(slot):
            slot.client.close()
        go.set()

    requester = threading.Thread(target=request, name="request")
    requester.start()
    assert took_slot.wait(5)
    swapper = threading.Thread(target=swap, name="swap")
    swapper.start()
    requester.join(5)
    swapper.join(5)
    assert outcome == [200]
    assert handler._sync.current is not first
    assert first is not None
    assert first.client.is_closed


# -- review fixes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [{"data": {"a": "1"}}, {"content": b"raw"}])
def test_payload_kwargs_json_with_another_body_is_a_clear_error(
    make_handler: Any, body: dict[str, Any]
) -> None:
    """payload_kwargs for json= cannot silently vanish behind data=/content=."""
    handler = make_handler(payload_kwargs={"api_token": "xyzzy"}, payload_kwargs_key="json")
    with pytest.raises(ValueError, match="payload_kwargs go into the json= body"):
        handler.post("echo", **body)


def test_full_url_scheme_is_case_insensitive(make_handler: Any, server: Any) -> None:
    """``HTTP://...`` is a full URL, not an endpoint appended to the host."""
    handler = make_handler()
    url = server.url.replace("http://", "HTTP://") + "/echo"
    assert handler.get(url).json()["path"] == "/echo"


def test_files_upload_is_not_replayed(make_handler: Any, key: str, server: Any) -> None:
    """A body that cannot be sent twice (files=) gets one attempt, even on a 503."""
    handler = make_handler(max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        handler.post(f"flaky/{key}/3", files={"f": ("a.txt", b"abc")})
    assert info.value.status_code == 503
    assert server.hits(key) == 1


def test_replayable_post_is_retried_on_503(make_handler: Any, key: str, server: Any) -> None:
    """The same POST with a bytes body is replayed on 503 (the server did not act)."""
    handler = make_handler(max_retries=5)
    assert handler.post(f"flaky/{key}/2", content=b"abc").status_code == 200
    assert server.hits(key) == 3


def test_params_string_merges_with_payload_params(make_handler: Any) -> None:
    """params= may be a query string; it merges with payload params like a mapping."""
    handler = make_handler(payload_kwargs={"api_token": "xyz"}, payload_kwargs_key="params")
    assert handler.get("x", params="a=1").json()["query"] == {"api_token": "xyz", "a": "1"}


def test_endpoint_query_kept_with_params_without_payload(make_handler: Any) -> None:
    """A query written in the endpoint survives params= even with no payload_kwargs."""
    handler = make_handler()
    assert handler.get("x?a=1", params={"b": "2"}).json()["query"] == {"a": "1", "b": "2"}


def test_payload_in_data_with_caller_json_is_a_clear_error(make_handler: Any) -> None:
    """payload_kwargs for data= would make httpx drop the caller's json=: an error instead."""
    handler = make_handler(payload_kwargs={"api_token": "xyzzy"}, payload_kwargs_key="data")
    with pytest.raises(ValueError, match=r"payload_kwargs go into the data= body.*json="):
        handler.post("echo", json={"a": 1})


def test_a_transport_is_given_publicly() -> None:
    """transport= serves the sync client, and (a MockTransport) the async one too."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"ok": True})

    handler = HttpHandler(
        HttpConnProperties(host="https://svc.test"), transport=httpx.MockTransport(handle)
    )
    assert handler.get("sync").json() == {"ok": True}

    async def use_async() -> None:
        assert (await handler.async_get("async")).json() == {"ok": True}
        await handler.async_close()

    asyncio.run(use_async())
    handler.close()
    assert seen == ["/sync", "/async"]
