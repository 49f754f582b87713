"""Emulator of CCEE Dados Abertos: a CKAN portal behind a WAF, see docs/services/ccee.md.

What is emulated, and the quirks reproduced on purpose:

* **the WAF** (docs/services/ccee.md, "The WAF": "automated clients get 403 with an HTML page
  'Acesso bloqueado'"; the real cookie names are not public, ``ak_bmsc`` here is made up):

  - any request (except the ``/_sandbox/`` admin endpoints) whose ``User-Agent`` is missing, empty
    or bot-like (contains ``python-httpx``, ``python-requests``, ``curl``, ``wget``, ``bot``,
    ``scrapy``, case-insensitive) gets **403 text/html** "Acesso bloqueado";
  - requests under ``/api/``, ``/datastore/`` and ``/dataset/<id>/resource/...`` (downloads)
    also need a valid ``ak_bmsc`` cookie, else the same 403;
  - the HTML pages ``/``, ``/dataset`` and ``/dataset/<id>`` are the **warm-up**: with a
    browser-like ``User-Agent`` they are served and set a fresh valid cookie (``Set-Cookie:
    ak_bmsc=...; Path=/; HttpOnly``), counted in ``stats["warmups"]``;
  - ``FaultInjector.block_waf()`` or ``configure(waf_block_rate=...)`` invalidates every cookie
    issued so far (a block in the middle of a pull): the next API call gets 403, a new warm-up
    fixes it. ``script(..., html=True)`` serves the block page with any status (200 by default),
    as real WAFs sometimes do.

* **CKAN** actions under ``/api/3/action/`` (and ``/api/action/``), GET query string or POST JSON
  body: ``package_list``, ``package_show``, ``package_search``, ``resource_show``,
  ``datastore_search``. Replies are ``{"help", "success": true, "result"}``; errors are
  ``{"success": false, "error": {"__type": "Not Found Error" | "Validation Error", "message"}}``
  with 404 / 409 (unknown action: 400 ``Bad Request``).

  - datasets: ``pld_horario``, ``pld_media_diaria``, ``geracao_horaria_submercado``, one
    resource per year of ``SandboxConfig.ccee_years`` (``PLD_HORARIO_2023``...), stable ids;
  - ``datastore_search`` caps ``limit`` at ``SandboxConfig.ccee_max_limit`` (default 32 000, as
    CKAN) and echoes the applied limit; default limit 100; ``_links.start`` / ``_links.next``;
    ``filters`` is a JSON object (equality, a list means "any of"); ``q`` full-text (string or
    per-column object); ``sort`` ``"COL asc|desc, ..."``; ``fields`` comma-separated. See
    ``_ccee_data`` for how this stays fast without materialising tables.

* **publications** (docs/services/ccee.md, "Timestamps and publications"): ``last_modified``
  (and ``metadata_modified``) are naive UTC timestamps in CKAN's format. They are fixed, except
  for the newest year's resource of each dataset when ``SandboxConfig.ccee_publish_every`` is set
  (republished every that many seconds: the clock's start + k x the period) or after
  :meth:`CceePublications.publish` (``Sandbox.ccee_publish()``, ``POST /_sandbox/publish`` with
  an optional ``{"dataset": name}``), which republishes it now. A package's
  ``metadata_modified`` is its newest resource's ``last_modified``.

* ``GET /datastore/dump/<resource_id>`` (``?bom=True`` prepends a UTF-8 BOM; ``q``, ``filters``,
  ``sort``, ``fields``, ``limit``, ``offset`` as in ``datastore_search``) and the resource file
  URL ``/dataset/<dataset>/resource/<id>/download/<NAME>.csv`` stream the whole ``;``-separated
  CSV, generated lazily.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import html
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._ccee_data import (
    DATASETS,
    CceeValidationError,
    Dataset,
    Query,
    RowIndex,
    Table,
    parse_fields,
    parse_filters,
    parse_q,
    parse_sort,
)
from ._config import SandboxConfig
from ._data import html_page, random_token, stable_uuid
from ._faults import ADMIN_PREFIX, FaultInjector, FaultMiddleware, admin_routes

__all__ = [
    "BOT_USER_AGENT_MARKERS",
    "CKAN_TIME_FORMAT",
    "WAF_COOKIE",
    "CceePublications",
    "ccee_app",
]

#: Name of the (made-up) WAF cookie set by the warm-up pages.
WAF_COOKIE = "ak_bmsc"

#: A User-Agent containing any of these (case-insensitive) is blocked by the WAF.
BOT_USER_AGENT_MARKERS: tuple[str, ...] = (
    "python-httpx",
    "python-requests",
    "curl",
    "wget",
    "bot",
    "scrapy",
)

_DEFAULT_LIMIT = 100
_DUMP_CHUNK_ROWS = 2000
_COOKIE_MAX_AGE = 7200

BLOCK_PAGE = html_page(
    "Acesso bloqueado",
    "<p>Acesso bloqueado.</p>\n<p>You don't have permission to access this resource on this "
    "server.</p>\n<p>Reference&#32;#18.sandbox.0000000000.0000000</p>",
    escape_body=False,
)


#: CKAN's timestamp format: naive, UTC, with microseconds
#: (docs/services/ccee.md, "Timestamps and publications").
CKAN_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def ckan_time(moment: datetime) -> str:
    """``moment`` (aware) as CKAN writes it: naive UTC with microseconds."""
    return moment.astimezone(UTC).strftime(CKAN_TIME_FORMAT)


class CceePublications:
    """When the newest year's resource of each dataset was last published (thread-safe).

    Without a clock (``every=None``) and without :meth:`publish`, the fixed ``last_modified``
    values apply. With ``every`` seconds, the newest resource's ``last_modified`` is the clock's
    start + k x ``every`` (the last tick reached). :meth:`publish` republishes now: the
    resource's ``last_modified`` becomes the current time (or, if its current value is not
    earlier, that value + 1 ms, so that every publication is later than the one before).
    :meth:`reset` forgets the manual publications (the clock keeps its start).
    """

    def __init__(self, every: float | None, datasets: Iterable[str]) -> None:
        self.every = every
        self.datasets = tuple(datasets)
        self._lock = threading.Lock()
        self._origin = datetime.now(UTC)
        self._published: dict[str, datetime] = {}

    @property
    def origin(self) -> datetime:
        """The clock's start (the sandbox's start; aware, UTC)."""
        return self._origin

    def start_clock(self, origin: datetime | None = None) -> None:
        """Start the clock now (or at ``origin``): :class:`Sandbox` calls it on start."""
        with self._lock:
            self._origin = (origin or datetime.now(UTC)).astimezone(UTC)

    def _tick(self, now: datetime) -> datetime | None:
        if self.every is None:
            return None
        period_us = max(1, round(self.every * 1_000_000))
        elapsed = now - self._origin
        elapsed_us = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
        return self._origin + timedelta(microseconds=(elapsed_us // period_us) * period_us)

    def newest(self, dataset: str, now: datetime | None = None) -> datetime | None:
        """The newest resource's ``last_modified`` (None: its fixed value applies)."""
        now = now or datetime.now(UTC)
        with self._lock:
            values = [v for v in (self._tick(now), self._published.get(dataset)) if v is not None]
        return max(values) if values else None

    def publish(self, dataset: str, fixed: datetime) -> datetime:
        """Republish ``dataset``'s newest resource now; its new ``last_modified``.

        ``fixed`` is the resource's fixed ``last_modified``, what applies without a clock.
        """
        if dataset not in self.datasets:
            raise ValueError(f"unknown CCEE dataset {dataset!r}; expected one of {self.datasets}")
        now = datetime.now(UTC)
        current = self.newest(dataset, now) or fixed
        value = max(now, current + timedelta(milliseconds=1))
        with self._lock:
            self._published[dataset] = value
        return value

    def reset(self) -> None:
        """Forget the manual publications."""
        with self._lock:
            self._published.clear()


def fixed_last_modified(year: int, position: int) -> datetime:
    """The fixed ``last_modified`` of the resource of ``year`` (``position`` in the dataset)."""
    return datetime(min(year + 1, 2026), 1, 15, 3, position, tzinfo=UTC)


def is_bot_user_agent(user_agent: str | None) -> bool:
    """True for a missing, empty or bot-like ``User-Agent``."""
    if not user_agent or not user_agent.strip():
        return True
    lowered = user_agent.lower()
    return any(marker in lowered for marker in BOT_USER_AGENT_MARKERS)


def _is_warmup_page(path: str) -> bool:
    parts = [part for part in path.split("/") if part]
    return not parts or (parts[0] == "dataset" and len(parts) <= 2)


def _needs_cookie(path: str) -> bool:
    if _is_warmup_page(path):
        return False
    return path.startswith(("/api/", "/datastore/", "/dataset/"))


@dataclass
class _CceeState:
    config: SandboxConfig
    faults: FaultInjector
    tables: dict[str, Table]
    cookies: dict[str, int]
    #: every WAF cookie ever issued (for secret scans of what clients left behind)
    issued: list[str] = field(default_factory=list)

    def issue_cookie(self, response: Response) -> None:
        token = random_token(24)
        self.cookies[token] = self.faults.waf_generation
        self.issued.append(token)
        response.set_cookie(WAF_COOKIE, token, max_age=_COOKIE_MAX_AGE, path="/", httponly=True)
        self.faults.record_warmup()

    def cookie_is_valid(self, token: str | None) -> bool:
        return token is not None and self.cookies.get(token) == self.faults.waf_generation


class _WafMiddleware:
    """403 "Acesso bloqueado" for bots, and for protected paths without a valid cookie."""

    def __init__(self, app: ASGIApp, *, state: _CceeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and not path.startswith(ADMIN_PREFIX):
            user_agent = Headers(scope=scope).get("user-agent")
            blocked = is_bot_user_agent(user_agent)
            if not blocked and _needs_cookie(path):
                cookie = HTTPConnection(scope).cookies.get(WAF_COOKIE)
                blocked = not self.state.cookie_is_valid(cookie)
            if blocked:
                self.state.faults.record_waf_block()
                await HTMLResponse(BLOCK_PAGE, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------- CKAN helpers


class _CkanError(Exception):
    def __init__(self, status: int, kind: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.details = details


def _not_found(message: str = "Not found") -> _CkanError:
    return _CkanError(404, "Not Found Error", message)


def _validation(message: str, **details: object) -> _CkanError:
    return _CkanError(409, "Validation Error", message, **details)


def _error_body(status: int) -> object:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {
        "success": False,
        "error": {"__type": phrase, "message": f"Sandbox injected HTTP {status}"},
    }


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _int_param(params: dict[str, Any], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise _validation(f"{name}: Invalid integer", **{name: ["Invalid integer"]}) from None
    if value < 0:
        raise _validation(
            f"{name}: Must be a natural number", **{name: ["Must be a natural number"]}
        )
    return value


def _parse_query(params: dict[str, Any]) -> Query:
    try:
        return Query(
            filters=parse_filters(params.get("filters")),
            q=parse_q(params.get("q")),
            sort=parse_sort(params.get("sort")),
            fields=parse_fields(params.get("fields")),
        )
    except CceeValidationError as exc:
        raise _validation(str(exc)) from exc


def _select(table: Table, query: Query) -> RowIndex:
    try:
        return table.select(query)
    except CceeValidationError as exc:
        raise _validation(str(exc)) from exc


def ccee_app(config: SandboxConfig | None = None, faults: FaultInjector | None = None) -> Starlette:
    """Build the CCEE Dados Abertos emulator (CKAN behind a WAF).

    Args:
        config: sandbox settings (seed, ``ccee_rows_per_resource``, ``ccee_years``,
            ``ccee_max_limit``, ``ccee_publish_every``, ``latency_ms``); defaults to
            ``SandboxConfig()``.
        faults: the injector to use; a new one (named ``"ccee"``) when omitted. It is also
            reachable as ``app.state.faults``.

    ``app.state.publications`` is the :class:`CceePublications` clock, and
    ``app.state.publish(dataset=None)`` republishes now (what ``Sandbox.ccee_publish`` calls).
    """
    config = config or SandboxConfig()
    faults = faults or FaultInjector("ccee", config.seed, base_latency_ms=config.latency_ms)
    tables: dict[str, Table] = {}
    for dataset in DATASETS.values():
        for year in config.ccee_years:
            table = Table.natural(dataset, year, config.seed, config.ccee_rows_per_resource)
            tables[table.resource_id] = table
    state = _CceeState(config=config, faults=faults, tables=tables, cookies={})
    publications = CceePublications(config.ccee_publish_every, DATASETS)
    newest_year = max(config.ccee_years)
    #: Republications made by the ``republish`` and ``shift_rows`` misbehaviours (each moves
    #: every resource's ``last_modified`` one second on; ``republish`` also changes values).
    revision = {"republished": 0, "shifted": False}
    #: The extra resource of ``two_resources_per_year``: its id -> the table it shows.
    twins = {
        stable_uuid("ccee-resource", dataset.name, newest_year, "retificado"): tables[
            dataset.resource_id(newest_year)
        ]
        for dataset in DATASETS.values()
    }

    def misbehaving(kind: str) -> dict[str, Any] | None:
        return faults.misbehaviour(kind)

    def due(kind: str) -> bool:
        """Whether a misbehaviour that starts after ``after`` pages (default 1) has started."""
        options = misbehaving(kind)
        return options is not None and options.get("served", 0) >= options.get("after", 1)

    def advance() -> None:
        """Apply the republications that are due (before answering any action)."""
        options = misbehaving("republish")
        if options is not None and due("republish") and not options.get("applied"):
            options["applied"] = True
            revision["republished"] += 1
        options = misbehaving("shift_rows")
        if options is not None and due("shift_rows") and not options.get("applied"):
            options["applied"] = True
            revision["shifted"] = True
        if misbehaving("shift_rows") is None:
            revision["shifted"] = False

    def page_served() -> None:
        for kind in ("republish", "shift_rows", "drop_column"):
            options = misbehaving(kind)
            if options is not None:
                options["served"] = options.get("served", 0) + 1

    def version_offset() -> timedelta:
        moves = revision["republished"] + (1 if revision["shifted"] else 0)
        return timedelta(seconds=moves)

    def find_dataset(key: object) -> Dataset:
        text = str(key or "")
        for dataset in DATASETS.values():
            if text in (dataset.name, dataset.package_id):
                return dataset
        raise _not_found()

    def find_table(key: object) -> Table:
        table = tables.get(str(key or ""))
        if table is None and misbehaving("two_resources_per_year") is not None:
            table = twins.get(str(key or ""))
        if table is None:
            raise _not_found(f'Resource "{key}" was not found.')
        return table

    def resource_json(base: str, dataset: Dataset, year: int, position: int) -> dict[str, Any]:
        name = dataset.resource_name(year)
        resource_id = dataset.resource_id(year)
        published = publications.newest(dataset.name) if year == newest_year else None
        modified = ckan_time((published or fixed_last_modified(year, position)) + version_offset())
        return {
            "id": resource_id,
            "package_id": dataset.package_id,
            "name": name,
            "description": f"{dataset.title} {year} (sandbox)",
            "format": "CSV",
            "mimetype": "text/csv",
            "datastore_active": True,
            "created": f"{year}-01-02T03:00:00.000000",
            "last_modified": modified,
            "metadata_modified": modified,
            "position": position,
            "size": None,
            "state": "active",
            "url_type": "upload",
            "url": f"{base}/dataset/{dataset.name}/resource/{resource_id}/download/{name}.csv",
        }

    def package_json(base: str, dataset: Dataset) -> dict[str, Any]:
        resources = [
            resource_json(base, dataset, year, position)
            for position, year in enumerate(config.ccee_years)
        ]
        if misbehaving("two_resources_per_year") is not None:
            # A corrected edition published next to the original, for the newest year.
            twin = dict(resources[-1])
            twin["id"] = stable_uuid("ccee-resource", dataset.name, newest_year, "retificado")
            twin["name"] = f"{dataset.resource_name(newest_year)}_RETIFICADO"
            twin["position"] = len(resources)
            resources.append(twin)
        return {
            "id": dataset.package_id,
            "name": dataset.name,
            "title": dataset.title,
            "notes": dataset.notes,
            "type": "dataset",
            "state": "active",
            "private": False,
            "license_id": "cc-by",
            "organization": {"name": "ccee", "title": "CCEE (sandbox)"},
            "metadata_created": "2021-01-04T12:00:00.000000",
            "metadata_modified": resources[-1]["last_modified"],
            "num_resources": len(resources),
            "resources": resources,
        }

    # ------------------------------------------------------------------ actions

    async def package_list(request: Request, params: dict[str, Any]) -> object:
        return sorted(DATASETS)

    async def package_show(request: Request, params: dict[str, Any]) -> object:
        advance()
        if not params.get("id"):
            raise _validation("id: Missing value", id=["Missing value"])
        return package_json(_base_url(request), find_dataset(params.get("id")))

    async def package_search(request: Request, params: dict[str, Any]) -> object:
        text = str(params.get("q") or "").lower().strip()
        rows = _int_param(params, "rows", 10)
        start = _int_param(params, "start", 0)
        base = _base_url(request)
        matches = [
            package_json(base, dataset)
            for dataset in DATASETS.values()
            if not text
            or text in ("*:*", "*")
            or text in dataset.name.lower()
            or text in dataset.title.lower()
        ]
        return {
            "count": len(matches),
            "results": matches[start : start + rows],
            "sort": "score desc, metadata_modified desc",
            "facets": {},
            "search_facets": {},
        }

    async def resource_show(request: Request, params: dict[str, Any]) -> object:
        advance()
        if not params.get("id"):
            raise _validation("id: Missing value", id=["Missing value"])
        table = find_table(params.get("id"))
        position = config.ccee_years.index(table.year)
        return resource_json(_base_url(request), table.dataset, table.year, position)

    async def datastore_search(request: Request, params: dict[str, Any]) -> object:
        resource_id = params.get("resource_id") or params.get("id")
        if not resource_id:
            raise _validation("resource_id: Missing value", resource_id=["Missing value"])
        advance()
        table = find_table(resource_id)
        requested = _int_param(params, "limit", _DEFAULT_LIMIT)
        limit = min(requested, config.ccee_max_limit)
        offset = _int_param(params, "offset", 0)
        query = _parse_query(params)
        # Misbehaviours (docs/sandbox.md, "Misbehaviour"): what the page really starts at.
        served_from = offset
        if misbehaving("ignore_offset") is not None:
            served_from = 0
        overlap = misbehaving("overlap_pages")
        if overlap is not None and offset > 0:
            served_from = max(0, offset - int(overlap.get("rows", 10)))
        shift = 1 if revision["shifted"] else 0
        bump = revision["republished"]
        dropped = misbehaving("drop_column")
        drop = None
        if dropped is not None and due("drop_column"):
            drop = str(dropped.get("column") or table.dataset.value_column)

        def record_at(rows: RowIndex, position: int) -> dict[str, Any]:
            position += shift  # the first row deleted, one appended at the end
            if position < len(rows):
                record = table.record(rows.at(position), query.fields)
            else:
                record = table.record(table.row_count + position - len(rows), query.fields)
            value_column = table.dataset.value_column
            value = record.get(value_column)
            if bump and isinstance(value, float):
                record[value_column] = round(value + bump, 2)
            if drop is not None:
                record.pop(drop, None)
            return record

        def compute() -> tuple[int, list[dict[str, Any]]]:
            rows = _select(table, query)
            # As many records as the page asked for would hold, whatever it really starts at.
            end = served_from + max(0, min(limit, len(rows) - offset))
            records = [record_at(rows, position) for position in range(served_from, end)]
            if misbehaving("duplicate_id") is not None and len(records) >= 2:
                records[1] = dict(records[0])
            return len(rows), records

        total, records = await asyncio.to_thread(compute)
        if records and query.fields != ("_id",):
            page_served()
        columns = dict(table.dataset.columns)
        field_ids = query.fields or table.column_ids
        link_params = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in params.items()
            if key not in ("offset",) and value is not None
        }
        path = request.url.path
        start_link = f"{path}?{urlencode(link_params)}"
        next_link = f"{path}?{urlencode({**link_params, 'offset': offset + limit})}"
        return {
            "include_total": True,
            "resource_id": table.resource_id,
            "fields": [{"id": field, "type": columns[field]} for field in field_ids],
            "records_format": "objects",
            "records": records,
            "total": total,
            "total_was_estimated": False,
            "limit": limit,
            "offset": offset,
            "_links": {"start": start_link, "next": next_link},
        }

    actions: dict[str, Callable[[Request, dict[str, Any]], Awaitable[object]]] = {
        "package_list": package_list,
        "package_show": package_show,
        "package_search": package_search,
        "resource_show": resource_show,
        "datastore_search": datastore_search,
    }

    async def action(request: Request) -> Response:
        name = str(request.path_params["name"])
        help_url = f"{_base_url(request)}/api/3/action/help_show?name={name}"
        handler = actions.get(name)
        try:
            if handler is None:
                raise _CkanError(400, "Bad Request", f"Action name not known: {name}")
            params: dict[str, Any] = dict(request.query_params)
            if request.method == "POST":
                raw = await request.body()
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise _CkanError(400, "Bad Request", "Bad request - JSON Error") from None
                    if not isinstance(body, dict):
                        raise _CkanError(400, "Bad Request", "Bad request - JSON Error")
                    params.update(body)
            result = await handler(request, params)
        except _CkanError as exc:
            error = {"__type": exc.kind, "message": exc.message, **exc.details}
            return JSONResponse(
                {"help": help_url, "success": False, "error": error}, status_code=exc.status
            )
        return JSONResponse({"help": help_url, "success": True, "result": result})

    # ------------------------------------------------------------------ CSV

    async def csv_stream(
        table: Table, rows: RowIndex, fields: tuple[str, ...], bom: bool, start: int, end: int
    ) -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        writer.writerow(fields)
        header = buffer.getvalue().encode("utf-8")
        yield (codecs.BOM_UTF8 + header) if bom else header
        for chunk_start in range(start, end, _DUMP_CHUNK_ROWS):
            buffer.seek(0)
            buffer.truncate()
            for position in range(chunk_start, min(end, chunk_start + _DUMP_CHUNK_ROWS)):
                record = table.record(rows.at(position), fields)
                writer.writerow([record[field] for field in fields])
            yield buffer.getvalue().encode("utf-8")
            await asyncio.sleep(0)

    async def csv_response(request: Request, table: Table) -> Response:
        params: dict[str, Any] = dict(request.query_params)
        try:
            query = _parse_query(params)
            offset = _int_param(params, "offset", 0)
            limit = _int_param(params, "limit", -1) if params.get("limit") else None
            rows = await asyncio.to_thread(_select, table, query)
        except _CkanError as exc:
            return JSONResponse(
                {"success": False, "error": {"__type": exc.kind, "message": exc.message}},
                status_code=exc.status,
            )
        end = len(rows) if limit is None else min(len(rows), offset + limit)
        bom = str(params.get("bom", "")).lower() in ("true", "1", "yes")
        fields = query.fields or table.column_ids
        filename = f"{table.dataset.resource_name(table.year)}.csv"
        return StreamingResponse(
            csv_stream(table, rows, fields, bom, offset, end),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def dump(request: Request) -> Response:
        table = tables.get(str(request.path_params["resource_id"]))
        if table is None:
            return JSONResponse(
                {
                    "success": False,
                    "error": {"__type": "Not Found Error", "message": "Resource not found"},
                },
                status_code=404,
            )
        return await csv_response(request, table)

    async def download(request: Request) -> Response:
        table = tables.get(str(request.path_params["resource_id"]))
        if table is None or table.dataset.name != request.path_params["dataset"]:
            return HTMLResponse(html_page("Não encontrado", "Recurso não encontrado."), 404)
        return await csv_response(request, table)

    # ------------------------------------------------------------------ HTML pages

    async def home(request: Request) -> Response:
        links = "\n".join(
            f'<li><a href="/dataset/{html.escape(name)}">{html.escape(dataset.title)}</a></li>'
            for name, dataset in sorted(DATASETS.items())
        )
        body = (
            "<p>Portal de Dados Abertos da CCEE &mdash; emulador local (sandbox).</p>\n"
            f"<ul>\n{links}\n</ul>"
        )
        response = HTMLResponse(html_page("Dados Abertos CCEE", body, escape_body=False))
        state.issue_cookie(response)
        return response

    async def dataset_page(request: Request) -> Response:
        name = str(request.path_params["dataset"])
        dataset = DATASETS.get(name)
        if dataset is None:
            return HTMLResponse(
                html_page("Não encontrado", "Conjunto de dados não encontrado."), status_code=404
            )
        base = _base_url(request)
        items = "\n".join(
            f'<li><a href="{html.escape(str(resource["url"]))}">'
            f"{html.escape(str(resource['name']))}</a></li>"
            for resource in package_json(base, dataset)["resources"]
        )
        body = f"<p>{html.escape(dataset.notes)}</p>\n<ul>\n{items}\n</ul>"
        response = HTMLResponse(html_page(dataset.title, body, escape_body=False))
        state.issue_cookie(response)
        return response

    async def dataset_index(request: Request) -> Response:
        return await home(request)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"success": False, "error": {"__type": "Not Found Error", "message": "Not found"}},
                status_code=status,
            )
        return HTMLResponse(html_page("Não encontrado", "Página não encontrada."), status)

    def publish(dataset: str | None = None) -> dict[str, str]:
        """Republish the newest year's resource of ``dataset`` (every dataset when None) now."""
        names = [dataset] if dataset is not None else sorted(DATASETS)
        position = config.ccee_years.index(newest_year)
        fixed = fixed_last_modified(newest_year, position)
        return {name: ckan_time(publications.publish(name, fixed)) for name in names}

    async def admin_publish(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict) or set(body) - {"dataset"}:
                raise ValueError('expected an optional JSON object {"dataset": name}')
            dataset = body.get("dataset")
            if dataset is not None and not isinstance(dataset, str):
                raise ValueError("dataset must be a string")
            published = publish(dataset)
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "last_modified": published})

    routes = [
        *admin_routes(faults),
        Route(f"{ADMIN_PREFIX}publish", admin_publish, methods=["POST"]),
        Route("/", home, methods=["GET"]),
        Route("/dataset", dataset_index, methods=["GET"]),
        Route("/dataset/", dataset_index, methods=["GET"]),
        Route("/dataset/{dataset}", dataset_page, methods=["GET"]),
        Route(
            "/dataset/{dataset}/resource/{resource_id}/download/{filename}",
            download,
            methods=["GET"],
        ),
        Route("/api/3/action/{name}", action, methods=["GET", "POST"]),
        Route("/api/action/{name}", action, methods=["GET", "POST"]),
        Route("/datastore/dump/{resource_id}", dump, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                FaultMiddleware, faults=faults, html_page=BLOCK_PAGE, error_body=_error_body
            ),
            Middleware(_WafMiddleware, state=state),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.faults = faults
    app.state.config = config
    app.state.issued = state.issued
    app.state.publications = publications
    app.state.publish = publish

    def forget_revisions() -> None:
        revision.update(republished=0, shifted=False)

    app.state.forget_revisions = forget_revisions
    return app
