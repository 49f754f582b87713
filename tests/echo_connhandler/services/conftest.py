"""Fixtures of the service handler tests: the sandbox, fast handlers, request recording.

``sandbox`` is one running :class:`Sandbox` per test module; ``sb`` is the same sandbox with its
faults and counters reset before and after each test. ``make_sb(**config)`` gives a sandbox with
other :class:`SandboxConfig` settings (started once per module and per settings, reset like
``sb``). Helpers are fixtures, not imports: this directory has no package layout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from echo_connhandler import HttpHandler
from echo_connhandler.sandbox import Sandbox, SandboxConfig

#: Handler options that make retries instant.
FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}

SandboxFactory = Callable[..., Sandbox]
Call = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="module")
def _sandboxes() -> Iterator[SandboxFactory]:
    """Running sandboxes of this module, one per distinct configuration."""
    running: dict[SandboxConfig, Sandbox] = {}

    def get(**config: Any) -> Sandbox:
        key = SandboxConfig(seed=42, **config)
        if key not in running:
            running[key] = Sandbox(key).start()
        return running[key]

    yield get
    for sandbox in running.values():
        sandbox.stop()


@pytest.fixture(scope="module")
def sandbox(_sandboxes: SandboxFactory) -> Sandbox:
    """The module's sandbox with the default configuration."""
    return _sandboxes()


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox, faults and counters reset before and after the test."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


@pytest.fixture
def make_sb(_sandboxes: SandboxFactory) -> Iterator[SandboxFactory]:
    """``make_sb(**config)``: a sandbox with these SandboxConfig settings, reset like ``sb``."""
    used: list[Sandbox] = []

    def make(**config: Any) -> Sandbox:
        sandbox = _sandboxes(**config)
        sandbox.reset()
        used.append(sandbox)
        return sandbox

    yield make
    for sandbox in used:
        sandbox.reset()


@pytest.fixture
def fast() -> dict[str, Any]:
    """Handler keyword arguments that make retries instant."""
    return dict(FAST)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test on the sync path, then on the async path."""
    return str(request.param)


@pytest.fixture
async def handlers() -> AsyncIterator[Callable[[HttpHandler], HttpHandler]]:
    """``track(handler)``: close the handler's sync and async clients after the test."""
    made: list[HttpHandler] = []

    def track(handler: HttpHandler) -> HttpHandler:
        made.append(handler)
        return handler

    yield track
    for handler in made:
        await handler.async_close()
        handler.close()


@pytest.fixture
def connect(
    mode: str, fast: dict[str, Any], handlers: Callable[[HttpHandler], HttpHandler]
) -> Callable[..., Awaitable[Any]]:
    """``await connect(HandlerClass, props, **kwargs)``: a handler connected on ``mode``'s path.

    Sync: the constructor connects (login, warm-up). Async: ``skip_connect=True`` then
    ``async_reconnect()``, as the provider's ``aget_conn`` does. ``connect=False`` skips both.
    """

    async def make(
        cls: type[HttpHandler], props: Any, *, connect: bool = True, **kwargs: Any
    ) -> Any:
        options = {**fast, **kwargs}
        if mode == "sync" and connect:
            return handlers(cls(props, **options))
        handler = handlers(cls(props, skip_connect=True, **options))
        if connect:
            await handler.async_reconnect()
        return handler

    return make


@pytest.fixture
def call(mode: str) -> Call:
    """``await call(handler, "get", ...)``: ``handler.get(...)`` or ``handler.async_get(...)``."""

    async def run(handler: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if mode == "sync":
            return getattr(handler, name)(*args, **kwargs)
        return await getattr(handler, f"async_{name}")(*args, **kwargs)

    return run


@pytest.fixture
def recording() -> Callable[[type[HttpHandler]], type[HttpHandler]]:
    """``recording(HandlerClass)``: a subclass whose ``sent`` lists every request sent.

    Logins, warm-ups and refreshes sent from inside the auth flows are included (httpx runs the
    client's request hooks for every request it sends).
    """

    def make(cls: type[HttpHandler]) -> type[HttpHandler]:
        class Recording(cls):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.sent: list[httpx.Request] = []
                super().__init__(*args, **kwargs)

            def _new_sync_client(self, cookies: httpx.Cookies | None = None) -> httpx.Client:
                client = super()._new_sync_client(cookies)
                client.event_hooks["request"].append(self.sent.append)
                return client

            def _new_async_client(self, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
                client = super()._new_async_client(cookies)

                async def hook(request: httpx.Request) -> None:
                    self.sent.append(request)

                client.event_hooks["request"].append(hook)
                return client

        Recording.__name__ = f"Recording{cls.__name__}"
        return Recording

    return make
