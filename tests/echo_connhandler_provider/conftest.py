"""Fixtures of the provider tests: the sandbox and sandbox connections (the session's private
AIRFLOW_HOME is set by tests/conftest.py, before anything imports Airflow).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

BAZE_API = "BazeField.Services/api"
#: Handler settings that keep failures quick (no long backoff waits).
QUICK = {"max_retries": 1, "max_conn_retries": 0, "retry_wait_time": 0}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The three emulators, started once for the whole session."""
    with Sandbox(SandboxConfig(seed=42)) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session's sandbox; faults and counters are reset after each test."""
    yield sandbox
    sandbox.reset()


@pytest.fixture
def refused_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _netloc(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def connection_definitions(urls: Any) -> dict[str, str]:
    """One Airflow connection per type, as ``AIRFLOW_CONN_*`` values, in JSON and URI form.

    URI forms: the ``schema`` path part carries the scheme (``.../http``), and a host that
    needs a path is URL-encoded whole (Airflow decodes it back into ``Connection.host``).
    Every extra of a URI arrives in Airflow as a string.
    """
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]
    bz_host, bz_port = _netloc(urls.bazefield)
    cc_host, cc_port = _netloc(urls.ccee)
    user_pw = f"{quote(ons['user'])}:{quote(ons['password'])}"
    baze_pw = f"{quote(baze['user'])}:{quote(baze['password'])}"

    def ons_uri(base: str, **extra: str) -> str:
        return f"ons://{user_pw}@{quote(base, safe='')}?{urlencode(extra)}"

    def as_json(**fields: Any) -> str:
        return json.dumps(fields)

    ons_common = {"auth_url": urls.ons_auth_url, **QUICK}
    return {
        "echo_http_json": as_json(
            conn_type="echo_http",
            host=f"{urls.bazefield}/{BAZE_API}",
            extra={
                "api_key": baze["api_key"],
                "headers": {"Accept": "application/json"},
                "health_endpoint": "allocationTypes",
                **QUICK,
            },
        ),
        "echo_http_uri": f"echo-http://{bz_host}:{bz_port}/http?"
        + urlencode(
            {
                "api_key": baze["api_key"],
                "headers": json.dumps({"Accept": "application/json"}),
                "health_endpoint": f"{BAZE_API}/allocationTypes",
                "verify_ssl": "true",
                "request_timeout": "30",
                **{k: str(v) for k, v in QUICK.items()},
            }
        ),
        "bazefield_json": as_json(
            conn_type="bazefield",
            host=urls.bazefield,
            login=baze["user"],
            password=baze["password"],
            extra=QUICK,
        ),
        "bazefield_uri": f"bazefield://{baze_pw}@{bz_host}:{bz_port}/http?"
        + urlencode({"request_timeout": "30", "concurrency": "2", **QUICK}),
        "bazefield_key_json": as_json(
            conn_type="bazefield", host=urls.bazefield, extra={"api_key": baze["api_key"], **QUICK}
        ),
        "bazefield_key_uri": f"bazefield://{bz_host}:{bz_port}/http?"
        + urlencode({"api_key": baze["api_key"], **QUICK}),
        "ccee_json": as_json(
            conn_type="ccee", host=urls.ccee, extra={"concurrency": 2, "verify_ssl": True, **QUICK}
        ),
        "ccee_uri": f"ccee://{cc_host}:{cc_port}/http?"
        + urlencode({"concurrency": "2", "conn_timeout": "5", **QUICK}),
        "ons_sager_json": as_json(
            conn_type="ons",
            host=urls.ons_sager,
            login=ons["user"],
            password=ons["password"],
            extra={"login_target": "SAGER", **ons_common},
        ),
        "ons_sager_uri": ons_uri(urls.ons_sager, login_target="SAGER", **ons_common),
        "ons_sinapse_json": as_json(
            conn_type="ons",
            host=urls.ons_sinapse,
            login=ons["user"],
            password=ons["password"],
            extra={"login_target": "SINAPSE", "profile_url": urls.ons_profile_url, **ons_common},
        ),
        "ons_sinapse_uri": ons_uri(
            urls.ons_sinapse,
            login_target="SINAPSE",
            profile_url=urls.ons_profile_url,
            **ons_common,
        ),
    }


@dataclass(frozen=True)
class Connections:
    """The sandbox connections defined for a test, and a way to define more."""

    ids: tuple[str, ...]
    define: Callable[[str, dict[str, Any] | str], str]


@pytest.fixture
def conns(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Connections:
    """``AIRFLOW_CONN_*`` variables for every connection type (JSON and URI) on the sandbox.

    ``conns.define(conn_id, value)`` adds one more: a dict is written as JSON, a str as a URI.
    """

    def define(conn_id: str, value: dict[str, Any] | str) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", text)
        return conn_id

    definitions = connection_definitions(sb.urls)
    for conn_id, value in definitions.items():
        define(conn_id, value)
    return Connections(tuple(definitions), define)


HookFactory = Callable[..., Any]


@pytest.fixture
def make_hook() -> Iterator[HookFactory]:
    """``make_hook(hook_cls, conn_id)``: a hook whose sync client is closed after the test."""
    made: list[Any] = []

    def factory(hook_cls: type[Any], conn_id: str, **kwargs: Any) -> Any:
        hook = hook_cls(conn_id, **kwargs)
        made.append(hook)
        return hook

    yield factory
    for hook in made:
        hook.close()


@pytest.fixture
async def make_async_hook() -> AsyncIterator[HookFactory]:
    """``make_async_hook(hook_cls, conn_id)``: a hook closed with ``aclose()`` after the test."""
    made: list[Any] = []

    def factory(hook_cls: type[Any], conn_id: str, **kwargs: Any) -> Any:
        hook = hook_cls(conn_id, **kwargs)
        made.append(hook)
        return hook

    yield factory
    for hook in made:
        await hook.aclose()


#: Credential-carrying response headers the token server sends (name -> value), all masked in
#: an XCom; and headers it sends that are kept as they are.
ISSUED_HEADERS = {
    "X-Subject-Token": "issued-subject-token-9f8e7d6c",
    "X-Auth-Token": "issued-auth-token-5a4b3c2d",
    "X-Api-Key": "issued-api-key-1q2w3e4r",
    "X-Session-Id": "issued-session-id-0o9i8u7y",
    "X-Amz-Signature": "issued-signature-6t5r4e3w",
    "Authentication-Info": 'nextnonce="issued-nonce-2s3d4f5g"',
}
HIDDEN_HEADERS = {
    "Set-Cookie": "sid=issued-cookie-7h8j9k0l; HttpOnly",
    "WWW-Authenticate": 'Bearer realm="issued-realm-3x4c5v6b"',
}
PLAIN_HEADERS = {"X-Request-Id": "req-42", "ETag": '"v1"', "Cache-Control": "no-store"}


@dataclass(frozen=True)
class TokenServer:
    """A tiny loopback HTTP server answering every GET or POST with credential headers."""

    url: str
    conn_id: str
    issued: dict[str, str] = field(default_factory=lambda: dict(ISSUED_HEADERS))
    hidden: dict[str, str] = field(default_factory=lambda: dict(HIDDEN_HEADERS))
    plain: dict[str, str] = field(default_factory=lambda: dict(PLAIN_HEADERS))

    @property
    def secrets(self) -> list[str]:
        """Every credential value it sends (none may reach an XCom)."""
        values = [*ISSUED_HEADERS.values(), *HIDDEN_HEADERS.values()]
        return [v.split('"')[1] if '"' in v else v.split(";")[0].split("=")[-1] for v in values]


@pytest.fixture
def token_server(conns: Connections) -> Iterator[TokenServer]:
    """A login endpoint as some APIs have (OpenStack Keystone's X-Subject-Token): the token
    comes back in a response header. An ``echo_http`` connection ``token_server`` points at it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b'{"token": {"expires_at": "2099-01-01T00:00:00Z"}}'
            self.send_response(201 if self.command == "POST" else 200)
            for name, value in {**ISSUED_HEADERS, **HIDDEN_HEADERS, **PLAIN_HEADERS}.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    conn_id = conns.define(
        "token_server", {"conn_type": "echo_http", "host": url, "extra": dict(QUICK)}
    )
    try:
        yield TokenServer(url, conn_id)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
