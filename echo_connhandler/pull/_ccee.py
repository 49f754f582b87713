"""CCEE Dados Abertos datastore pulls: CKAN pages by offset, one or many resources (years).

The plan asks each resource for its ``total``, its ``fields`` (the output's columns and types)
and the page size CKAN really applies (it caps ``limit``, by default at 32 000, and echoes the
applied value: docs/services/ccee.md, "The pager"). Chunks are pages of ``offset``/``limit``,
sorted by ``_id`` last so that pages never overlap; each page fetched is checked against the
plan (same total, the expected number of rows), so a resource that changes during a pull, or
between a crash and its resumption, fails with :class:`DataConsistencyError` instead of losing
or duplicating rows. Large pages are decoded in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from echo_connhandler._ccee import (
    ACTION_PATH,
    CceeHttpHandler,
    CkanResource,
    stable_sort,
)
from echo_connhandler._exceptions import DataConsistencyError
from echo_connhandler._handler import HttpHandler, expect_json, is_html
from echo_connhandler._json import loads
from echo_connhandler.pull._plan import (
    Chunk,
    Column,
    ColumnType,
    PageContentError,
    Plan,
    RawPage,
    Rows,
    Source,
)

__all__ = ["PULL_PAGE_SIZE", "CceeDatastoreSource", "ckan_column_type"]

#: Rows per request of a pull. Decoding a page is one call that holds the GIL: at CKAN's 32 000
#: rows it stalled an event loop sharing the process (a triggerer's) for 0.13 to 0.26 s, at
#: 8 000 to 10 000 rows for about 0.04 s, with no loss of throughput at 50 ms latency
#: (docs/performance.md, "Targets").
PULL_PAGE_SIZE = 10_000

_CKAN_TYPES: dict[str, ColumnType] = {
    "int": "int",
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "integer": "int",
    "bigint": "int",
    "float": "float",
    "float4": "float",
    "float8": "float",
    "numeric": "float",
    "double precision": "float",
    "bool": "bool",
    "boolean": "bool",
    "timestamp": "timestamp",
    "timestamptz": "timestamp",
    "date": "date",
    "json": "json",
    "jsonb": "json",
}


def ckan_column_type(ckan_type: str) -> ColumnType:
    """The logical type of a CKAN datastore field type (``text`` when unknown, e.g. ``_text``)."""
    return _CKAN_TYPES.get(ckan_type.lower(), "text")


class CceeDatastoreSource(Source):
    """Rows of CCEE datastore resources: a dataset's years, or resources by id.

    Args:
        dataset: the CKAN dataset id (``pld_horario``); its datastore resources are read.
        years: only the resources of these years (by the year in their name).
        resource_ids: resources to read, instead of ``dataset``/``years``.
        filters: equality filters, as in ``datastore_search``.
        q: full-text search, as in ``datastore_search``.
        sort: ``"COL asc|desc, ..."``; ``_id`` is added last so that pages never overlap.
        fields: the columns to read (default: all).
        page_size: rows per request (default 10 000; CKAN caps it at 32 000 by default and the
            applied value is used).
    """

    def __init__(
        self,
        *,
        dataset: str | None = None,
        years: Sequence[int] | None = None,
        resource_ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        q: str | None = None,
        sort: str | None = None,
        fields: Sequence[str] | None = None,
        page_size: int = PULL_PAGE_SIZE,
    ) -> None:
        if not dataset and not resource_ids:
            raise ValueError("give dataset (with optional years) or resource_ids")
        if resource_ids and (dataset or years):
            raise ValueError("resource_ids cannot be combined with dataset or years")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be an integer >= 1, got {page_size!r}")
        if years is not None and not all(
            isinstance(y, int) and not isinstance(y, bool) for y in years
        ):
            raise ValueError(f"years must be integers, got {list(years)!r}")
        if filters is not None and not isinstance(filters, Mapping):
            raise ValueError(f"filters must be a mapping of column to value, got {filters!r}")
        self.dataset = dataset
        self.years = sorted(set(years)) if years is not None else None
        self.resource_ids = list(resource_ids) if resource_ids else None
        self.filters = dict(filters) if filters else None
        self.q = q
        self.sort = stable_sort(sort or "")
        self.fields = list(fields) if fields else None
        self.page_size = page_size

    def identity(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "years": self.years,
            "resource_ids": self.resource_ids,
            "filters": self.filters,
            "q": self.q,
            "sort": self.sort,
            "fields": self.fields,
            "page_size": self.page_size,
        }

    def describe(self) -> str:
        return f"CCEE {self.dataset or ','.join(self.resource_ids or [])}"

    def _params(self, resource_id: str, *, limit: int, offset: int, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "resource_id": resource_id,
            "limit": limit,
            "offset": offset,
            "sort": self.sort,
        }
        if self.filters:
            params["filters"] = json.dumps(self.filters, ensure_ascii=False)
        if self.q:
            params["q"] = self.q
        if self.fields:
            params["fields"] = ",".join(self.fields)
        params.update(extra)
        return params

    async def _resources(self, handler: CceeHttpHandler) -> list[CkanResource]:
        assert self.dataset is not None
        resources = [r for r in await handler.async_resources(self.dataset) if r.datastore_active]
        if self.years is None:
            return resources
        by_year = {r.year: r for r in resources}
        missing = [y for y in self.years if y not in by_year]
        if missing:
            have = sorted(y for y in by_year if y is not None)
            raise ValueError(
                f"dataset {self.dataset!r} has no datastore resource for "
                f"{', '.join(map(str, missing))} (years available: {have})"
            )
        return [by_year[y] for y in self.years]

    async def plan(self, handler: HttpHandler) -> Plan:
        ccee = _ccee(handler)
        if self.resource_ids is not None:
            ids = list(self.resource_ids)
        else:
            ids = [r.id for r in await self._resources(ccee)]
        chunks: list[Chunk] = []
        columns: dict[str, Column] = {}
        totals: dict[str, int] = {}
        for resource_id in ids:
            # total and fields (no records); then the page size CKAN applies (ids only).
            described = await ccee.async_action(
                "datastore_search", **self._params(resource_id, limit=0, offset=0)
            )
            probe = await ccee.async_action(
                "datastore_search",
                **self._params(resource_id, limit=self.page_size, offset=0, fields="_id"),
            )
            total = int(described.get("total") or 0)
            echoed = int(probe.get("limit") or self.page_size)
            limit = min(echoed, self.page_size) if echoed > 0 else self.page_size
            totals[resource_id] = total
            for raw in described.get("fields") or []:
                _merge_column(columns, resource_id, raw)
            for offset in range(0, total, limit):
                chunks.append(
                    Chunk(
                        index=len(chunks),
                        key=f"{resource_id}@{offset}",
                        params={"resource_id": resource_id, "offset": offset, "limit": limit},
                    )
                )
        return Plan(chunks, list(columns.values()), ids, {"totals": totals})

    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> RawPage:
        params = dict(chunk.params)
        resource_id, offset, limit = params["resource_id"], params["offset"], params["limit"]
        response = await handler.async_get(
            f"{ACTION_PATH}/datastore_search",
            params=self._params(resource_id, limit=limit, offset=offset),
        )
        total = int(plan.facts["totals"][resource_id])
        if is_html(response):
            expect_json(response)  # raises: an HTML page (a WAF or maintenance page), not a page
        return RawPage(response, _page_rows, (resource_id, offset, limit, total))


def _ccee(handler: HttpHandler) -> CceeHttpHandler:
    if not isinstance(handler, CceeHttpHandler):
        raise TypeError(f"a CCEE pull needs a CceeHttpHandler, got {type(handler).__name__}")
    return handler


def _merge_column(columns: dict[str, Column], resource_id: str, raw: Any) -> None:
    name = str(raw.get("id")) if isinstance(raw, Mapping) else None
    if not name:
        return
    column = Column(name, ckan_column_type(str(raw.get("type") or "text")))
    known = columns.get(name)
    if known is None:
        columns[name] = column
    elif known.type != column.type:
        raise DataConsistencyError(
            f"field {name!r} is {known.type} in one resource and {column.type} in "
            f"{resource_id}: one output cannot hold both; pull the resources separately"
        )


def _page_rows(content: bytes, resource_id: str, offset: int, limit: int, total: int) -> Rows:
    """A page's records (in a worker process), checked against the plan."""
    try:
        payload = loads(content)
    except ValueError:
        raise PageContentError("expected a JSON page, got undecodable content") from None
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, dict):
        raise PageContentError("CKAN answer without a result", api=True)
    records = result.get("records") or []
    seen_total = int(result.get("total") or 0)
    if seen_total != total:
        raise DataConsistencyError(
            f"resource {resource_id} changed since the pull was planned (total {total} -> "
            f"{seen_total}); delete the checkpoint and pull again"
        )
    expected = min(limit, total - offset)
    if len(records) != expected:
        raise DataConsistencyError(
            f"resource {resource_id}: page at offset {offset} has {len(records)} records, "
            f"expected {expected}"
        )
    return list(records)
