"""Fixtures of the service handler tests: the sandbox, fast handlers, request recording.

``sandbox`` is one running :class:`Sandbox` per test module; ``sb`` is the same sandbox with its
faults and counters reset before and after each test. ``make_sb(**config)`` gives a sandbox with
other :class:`SandboxConfig` settings (started once per module and per settings, reset like
``sb``). Helpers are fixtures, not imports: this directory has no package layout.

Each scenario runs on both paths as a pair of tests: a plain ``def test_..._sync`` that uses
``sync_connect`` / ``sync_handlers`` and the sync API (no event loop running, as in production),
and an ``async def test_..._async`` that uses ``async_connect`` / ``async_handlers`` and the
``async_*`` API. Assertions that do no I/O are shared as plain helper functions in the module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from echo_connhandler import HttpHandler
from echo_connhandler.sandbox import Sandbox, SandboxConfig

#: Handler options that make retries instant.
FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}

SandboxFactory = Callable[..., Sandbox]
Track = Callable[[HttpHandler], HttpHandler]


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


def _assert_no_running_loop() -> None:
    """Sync tests run the sync API as production does: outside any event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise AssertionError("sync_connect is for plain (def) tests; use async_connect")


def _tracker(made: list[HttpHandler]) -> Track:
    def track(handler: HttpHandler) -> HttpHandler:
        made.append(handler)
        return handler

    return track


@pytest.fixture
def sync_handlers() -> Iterator[Track]:
    """``track(handler)``: close the handler's sync client after the (sync) test."""
    made: list[HttpHandler] = []
    yield _tracker(made)
    for handler in made:
        handler.close()


@pytest.fixture
async def async_handlers() -> AsyncIterator[Track]:
    """``track(handler)``: close the handler's async and sync clients after the (async) test."""
    made: list[HttpHandler] = []
    yield _tracker(made)
    for handler in made:
        await handler.async_close()
        handler.close()


@pytest.fixture
def sync_connect(fast: dict[str, Any], sync_handlers: Track) -> Callable[..., Any]:
    """``sync_connect(HandlerClass, props, **kwargs)``: a handler connected on the sync path.

    The constructor connects (login, warm-up); ``connect=False`` passes ``skip_connect=True``.
    """

    def make(cls: type[HttpHandler], props: Any, *, connect: bool = True, **kwargs: Any) -> Any:
        _assert_no_running_loop()
        return sync_handlers(cls(props, skip_connect=not connect, **{**fast, **kwargs}))

    return make


@pytest.fixture
def async_connect(fast: dict[str, Any], async_handlers: Track) -> Callable[..., Awaitable[Any]]:
    """``await async_connect(HandlerClass, props, **kwargs)``: connected on the async path.

    ``skip_connect=True`` then ``async_reconnect()``, as the provider's ``aget_conn`` does;
    ``connect=False`` skips the reconnect.
    """

    async def make(
        cls: type[HttpHandler], props: Any, *, connect: bool = True, **kwargs: Any
    ) -> Any:
        handler = async_handlers(cls(props, skip_connect=True, **{**fast, **kwargs}))
        if connect:
            await handler.async_reconnect()
        return handler

    return make


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
