"""Fault injection for the sandbox emulators, and the ``/_sandbox/*`` admin endpoints.

The failures of the real services (docs/sandbox.md, "Fault injection"; docs/services/ons.md,
"Failures seen"; docs/services/ccee.md, "The WAF") are what a handler must survive: 429 with
``Retry-After``, 502/503/504, connections dropped mid-response, HTML maintenance pages served
with 200 or 5xx, expired tokens (401) and, for CCEE, the WAF blocking a client in the middle of
a pull. A :class:`FaultInjector` (one per emulator) produces them:

* **random faults** (:meth:`FaultInjector.configure`): drawn from ``random.Random`` seeded with the
  sandbox seed and the emulator name, re-seeded at every ``configure`` call, one fixed set of draws
  per request. A sequential run of requests therefore meets the same faults every time;
* **scripted faults** (:meth:`FaultInjector.script`): the next N requests whose path contains a
  string get a given status / ``Retry-After`` / HTML page / dropped connection / delay, a body
  of the caller's choosing (invalid JSON, an error inside HTTP 200, a huge body), or the real
  answer cut short (``truncate``: its ``Content-Length`` kept, half its body sent);
* **credential faults**: :meth:`FaultInjector.expire_tokens` (ONS, Bazefield) and
  :meth:`FaultInjector.block_waf` (CCEE) invalidate everything issued so far. The emulators read
  the generation counters (:attr:`FaultInjector.token_generation`...) to decide validity.

:class:`FaultMiddleware` applies the decisions. It sits outside authentication and the WAF, and
never touches the admin endpoints (paths under ``/_sandbox/``), which are served by
:func:`admin_routes` on every emulator.

A dropped connection is made by starting the response (headers announcing a body longer than what
is sent, plus a first chunk) and then raising :class:`InjectedDrop`: uvicorn closes the socket, and
an httpx client raises ``RemoteProtocolError`` (incomplete body). A truncated answer is the
emulator's real response whose head (``Content-Length`` included) is sent whole and whose body is
cut at half, then dropped the same way. The traceback uvicorn would log for either is filtered out
of the ``uvicorn.error`` logger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypedDict

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ADMIN_PREFIX",
    "FaultDecision",
    "FaultInjector",
    "FaultMiddleware",
    "InjectedDrop",
    "SandboxStats",
    "admin_routes",
    "default_error_body",
]

#: Paths under this prefix are admin endpoints: no faults, no auth, no WAF, not counted.
ADMIN_PREFIX = "/_sandbox/"

ErrorBody = Callable[[int], object]


#: The misbehaviours each emulator can be told to show (:meth:`FaultInjector.misbehave`): a
#: server that answers 200 with well-formed but wrong data (docs/sandbox.md, "Misbehaviour").
MISBEHAVIOURS: dict[str, frozenset[str]] = {
    "ccee": frozenset(
        {
            "ignore_offset",
            "overlap_pages",
            "duplicate_id",
            "shift_rows",
            "republish",
            "drop_column",
            "two_resources_per_year",
        }
    ),
    "bazefield": frozenset(
        {"label_interval_end", "drop_object", "epoch_seconds", "duplicate_timestamps"}
    ),
    "ons": frozenset(),
}


class InjectedDrop(Exception):
    """Raised inside a started response to make uvicorn drop the connection."""


class SandboxStats(TypedDict):
    """A snapshot of an emulator's counters (``FaultInjector.stats``, ``GET /_sandbox/stats``).

    Keys:
        requests: non-admin requests received, per lower-cased path (faulted ones included).
        logins: successful logins by kind: ONS counts grant types (``password``,
            ``refresh_token``); Bazefield counts ``password`` logins.
        warmups: CCEE warm-up page GETs that issued a WAF cookie.
        waf_blocks: 403 "Acesso bloqueado" pages served by the CCEE WAF.
        faults: injected faults by kind (``error``, ``rate_limit``, ``drop``, ``html``,
            ``body``, ``truncate``, ``delay``, ``waf_block``).

    Per path, the faulted requests are :attr:`FaultInjector.faulted`.
    """

    requests: dict[str, int]
    logins: dict[str, int]
    warmups: int
    waf_blocks: int
    faults: dict[str, int]


@dataclass
class _Script:
    path_contains: str
    status: int | None
    remaining: int
    retry_after: str | None
    drop: bool
    html: bool
    delay_s: float
    body: bytes | None = None
    content_type: str = "application/json"
    truncate: bool = False


@dataclass(frozen=True)
class _RandomFaults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    drop_rate: float = 0.0
    waf_block_rate: float = 0.0

    @property
    def any_random(self) -> bool:
        return (
            self.error_rate > 0
            or self.rate_limit_rate > 0
            or self.drop_rate > 0
            or self.waf_block_rate > 0
        )


@dataclass(frozen=True)
class FaultDecision:
    """What :class:`FaultMiddleware` does with one request."""

    delay_s: float = 0.0
    status: int | None = None
    retry_after: str | None = None
    drop: bool = False
    html: bool = False
    #: A raw body answered with ``status`` and ``content_type`` (``script(body=...)``).
    body: bytes | None = None
    content_type: str = "application/json"
    #: The emulator answers, but its body is cut at half and the connection dropped.
    truncate: bool = False

    @property
    def passes_through(self) -> bool:
        return self.status is None and not self.drop and not self.truncate


@dataclass
class _Counters:
    requests: dict[str, int] = field(default_factory=dict)
    logins: dict[str, int] = field(default_factory=dict)
    warmups: int = 0
    waf_blocks: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    faulted: dict[str, int] = field(default_factory=dict)


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


class FaultInjector:
    """Faults, credential invalidation and counters of one emulator. Thread-safe.

    Args:
        name: the emulator (``"bazefield"``, ``"ccee"`` or ``"ons"``); part of the random seed.
        seed: the sandbox seed.
        base_latency_ms: latency added to every non-admin request, kept by :meth:`reset`
            (``SandboxConfig.latency_ms``).
    """

    def __init__(self, name: str, seed: int = 42, *, base_latency_ms: float = 0.0) -> None:
        self._name = name
        self._seed = seed
        self._base_latency_ms = float(base_latency_ms)
        self._lock = threading.Lock()
        self._random = _RandomFaults()
        self._rng = random.Random(self._rng_seed())
        self._scripts: list[_Script] = []
        self._token_generation = 0
        self._refresh_generation = 0
        self._waf_generation = 0
        self._counters = _Counters()
        self._misbehaviours: dict[str, dict[str, Any]] = {}

    def _rng_seed(self) -> str:
        # str seeds are hashed with SHA-512: stable across processes and PYTHONHASHSEED.
        return f"{self._name}:{self._seed}"

    def __repr__(self) -> str:
        return f"FaultInjector(name={self._name!r}, seed={self._seed})"

    @property
    def name(self) -> str:
        """The emulator this injector belongs to."""
        return self._name

    # ------------------------------------------------------------------ configuration

    def configure(
        self,
        *,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        error_statuses: Sequence[int] = (500, 502, 503),
        rate_limit_rate: float = 0.0,
        retry_after: int = 1,
        drop_rate: float = 0.0,
        waf_block_rate: float = 0.0,
    ) -> None:
        """Replace the random faults and re-seed their generator.

        Every request then gets ``latency_ms`` of extra latency and, with the given
        probabilities (checked in this order, first hit wins): a dropped connection, a 429 with
        ``Retry-After: retry_after``, an error status drawn from ``error_statuses``. Requests
        that get none of them may invalidate every WAF cookie (``waf_block_rate``, meaningful on
        CCEE only), after which the WAF blocks the request itself.
        """
        statuses = tuple(int(status) for status in error_statuses)
        if not statuses or any(not 400 <= status <= 599 for status in statuses):
            raise ValueError("error_statuses must be a non-empty list of 4xx/5xx statuses")
        if latency_ms < 0 or retry_after < 0:
            raise ValueError("latency_ms and retry_after must be >= 0")
        settings = _RandomFaults(
            latency_ms=float(latency_ms),
            error_rate=_check_rate("error_rate", error_rate),
            error_statuses=statuses,
            rate_limit_rate=_check_rate("rate_limit_rate", rate_limit_rate),
            retry_after=int(retry_after),
            drop_rate=_check_rate("drop_rate", drop_rate),
            waf_block_rate=_check_rate("waf_block_rate", waf_block_rate),
        )
        with self._lock:
            self._random = settings
            self._rng = random.Random(self._rng_seed())

    def script(
        self,
        path_contains: str,
        *,
        status: int | None = None,
        times: int = 1,
        retry_after: str | int | None = None,
        drop: bool = False,
        html: bool = False,
        delay_s: float = 0.0,
        body: str | bytes | None = None,
        content_type: str = "application/json",
        truncate: bool = False,
    ) -> None:
        """Fault the next ``times`` requests whose path contains ``path_contains``.

        The match is case-insensitive. Effects: wait ``delay_s`` seconds; then, with ``drop``,
        drop the connection mid-response; with ``truncate``, let the emulator answer but send
        only the first half of its body (the ``Content-Length`` announces all of it) and drop
        the connection; otherwise answer ``status`` (JSON error body, the emulator's HTML page
        with ``html=True``, or ``body`` as given, with ``content_type``) with a ``Retry-After``
        header when ``retry_after`` is given. Defaults: ``retry_after`` alone means 429;
        ``html`` or ``body`` alone means 200 (an HTML page or a bad body where JSON was
        expected); ``delay_s`` alone only delays. Scripts are consumed in the order they were
        added; a scripted request is not subject to the random faults.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if status is not None and not 100 <= int(status) <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        if sum((bool(drop), bool(truncate), bool(html), body is not None)) > 1:
            raise ValueError("give at most one of drop, truncate, html and body")
        if truncate and (status is not None or retry_after is not None):
            raise ValueError("truncate cuts the emulator's own answer: give no status")
        if body is not None and not isinstance(body, str | bytes):
            raise ValueError(f"body must be text or bytes, got {type(body).__name__}")
        if not isinstance(content_type, str) or not content_type or "\n" in content_type:
            raise ValueError(f"content_type must be a one-line string, got {content_type!r}")
        if status is None and retry_after is not None:
            status = 429
        if status is None and (html or body is not None):
            status = 200
        entry = _Script(
            path_contains=path_contains.lower(),
            status=None if status is None else int(status),
            remaining=int(times),
            retry_after=None if retry_after is None else str(retry_after),
            drop=bool(drop),
            html=bool(html),
            delay_s=float(delay_s),
            body=body.encode("utf-8") if isinstance(body, str) else body,
            content_type=content_type,
            truncate=bool(truncate),
        )
        with self._lock:
            self._scripts.append(entry)

    def misbehave(self, kind: str, **options: Any) -> None:
        """Make the emulator misbehave as ``kind`` until :meth:`reset` (or :meth:`behave`).

        A misbehaviour answers 200 with well-formed but wrong data (pages that overlap, a
        resource republished mid-pull, a time series missing steps): what a pull must detect
        rather than write. The kinds of each emulator are :data:`MISBEHAVIOURS`; ``options``
        are the kind's own (docs/sandbox.md, "Misbehaviour").
        """
        known = MISBEHAVIOURS.get(self._name, frozenset())
        if kind not in known:
            raise ValueError(
                f"unknown misbehaviour {kind!r} for {self._name}; known: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        with self._lock:
            self._misbehaviours[kind] = dict(options)

    def behave(self, kind: str | None = None) -> None:
        """Stop misbehaving as ``kind`` (every kind when None)."""
        with self._lock:
            if kind is None:
                self._misbehaviours.clear()
            else:
                self._misbehaviours.pop(kind, None)

    def misbehaviour(self, kind: str) -> dict[str, Any] | None:
        """The options of an active misbehaviour ``kind`` (a live dict the emulator may use to
        keep state, such as how many pages it served), None when it is not active."""
        with self._lock:
            return self._misbehaviours.get(kind)

    def reset(self) -> None:
        """Clear scripted and random faults and misbehaviours (issued tokens and cookies stay
        as they are)."""
        with self._lock:
            self._misbehaviours.clear()
            self._scripts.clear()
            self._random = _RandomFaults()
            self._rng = random.Random(self._rng_seed())

    # ------------------------------------------------------------------ credentials

    def expire_tokens(self, *, refresh_tokens: bool = False) -> None:
        """Invalidate every access token / session issued so far (ONS, Bazefield).

        ONS refresh tokens survive (as they outlive access tokens on the real service) unless
        ``refresh_tokens=True``. The static Bazefield API key is not an issued token and stays
        valid.
        """
        with self._lock:
            self._token_generation += 1
            if refresh_tokens:
                self._refresh_generation += 1

    def block_waf(self) -> None:
        """Invalidate every WAF cookie issued so far (CCEE): the next API call gets a 403."""
        with self._lock:
            self._waf_generation += 1

    @property
    def token_generation(self) -> int:
        """Tokens issued under an older generation are invalid."""
        with self._lock:
            return self._token_generation

    @property
    def refresh_generation(self) -> int:
        """Refresh tokens issued under an older generation are invalid."""
        with self._lock:
            return self._refresh_generation

    @property
    def waf_generation(self) -> int:
        """WAF cookies issued under an older generation are invalid."""
        with self._lock:
            return self._waf_generation

    # ------------------------------------------------------------------ statistics

    @property
    def stats(self) -> SandboxStats:
        """A snapshot (a copy) of the counters."""
        with self._lock:
            counters = self._counters
            return SandboxStats(
                requests=dict(counters.requests),
                logins=dict(counters.logins),
                warmups=counters.warmups,
                waf_blocks=counters.waf_blocks,
                faults=dict(counters.faults),
            )

    @property
    def faulted(self) -> dict[str, int]:
        """Requests that got an injected answer instead of the emulator's (an error or 429
        status, an HTML page, a scripted body, a dropped or truncated connection), per
        lower-cased path; a copy. Delays and WAF blocks are not counted here. Zeroed by
        :meth:`reset_stats`."""
        with self._lock:
            return dict(self._counters.faulted)

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counters = _Counters()

    def record_login(self, kind: str) -> None:
        """Count a successful login / token grant (called by the emulators)."""
        with self._lock:
            logins = self._counters.logins
            logins[kind] = logins.get(kind, 0) + 1

    def record_warmup(self) -> None:
        """Count a warm-up page that issued a WAF cookie (called by the CCEE emulator)."""
        with self._lock:
            self._counters.warmups += 1

    def record_waf_block(self) -> None:
        """Count a 403 served by the WAF (called by the CCEE emulator)."""
        with self._lock:
            self._counters.waf_blocks += 1

    def _count_fault(self, kind: str) -> None:
        faults = self._counters.faults
        faults[kind] = faults.get(kind, 0) + 1

    # ------------------------------------------------------------------ decisions

    def decide(self, path: str) -> FaultDecision:
        """Count a request to ``path`` and decide which fault (if any) it gets."""
        key = path.lower()
        with self._lock:
            requests = self._counters.requests
            requests[key] = requests.get(key, 0) + 1
            decision = self._decide(key)
            if not decision.passes_through:
                faulted = self._counters.faulted
                faulted[key] = faulted.get(key, 0) + 1
            return decision

    def _decide(self, key: str) -> FaultDecision:
        """The decision for one request (under the lock)."""
        settings = self._random
        delay_s = (self._base_latency_ms + settings.latency_ms) / 1000.0
        for entry in self._scripts:
            if entry.path_contains in key:
                return self._apply_script(entry, delay_s)
        if not settings.any_random:
            return FaultDecision(delay_s=delay_s)
        # Always the same number of draws per request, whatever the outcome.
        draws = [self._rng.random() for _ in range(4)]
        status_index = self._rng.randrange(len(settings.error_statuses))
        if draws[0] < settings.drop_rate:
            self._count_fault("drop")
            return FaultDecision(delay_s=delay_s, drop=True)
        if draws[1] < settings.rate_limit_rate:
            self._count_fault("rate_limit")
            return FaultDecision(delay_s=delay_s, status=429, retry_after=str(settings.retry_after))
        if draws[2] < settings.error_rate:
            self._count_fault("error")
            return FaultDecision(delay_s=delay_s, status=settings.error_statuses[status_index])
        if draws[3] < settings.waf_block_rate:
            self._count_fault("waf_block")
            self._waf_generation += 1
        return FaultDecision(delay_s=delay_s)

    def _apply_script(self, entry: _Script, delay_s: float) -> FaultDecision:
        entry.remaining -= 1
        if entry.remaining <= 0:
            self._scripts.remove(entry)
        if entry.delay_s:
            self._count_fault("delay")
        if entry.drop:
            self._count_fault("drop")
        elif entry.truncate:
            self._count_fault("truncate")
        elif entry.html:
            self._count_fault("html")
        elif entry.body is not None:
            self._count_fault("body")
        elif entry.status == 429:
            self._count_fault("rate_limit")
        elif entry.status is not None:
            self._count_fault("error")
        return FaultDecision(
            delay_s=delay_s + entry.delay_s,
            status=entry.status,
            retry_after=entry.retry_after,
            drop=entry.drop,
            html=entry.html,
            body=entry.body,
            content_type=entry.content_type,
            truncate=entry.truncate,
        )


# ---------------------------------------------------------------------- middleware


class _DropLogFilter(logging.Filter):
    """Hide the traceback uvicorn logs for an :class:`InjectedDrop` (it is on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (exc_info and isinstance(exc_info[1], InjectedDrop))


def _install_drop_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _DropLogFilter) for existing in logger.filters):
        logger.addFilter(_DropLogFilter())


def default_error_body(status: int) -> object:
    """A generic JSON error body for an injected status."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"error": phrase, "status": status, "sandbox_fault": True}


class FaultMiddleware:
    """ASGI middleware applying :meth:`FaultInjector.decide` to every non-admin HTTP request.

    Args:
        app: the wrapped application.
        faults: the emulator's injector.
        html_page: body of HTML faults (``script(..., html=True)``): a maintenance page, or the
            WAF block page for CCEE.
        error_body: builds the JSON body of an injected error status, in the service's style.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        faults: FaultInjector,
        html_page: str,
        error_body: ErrorBody = default_error_body,
    ) -> None:
        self.app = app
        self.faults = faults
        self.html_page = html_page
        self.error_body = error_body
        _install_drop_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        decision = self.faults.decide(path)
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        if decision.passes_through:
            await self.app(scope, receive, send)
            return
        if decision.drop:
            await self._drop(send)
            return
        if decision.truncate:
            await self.app(scope, receive, _Truncating(send))
            return
        assert decision.status is not None
        headers = {} if decision.retry_after is None else {"Retry-After": decision.retry_after}
        response: Response
        if decision.html:
            response = HTMLResponse(self.html_page, status_code=decision.status, headers=headers)
        elif decision.body is not None:
            response = Response(
                decision.body,
                status_code=decision.status,
                headers=headers,
                media_type=decision.content_type,
            )
        else:
            body = self.error_body(decision.status)
            response = JSONResponse(body, status_code=decision.status, headers=headers)
        await response(scope, receive, send)

    @staticmethod
    async def _drop(send: Send) -> None:
        chunk = b'{"sandbox": "this response is cut short on purpose", "data": ['
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"65536"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        raise InjectedDrop("sandbox: connection dropped mid-response")


class _Truncating:
    """An ASGI ``send`` that passes the response head whole, keeps the body back, then sends
    only its first half and drops the connection (:class:`InjectedDrop`)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        self._body += message.get("body", b"")
        if message.get("more_body", False):
            return
        half = bytes(self._body[: len(self._body) // 2])
        await self._send({"type": "http.response.body", "body": half, "more_body": True})
        raise InjectedDrop("sandbox: response truncated on purpose")


# ---------------------------------------------------------------------- admin endpoints

_CONFIGURE_KEYS = frozenset(
    {
        "latency_ms",
        "error_rate",
        "error_statuses",
        "rate_limit_rate",
        "retry_after",
        "drop_rate",
        "waf_block_rate",
    }
)
_SCRIPT_KEYS = frozenset(
    {
        "path_contains",
        "status",
        "times",
        "retry_after",
        "drop",
        "html",
        "delay_s",
        "body",
        "content_type",
        "truncate",
    }
)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=400)


def admin_routes(faults: FaultInjector) -> list[Route]:
    """The ``/_sandbox/*`` admin endpoints controlling ``faults`` over HTTP.

    ``POST /_sandbox/faults`` (JSON = :meth:`FaultInjector.configure` kwargs),
    ``POST /_sandbox/script`` (JSON = :meth:`FaultInjector.script` kwargs),
    ``POST /_sandbox/expire-tokens`` (optional JSON ``{"refresh_tokens": true}``),
    ``POST /_sandbox/block-waf``, ``POST /_sandbox/misbehave`` (JSON ``{"kind": ..., options}``,
    :meth:`FaultInjector.misbehave`), ``POST /_sandbox/reset``, ``POST /_sandbox/reset-stats``,
    ``GET /_sandbox/stats``. Successful calls answer ``{"ok": true}``; bad input 400.
    """

    async def configure(request: Request) -> Response:
        try:
            body = await _json_object(request)
            unknown = set(body) - _CONFIGURE_KEYS
            if unknown:
                return _bad_request(f"unknown keys: {sorted(unknown)}")
            faults.configure(**body)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        return JSONResponse({"ok": True})

    async def script(request: Request) -> Response:
        try:
            body = await _json_object(request)
            unknown = set(body) - _SCRIPT_KEYS
            if unknown:
                return _bad_request(f"unknown keys: {sorted(unknown)}")
            path_contains = body.pop("path_contains", None)
            if not isinstance(path_contains, str):
                return _bad_request("path_contains (string) is required")
            faults.script(path_contains, **body)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        return JSONResponse({"ok": True})

    async def expire_tokens(request: Request) -> Response:
        try:
            body = await _json_object(request)
        except ValueError as exc:
            return _bad_request(str(exc))
        faults.expire_tokens(refresh_tokens=bool(body.get("refresh_tokens", False)))
        return JSONResponse({"ok": True})

    async def block_waf(request: Request) -> Response:
        faults.block_waf()
        return JSONResponse({"ok": True})

    async def misbehave(request: Request) -> Response:
        try:
            body = await _json_object(request)
            kind = body.pop("kind", None)
            if not isinstance(kind, str):
                return _bad_request("kind (string) is required")
            faults.misbehave(kind, **body)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> Response:
        faults.reset()
        return JSONResponse({"ok": True})

    async def reset_stats(request: Request) -> Response:
        faults.reset_stats()
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> Response:
        return JSONResponse(faults.stats)

    prefix = ADMIN_PREFIX.rstrip("/")
    return [
        Route(f"{prefix}/faults", configure, methods=["POST"]),
        Route(f"{prefix}/script", script, methods=["POST"]),
        Route(f"{prefix}/expire-tokens", expire_tokens, methods=["POST"]),
        Route(f"{prefix}/block-waf", block_waf, methods=["POST"]),
        Route(f"{prefix}/misbehave", misbehave, methods=["POST"]),
        Route(f"{prefix}/reset", reset, methods=["POST"]),
        Route(f"{prefix}/reset-stats", reset_stats, methods=["POST"]),
        Route(f"{prefix}/stats", stats, methods=["GET"]),
    ]
