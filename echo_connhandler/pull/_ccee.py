"""CCEE Dados Abertos datastore pulls: CKAN pages by offset, one or many resources (years).

The plan asks each resource for its ``total``, its ``fields`` (the output's columns and types)
and the page size CKAN really applies (it caps ``limit``, by default at 32 000, and echoes the
applied value: docs/services/ccee.md, "The pager"), and pins each resource's version (its
``last_modified``). Chunks are pages of ``offset``/``limit``, sorted by ``_id`` last so that
pages never overlap. Nothing a page says is taken on trust (docs/pulls.md, "What a pull
checks"): each page must have the planned total and number of records, every record the
resource's fields, and its sort keys must strictly increase within the page and from one page
to the next (a cache that ignores ``offset``, pages that overlap, a duplicated ``_id``); the
versions are read again before a checkpoint is resumed (a changed resource: the pull starts
afresh) and before the output is assembled (a changed resource: :class:`DataConsistencyError`
naming it and both versions, nothing written). Never a mix of two versions.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from echo_connhandler._ccee import (
    ACTION_PATH,
    CceeHttpHandler,
    CkanResource,
    stable_sort,
)
from echo_connhandler._exceptions import ApiError, DataConsistencyError
from echo_connhandler._handler import HttpHandler, expect_json, is_html
from echo_connhandler._json import loads
from echo_connhandler.pull._plan import (
    Chunk,
    ChunkDone,
    Column,
    ColumnType,
    DecodedPage,
    PageContentError,
    Plan,
    RawPage,
    Source,
)
from echo_connhandler.pull._registry import register_source

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


@register_source
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

    name = "ccee_datastore"
    handler_class = CceeHttpHandler

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
        by_year: dict[int | None, CkanResource] = {}
        for resource in resources:
            other = by_year.get(resource.year)
            if other is not None and resource.year in self.years:
                # Picking one would silently drop the other's rows (a corrected republication
                # published next to the original?): the user must choose, by resource_ids.
                raise DataConsistencyError(
                    f"dataset {self.dataset!r} has two datastore resources for {resource.year}: "
                    f"{other.name} ({other.id}) and {resource.name} ({resource.id}); pull one of "
                    "them by resource_ids"
                )
            by_year[resource.year] = resource
        missing = [y for y in self.years if y not in by_year]
        if missing:
            have = sorted(y for y in by_year if y is not None)
            raise ValueError(
                f"dataset {self.dataset!r} has no datastore resource for "
                f"{', '.join(map(str, missing))} (years available: {have})"
            )
        return [by_year[y] for y in self.years]

    async def _versions(self, ccee: CceeHttpHandler, ids: Sequence[str]) -> dict[str, str]:
        """Each resource's version: its ``last_modified`` (``metadata_modified`` when it has
        none; docs/services/ccee.md, "Timestamps and publications")."""
        if self.dataset is not None:
            found = {r.id: r for r in await ccee.async_resources(self.dataset)}
            resources = {i: found.get(i) for i in ids}
        else:
            resources = {}
            for resource_id in ids:
                raw = await ccee.async_action("resource_show", id=resource_id)
                resources[resource_id] = (
                    CkanResource.from_ckan(raw) if isinstance(raw, Mapping) else None
                )
        versions: dict[str, str] = {}
        for resource_id, resource in resources.items():
            if resource is None:
                raise DataConsistencyError(
                    f"resource {resource_id} is no longer in dataset {self.dataset!r}"
                )
            versions[resource_id] = str(resource.last_modified or "")
        return versions

    async def plan(self, handler: HttpHandler) -> Plan:
        ccee = _ccee(handler)
        if self.resource_ids is not None:
            ids = list(self.resource_ids)
        else:
            ids = [r.id for r in await self._resources(ccee)]
        versions = await self._versions(ccee, ids)
        chunks: list[Chunk] = []
        columns: dict[str, Column] = {}
        totals: dict[str, int] = {}
        fields: dict[str, list[str]] = {}
        for resource_id in ids:
            # total and fields (no records); then the page size CKAN applies (ids only).
            response, described = await _search(ccee, self._params(resource_id, limit=0, offset=0))
            total = described.get("total")
            if isinstance(total, bool) or not isinstance(total, int) or total < 0:
                raise ApiError.from_response(
                    response, f"resource {resource_id}: total is not a count ({total!r})"
                )
            raw_fields = described.get("fields")
            if not isinstance(raw_fields, list) or not all(
                isinstance(f, Mapping) and f.get("id") for f in raw_fields
            ):
                raise ApiError.from_response(
                    response, f"resource {resource_id}: fields is not a list of fields"
                )
            response, probe = await _search(
                ccee, self._params(resource_id, limit=self.page_size, offset=0, fields="_id")
            )
            echoed = probe.get("limit", self.page_size)
            if isinstance(echoed, bool) or not isinstance(echoed, int) or echoed < 0:
                raise ApiError.from_response(
                    response, f"resource {resource_id}: limit is not a count ({echoed!r})"
                )
            limit = min(echoed, self.page_size) if echoed > 0 else self.page_size
            totals[resource_id] = total
            fields[resource_id] = [str(f["id"]) for f in raw_fields]
            for raw in raw_fields:
                _merge_column(columns, resource_id, raw)
            for offset in range(0, total, limit):
                chunks.append(
                    Chunk(
                        index=len(chunks),
                        key=f"{resource_id}@{offset}",
                        params={"resource_id": resource_id, "offset": offset, "limit": limit},
                    )
                )
        facts = {"totals": totals, "fields": fields, "versions": versions}
        return Plan(chunks, list(columns.values()), ids, facts)

    async def check_versions(self, handler: HttpHandler, plan: Plan) -> None:
        pinned: Mapping[str, str] = plan.facts.get("versions") or {}
        if not pinned:  # a plan of an older release: nothing pinned to compare with
            return
        now = await self._versions(_ccee(handler), list(pinned))
        for resource_id, version in pinned.items():
            if now[resource_id] != version:
                raise DataConsistencyError(
                    f"resource {resource_id} was republished during the pull (version "
                    f"{version or 'none'} planned, {now[resource_id] or 'none'} now): its "
                    "pages would mix two versions; nothing was written, run the pull again"
                )

    def check_next(self, previous: ChunkDone, current: ChunkDone) -> None:
        resource_id = current.chunk.params["resource_id"]
        if previous.chunk.params["resource_id"] != resource_id:
            return
        before, after = previous.last_key, current.first_key
        if before is None or after is None:
            return
        directions = [descending for _, descending in self._sort_keys()]
        if _compare(before, after, directions) >= 0:
            raise DataConsistencyError(
                f"resource {resource_id}: the page at offset {current.chunk.params['offset']} "
                f"does not follow the page before it (its first row, key {_key_text(after)}, "
                f"is not after that page's last row, key {_key_text(before)}): the server "
                "repeats or overlaps pages (a cache that ignores offset?); nothing was written"
            )

    def _sort_keys(self) -> list[tuple[str, bool]]:
        """The sort as (column, descending) pairs (``_id`` is always among them)."""
        keys: list[tuple[str, bool]] = []
        for part in self.sort.split(","):
            words = part.split()
            if words:
                name = words[0].strip('"')
                keys.append((name, len(words) > 1 and words[1].lower() == "desc"))
        return keys

    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> RawPage:
        params = dict(chunk.params)
        resource_id, offset, limit = params["resource_id"], params["offset"], params["limit"]
        page_params = self._params(resource_id, limit=limit, offset=offset)
        fields = plan.facts.get("fields", {}).get(resource_id)
        # The keys are checked on ``_id`` even when the output leaves it out: it is asked for
        # with the page's fields and dropped once checked.
        with_id = bool(self.fields) and "_id" not in (self.fields or ())
        if with_id:
            page_params["fields"] = ",".join([*(self.fields or ()), "_id"])
        response = await handler.async_get(f"{ACTION_PATH}/datastore_search", params=page_params)
        total = int(plan.facts["totals"][resource_id])
        if is_html(response):
            expect_json(response)  # raises: an HTML page (a WAF or maintenance page), not a page
        received = (*fields, "_id") if fields and with_id else fields
        types = {c.name: c.type for c in plan.columns}
        types.setdefault("_id", "int")
        sort = self._sort_keys()
        # Keys are compared only when Python orders them as the database does: numbers, dates
        # and ``_id``. A sort on a text column follows the database's collation, which Python
        # cannot reproduce, and a sort on a column the page leaves out cannot be seen: those
        # pages get the other checks (docs/pulls.md, "What a pull checks").
        orderable = all(
            types.get(name) in _ORDERABLE and (received is None or name in received)
            for name, _ in sort
        )
        key_spec = tuple((name, types[name], down) for name, down in sort) if orderable else ()
        return RawPage(
            response,
            _page_rows,
            (
                resource_id,
                offset,
                limit,
                total,
                tuple(received) if received else None,
                key_spec,
                with_id,
            ),
        )


async def _search(
    ccee: CceeHttpHandler, params: Mapping[str, Any]
) -> tuple[httpx.Response, dict[str, Any]]:
    """A ``datastore_search`` answer and its ``result`` (an object, else ApiError)."""
    response = await ccee.async_get(
        f"{ACTION_PATH}/datastore_search", params=dict(params), response_ok=200
    )
    result = CceeHttpHandler._result(response)
    if not isinstance(result, dict):
        raise ApiError.from_response(response, "CKAN datastore_search result is not an object")
    return response, result


#: Logical types whose values Python orders as PostgreSQL does (ISO text for dates).
_ORDERABLE = frozenset({"int", "float", "bool", "timestamp", "date"})


def _key_part(value: Any, kind: str) -> list[Any]:
    """One sort column's value as a comparable, JSON-able pair, ordered as PostgreSQL orders
    them: numbers, then NaN (greater than every number, equal to itself), then null (last
    ascending, first descending)."""
    if value is None:
        return [2, None]
    if kind in ("int", "float") and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return [0, value]
    if isinstance(value, float) and math.isnan(value):
        return [1, None]
    return [0, value]


def _compare(a: Sequence[Any], b: Sequence[Any], descending: Sequence[bool]) -> int:
    """-1, 0 or 1 as key ``a`` sorts before, with or after key ``b``."""
    for part_a, part_b, down in zip(a, b, descending, strict=False):
        if part_a == part_b:
            continue
        try:
            before = part_a < part_b
        except TypeError:  # values of two types: not comparable, not a finding
            return -1
        return (1 if before else -1) if down else (-1 if before else 1)
    return 0


def _key_text(key: Sequence[Any]) -> str:
    shown = {1: "NaN", 2: "null"}
    return "(" + ", ".join(shown.get(flag, repr(value)) for flag, value in key) + ")"


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


def _page_rows(
    content: bytes,
    resource_id: str,
    offset: int,
    limit: int,
    total: int,
    fields: tuple[str, ...] | None = None,
    key_spec: tuple[tuple[str, str, bool], ...] = (),
    drop_id: bool = False,
) -> DecodedPage:
    """A page's records (in a worker thread or process), checked against the plan: the total,
    the number of records, the fields of every record, unique ``_id`` values and, when the sort
    is orderable (``key_spec``), keys that strictly increase."""
    try:
        payload = loads(content)
    except ValueError:
        raise PageContentError("expected a JSON page, got undecodable content") from None
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, dict):
        raise PageContentError("CKAN answer without a result", api=True)
    records = result.get("records")
    if records is None:
        records = []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PageContentError(
            f"resource {resource_id}: records at offset {offset} is not a list of objects",
            api=True,
        )
    seen_total = result.get("total")
    if isinstance(seen_total, bool) or not isinstance(seen_total, int):
        raise PageContentError(
            f"resource {resource_id}: total at offset {offset} is not a count "
            f"({str(seen_total)[:40]!r})",
            api=True,
        )
    if seen_total != total:
        raise DataConsistencyError(
            f"resource {resource_id} changed since the pull was planned (total {total} -> "
            f"{seen_total}); nothing was written, run the pull again"
        )
    expected = min(limit, total - offset)
    if len(records) != expected:
        raise DataConsistencyError(
            f"resource {resource_id}: page at offset {offset} has {len(records)} records, "
            f"expected {expected}"
        )
    if fields is not None:
        _check_fields(records, fields, resource_id, offset)
    try:
        ids = list(map(operator.itemgetter("_id"), records))
    except KeyError:  # records without _id (fields that leave it out): None for those
        ids = [record.get("_id") for record in records]
    id_types = set(map(type, ids))
    # One C-level pass when every _id is an int (CKAN's serial), the general one otherwise.
    unique = len(set(ids) if id_types == {int} else set(map(repr, ids))) == len(ids)
    if (fields is None or "_id" in fields) and not unique:
        duplicate = _first_repeated(ids)
        raise DataConsistencyError(
            f"resource {resource_id}: _id {duplicate!r} appears twice in the page at offset "
            f"{offset}: the server repeats rows; nothing was written"
        )
    if not key_spec or not records:
        return DecodedPage(_without_id(records) if drop_id else records)
    directions = [down for _, _, down in key_spec]
    if len(key_spec) == 1:
        # The default sort (``_id`` alone): one column of numbers, checked at C speed; any
        # other sort goes the general way below.
        name, _, down = key_spec[0]
        values = ids if name == "_id" else [record.get(name) for record in records]
        in_order = operator.gt if down else operator.lt
        if set(map(type, values)) <= {int, float} and all(map(in_order, values, values[1:])):
            first, last = [[0, values[0]]], [[0, values[-1]]]
            return DecodedPage(_without_id(records) if drop_id else records, first, last)
    keys = [[_key_part(record.get(name), kind) for name, kind, _ in key_spec] for record in records]
    for number in range(1, len(keys)):
        if _compare(keys[number - 1], keys[number], directions) >= 0:
            raise DataConsistencyError(
                f"resource {resource_id}: rows of the page at offset {offset} are not in the "
                f"order asked for (row {number} has key {_key_text(keys[number])} after "
                f"{_key_text(keys[number - 1])}): the server does not sort by _id last; "
                "nothing was written"
            )
    return DecodedPage(_without_id(records) if drop_id else records, keys[0], keys[-1])


def _first_repeated(values: Sequence[Any]) -> Any:
    """The first value seen twice (by its repr: values of any type)."""
    seen: set[str] = set()
    for value in values:
        if repr(value) in seen:
            return value
        seen.add(repr(value))
    return None


def _without_id(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without the ``_id`` asked for only to check the keys."""
    for record in records:
        del record["_id"]
    return records


def _check_fields(
    records: Sequence[Mapping[str, Any]], fields: Sequence[str], resource_id: str, offset: int
) -> None:
    """Every record has exactly the resource's fields: a column missing from a later page
    would be written as nulls, a column the plan never saw would be dropped."""
    expected = tuple(fields)
    if all(map(expected.__eq__, map(tuple, records))):  # the usual case, at C speed
        return
    wanted = set(expected)
    for record in records:
        if tuple(record) == expected or record.keys() == wanted:
            continue
        missing = sorted(wanted - record.keys())
        extra = sorted(record.keys() - wanted)
        what = (
            f"lacks {', '.join(map(repr, missing))}"
            if missing
            else f"has {', '.join(map(repr, extra))} that the resource did not declare"
        )
        raise DataConsistencyError(
            f"resource {resource_id}: a record of the page at offset {offset} {what} (fields "
            "planned: " + ", ".join(expected) + "); nothing was written"
        )
