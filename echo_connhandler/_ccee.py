"""CCEE Dados Abertos: a CKAN portal behind a web application firewall.

Quirks handled here, all from docs/services/ccee.md:

- The WAF answers automated clients with **403 and an HTML "Acesso bloqueado" page** (HIGH; no
  cookie names are public). What works in public code, and what :class:`CceeWafAuth` does:
  browser-like ``User-Agent``/``Accept``/``Accept-Language: pt-BR``, a warm-up ``GET /`` in a
  cookie-keeping client, then API calls with ``Referer`` set to the portal. On a 403, or an HTML
  page where JSON was expected, warm up again *once*, then raise :class:`WafBlockedError`.
  Never loop against the WAF; never impersonate TLS fingerprints.
- CKAN actions under ``/api/3/action/``. ``datastore_search`` caps ``limit`` (default 32 000)
  and echoes the applied value: the pager plans pages from ``total`` and steps by the *echoed*
  limit, sorting by ``_id`` so that pages do not overlap.
- ``{"success": false, "error": {"__type", "message"}}`` (with 404/409) is an :class:`ApiError`,
  never retried.
- Datasets usually hold one resource per year, the year in the resource name.
- No published rate limit: keep concurrency modest (the async pager defaults to 4 pages in flight).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict, Unpack

import httpx

from echo_connhandler._auth import LoginFlow, SessionAuth, derive_request
from echo_connhandler._exceptions import (
    ApiError,
    DataConsistencyError,
    HttpStatusError,
    WafBlockedError,
)
from echo_connhandler._handler import HttpHandler, expect_json, is_html
from echo_connhandler._window import ordered_window

__all__ = [
    "CKAN_MAX_LIMIT",
    "DEFAULT_CCEE_HOST",
    "CceeHttpHandler",
    "CceeWafAuth",
    "CkanResource",
    "DatastorePage",
    "DatastoreQuery",
]

DEFAULT_CCEE_HOST = "https://dadosabertos.ccee.org.br"
#: CKAN's default ``ckan.datastore.search.rows_max``: the largest page asked for
#: (docs/services/ccee.md, "The pager").
CKAN_MAX_LIMIT = 32_000
ACTION_PATH = "api/3/action"

#: A current desktop browser's headers. The WAF lets browsers through; a bot-like User-Agent
#: (python-httpx, curl, ...) is blocked outright (docs/services/ccee.md, "The WAF").
BROWSER_HEADERS: dict[str, str] = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
    "Accept": "application/json, text/plain, */*",
    "Accept-Language": "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7",
}
_WARMUP_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_YEAR = re.compile(r"(?<!\d)(19\d{2}|20\d{2})(?!\d)")
_CKAN_ERROR_STATUSES = (200, 400, 403, 404, 409)
_CKAN_FAILURE = re.compile(rb'"success"\s*:\s*false')


class CceeWafAuth(SessionAuth):
    """WAF warm-up: ``GET /`` like a browser, keep its cookies, send ``Referer`` on API calls."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self._portal = host.rstrip("/") + "/"
        self._warmed = False

    def needs_login(self) -> bool:
        return not self._warmed

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        response = yield derive_request(
            template, "GET", self._portal, headers={"Accept": _WARMUP_ACCEPT}
        )
        if response.status_code == 403:
            raise WafBlockedError.from_response(
                response,
                "the CCEE WAF blocked the warm-up request itself (Acesso bloqueado); "
                "the address or the User-Agent is blocked, retrying will not help",
            )
        if response.status_code >= 400:
            raise HttpStatusError.from_response(response, "CCEE portal warm-up failed")
        self._warmed = True

    def apply(self, request: httpx.Request) -> None:
        request.headers.setdefault("Referer", self._portal)

    def is_rejected(self, response: httpx.Response) -> bool:
        if not is_html(response):
            return False
        path = response.request.url.path
        # HTML anywhere with 403, or HTML where the API or a download was expected (the host
        # may carry a path prefix behind a proxy, hence "in", not "startswith").
        return response.status_code == 403 or "/api/" in path or "/datastore/" in path

    def invalidate(self) -> None:
        self._warmed = False
        self.cookies.clear()

    def on_still_rejected(self, response: httpx.Response) -> None:
        raise WafBlockedError.from_response(
            response,
            "blocked by the CCEE WAF (Acesso bloqueado) even after a fresh warm-up; "
            "not retried: wait, lower the concurrency, or check the address is not blocked",
        )


@dataclass(frozen=True, slots=True)
class CkanResource:
    """One resource of a CKAN dataset (usually one year of data)."""

    id: str
    name: str
    format: str
    datastore_active: bool
    last_modified: str | None
    url: str | None
    year: int | None

    @classmethod
    def from_ckan(cls, raw: Mapping[str, Any]) -> CkanResource:
        name = str(raw.get("name") or "")
        url = raw.get("url")
        found = _YEAR.search(name) or (_YEAR.search(str(url)) if url else None)
        return cls(
            id=str(raw["id"]),
            name=name,
            format=str(raw.get("format") or ""),
            datastore_active=bool(raw.get("datastore_active")),
            last_modified=raw.get("last_modified") or raw.get("metadata_modified"),
            url=str(url) if url else None,
            year=int(found.group(1)) if found else None,
        )


class DatastoreQuery(TypedDict, total=False):
    """What to read of a datastore resource (CKAN ``datastore_search``); all optional."""

    filters: Mapping[str, Any] | None  # equality filters, sent as a JSON object
    q: str | None  # full-text search
    sort: str | None  # e.g. "DATA desc, HORA"
    fields: Sequence[str] | None  # columns to return


@dataclass(frozen=True, slots=True)
class DatastorePage:
    """One page of ``datastore_search``: its records, where it starts, and the whole total."""

    offset: int
    records: list[dict[str, Any]]
    total: int
    fields: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Plan:
    """Pages still to fetch after the first: offsets stepping by the limit the server applied."""

    total: int
    limit: int
    offsets: range


class CceeHttpHandler(HttpHandler):
    """CCEE Dados Abertos: WAF warm-up on connect, CKAN helpers, an ordered concurrent pager."""

    default_headers: ClassVar[dict[str, str]] = BROWSER_HEADERS

    def _build_auth(self) -> httpx.Auth | None:
        return CceeWafAuth(self.props.host)

    # -- CKAN envelope (no I/O) ------------------------------------------------------------------
    def _check_response(self, response: httpx.Response) -> None:
        if f"/{ACTION_PATH}/" not in response.request.url.path or is_html(response):
            return
        if response.status_code not in _CKAN_ERROR_STATUSES:
            return
        # A 200 page can be megabytes: parse it here only if its envelope says it failed (CKAN
        # writes "success" before "result"); the helpers parse it once afterwards.
        if response.status_code == 200 and not _CKAN_FAILURE.search(response.content[:4096]):
            return
        try:
            payload = response.json()
        except ValueError:
            return
        if isinstance(payload, dict) and payload.get("success") is False:
            error = payload.get("error") or {}
            kind = error.get("__type", "Error") if isinstance(error, dict) else "Error"
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            if isinstance(error, dict) and not message:
                details = {k: v for k, v in error.items() if k != "__type"}
                message = json.dumps(details, ensure_ascii=False)
            raise ApiError.from_response(response, f"CKAN {kind}: {message}")

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        payload = expect_json(response)
        if not isinstance(payload, dict) or "result" not in payload:
            raise ApiError.from_response(response, "CKAN answer without a result")
        return payload["result"]

    @staticmethod
    def _search_params(
        resource_id: str, *, limit: int, offset: int, **query: Unpack[DatastoreQuery]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"resource_id": resource_id, "limit": limit, "offset": offset}
        filters, fields = query.get("filters"), query.get("fields")
        if filters:
            params["filters"] = json.dumps(dict(filters), ensure_ascii=False)
        if fields:
            params["fields"] = ",".join(fields)
        params.update({k: query.get(k) for k in ("q", "sort") if query.get(k)})
        return params

    @staticmethod
    def _page(result: Mapping[str, Any], offset: int) -> DatastorePage:
        return DatastorePage(
            offset=offset,
            records=list(result.get("records") or []),
            total=int(result.get("total") or 0),
            fields=list(result.get("fields") or []),
        )

    @staticmethod
    def _plan(first: DatastorePage, result: Mapping[str, Any], asked: int) -> _Plan:
        echoed = int(result.get("limit") or asked)
        limit = min(echoed, asked) if echoed > 0 else asked
        if first.total > len(first.records) and not first.records:
            raise DataConsistencyError(
                f"datastore_search returned no records at offset 0 but total={first.total}"
            )
        return _Plan(first.total, limit, range(limit, first.total, limit))

    @staticmethod
    def _verify(page: DatastorePage, plan: _Plan) -> DatastorePage:
        expected = min(plan.limit, plan.total - page.offset)
        if page.total != plan.total:
            raise DataConsistencyError(
                f"the resource changed during the pull (total {plan.total} -> {page.total}); "
                "start the pull again"
            )
        if len(page.records) != expected:
            raise DataConsistencyError(
                f"page at offset {page.offset} has {len(page.records)} records, expected {expected}"
            )
        return page

    # -- sync helpers --------------------------------------------------------------------------
    def action(self, name: str, **params: Any) -> Any:
        """Call a CKAN action (GET), return its ``result``; CKAN errors raise :class:`ApiError`."""
        response = self.get(f"{ACTION_PATH}/{name}", params=params, response_ok=200)
        return self._result(response)

    def package_list(self) -> list[str]:
        """Ids of every dataset of the portal."""
        return list(self.action("package_list"))

    def package_show(self, dataset_id: str) -> dict[str, Any]:
        """The dataset's metadata (``result`` of ``package_show``)."""
        return dict(self.action("package_show", id=dataset_id))

    def resources(self, dataset_id: str) -> list[CkanResource]:
        """The dataset's resources with their year, oldest first."""
        return _sorted_resources(self.package_show(dataset_id))

    def datastore_search(
        self,
        resource_id: str,
        *,
        limit: int = 100,
        offset: int = 0,
        **query: Unpack[DatastoreQuery],
    ) -> dict[str, Any]:
        """One ``datastore_search`` call; the whole ``result`` (``total``, ``limit``, ...)."""
        params = self._search_params(resource_id, limit=limit, offset=offset, **query)
        return dict(self.action("datastore_search", **params))

    def iter_datastore_pages(
        self,
        resource_id: str,
        *,
        page_size: int = CKAN_MAX_LIMIT,
        **query: Unpack[DatastoreQuery],
    ) -> Iterator[DatastorePage]:
        """Every page of a resource, in order; each verified complete (no loss, no overlap).

        Sorted by ``query["sort"]`` with ``_id`` as the last key (by ``_id`` alone by default).
        """
        query["sort"] = stable_sort(query.get("sort") or "")
        result = self.datastore_search(resource_id, limit=page_size, offset=0, **query)
        first = self._page(result, 0)
        plan = self._plan(first, result, page_size)
        yield self._verify(first, plan)
        for offset in plan.offsets:
            page = self.datastore_search(resource_id, limit=plan.limit, offset=offset, **query)
            yield self._verify(self._page(page, offset), plan)

    def iter_datastore_records(self, resource_id: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every record of a resource, in order (see :meth:`iter_datastore_pages`)."""
        for page in self.iter_datastore_pages(resource_id, **kwargs):
            yield from page.records

    # -- async helpers -------------------------------------------------------------------------
    async def async_action(self, name: str, **params: Any) -> Any:
        """The async :meth:`action`."""
        response = await self.async_get(f"{ACTION_PATH}/{name}", params=params, response_ok=200)
        return self._result(response)

    async def async_package_list(self) -> list[str]:
        """The async :meth:`package_list`."""
        return list(await self.async_action("package_list"))

    async def async_package_show(self, dataset_id: str) -> dict[str, Any]:
        """The async :meth:`package_show`."""
        return dict(await self.async_action("package_show", id=dataset_id))

    async def async_resources(self, dataset_id: str) -> list[CkanResource]:
        """The async :meth:`resources`."""
        return _sorted_resources(await self.async_package_show(dataset_id))

    async def async_datastore_search(
        self,
        resource_id: str,
        *,
        limit: int = 100,
        offset: int = 0,
        **query: Unpack[DatastoreQuery],
    ) -> dict[str, Any]:
        """The async :meth:`datastore_search`."""
        params = self._search_params(resource_id, limit=limit, offset=offset, **query)
        return dict(await self.async_action("datastore_search", **params))

    async def aiter_datastore_pages(
        self,
        resource_id: str,
        *,
        page_size: int = CKAN_MAX_LIMIT,
        concurrency: int = 4,
        **query: Unpack[DatastoreQuery],
    ) -> AsyncIterator[DatastorePage]:
        """Every page, in order, with up to ``concurrency`` pages in flight.

        A sliding window: the next pages are fetched while the caller consumes the current one,
        so memory stays bounded by ``concurrency`` pages whatever the resource size. Sorted as
        :meth:`iter_datastore_pages`.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        query["sort"] = stable_sort(query.get("sort") or "")
        result = await self.async_datastore_search(resource_id, limit=page_size, offset=0, **query)
        first = self._page(result, 0)
        plan = self._plan(first, result, page_size)
        yield self._verify(first, plan)

        async def fetch(offset: int) -> DatastorePage:
            page = await self.async_datastore_search(
                resource_id, limit=plan.limit, offset=offset, **query
            )
            return self._verify(self._page(page, offset), plan)

        async with contextlib.aclosing(ordered_window(plan.offsets, fetch, concurrency)) as pages:
            async for page in pages:
                yield page

    async def aiter_datastore_records(
        self, resource_id: str, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every record, in order (see :meth:`aiter_datastore_pages`)."""
        async for page in self.aiter_datastore_pages(resource_id, **kwargs):
            for record in page.records:
                yield record


def stable_sort(sort: str) -> str:
    """``sort`` with ``_id`` as the last key: pages of a non-unique order could overlap."""
    keys = [part.split()[0] for part in sort.split(",") if part.strip()]
    if not keys:
        return "_id"
    return f"{sort}, _id" if "_id" not in keys else sort


def _sorted_resources(package: Mapping[str, Any]) -> list[CkanResource]:
    resources = [CkanResource.from_ckan(raw) for raw in package.get("resources") or []]
    return sorted(resources, key=lambda r: (r.year is None, r.year or 0, r.name))
