"""Shared fixtures: a real loopback HTTP server (starlette + uvicorn in a thread) and fast handlers.

Endpoints of the loopback app (every request is recorded; ``server.hits(key)`` counts the requests
whose path or query contains ``key``, so each test picks a unique key):

- ``/status/{code}``: answers ``code`` with a small JSON body.
- ``/flaky/{key}/{n}``: the first ``n`` calls answer ``?status=`` (default 503, with
  ``Retry-After: ?retry_after=`` when given), then 200 with the echo body.
- ``/drop/{key}/{n}``: the first ``n`` calls send the response head, then drop the connection.
- ``/sleep/{seconds}``: waits, then 200 (to trigger read timeouts).
- ``/cookie/{name}/{value}``: sets a cookie.
- ``/login/{key}``: sets ``session=sess-{key}`` and answers ``{"token": ...}``.
- ``/html``: an HTML page with HTTP 200.
- ``/redirect?to=...``: a 307 redirect.
- anything else: echoes ``method``, ``path``, ``query``, ``headers``, ``json``, ``body``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from echo_connhandler import HttpConnProperties, HttpHandler

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class ServerState:
    """What the loopback app remembers: every request line, and per-key call counters."""

    log: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, scope: Scope) -> None:
        query = scope.get("query_string", b"").decode()
        with self.lock:
            self.log.append(f"{scope['method']} {scope['path']}?{query}")

    def bump(self, key: str) -> int:
        with self.lock:
            self.calls[key] += 1
            return self.calls[key]


async def _echo_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        parsed = await request.json() if body else None
    except ValueError:
        parsed = None
    return {
        "method": request.method,
        "path": request.url.path,
        "query": dict(request.query_params.multi_items()),
        "headers": dict(request.headers),
        "json": parsed,
        "body": body.decode("utf-8", "replace"),
    }


def build_app(state: ServerState) -> Starlette:
    """The loopback app described in the module docstring."""

    async def echo(request: Request) -> Response:
        return JSONResponse(await _echo_body(request))

    async def status(request: Request) -> Response:
        code = int(request.path_params["code"])
        return JSONResponse({"status": code}, status_code=code)

    async def flaky(request: Request) -> Response:
        key, n = request.path_params["key"], int(request.path_params["n"])
        count = state.bump(f"flaky:{key}")
        if count <= n:
            headers = {}
            if "retry_after" in request.query_params:
                headers["Retry-After"] = request.query_params["retry_after"]
            code = int(request.query_params.get("status", "503"))
            return JSONResponse({"attempt": count}, status_code=code, headers=headers)
        return JSONResponse({"attempt": count, **await _echo_body(request)})

    async def sleep(request: Request) -> Response:
        await asyncio.sleep(float(request.path_params["seconds"]))
        return JSONResponse({"slept": True})

    async def cookie(request: Request) -> Response:
        response = JSONResponse({"set": True})
        response.set_cookie(request.path_params["name"], request.path_params["value"])
        return response

    async def login(request: Request) -> Response:
        token = f"sess-{request.path_params['key']}"
        response = JSONResponse({"token": token})
        response.set_cookie("session", token)
        return response

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=307)

    async def html(request: Request) -> Response:
        return HTMLResponse("<html><body><h1>Maintenance</h1></body></html>")

    class Drop:  # a class, so that starlette routes to it as a raw ASGI app
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            key, n = scope["path_params"]["key"], int(scope["path_params"]["n"])
            if state.bump(f"drop:{key}") <= n:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                raise ConnectionAbortedError("loopback server drops the connection on purpose")
            await JSONResponse(await _echo_body(Request(scope, receive)))(scope, receive, send)

    routes = [
        Route("/status/{code:int}", status, methods=ALL_METHODS),
        Route("/flaky/{key}/{n:int}", flaky, methods=ALL_METHODS),
        Route("/drop/{key}/{n:int}", Drop(), methods=ALL_METHODS),
        Route("/sleep/{seconds}", sleep, methods=ALL_METHODS),
        Route("/cookie/{name}/{value}", cookie, methods=ALL_METHODS),
        Route("/login/{key}", login, methods=ALL_METHODS),
        Route("/html", html, methods=ALL_METHODS),
        Route("/redirect", redirect, methods=ALL_METHODS),
        Route("/{path:path}", echo, methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes)

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state.record(scope)
        await app(scope, receive, send)

    return recording  # type: ignore[return-value]


class LoopbackServer:
    """A uvicorn server in a daemon thread on 127.0.0.1, port chosen by the OS."""

    def __init__(self, **config: Any) -> None:
        self.state = ServerState()
        self.tls = "ssl_certfile" in config
        uv_config = uvicorn.Config(
            build_app(self.state),
            host="127.0.0.1",
            port=0,
            http="h11",
            loop="asyncio",
            lifespan="off",
            access_log=False,
            log_level="critical",
            timeout_graceful_shutdown=1,
            **config,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def hits(self, key: str) -> int:
        """How many requests had ``key`` in their path or query."""
        with self.state.lock:
            return sum(key in line for line in self.state.log)


@pytest.fixture(scope="session")
def server() -> Iterator[LoopbackServer]:
    """The loopback HTTP server, started once per session."""
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


def _self_signed_cert(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certfile), str(keyfile)


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    """The same app over HTTPS with a self-signed certificate (untrusted by certifi)."""
    certfile, keyfile = _self_signed_cert(tmp_path_factory.mktemp("tls"))
    srv = LoopbackServer(ssl_certfile=certfile, ssl_keyfile=keyfile).start()
    yield srv
    srv.stop()


@pytest.fixture
def key() -> str:
    """A unique key, so that server-side counters of one test never see another test."""
    return uuid.uuid4().hex


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Handler options that make retries instant.
FAST = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}

HandlerFactory = Callable[..., HttpHandler]


@pytest.fixture
def make_handler(server: LoopbackServer) -> Iterator[HandlerFactory]:
    """Build handlers on the loopback server with zero retry waits; close them afterwards.

    ``make_handler(host=None, handler_cls=HttpHandler, props=None, **kwargs)``: keyword arguments
    that are ``HttpConnProperties`` fields go to the properties, the rest to the handler.
    """
    made: list[HttpHandler] = []
    prop_fields = set(HttpConnProperties.__dataclass_fields__)

    def factory(
        host: str | None = None,
        *,
        handler_cls: type[HttpHandler] = HttpHandler,
        props: HttpConnProperties | None = None,
        **kwargs: Any,
    ) -> HttpHandler:
        prop_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in prop_fields}
        if props is None:
            props = HttpConnProperties(host=host or server.url, **prop_kwargs)
        handler = handler_cls(props, **{**FAST, **kwargs})
        made.append(handler)
        return handler

    yield factory
    for handler in made:
        handler.close()


@pytest.fixture
def make_sync_handler(make_handler: HandlerFactory) -> HandlerFactory:
    """``make_handler`` with ``skip_connect=True`` by default: the sync twin of
    ``make_async_handler``, for tests that compare both paths from the same starting point."""

    def factory(*args: Any, **kwargs: Any) -> HttpHandler:
        kwargs.setdefault("skip_connect", True)
        return make_handler(*args, **kwargs)

    return factory


@pytest.fixture
async def make_async_handler(make_handler: HandlerFactory) -> AsyncIterator[HandlerFactory]:
    """``make_handler`` for async tests (``skip_connect=True`` by default); closes both clients."""
    made: list[HttpHandler] = []

    def factory(*args: Any, **kwargs: Any) -> HttpHandler:
        kwargs.setdefault("skip_connect", True)
        handler = make_handler(*args, **kwargs)
        made.append(handler)
        return handler

    yield factory
    for handler in made:
        await handler.async_close()
