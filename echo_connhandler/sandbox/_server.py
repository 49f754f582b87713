"""Run the three emulators on loopback: :class:`Sandbox`.

All three apps are served by uvicorn in **one** background thread: one asyncio event loop, three
``uvicorn.Server`` instances. The listening sockets are bound (port 0 = a free port chosen by the
OS, or ``port_base + i``) and put in listening state in the calling thread *before* the server
thread starts, and handed to uvicorn, so the ports are known and reserved up front (no
"find a free port, then bind it" race) and connections made right after :meth:`Sandbox.start`
simply wait in the backlog. uvicorn runs without logging configuration, access log, lifespan or
websockets; :meth:`Sandbox.stop` asks the servers to exit, waits for open responses up to a short
grace period and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from ._bazefield import bazefield_app
from ._ccee import ccee_app
from ._config import SandboxConfig, SandboxUrls
from ._faults import FaultInjector
from ._ons import AUTH_PREFIX, SAGER_PREFIX, SINAPSE_PREFIX, ons_app

__all__ = ["Sandbox"]

_APP_NAMES = ("bazefield", "ccee", "ons")
_GRACEFUL_SHUTDOWN_S = 3


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Sandbox:
    """The three emulators served on loopback ports from a background thread.

    Example::

        with Sandbox(SandboxConfig(seed=42)) as sb:
            httpx.get(f"{sb.urls.ccee}/", headers={"User-Agent": "Mozilla/5.0"})
            sb.faults("ccee").block_waf()

    Args:
        config: the settings; ``SandboxConfig()`` when omitted.
        port_base: 0 (default) lets the OS choose free ports; otherwise Bazefield, CCEE and ONS
            listen on ``port_base``, ``port_base + 1`` and ``port_base + 2``.
    """

    def __init__(self, config: SandboxConfig | None = None, *, port_base: int = 0) -> None:
        if not 0 <= port_base <= 65533:
            raise ValueError("port_base must be 0 or a port number <= 65533")
        self._config = config or SandboxConfig()
        self._port_base = port_base
        self._faults: dict[str, FaultInjector] = {
            name: FaultInjector(name, self._config.seed, base_latency_ms=self._config.latency_ms)
            for name in _APP_NAMES
        }
        self._apps: dict[str, Starlette] = {
            "bazefield": bazefield_app(self._config, self._faults["bazefield"]),
            "ccee": ccee_app(self._config, self._faults["ccee"]),
            "ons": ons_app(self._config, self._faults["ons"]),
        }
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[uvicorn.Server] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._urls: SandboxUrls | None = None

    # ------------------------------------------------------------------ accessors

    @property
    def config(self) -> SandboxConfig:
        """The settings of this sandbox."""
        return self._config

    @property
    def urls(self) -> SandboxUrls:
        """Base URLs; only while running."""
        if self._urls is None:
            raise RuntimeError("the sandbox is not running: call start() or use it as a context")
        return self._urls

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._urls is not None

    def faults(self, name: str) -> FaultInjector:
        """The :class:`FaultInjector` of ``"bazefield"``, ``"ccee"`` or ``"ons"``."""
        try:
            return self._faults[name]
        except KeyError:
            raise ValueError(f"unknown app {name!r}; expected one of {_APP_NAMES}") from None

    def reset(self) -> None:
        """Clear the faults and zero the counters of all three emulators (tokens stay valid),
        and forget the CCEE publications made by :meth:`ccee_publish` and the republications of
        the ``republish``/``shift_rows`` misbehaviours (the publication clock of
        ``SandboxConfig.ccee_publish_every`` keeps running from the start)."""
        for injector in self._faults.values():
            injector.reset()
            injector.reset_stats()
        self._apps["ccee"].state.publications.reset()
        self._apps["ccee"].state.forget_revisions()

    def ccee_publish(self, dataset: str | None = None) -> dict[str, str]:
        """Republish now the newest year's resource of ``dataset`` (of every CCEE dataset when
        None): its ``last_modified`` becomes the current UTC time, in CKAN's naive format, or
        1 ms after its current value if that is later. Returns the new value by dataset.

        Raises:
            ValueError: an unknown dataset.
        """
        published: dict[str, str] = self._apps["ccee"].state.publish(dataset)
        return published

    def app(self, name: str) -> Starlette:
        """The ASGI app of ``"bazefield"``, ``"ccee"`` or ``"ons"`` (e.g. for in-process tests)."""
        try:
            return self._apps[name]
        except KeyError:
            raise ValueError(f"unknown app {name!r}; expected one of {_APP_NAMES}") from None

    def issued_secrets(self) -> list[str]:
        """Every token, session id and cookie value the three emulators have issued so far.

        With the made-up credentials of ``DEMO_CREDENTIALS``, this is everything a scan for
        leaked secrets must look for after a run (``make test`` scans the local Airflow
        deployment's logs and database for them).
        """
        return [value for name in _APP_NAMES for value in self._apps[name].state.issued]

    def __repr__(self) -> str:
        state = f"urls={self._urls!r}" if self._urls else "stopped"
        return f"Sandbox(seed={self._config.seed}, {state})"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> Sandbox:
        """Bind the ports, start the server thread and wait until all three servers accept."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the sandbox is already running")
            sockets = self._bind()
            ports = [sock.getsockname()[1] for sock in sockets]
            self._ready.clear()
            self._error = None
            self._servers = []
            thread = threading.Thread(
                target=self._run, args=(sockets,), name="echo-connhandler-sandbox", daemon=True
            )
            self._thread = thread
            thread.start()
            if not self._ready.wait(timeout) or self._error is not None:
                error = self._error
                self._shutdown(timeout)
                if error is not None:
                    raise RuntimeError(f"the sandbox failed to start: {error!r}") from error
                raise TimeoutError(f"the sandbox did not start within {timeout} s")
            self._urls = self._make_urls(ports)
            self._apps["ccee"].state.publications.start_clock()
            return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the servers and join the thread (no-op when not running)."""
        with self._lock:
            self._shutdown(timeout)

    def __enter__(self) -> Sandbox:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _bind(self) -> list[socket.socket]:
        host = self._config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sockets: list[socket.socket] = []
        try:
            for index in range(len(_APP_NAMES)):
                # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets
                # whose proto says TCP, and without it every response waits ~40 ms (Nagle).
                sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, self._port_base + index if self._port_base else 0))
                sock.listen(128)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def _make_urls(self, ports: list[int]) -> SandboxUrls:
        host = _format_host(self._config.host)
        baze, ccee, ons = (f"http://{host}:{port}" for port in ports)
        return SandboxUrls(
            bazefield=baze,
            ccee=ccee,
            ons_auth_url=f"{ons}{AUTH_PREFIX}",
            ons_sager=f"{ons}{SAGER_PREFIX}",
            ons_sinapse=f"{ons}{SINAPSE_PREFIX}",
            ons_profile_url=f"{ons}{SINAPSE_PREFIX}/usuario/perfis",
        )

    def _run(self, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(self._serve(sockets))
        except BaseException as exc:  # includes uvicorn's SystemExit on a startup failure
            self._error = exc
        finally:
            for sock in sockets:
                sock.close()
            self._loop = None
            self._ready.set()

    async def _serve(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    self._apps[name],
                    host=self._config.host,
                    log_config=None,
                    log_level="warning",  # start/stop chatter would drown the demo's table
                    access_log=False,
                    lifespan="off",
                    ws="none",
                    server_header=False,
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
                )
            )
            for name in _APP_NAMES
        ]
        self._servers = servers
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]), name=f"sandbox-{name}")
            for name, server, sock in zip(_APP_NAMES, servers, sockets, strict=True)
        ]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                for server in servers:
                    server.should_exit = True
                break
            await asyncio.sleep(0.005)
        else:
            self._ready.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if not all(server.started for server in servers):
            raise RuntimeError("a sandbox server exited during startup")

    def _request_exit(self) -> None:
        for server in self._servers:
            server.should_exit = True

    def _shutdown(self, timeout: float) -> None:
        thread = self._thread
        if thread is None:
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(self._request_exit)
        thread.join(timeout)
        if thread.is_alive():
            for server in self._servers:
                server.force_exit = True
            thread.join(timeout)
        self._thread = None
        self._urls = None
        self._servers = []
