"""The CCEE pager refuses to lose or duplicate rows (narrow unit tests over MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from echo_connhandler import CceeHttpHandler, DataConsistencyError, HttpConnProperties

Page = Callable[[int, int], dict[str, Any]]


def _portal(page: Page, seen: list[dict[str, str]]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/":
            return httpx.Response(
                200, text="<html>portal</html>", headers={"content-type": "text/html"}
            )
        params = dict(request.url.params)
        seen.append(params)
        result = page(int(params["offset"]), int(params["limit"]))
        return httpx.Response(200, json={"success": True, "result": result})

    return handle


def _handler(page: Page, seen: list[dict[str, str]], **kwargs: Any) -> CceeHttpHandler:
    class Fake(CceeHttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {
                **super()._client_settings(),
                "transport": httpx.MockTransport(_portal(page, seen)),
            }

    return Fake(HttpConnProperties(host="https://ccee.test"), max_retries=0, **kwargs)


def _rows(offset: int, count: int) -> list[dict[str, Any]]:
    return [{"_id": i + 1} for i in range(offset, offset + count)]


def test_total_changing_mid_pull_is_an_error() -> None:
    """A resource that grows during the pull stops it instead of silently missing rows."""

    def page(offset: int, limit: int) -> dict[str, Any]:
        total = 25 if offset == 0 else 26
        return {"records": _rows(offset, min(10, total - offset)), "total": total, "limit": 10}

    with pytest.raises(DataConsistencyError, match="changed during the pull"):
        list(_handler(page, []).iter_datastore_records("r1", page_size=10))


def test_short_page_is_an_error() -> None:
    """A page with fewer records than planned is an error, not a gap."""

    def page(offset: int, limit: int) -> dict[str, Any]:
        count = 9 if offset == 10 else min(10, 25 - offset)
        return {"records": _rows(offset, count), "total": 25, "limit": 10}

    with pytest.raises(DataConsistencyError, match="offset 10 has 9 records, expected 10"):
        list(_handler(page, []).iter_datastore_records("r1", page_size=10))


def test_empty_first_page_with_a_total_is_an_error() -> None:
    """No records at offset 0 while total says there are some: an error."""

    def page(offset: int, limit: int) -> dict[str, Any]:
        return {"records": [], "total": 5, "limit": 10}

    with pytest.raises(DataConsistencyError, match="no records at offset 0"):
        list(_handler(page, []).iter_datastore_records("r1"))


NON_UNIQUE_SORTS = pytest.mark.parametrize(
    ("sort", "sent"), [("DATA", "DATA, _id"), ("_id desc", "_id desc"), ("", "_id")]
)


def _fifteen_rows(offset: int, limit: int) -> dict[str, Any]:
    return {"records": _rows(offset, min(limit, 15 - offset)), "total": 15, "limit": 10}


def _check_tiebreaker(records: list[dict[str, Any]], seen: list[dict[str, str]], sent: str) -> None:
    assert [r["_id"] for r in records] == list(range(1, 16))
    assert {params["sort"] for params in seen} == {sent}


@NON_UNIQUE_SORTS
def test_non_unique_sort_gets_id_as_tiebreaker_sync(sort: str, sent: str) -> None:
    """Pages of a non-unique order could overlap: _id is appended as the last sort key (sync)."""
    seen: list[dict[str, str]] = []
    handler = _handler(_fifteen_rows, seen)
    records = list(handler.iter_datastore_records("r1", sort=sort, page_size=10))
    _check_tiebreaker(records, seen, sent)
    handler.close()


@NON_UNIQUE_SORTS
async def test_non_unique_sort_gets_id_as_tiebreaker_async(sort: str, sent: str) -> None:
    """Pages of a non-unique order could overlap: _id is appended as the last sort key (async)."""
    seen: list[dict[str, str]] = []
    handler = _handler(_fifteen_rows, seen, skip_connect=True)  # the async path warms up itself
    records = [r async for r in handler.aiter_datastore_records("r1", sort=sort, page_size=10)]
    _check_tiebreaker(records, seen, sent)
    await handler.async_close()
    handler.close()


def test_filters_travel_as_json() -> None:
    """filters= is sent as a JSON object string, as CKAN expects."""

    def page(offset: int, limit: int) -> dict[str, Any]:
        return {"records": _rows(0, 1), "total": 1, "limit": 10}

    seen: list[dict[str, str]] = []
    list(_handler(page, seen).iter_datastore_records("r1", filters={"SUBMERCADO": "SUL"}))
    assert json.loads(seen[0]["filters"]) == {"SUBMERCADO": "SUL"}
