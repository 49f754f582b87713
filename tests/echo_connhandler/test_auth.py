"""BearerAuth and SessionAuth: flows stepped by hand, then driven by httpx over MockTransport."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

import httpx
import pytest

from echo_connhandler import AuthenticationError, BearerAuth, SessionAuth
from echo_connhandler._auth import LoginFlow, derive_request

BASE = "https://api.test"


class TokenAuth(SessionAuth):
    """A dummy service login: POST /login returns a token (and a session cookie)."""

    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None
        self.logins = 0
        self.still_rejected: list[int] = []

    def needs_login(self) -> bool:
        return self.token is None

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        response = yield derive_request(template, "POST", f"{BASE}/login", json={"user": "me"})
        if response.status_code != 200:
            raise AuthenticationError.from_response(response, "bad credentials")
        self.token = response.json()["token"]
        self.logins += 1

    def apply(self, request: httpx.Request) -> None:
        if self.token is not None:
            request.headers["Authorization"] = f"Bearer {self.token}"

    def invalidate(self) -> None:
        self.token = None

    def on_still_rejected(self, response: httpx.Response) -> None:
        self.still_rejected.append(response.status_code)


@dataclass
class FakeService:
    """The server side: issues tokens and session cookies, rejects anything else with 401."""

    valid_token: str | None = None
    session: str | None = None
    issued: int = 0
    refuse_login: bool = False
    always_reject: bool = False
    login_delay: float = 0.0
    seen: list[httpx.Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rotate(self) -> None:
        """Expire the current token (the next use gets a 401)."""
        self.valid_token = None

    def _login(self) -> httpx.Response:
        if self.refuse_login:
            return httpx.Response(401, json={"error": "bad credentials"})
        with self.lock:
            self.issued += 1
            self.valid_token = f"token-{self.issued}"
            self.session = f"sess-{self.issued}"
        return httpx.Response(
            200,
            json={"token": self.valid_token},
            headers={"Set-Cookie": f"sid={self.session}; Path=/"},
        )

    def _data(self, request: httpx.Request) -> httpx.Response:
        cookies = SimpleCookie()
        cookies.load(request.headers.get("cookie", ""))
        authorised = (
            not self.always_reject
            and self.valid_token is not None
            and request.headers.get("authorization") == f"Bearer {self.valid_token}"
            and "sid" in cookies
            and cookies["sid"].value == self.session
        )
        if not authorised:
            return httpx.Response(401, json={"error": "unauthorised"})
        return httpx.Response(200, json={"path": request.url.path})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path == "/login" and self.login_delay:
            time.sleep(self.login_delay)  # a window in which other threads would log in too
        return self._login() if request.url.path == "/login" else self._data(request)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login" and self.login_delay:
            await asyncio.sleep(self.login_delay)  # widen the window for concurrent logins
        return self.handle(request)

    def logins(self) -> int:
        return sum(r.url.path == "/login" for r in self.seen)


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def client(service: FakeService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE, transport=httpx.MockTransport(service.handle)) as c:
        yield c


@pytest.fixture
async def aclient(service: FakeService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.MockTransport(service.ahandle)
    ) as c:
        yield c


def login_response(request: httpx.Request, n: int = 1) -> httpx.Response:
    return httpx.Response(
        200,
        json={"token": f"token-{n}"},
        headers={"Set-Cookie": f"sid=sess-{n}; Path=/"},
        request=request,
    )


# -- BearerAuth -----------------------------------------------------------------------------------
def test_bearer_auth_stepped_by_hand() -> None:
    """BearerAuth sets Authorization and yields the request once."""
    flow = BearerAuth("bearer-by-hand").sync_auth_flow(httpx.Request("GET", f"{BASE}/x"))
    request = next(flow)
    assert request.headers["Authorization"] == "Bearer bearer-by-hand"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=request))


def test_bearer_auth_on_a_client() -> None:
    """Every request of a client with BearerAuth carries the header, replacing any other."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(handler), auth=BearerAuth("abc-key")) as c:
        c.get(f"{BASE}/a")
        c.post(f"{BASE}/b", headers={"Authorization": "Basic other"})
    assert [r.headers["authorization"] for r in seen] == ["Bearer abc-key"] * 2


# -- derive_request -------------------------------------------------------------------------------
def test_derive_request_inherits_headers_and_timeouts() -> None:
    """A login request keeps the template's ordinary headers and timeouts, not its credentials."""
    template = httpx.Request(
        "GET",
        f"{BASE}/data",
        headers={
            "User-Agent": "echo",
            "Accept": "application/json",
            "Authorization": "Bearer old",
            "Cookie": "sid=old",
            "Content-Type": "text/csv",
        },
        extensions={"timeout": {"connect": 1, "read": 2, "write": 3, "pool": 4}},
    )
    request = derive_request(template, "POST", f"{BASE}/login", headers={"X-Step": "1"}, json={})
    assert request.method == "POST"
    assert request.url == f"{BASE}/login"
    assert request.headers["user-agent"] == "echo"
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-step"] == "1"
    assert "authorization" not in request.headers
    assert "cookie" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.extensions["timeout"] == template.extensions["timeout"]
    assert request.extensions is not template.extensions


# -- SessionAuth stepped by hand ------------------------------------------------------------------
def test_session_auth_logs_in_before_the_first_request() -> None:
    """No credential: the flow yields the login, then the request with token and cookie."""
    auth = TokenAuth()
    original = httpx.Request("GET", f"{BASE}/data", headers={"Accept": "application/json"})
    flow = auth.sync_auth_flow(original)
    login = next(flow)
    assert (login.method, login.url.path) == ("POST", "/login")
    assert login.headers["accept"] == "application/json"
    request = flow.send(login_response(login))
    assert request is original
    assert request.headers["authorization"] == "Bearer token-1"
    assert request.headers["cookie"] == "sid=sess-1"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=request))
    assert (auth.logins, auth.generation) == (1, 1)


def test_session_auth_skips_login_when_holding_a_credential() -> None:
    """A held credential: the request goes out at once."""
    auth = TokenAuth()
    auth.token = "held"
    flow = auth.sync_auth_flow(httpx.Request("GET", f"{BASE}/data"))
    request = next(flow)
    assert request.url.path == "/data"
    assert request.headers["authorization"] == "Bearer held"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=request))
    assert auth.logins == 0


def test_session_auth_relogs_in_once_on_401() -> None:
    """A 401: invalidate, log in again, resend once."""
    auth = TokenAuth()
    auth.token = "stale"
    flow = auth.sync_auth_flow(httpx.Request("GET", f"{BASE}/data"))
    request = next(flow)
    login = flow.send(httpx.Response(401, request=request))
    assert login.url.path == "/login"
    assert auth.token is None
    resent = flow.send(login_response(login, 2))
    assert resent.url.path == "/data"
    assert resent.headers["authorization"] == "Bearer token-2"
    assert resent.headers["cookie"] == "sid=sess-2"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=resent))
    assert auth.still_rejected == []


def test_session_auth_gives_up_after_the_second_401() -> None:
    """Rejected again after the re-login: on_still_rejected, and no third login."""
    auth = TokenAuth()
    flow = auth.sync_auth_flow(httpx.Request("GET", f"{BASE}/data"))
    login = next(flow)
    request = flow.send(login_response(login, 1))
    login = flow.send(httpx.Response(401, request=request))
    request = flow.send(login_response(login, 2))
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(401, text="still no", request=request))
    assert auth.still_rejected == [401]
    assert auth.logins == 2


async def test_async_flow_stepped_by_hand() -> None:
    """The async adapter yields the same steps as the sync one."""
    auth = TokenAuth()
    flow = auth.async_auth_flow(httpx.Request("GET", f"{BASE}/data"))
    login = await anext(flow)
    assert login.url.path == "/login"
    request = await flow.asend(login_response(login))
    assert request.headers["authorization"] == "Bearer token-1"
    assert request.headers["cookie"] == "sid=sess-1"
    login = await flow.asend(httpx.Response(401, request=request))
    assert login.url.path == "/login"
    request = await flow.asend(login_response(login, 2))
    assert request.headers["authorization"] == "Bearer token-2"
    with pytest.raises(StopAsyncIteration):
        await flow.asend(httpx.Response(200, request=request))
    assert auth.generation == 2


def test_existing_cookie_header_is_merged() -> None:
    """Cookies already on the request are kept next to the login cookies."""
    auth = TokenAuth()
    flow = auth.sync_auth_flow(
        httpx.Request("GET", f"{BASE}/data", headers={"Cookie": "lang=pt; sid=old"})
    )
    login = next(flow)
    request = flow.send(login_response(login))
    assert request.headers["cookie"] == "lang=pt; sid=sess-1"


def test_cookie_values_with_spaces_or_json_are_kept() -> None:
    """Cookies set by a server with unusual values survive the merge."""
    auth = TokenAuth()
    flow = auth.sync_auth_flow(
        httpx.Request("GET", f"{BASE}/data", headers={"Cookie": 'prefs={"a":1}; lang=pt'})
    )
    login = next(flow)
    request = flow.send(login_response(login))
    assert request.headers["cookie"] == 'prefs={"a":1}; lang=pt; sid=sess-1'


def test_unusual_cookie_names_do_not_break_the_request() -> None:
    """A cookie name with '@' does not turn the request into a CookieError."""
    auth = TokenAuth()
    auth.token = "held"
    auth.cookies.set("sid", "sess-1", domain="api.test")
    flow = auth.sync_auth_flow(httpx.Request("GET", f"{BASE}/data", headers={"Cookie": "a@b=1"}))
    request = next(flow)
    assert "sid=sess-1" in request.headers["cookie"]


# -- SessionAuth driven by httpx ------------------------------------------------------------------
def test_client_logs_in_once_and_applies_login_cookies(
    client: httpx.Client, service: FakeService
) -> None:
    """The first request logs in; its cookies and token are on that very request."""
    auth = TokenAuth()
    assert client.get("/a", auth=auth).status_code == 200
    assert client.get("/b", auth=auth).status_code == 200
    assert service.logins() == 1
    first_data = service.seen[1]
    assert first_data.headers["cookie"] == "sid=sess-1"
    assert auth.cookies["sid"] == "sess-1"


def test_client_relogs_in_once_on_401(client: httpx.Client, service: FakeService) -> None:
    """An expired token: one re-login, the request succeeds."""
    auth = TokenAuth()
    client.get("/a", auth=auth)
    service.rotate()
    assert client.get("/b", auth=auth).status_code == 200
    assert service.logins() == 2
    assert auth.token == "token-2"


def test_client_does_not_loop_on_a_permanent_401(
    client: httpx.Client, service: FakeService
) -> None:
    """Always rejected: one login, one re-login, then the 401 is returned to the caller."""
    service.always_reject = True
    auth = TokenAuth()
    response = client.get("/a", auth=auth)
    assert response.status_code == 401
    assert service.logins() == 2
    assert auth.still_rejected == [401]


def test_refused_login_raises_and_is_tried_again_later(
    client: httpx.Client, service: FakeService
) -> None:
    """A refused login raises AuthenticationError; the next call logs in afresh."""
    service.refuse_login = True
    auth = TokenAuth()
    with pytest.raises(AuthenticationError, match="bad credentials"):
        client.get("/a", auth=auth)
    assert auth.generation == 0
    service.refuse_login = False
    assert client.get("/a", auth=auth).status_code == 200
    assert auth.generation == 1


def test_threads_share_one_login(service: FakeService) -> None:
    """20 threads starting at once cause one login."""
    service.login_delay = 0.02
    auth = TokenAuth()
    transport = httpx.MockTransport(service.handle)
    with httpx.Client(base_url=BASE, transport=transport) as c, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda i: c.get(f"/d/{i}", auth=auth).status_code, range(40)))
    assert statuses == [200] * 40
    assert service.logins() == 1


async def test_one_login_for_100_concurrent_coroutines(
    aclient: httpx.AsyncClient, service: FakeService
) -> None:
    """100 coroutines starting at once cause one login; all succeed."""
    service.login_delay = 0.02
    auth = TokenAuth()
    responses = await asyncio.gather(*(aclient.get(f"/d/{i}", auth=auth) for i in range(100)))
    assert [r.status_code for r in responses] == [200] * 100
    assert service.logins() == 1
    assert auth.logins == 1


async def test_one_relogin_for_100_concurrent_rejections(
    aclient: httpx.AsyncClient, service: FakeService
) -> None:
    """100 coroutines rejected at once by an expired token cause one re-login."""
    service.login_delay = 0.02
    auth = TokenAuth()
    await aclient.get("/warm", auth=auth)
    service.rotate()
    responses = await asyncio.gather(*(aclient.get(f"/d/{i}", auth=auth) for i in range(100)))
    assert [r.status_code for r in responses] == [200] * 100
    assert service.logins() == 2
    assert auth.generation == 2


async def test_async_relogin_once_on_401(aclient: httpx.AsyncClient, service: FakeService) -> None:
    """The async path re-logs in once on a 401 and does not loop on a permanent one."""
    auth = TokenAuth()
    await aclient.get("/a", auth=auth)
    service.rotate()
    assert (await aclient.get("/b", auth=auth)).status_code == 200
    service.always_reject = True
    assert (await aclient.get("/c", auth=auth)).status_code == 401
    assert service.logins() == 3
    assert auth.still_rejected == [401]


# -- connect step and sharing between clients -----------------------------------------------------
def test_sync_connect_logs_in_without_a_request(client: httpx.Client, service: FakeService) -> None:
    """sync_connect logs in now, once; the login cookies are kept by the auth."""
    auth = TokenAuth()
    auth.sync_connect(client)
    auth.sync_connect(client)
    assert [r.url.path for r in service.seen] == ["/login"]
    assert auth.token == "token-1"
    assert auth.cookies["sid"] == "sess-1"


async def test_async_connect_logs_in_once(aclient: httpx.AsyncClient, service: FakeService) -> None:
    """async_connect from many coroutines logs in once."""
    service.login_delay = 0.02
    auth = TokenAuth()
    await asyncio.gather(*(auth.async_connect(aclient) for _ in range(10)))
    assert service.logins() == 1
    assert auth.cookies["sid"] == "sess-1"


async def test_login_on_the_sync_client_serves_the_async_client(
    client: httpx.Client, aclient: httpx.AsyncClient, service: FakeService
) -> None:
    """Token and session cookie obtained on one client are used by the other, no new login."""
    auth = TokenAuth()
    assert client.get("/sync", auth=auth).status_code == 200  # noqa: ASYNC212 - MockTransport
    response = await aclient.get("/async", auth=auth)
    assert response.status_code == 200
    assert service.logins() == 1
    assert service.seen[-1].headers["cookie"] == "sid=sess-1"


def test_base_class_methods_must_be_written() -> None:
    """SessionAuth's service hooks are abstract."""
    auth = SessionAuth()
    request = httpx.Request("GET", BASE)
    for call in (auth.needs_login, auth.invalidate, lambda: auth.apply(request)):
        with pytest.raises(NotImplementedError):
            call()
    with pytest.raises(NotImplementedError):
        next(iter(auth.login_flow(request)))
    assert auth.is_rejected(httpx.Response(401))
    assert not auth.is_rejected(httpx.Response(403))
