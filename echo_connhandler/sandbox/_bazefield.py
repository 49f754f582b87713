"""Emulator of the Bazefield REST API (ServiceStack), see docs/services/bazefield.md.

What is emulated, and the quirks reproduced on purpose:

* everything lives under ``/BazeField.Services/api/`` and paths are **case-insensitive** (the
  emulator lower-cases the path before routing);
* ``POST auth/baze?format=json`` with ``UserName`` / ``Password`` / ``RememberMe`` (JSON, form or
  query) logs in: the reply carries ``sessionId`` (to send as ``x-ss-id``) and, unless
  ``SandboxConfig.baze_issue_bearer_token`` is False, a ``bearerToken``; cookies ``ss-id``
  (= ``sessionId``), ``ss-pid`` and, with ``RememberMe``, ``ss-opt=perm`` are set. Bad credentials:
  401 with ``responseStatus``. ``auth/logout`` ends the session;
* every other endpoint needs ``Authorization: Bearer <api key or bearerToken>``, or ``x-ss-id:
  <sessionId>``, or the ``ss-id`` cookie; otherwise (or after ``expire_tokens()``) 401 with
  ``{"responseStatus": {"errorCode": "Unauthorized", "message": ...}}``. The API key of
  ``DEMO_CREDENTIALS`` never expires;
* a request whose ``Accept`` lacks ``application/json`` (and without ``?format=json``) gets the
  **HTML preview page** with status 200 instead of JSON, as ServiceStack does for browsers
  (401/404 replies stay JSON);
* errors arrive **with HTTP 200**: ``{"responseStatus": {"errorCode": "ArgumentException", ...}}``
  for bad or missing arguments, ``{"replyInfo": {"error": "Object <id> not found"}}`` for unknown
  objects;
* ``objects/timeseries/aggregated`` (GET query string or POST JSON body, same parameter names,
  matched case-insensitively) returns ``objects.<id>.points.<point>[] -> {aggregate, timeSeries:
  [{t, t_local, q, v}]}``. About 1 value in 500 is a non-numeric string (``"NaN"``, ``"Bad"``,
  ``"No Data"``, with ``q = 1``), as on the real service. There is no paging: a call producing more
  than :data:`MAX_VALUES_PER_CALL` values is refused with a ``responseStatus`` error, so clients
  must split their windows (docs/services/bazefield.md, "Time series": ~30 days and ~30 points
  per call);
* misbehaviours (:meth:`FaultInjector.misbehave`, docs/sandbox.md, "Misbehaviour"): answers of
  200 with wrong time series, for the pull's checks to refuse: ``label_interval_end`` (every
  value labelled by its interval's end, ``t`` one step later), ``drop_object`` (options
  ``object``, an id or key, default the request's first, and ``at``, an instant: that object
  left out of every answer of one window, the first one asking for it whose range holds
  ``at``), ``epoch_seconds`` (``t`` in seconds) and ``duplicate_timestamps`` (every value
  twice).

The fleet (3 made-up wind farms with 10 to 40 turbines and a met mast each) and every value are
deterministic functions of the seed. ``From`` / ``To`` accept epoch milliseconds, ISO-8601 (naive
values are read in ``TimeZone``) and relative expressions: ``*`` (now), an optional truncation
unit (``*d`` = start of today, ``*h``, ``*m``, ``*w`` = start of the week) and offsets with units
``s m h d w`` (``*-7d``, ``*d-1d``). ``Interval`` is ``<n>s|m|h|d`` (>= 1 minute, default
``10m``) or ``HH:MM:SS``. ``TimeZone`` is an IANA name or one of a few Windows ids (default UTC).
Timestamps lie on the interval grid (UTC for sub-day intervals, local midnights for days),
``From`` inclusive, ``To`` exclusive.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._config import DEMO_CREDENTIALS, SandboxConfig
from ._data import html_page, jwt_like, random_token, stable_int, unit
from ._faults import FaultInjector, FaultMiddleware, admin_routes

__all__ = ["API_PREFIX", "MAX_VALUES_PER_CALL", "bazefield_app"]

#: Canonical API prefix; matched case-insensitively.
API_PREFIX = "/BazeField.Services/api"
_PREFIX = API_PREFIX.lower()

#: More values than this in one ``objects/timeseries/aggregated`` call -> responseStatus error.
MAX_VALUES_PER_CALL = 100_000

_BAD_VALUE_ODDS = 1 / 500
_BAD_VALUES = ("NaN", "Bad", "No Data")

_ALLOCATION_TYPES: tuple[tuple[int, str], ...] = (
    (1, "Disponível"),
    (2, "Manutenção Corretiva"),
    (3, "Manutenção Preventiva"),
    (4, "Parada por Rede Externa"),
    (5, "Restrição do ONS"),
    (6, "Condições Climáticas"),
)

_SITES: tuple[tuple[str, str], ...] = (
    ("AUR", "Parque Eólico Aurora (sandbox)"),
    ("BRI", "Parque Eólico Brisa Serena (sandbox)"),
    ("CAJ", "Parque Eólico Cajueiro (sandbox)"),
)

_TYPE_NAMES = {1: "Site", 2: "Turbine", 3: "MetMast"}

_SCHEMAS: dict[int, tuple[tuple[str, str, str], ...]] = {
    1: (
        ("ActivePower", "MW", "Site active power"),
        ("WindSpeed", "m/s", "Average wind speed"),
        ("Availability", "%", "Time-based availability"),
    ),
    2: (
        ("ActivePower", "kW", "Turbine active power"),
        ("WindSpeed", "m/s", "Nacelle anemometer wind speed"),
        ("NacelleDirection", "deg", "Nacelle direction"),
        ("RotorSpeed", "rpm", "Rotor speed"),
        ("AmbientTemperature", "degC", "Ambient temperature"),
        ("Availability", "%", "Time-based availability"),
    ),
    3: (
        ("WindSpeed", "m/s", "Met mast wind speed"),
        ("WindDirection", "deg", "Met mast wind direction"),
        ("AmbientTemperature", "degC", "Ambient temperature"),
    ),
}

_WINDOWS_ZONES = {
    "e. south america standard time": "America/Sao_Paulo",
    "sa eastern standard time": "America/Fortaleza",
    "utc": "UTC",
    "gmt standard time": "Europe/London",
}
# Used when the system has no tz database: Brazil has had no DST since 2019.
_FIXED_ZONES = {
    "America/Sao_Paulo": timezone(timedelta(hours=-3)),
    "America/Fortaleza": timezone(timedelta(hours=-3)),
    "UTC": UTC,
}


_Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class _Wrong:
    """The misbehaviours one time-series answer shows (docs/sandbox.md, "Misbehaviour")."""

    label_interval_end: bool = False
    epoch_seconds: bool = False
    duplicate_timestamps: bool = False
    #: The object left out of this answer (``drop_object``).
    drop_object: str | None = None


class BazeArgumentError(ValueError):
    """A bad request argument, answered as HTTP 200 with a ``responseStatus`` error."""


# ---------------------------------------------------------------------- fleet


@dataclass(frozen=True)
class BazeObject:
    """One object of the emulated fleet."""

    object_id: str
    object_key: str
    name: str
    type: int
    parent_id: str | None
    turbine_count: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "objectId": self.object_id,
            "objectKey": self.object_key,
            "name": self.name,
            "type": self.type,
            "typeName": _TYPE_NAMES[self.type],
            "parentObjectId": self.parent_id,
        }


def _build_fleet(seed: int) -> dict[str, BazeObject]:
    fleet: dict[str, BazeObject] = {}
    for index, (key, name) in enumerate(_SITES, start=1):
        site_id = str(index * 1000)
        count = stable_int(10, 40, seed, "baze-turbines", key)
        fleet[site_id] = BazeObject(site_id, key, name, 1, None, count)
        for number in range(1, count + 1):
            object_id = str(index * 1000 + number)
            fleet[object_id] = BazeObject(
                object_id, f"{key}-WTG{number:02d}", f"{key} WTG {number:02d}", 2, site_id
            )
        mast_id = str(index * 1000 + 900)
        fleet[mast_id] = BazeObject(mast_id, f"{key}-MET01", f"{key} Met Mast 01", 3, site_id)
    return fleet


def _build_allocations(seed: int, fleet: Mapping[str, BazeObject]) -> list[dict[str, Any]]:
    turbines = [obj for obj in fleet.values() if obj.type == 2]
    allocations: list[dict[str, Any]] = []
    for number in range(1, 7):
        turbine = turbines[stable_int(0, len(turbines) - 1, seed, "baze-alloc", number)]
        type_id, type_name = _ALLOCATION_TYPES[
            stable_int(1, len(_ALLOCATION_TYPES) - 1, seed, "baze-alloc-type", number)
        ]
        start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(
            hours=stable_int(0, 24 * 300, seed, "baze-alloc-start", number)
        )
        allocations.append(
            {
                "allocationId": 5000 + number,
                "objectId": turbine.object_id,
                "objectKey": turbine.object_key,
                "allocationTypeId": type_id,
                "allocationTypeName": type_name,
                "startTime": start.isoformat().replace("+00:00", "Z"),
                "endTime": None,
                "comment": f"Sandbox allocation {number}",
            }
        )
    return allocations


# ---------------------------------------------------------------------- time parsing

_RELATIVE = re.compile(r"^\*(?P<trunc>[smhdw]?)(?P<offsets>(?:[+-]\d+[smhdw])*)$")
_OFFSET = re.compile(r"([+-])(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_INTERVAL = re.compile(r"^(\d+)\s*(s|m|min|h|d)$", re.IGNORECASE)
_TIMESPAN = re.compile(r"^(\d+):(\d{2}):(\d{2})$")


def resolve_zone(name: str | None) -> tzinfo:
    """``TimeZone`` parameter -> tzinfo (IANA names and a few Windows ids)."""
    if not name:
        return UTC
    iana = _WINDOWS_ZONES.get(name.strip().lower(), name.strip())
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        fixed = _FIXED_ZONES.get(iana)
        if fixed is not None:
            return fixed
        raise BazeArgumentError(f"Unknown TimeZone '{name}'") from exc


def parse_instant(value: object, zone: tzinfo, now: datetime) -> datetime:
    """``From`` / ``To``: epoch ms, ISO-8601 or relative (``*``, ``*-7d``, ``*d-1d``)."""
    if isinstance(value, bool):
        raise BazeArgumentError(f"Invalid date '{value}'")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000.0, tz=UTC)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return datetime.fromtimestamp(int(text) / 1000.0, tz=UTC)
    match = _RELATIVE.match(text)
    if match:
        moment = now.astimezone(zone)
        trunc = match.group("trunc")
        if trunc == "m":
            moment = moment.replace(second=0, microsecond=0)
        elif trunc == "h":
            moment = moment.replace(minute=0, second=0, microsecond=0)
        elif trunc in ("d", "w"):
            midnight = datetime.combine(moment.date(), datetime.min.time(), tzinfo=zone)
            if trunc == "w":
                midnight -= timedelta(days=moment.weekday())
            moment = midnight
        elif trunc == "s":
            moment = moment.replace(microsecond=0)
        for sign, amount, unit_name in _OFFSET.findall(match.group("offsets")):
            seconds = int(amount) * _UNIT_SECONDS[unit_name]
            moment += timedelta(seconds=seconds if sign == "+" else -seconds)
        return moment.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BazeArgumentError(f"Invalid date '{text}'") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def parse_interval(value: object) -> int:
    """``Interval`` -> seconds (``10m``, ``1h``, ``1d``, ``00:10:00``); at least one minute."""
    text = str(value).strip()
    match = _INTERVAL.match(text)
    if match:
        amount, unit_name = int(match.group(1)), match.group(2).lower()
        seconds = amount * _UNIT_SECONDS["m" if unit_name == "min" else unit_name]
    else:
        span = _TIMESPAN.match(text)
        if not span:
            raise BazeArgumentError(f"Invalid Interval '{text}'")
        hours, minutes, secs = (int(part) for part in span.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds < 60:
        raise BazeArgumentError(f"Interval '{text}' is shorter than one minute")
    return seconds


def timestamps(start: datetime, end: datetime, step_s: int, zone: tzinfo) -> list[datetime]:
    """Grid instants in ``[start, end)``: UTC grid below a day, local midnights for days."""
    if end <= start:
        return []
    result: list[datetime] = []
    if step_s % 86400 == 0:
        days = step_s // 86400
        local_day = start.astimezone(zone).date()
        moment = datetime.combine(local_day, datetime.min.time(), tzinfo=zone)
        if moment.astimezone(UTC) < start:
            local_day += timedelta(days=days)
        while True:
            moment = datetime.combine(local_day, datetime.min.time(), tzinfo=zone)
            instant = moment.astimezone(UTC)
            if instant >= end:
                return result
            result.append(instant)
            local_day += timedelta(days=days)
    first = math.ceil(start.timestamp() / step_s) * step_s
    last = end.timestamp()
    epoch = first
    while epoch < last:
        result.append(datetime.fromtimestamp(epoch, tz=UTC))
        epoch += step_s
    return result


# ---------------------------------------------------------------------- values


def _wind(seed: int, object_id: str, epoch_s: int) -> float:
    day_phase = (epoch_s % 86400) / 86400.0
    season = math.sin(2 * math.pi * (epoch_s / 86400.0 % 365.25) / 365.25)
    noise = unit(seed, "baze-wind", object_id, epoch_s) - 0.5
    return max(
        0.0, 7.5 + 2.5 * math.sin(2 * math.pi * (day_phase - 0.25)) + 1.5 * season + 4 * noise
    )


def point_value(seed: int, obj: BazeObject, point: str, epoch_s: int) -> float:
    """The (average) value of ``point`` of ``obj`` at ``epoch_s``: deterministic, plausible."""
    name = point.lower()
    wind = _wind(seed, obj.object_id, epoch_s)
    if "power" in name:
        factor = 0.0 if wind < 3 else min(1.0, ((wind - 3) / 9) ** 3)
        if obj.type == 1:
            return obj.turbine_count * 3.0 * factor
        return 3000.0 * factor
    if "speed" in name and "rotor" in name:
        return 0.0 if wind < 3 else min(14.0, 4 + wind)
    if "speed" in name:
        return wind
    if "temp" in name:
        day_phase = (epoch_s % 86400) / 86400.0
        noise = unit(seed, "baze-temp", obj.object_id, epoch_s) - 0.5
        return 24 + 5 * math.sin(2 * math.pi * (day_phase - 0.375)) + 2 * noise
    if "direction" in name:
        return 360.0 * unit(seed, "baze-dir", obj.object_id, epoch_s)
    if "availab" in name:
        return 0.0 if unit(seed, "baze-avail", obj.object_id, epoch_s) < 0.03 else 100.0
    return 100.0 * unit(seed, "baze-point", obj.object_id, point, epoch_s)


def aggregate_value(
    seed: int, obj: BazeObject, point: str, aggregate: str, epoch_s: int, step_s: int
) -> float:
    """Apply an aggregate name (AVG, MIN, MAX, SUM, COUNT, anything else = the average)."""
    base = point_value(seed, obj, point, epoch_s)
    agg = aggregate.lower()
    spread = unit(seed, "baze-spread", obj.object_id, point, epoch_s)
    if agg.startswith("min"):
        return base * (0.8 + 0.1 * spread)
    if agg.startswith("max"):
        return base * (1.1 + 0.1 * spread)
    if agg in ("sum", "total"):
        return base * step_s / 600.0
    if agg == "count":
        return float(step_s // 600 or 1)
    return base


# ---------------------------------------------------------------------- the app


class _LowercaseApiPath:
    """Lower-case the path of API requests so routing is case-insensitive."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            lowered = path.lower()
            if lowered != path and lowered.startswith(_PREFIX):
                scope = dict(scope)
                scope["path"] = lowered
        await self.app(scope, receive, send)


def _error_body(status: int) -> object:
    code = {
        429: "TooManyRequests",
        500: "InternalServerError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
    }.get(status, "Error")
    return {"responseStatus": {"errorCode": code, "message": f"Sandbox injected HTTP {status}"}}


def _response_status(code: str, message: str) -> dict[str, Any]:
    return {"responseStatus": {"errorCode": code, "message": message, "errors": []}}


def _maintenance_page() -> str:
    return html_page(
        "Bazefield - Manutenção",
        "O sistema está em manutenção. Tente novamente mais tarde.",
    )


class _BazeState:
    def __init__(self, config: SandboxConfig, faults: FaultInjector) -> None:
        self.config = config
        self.faults = faults
        self.seed = config.seed
        self.fleet = _build_fleet(config.seed)
        self.allocations = _build_allocations(config.seed, self.fleet)
        credentials = DEMO_CREDENTIALS["bazefield"]
        self.user = credentials["user"]
        self.password = credentials["password"]
        self.api_key = credentials["api_key"]
        # sessionId / bearerToken -> token generation at issue time
        self.sessions: dict[str, int] = {}
        self.bearer_tokens: dict[str, int] = {}
        #: every session id and token ever issued (for secret scans of what clients left behind)
        self.issued: list[str] = []

    def is_authenticated(self, request: Request) -> bool:
        generation = self.faults.token_generation
        authorization = request.headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and credential:
            if credential == self.api_key:
                return True
            if self.bearer_tokens.get(credential) == generation:
                return True
        for session_id in (request.headers.get("x-ss-id"), request.cookies.get("ss-id")):
            if session_id and self.sessions.get(session_id) == generation:
                return True
        return False


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format", "").lower() == "json":
        return True
    return "application/json" in request.headers.get("accept", "").lower()


def _preview_page(request: Request, payload: object) -> HTMLResponse:
    dto = json.dumps(payload, ensure_ascii=False, indent=2)
    if len(dto) > 20_000:
        dto = dto[:20_000] + "\n..."
    body = (
        f"<p>Snapshot of <b>{html.escape(request.url.path)}</b> generated by ServiceStack "
        "(sandbox). Send <code>Accept: application/json</code> or <code>?format=json</code> for "
        f'the data.</p>\n<pre id="dto">{html.escape(dto)}</pre>'
    )
    return HTMLResponse(html_page("Bazefield API - preview", body, escape_body=False))


def _reply(request: Request, payload: object) -> Response:
    """HTTP 200 with JSON, or the HTML preview page when JSON was not asked for."""
    if _wants_json(request):
        return JSONResponse(payload)
    return _preview_page(request, payload)


def _unauthorized(message: str = "Not Authenticated") -> JSONResponse:
    return JSONResponse(
        _response_status("Unauthorized", message),
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="/auth/baze"'},
    )


async def _arguments(request: Request) -> dict[str, Any]:
    """Query string merged with a JSON or form body; keys lower-cased (ServiceStack binding)."""
    merged: dict[str, Any] = {key.lower(): value for key, value in request.query_params.items()}
    raw = await request.body()
    if raw.strip():
        content_type = request.headers.get("content-type", "").lower()
        if "application/x-www-form-urlencoded" in content_type:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            merged.update({key.lower(): values[-1] for key, values in form.items()})
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise BazeArgumentError("Request body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise BazeArgumentError("Request body must be a JSON object")
            merged.update({str(key).lower(): value for key, value in body.items()})
    return merged


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value if str(item).strip()]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def bazefield_app(
    config: SandboxConfig | None = None, faults: FaultInjector | None = None
) -> Starlette:
    """Build the Bazefield emulator.

    Args:
        config: sandbox settings (seed, ``baze_issue_bearer_token``, ``latency_ms``); defaults
            to ``SandboxConfig()``.
        faults: the injector to use; a new one (named ``"bazefield"``) when omitted. It is
            also reachable as ``app.state.faults``.
    """
    config = config or SandboxConfig()
    faults = faults or FaultInjector("bazefield", config.seed, base_latency_ms=config.latency_ms)
    state = _BazeState(config, faults)
    seed = config.seed

    def requires_auth(handler: _Handler) -> _Handler:
        async def wrapper(request: Request) -> Response:
            if not state.is_authenticated(request):
                return _unauthorized()
            try:
                response: Response = await handler(request)
            except BazeArgumentError as exc:
                return _reply(request, _response_status("ArgumentException", str(exc)))
            return response

        wrapper.__name__ = handler.__name__
        return wrapper

    async def login(request: Request) -> Response:
        try:
            args = await _arguments(request)
        except BazeArgumentError as exc:
            return JSONResponse(_response_status("ArgumentException", str(exc)), status_code=400)
        user = str(args.get("username") or "")
        password = str(args.get("password") or "")
        if user.lower() != state.user.lower() or password != state.password:
            return JSONResponse(
                _response_status("Unauthorized", "Invalid UserName or Password"), status_code=401
            )
        generation = faults.token_generation
        session_id = random_token(15)
        state.sessions[session_id] = generation
        state.issued.append(session_id)
        payload: dict[str, Any] = {
            "userId": "1",
            "sessionId": session_id,
            "userName": state.user,
            "displayName": "Demo User (sandbox)",
        }
        if config.baze_issue_bearer_token:
            token = jwt_like({"sub": state.user, "exp": int(time.time()) + 14 * 86400})
            state.bearer_tokens[token] = generation
            state.issued.append(token)
            payload["bearerToken"] = token
        faults.record_login("password")
        response = _reply(request, payload)
        remember = str(args.get("rememberme", "")).lower() in ("true", "1")
        response.set_cookie("ss-id", session_id, path="/", httponly=True)
        permanent_id = random_token(15)
        state.issued.append(permanent_id)
        response.set_cookie(
            "ss-pid", permanent_id, path="/", httponly=True, max_age=20 * 365 * 86400
        )
        if remember:
            response.set_cookie("ss-opt", "perm", path="/", max_age=20 * 365 * 86400)
        return response

    async def logout(request: Request) -> Response:
        for session_id in (request.headers.get("x-ss-id"), request.cookies.get("ss-id")):
            if session_id:
                state.sessions.pop(session_id, None)
        response = _reply(request, {})
        response.delete_cookie("ss-id", path="/")
        return response

    async def allocation_types(request: Request) -> Response:
        types = [{"id": type_id, "name": name} for type_id, name in _ALLOCATION_TYPES]
        return _reply(request, {"allocationTypes": types})

    async def structure(request: Request) -> Response:
        raw_type = request.query_params.get("type") or request.query_params.get("Type")
        try:
            object_type = int(str(raw_type))
        except ValueError as exc:
            raise BazeArgumentError(
                f"'type' must be an integer object type (1 = sites, 2 = turbines, 3 = met "
                f"masts), got {raw_type!r}"
            ) from exc
        objects = [obj.as_json() for obj in state.fleet.values() if obj.type == object_type]
        return _reply(request, {"objects": objects})

    def lookup(object_ids: list[str]) -> tuple[list[BazeObject], str | None]:
        found: list[BazeObject] = []
        for object_id in object_ids:
            obj = state.fleet.get(object_id)
            if obj is None:
                return [], object_id
            found.append(obj)
        return found, None

    async def schemas(request: Request) -> Response:
        args = {key.lower(): value for key, value in request.query_params.items()}
        object_ids = _as_list(args.get("objectids"))
        if not object_ids:
            raise BazeArgumentError("'objectIds' is required")
        objects, missing = lookup(object_ids)
        if missing is not None:
            return _reply(request, {"replyInfo": {"error": f"Object {missing} not found"}})
        result = [
            {
                "objectId": obj.object_id,
                "schemaId": f"schema-{_TYPE_NAMES[obj.type].lower()}",
                "schemaName": _TYPE_NAMES[obj.type],
                "points": [
                    {"name": name, "unit": unit_name, "description": description}
                    for name, unit_name, description in _SCHEMAS[obj.type]
                ],
            }
            for obj in objects
        ]
        return _reply(request, {"schemas": result})

    async def turbines(request: Request) -> Response:
        site = str(request.path_params["site"]).lower()
        match = next(
            (
                obj
                for obj in state.fleet.values()
                if obj.type == 1 and site in (obj.object_id, obj.object_key.lower())
            ),
            None,
        )
        if match is None:
            return JSONResponse(
                _response_status("NotFound", f"Site '{request.path_params['site']}' not found"),
                status_code=404,
            )
        found = [
            obj.as_json()
            for obj in state.fleet.values()
            if obj.type == 2 and obj.parent_id == match.object_id
        ]
        return _reply(request, {"turbines": found})

    async def active_allocations(request: Request) -> Response:
        return _reply(request, {"allocations": state.allocations})

    async def allocation(request: Request) -> Response:
        wanted = str(request.path_params["allocation_id"])
        for item in state.allocations:
            if str(item["allocationId"]) == wanted:
                return _reply(request, {"allocation": item})
        return JSONResponse(
            _response_status("NotFound", f"Allocation '{wanted}' not found"), status_code=404
        )

    def build_timeseries(
        objects: list[BazeObject],
        points: list[str],
        aggregates: list[str],
        grid: list[datetime],
        step_s: int,
        zone: tzinfo,
        wrong: _Wrong,
    ) -> bytes:
        # label_interval_end: each value labelled by its interval's end (one step later)
        shift = timedelta(seconds=step_s if wrong.label_interval_end else 0)
        stamps = [
            (
                int(moment.timestamp()),
                int((moment + shift).timestamp()),
                (moment + shift).astimezone(zone).isoformat(timespec="seconds"),
            )
            for moment in grid
        ]
        t_per_second = 1 if wrong.epoch_seconds else 1000
        copies = 2 if wrong.duplicate_timestamps else 1
        result: dict[str, Any] = {}
        for obj in objects:
            if obj.object_id == wrong.drop_object:
                continue
            points_out: dict[str, Any] = {}
            for point in points:
                series_list = []
                for aggregate in aggregates:
                    series = []
                    for epoch_s, label_s, local in stamps:
                        value: float | str
                        quality = 0
                        if unit(seed, "baze-bad", obj.object_id, point, aggregate, epoch_s) < (
                            _BAD_VALUE_ODDS
                        ):
                            value = _BAD_VALUES[epoch_s % len(_BAD_VALUES)]
                            quality = 1
                        else:
                            value = round(
                                aggregate_value(seed, obj, point, aggregate, epoch_s, step_s), 3
                            )
                        item = {"t": label_s * t_per_second, "t_local": local, "q": quality}
                        series.extend([{**item, "v": value}] * copies)
                    series_list.append({"aggregate": aggregate, "timeSeries": series})
                points_out[point] = series_list
            result[obj.object_id] = {"points": points_out}
        return json.dumps({"objects": result}, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8"
        )

    def dropped_object(
        objects: list[BazeObject], start: datetime, end: datetime, zone: tzinfo, now: datetime
    ) -> str | None:
        """The object ``drop_object`` leaves out of this answer, if any.

        The window is the first request's that asks for the object (option ``object``, an id
        or key; default: the request's first object) and whose range holds ``at`` (when
        given); every request of that same window, retries and other point groups included,
        then lacks the object. State lives in the live options dict."""
        options = faults.misbehaviour("drop_object")
        if options is None:
            return None
        window = [start.isoformat(), end.isoformat()]
        chosen = options.get("dropped")
        if chosen is not None:
            asked = any(obj.object_id == chosen for obj in objects)
            return str(chosen) if asked and options.get("window") == window else None
        wanted = options.get("object")
        target = (
            objects[0]
            if wanted is None
            else next(
                (
                    obj
                    for obj in objects
                    if str(wanted).strip().lower() in (obj.object_id, obj.object_key.lower())
                ),
                None,
            )
        )
        if target is None:
            return None
        at = options.get("at")
        if at is not None and not start <= parse_instant(at, zone, now) < end:
            return None
        options["dropped"] = target.object_id
        options["window"] = window
        return target.object_id

    async def timeseries(request: Request) -> Response:
        args = await _arguments(request)
        object_ids = _as_list(args.get("objectids"))
        points = _as_list(args.get("points"))
        aggregates = _as_list(args.get("aggregates"))
        if not object_ids:
            raise BazeArgumentError("'ObjectIds' is required")
        if not points:
            raise BazeArgumentError("'Points' is required")
        if not aggregates:
            raise BazeArgumentError("'Aggregates' is required")
        zone = resolve_zone(None if args.get("timezone") is None else str(args["timezone"]))
        now = datetime.now(UTC)
        start = parse_instant(args.get("from", "*-1d"), zone, now)
        end = parse_instant(args.get("to", "*"), zone, now)
        step_s = parse_interval(args.get("interval", "10m"))
        objects, missing = lookup(object_ids)
        if missing is not None:
            return _reply(request, {"replyInfo": {"error": f"Object {missing} not found"}})
        per_step = len(objects) * len(points) * len(aggregates)
        # Cheap estimate first, so a ten-year window at 10 minutes never builds its grid.
        estimate = int((end - start).total_seconds() // step_s) * per_step
        grid: list[datetime] = []
        if estimate > 2 * MAX_VALUES_PER_CALL:
            total = estimate
        else:
            grid = timestamps(start, end, step_s, zone)
            total = len(grid) * per_step
        if total > MAX_VALUES_PER_CALL:
            raise BazeArgumentError(
                f"Too many values requested ({total} > {MAX_VALUES_PER_CALL}); split the request "
                "into smaller windows"
            )
        wrong = _Wrong(
            label_interval_end=faults.misbehaviour("label_interval_end") is not None,
            epoch_seconds=faults.misbehaviour("epoch_seconds") is not None,
            duplicate_timestamps=faults.misbehaviour("duplicate_timestamps") is not None,
            drop_object=dropped_object(objects, start, end, zone, now),
        )
        body = await asyncio.to_thread(
            build_timeseries, objects, points, aggregates, grid, step_s, zone, wrong
        )
        if not _wants_json(request):
            return _preview_page(request, json.loads(body))
        return Response(body, media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        code = "NotFound" if status == 404 else "MethodNotAllowed"
        message = f"Handler for Request not found: {request.method} {request.url.path}"
        return JSONResponse(_response_status(code, message), status_code=status)

    api = _PREFIX
    routes = [
        *admin_routes(faults),
        Route(f"{api}/auth/baze", login, methods=["POST"]),
        Route(f"{api}/auth/logout", logout, methods=["GET", "POST"]),
        Route(f"{api}/allocationtypes", requires_auth(allocation_types), methods=["GET"]),
        Route(f"{api}/objects/structure", requires_auth(structure), methods=["GET"]),
        Route(f"{api}/objects/getschemas", requires_auth(schemas), methods=["GET"]),
        Route(
            f"{api}/objects/timeseries/aggregated",
            requires_auth(timeseries),
            methods=["GET", "POST"],
        ),
        Route(
            f"{api}/objects/allocations/active", requires_auth(active_allocations), methods=["GET"]
        ),
        Route(f"{api}/allocations/{{allocation_id}}", requires_auth(allocation), methods=["GET"]),
        Route(f"{api}/turbines/{{site}}", requires_auth(turbines), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                FaultMiddleware,
                faults=faults,
                html_page=_maintenance_page(),
                error_body=_error_body,
            ),
            Middleware(_LowercaseApiPath),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.faults = faults
    app.state.config = config
    app.state.issued = state.issued
    return app
