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
import json
import os
import shutil
import socket
import sys
import tempfile
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

# -- Airflow: one private AIRFLOW_HOME for the whole session ------------------------------------
# Airflow reads AIRFLOW_HOME and its configuration when it is first imported, and the first test
# folder to import it (in collection order) decides for all: so it is set here, in the root
# conftest, before anything imports Airflow. Nothing above imports it.
AIRFLOW_HOME = tempfile.mkdtemp(prefix="echo-tests-airflow-home-")
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
# Unit-test mode turns cron strings into data-interval timetables; a deployment does not (its
# default is False: "@daily" gets an empty data interval). Tests see what a deployment sees.
os.environ["AIRFLOW__SCHEDULER__CREATE_CRON_DATA_INTERVALS"] = "False"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's AIRFLOW_HOME."""
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> str:
    """The temporary AIRFLOW_HOME of this test session."""
    return AIRFLOW_HOME


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under ``--dist loadgroup`` (make unit), a test marked ``xdist_group`` must carry its group
    in its node id, the only way pytest-xdist's scheduler learns of it: else it errors here,
    before its fixtures start (a deployment, say).

    pytest-xdist with pytest 9.2 spreads a group over the workers without a word
    (pytest-dev/pytest-xdist#1386): tests/deploy would start one deployment per worker.
    """
    if not getattr(item.config.option, "loadgroup", False):  # set in xdist's workers
        return
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    if names and not item.nodeid.endswith("@" + "_".join(sorted(names))):
        pytest.fail(
            f"--dist loadgroup lost this test's xdist_group {sorted(names)}: this pytest and "
            "pytest-xdist do not group (pytest-dev/pytest-xdist#1386; see the dev extra)",
            pytrace=False,
        )


#: Airflow's secrets maskers (the Task SDK's and the core's): one per module, per process.
_AIRFLOW_MASKERS = ("airflow.sdk._shared.secrets_masker", "airflow._shared.secrets_masker")


@pytest.fixture(autouse=True)
def _airflow_masker_per_test() -> Iterator[None]:
    """Airflow's secrets masker as it was before the test, after it.

    Airflow's masker recompiles one pattern of every secret it knows for each new one (about
    0.3 s at 600 secrets on this 2-core machine), and a session of 2,000 tests in one process
    teaches it every token of every test: over two minutes of the suite went to those
    recompiles. Each test still sees every mask added during it; Airflow itself starts each task
    with a fresh masker (``reset_secrets_masker`` in its supervisor). Airflow is never imported
    here: a session that has not loaded it has no masker to restore.
    """
    saved = []
    for name in _AIRFLOW_MASKERS:
        module = sys.modules.get(name)
        masker = getattr(module, "_secrets_masker", None)
        if masker is not None and hasattr(masker(), "patterns"):
            saved.append((masker(), set(masker().patterns), getattr(masker(), "replacer", None)))
    yield
    for masker, patterns, replacer in saved:
        if masker.patterns != patterns:
            masker.patterns, masker.replacer = patterns, replacer


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


# -- the async transport under test ---------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--async-transport",
        choices=("httpx", "aiohttp"),
        default=os.environ.get("ECHO_TEST_ASYNC_TRANSPORT", "httpx"),
        help="run every handler whose properties leave async_transport at its default on this "
        "transport (env ECHO_TEST_ASYNC_TRANSPORT); e.g. --async-transport=aiohttp over the "
        "handler test modules proves the opt-in transport changes no behaviour",
    )


@pytest.fixture(autouse=True)
def _forced_async_transport(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--async-transport=aiohttp``, properties built with the default get aiohttp."""
    if request.config.getoption("--async-transport") != "aiohttp":
        return
    original = HttpConnProperties.__post_init__

    def forced(self: HttpConnProperties) -> None:
        original(self)
        if self.async_transport == "httpx":
            object.__setattr__(self, "async_transport", "aiohttp")

    monkeypatch.setattr(HttpConnProperties, "__post_init__", forced)


# -- object storage: a local S3 (moto's server) ---------------------------------------------------
S3_BUCKET = "echo-test-lake"


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the session's local S3 server (moto, loopback).

    ``url`` is ``s3://<bucket>/<prefix>`` (no trailing slash): give ``f"{url}/x.parquet"`` to a
    pull, or ``url`` as a data lake. ``env`` is what any process needs to reach it through
    fsspec/s3fs (and boto3): dummy credentials, a region and ``AWS_ENDPOINT_URL`` (honoured by
    botocore >= 1.31, hence by aiobotocore and s3fs); pass it as ``env=`` of a subprocess, or
    as ``extra_env`` of ``deploy.local_airflow.Deployment``. ``endpoint`` is the server's URL.
    """

    url: str
    env: dict[str, str]
    endpoint: str
    bucket: str = S3_BUCKET

    def child(self, prefix: str) -> S3Bucket:
        """The same bucket under another prefix (``url/prefix``)."""
        return S3Bucket(f"{self.url}/{prefix.strip('/')}", self.env, self.endpoint, self.bucket)

    def filesystem(self) -> Any:
        """An s3fs filesystem on this server, independent of the environment and of fsspec's
        instance cache (to read what a pull wrote)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.env["AWS_ACCESS_KEY_ID"],
            secret=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": self.env["AWS_DEFAULT_REGION"]},
            skip_instance_cache=True,
            use_listings_cache=False,
        )


#: Variables that would point boto at another account or make it look elsewhere for credentials.
_AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Bucket]:
    """moto's S3 server on a free loopback port, once per session, with one bucket.

    Yields the bucket's root (``s3://echo-test-lake``) and its ``env``, without changing this
    process's environment (see ``s3_bucket`` for that): a session- or module-scoped fixture
    (a whole Airflow deployment, say) can use it with ``extra_env=s3_server.env``.
    """
    pytest.importorskip("s3fs", reason="needs s3fs (the s3 extra)")
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    aws_home = tmp_path_factory.mktemp("aws")  # no ~/.aws profile, no instance metadata
    env = {
        "AWS_ACCESS_KEY_ID": "moto-test-key",
        "AWS_SECRET_ACCESS_KEY": "moto-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(aws_home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    root = S3Bucket(f"s3://{S3_BUCKET}", env, endpoint)
    try:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=S3_BUCKET)
        yield root
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh prefix of the local S3 bucket, with this process's environment pointing at it.

    The ``AWS_*`` variables of ``s3_bucket.env`` are set for the test (and other AWS settings
    that could interfere are removed), and fsspec's cached S3 filesystems are dropped before and
    after, so that ``s3://`` URLs given to a pull reach the local server. Yields an
    :class:`S3Bucket` whose ``url`` is ``s3://echo-test-lake/<unique prefix>``.
    """
    import s3fs

    for name in _AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_server.child(f"t-{uuid.uuid4().hex[:12]}")
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def assert_no_secret(sb: Any) -> Callable[[Any], None]:
    """``assert_no_secret(value)``: none of the sandbox's credentials, nor any token or session
    id it has issued so far, appears in ``value`` as JSON (a trigger's kwargs, an asset event's
    extra, lineage events). ``sb`` is the requesting suite's sandbox fixture."""
    from echo_connhandler.sandbox import DEMO_CREDENTIALS

    def check(value: Any) -> None:
        secrets = {v for service in DEMO_CREDENTIALS.values() for v in service.values()}
        secrets.update(sb.issued_secrets())
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        leaked = sorted(f"secret #{i}" for i, v in enumerate(sorted(secrets)) if v in text)
        assert not leaked, f"{leaked} in {sorted(value) if isinstance(value, dict) else '...'}"

    return check
