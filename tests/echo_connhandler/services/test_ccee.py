"""CceeHttpHandler against the CCEE emulator (CKAN behind a WAF), sync and async."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from echo_connhandler import (
    ApiError,
    CceeHttpHandler,
    CkanResource,
    HttpConnProperties,
    WafBlockedError,
    redact,
)
from echo_connhandler.sandbox import Sandbox

Connect = Callable[..., Awaitable[Any]]
Call = Callable[..., Awaitable[Any]]
Records = list[dict[str, Any]]

ACTION = "/api/3/action"
YEARS = [2021, 2022, 2023, 2024, 2025]
#: pld_horario 2024: 366 days x 24 hours x 4 submarkets, more than CKAN's 32 000 cap.
ROWS_2024 = 366 * 24 * 4


def props(sb: Sandbox) -> HttpConnProperties:
    return HttpConnProperties(host=sb.urls.ccee)


def stats(sb: Sandbox) -> Any:
    return sb.faults("ccee").stats


def hits(sb: Sandbox, action: str) -> int:
    return int(stats(sb)["requests"].get(f"{ACTION}/{action}", 0))


async def resource_id(handler: CceeHttpHandler, year: int, dataset: str = "pld_horario") -> str:
    if handler.is_connected:
        resources = handler.resources(dataset)
    else:
        resources = await handler.async_resources(dataset)
    return next(r.id for r in resources if r.year == year)


async def collect(handler: CceeHttpHandler, mode: str, rid: str, **kwargs: Any) -> Records:
    if mode == "sync":
        return list(handler.iter_datastore_records(rid, **kwargs))
    return [record async for record in handler.aiter_datastore_records(rid, **kwargs)]


def assert_complete(records: Records, total: int) -> None:
    ids = [record["_id"] for record in records]
    assert len(records) == total
    assert ids == list(range(1, total + 1))


async def test_warmup_on_connect_and_referer(sb: Sandbox, connect: Connect, call: Call) -> None:
    """Connecting warms up once (GET /); API calls then carry the portal as Referer."""
    handler = await connect(CceeHttpHandler, props(sb))
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["requests"] == {"/": 1}
    response = await call(handler, "get", f"{ACTION}/package_list")
    assert response.request.headers["Referer"] == f"{sb.urls.ccee}/"
    assert response.request.headers["Accept-Language"].startswith("pt-BR")
    assert "ak_bmsc=" in response.request.headers["Cookie"]
    assert await call(handler, "package_list") == sorted(response.json()["result"])
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["waf_blocks"] == 0


async def test_block_mid_session_rewarms_once(sb: Sandbox, connect: Connect, call: Call) -> None:
    """After the WAF invalidates the cookies, the next call warms up again once and succeeds."""
    handler = await connect(CceeHttpHandler, props(sb))
    assert "pld_horario" in await call(handler, "package_list")
    sb.faults("ccee").block_waf()
    assert "pld_horario" in await call(handler, "package_list")
    assert "pld_horario" in await call(handler, "package_list")
    assert stats(sb)["warmups"] == 2
    assert stats(sb)["waf_blocks"] == 1
    assert hits(sb, "package_list") == 4  # ok, 403, ok after the re-warm, ok


async def test_block_mid_pull_completes(
    make_sb: Callable[..., Sandbox], connect: Connect, mode: str
) -> None:
    """A WAF block between two pages of a pull costs one re-warm, and no row."""
    sb = make_sb(ccee_rows_per_resource=3000, ccee_max_limit=500)
    handler = await connect(CceeHttpHandler, props(sb))
    rid = await resource_id(handler, 2023)
    records: Records = []
    if mode == "sync":
        for page in handler.iter_datastore_pages(rid):
            records += page.records
            if page.offset == 1000:
                sb.faults("ccee").block_waf()
    else:
        async for page in handler.aiter_datastore_pages(rid, concurrency=1):
            records += page.records
            if page.offset == 1000:
                sb.faults("ccee").block_waf()
    assert_complete(records, 3000)
    assert stats(sb)["warmups"] == 2
    assert stats(sb)["waf_blocks"] >= 1


async def test_block_during_concurrent_pull_rewarms_once(
    make_sb: Callable[..., Sandbox], fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """Eight pages in flight all blocked at once share a single re-warm."""
    sb = make_sb(ccee_rows_per_resource=3000, ccee_max_limit=500)
    handler = handlers(CceeHttpHandler(props(sb), skip_connect=True, **fast))
    rid = await resource_id(handler, 2024)
    records: Records = []
    async for page in handler.aiter_datastore_pages(rid, concurrency=8):
        if page.offset == 0:
            sb.faults("ccee").block_waf()
        records += page.records
    assert_complete(records, 3000)
    assert stats(sb)["warmups"] == 2
    assert 1 <= stats(sb)["waf_blocks"] <= 5  # at most the five pages fetched after the block


@pytest.mark.parametrize("status", [403, 200], ids=["html-403", "html-200"])
async def test_persistent_block_raises_without_looping(
    sb: Sandbox, connect: Connect, call: Call, status: int
) -> None:
    """A WAF page answered again after the re-warm raises WafBlockedError: no third attempt."""
    handler = await connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").script("package_list", status=status, html=True, times=5)
    with pytest.raises(WafBlockedError) as caught:
        await call(handler, "package_list")
    message = str(caught.value)
    assert "blocked by the CCEE WAF" in message
    assert "even after a fresh warm-up" in message
    assert caught.value.status_code == status
    assert hits(sb, "package_list") == 2
    assert stats(sb)["requests"]["/"] == 2  # connect + one re-warm
    assert stats(sb)["warmups"] == 2


async def test_waf_blocking_every_request_raises(sb: Sandbox, connect: Connect, call: Call) -> None:
    """With every request blocked, the call stops after warm-up + two attempts."""
    handler = await connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").configure(waf_block_rate=1.0)
    sb.faults("ccee").reset_stats()
    with pytest.raises(WafBlockedError) as caught:
        await call(handler, "package_show", "pld_horario")
    assert caught.value.status_code == 403
    assert "Acesso bloqueado" in str(caught.value)
    assert stats(sb)["requests"] == {"/": 1, f"{ACTION}/package_show": 2}
    assert stats(sb)["waf_blocks"] == 2


async def test_html_200_where_json_expected_rewarms(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """An HTML page with HTTP 200 on the API is a WAF answer too: re-warm once, then succeed."""
    handler = await connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").script("package_show", html=True)
    package = await call(handler, "package_show", "pld_media_diaria")
    assert package["name"] == "pld_media_diaria"
    assert stats(sb)["warmups"] == 2
    assert hits(sb, "package_show") == 2


async def test_package_helpers(sb: Sandbox, connect: Connect, call: Call) -> None:
    """package_list, package_show and resources() (one per year, sorted by year)."""
    handler = await connect(CceeHttpHandler, props(sb))
    assert await call(handler, "package_list") == [
        "geracao_horaria_submercado",
        "pld_horario",
        "pld_media_diaria",
    ]
    package = await call(handler, "package_show", "pld_horario")
    assert package["name"] == "pld_horario"
    assert len(package["resources"]) == len(YEARS)
    resources = await call(handler, "resources", "pld_horario")
    assert all(isinstance(r, CkanResource) for r in resources)
    assert [r.year for r in resources] == YEARS
    assert [r.name for r in resources] == [f"PLD_HORARIO_{year}" for year in YEARS]
    assert all(r.datastore_active and r.format == "CSV" for r in resources)
    assert {r.id for r in resources} == {raw["id"] for raw in package["resources"]}


async def test_datastore_search_single_page(sb: Sandbox, connect: Connect, call: Call) -> None:
    """One datastore_search call returns the page asked for, with total and the echoed limit."""
    handler = await connect(CceeHttpHandler, props(sb))
    rid = await resource_id(handler, 2024)
    result = await call(handler, "datastore_search", rid, limit=10, offset=20, sort="_id")
    assert result["total"] == ROWS_2024
    assert result["limit"] == 10
    assert [r["_id"] for r in result["records"]] == list(range(21, 31))
    assert {f["id"] for f in result["fields"]} >= {"_id", "SUBMERCADO", "DIA", "HORA", "PLD_HORA"}
    capped = await call(handler, "datastore_search", rid, limit=50_000, fields=["_id"])
    assert capped["limit"] == 32_000
    assert len(capped["records"]) == 32_000


async def test_pager_returns_large_resource_complete(
    sb: Sandbox, connect: Connect, mode: str
) -> None:
    """A resource above the 32 000 cap comes back whole, in order, without duplicates."""
    handler = await connect(CceeHttpHandler, props(sb))
    rid = await resource_id(handler, 2024)
    records = await collect(handler, mode, rid)
    assert_complete(records, ROWS_2024)
    assert records[0]["DIA"] == "2024-01-01"
    assert records[-1]["DIA"] == "2024-12-31"
    assert hits(sb, "datastore_search") == 2


async def test_async_pager_concurrency_gives_identical_results(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """Concurrency 1 and 8 return the same pages in the same order."""
    handler = handlers(CceeHttpHandler(props(sb), skip_connect=True, **fast))
    rid = await resource_id(handler, 2022, dataset="geracao_horaria_submercado")
    results = []
    for concurrency in (1, 8):
        pages = [
            page
            async for page in handler.aiter_datastore_pages(
                rid, page_size=2000, concurrency=concurrency
            )
        ]
        results.append(pages)
    one, eight = results
    assert [p.offset for p in one] == list(range(0, 35040, 2000))
    assert one == eight
    assert_complete([r for page in eight for r in page.records], 35040)


async def test_pager_steps_by_the_echoed_limit(
    make_sb: Callable[..., Sandbox], connect: Connect, mode: str
) -> None:
    """When the server caps the limit below page_size, pages follow the echoed limit."""
    sb = make_sb(ccee_max_limit=1000)
    handler = await connect(CceeHttpHandler, props(sb))
    rid = await resource_id(handler, 2023)
    records = await collect(handler, mode, rid, page_size=32_000)
    assert_complete(records, 35040)
    assert hits(sb, "datastore_search") == math.ceil(35040 / 1000)


async def test_pager_with_filters(sb: Sandbox, connect: Connect, mode: str) -> None:
    """Filters restrict the pull; the filtered rows still come complete and ordered."""
    handler = await connect(CceeHttpHandler, props(sb))
    rid = await resource_id(handler, 2021)
    records = await collect(
        handler, mode, rid, filters={"SUBMERCADO": "SUL"}, page_size=3000, fields=["_id", "DIA"]
    )
    assert len(records) == 365 * 24
    assert all(set(r) == {"_id", "DIA"} for r in records)
    ids = [r["_id"] for r in records]
    assert ids == list(range(2, 35040 + 1, 4))  # SUL is the second submarket of each hour
    both = await collect(
        handler, mode, rid, filters={"SUBMERCADO": ["SUL", "NORTE"], "DIA": "2021-03-01"}
    )
    assert len(both) == 48
    assert {r["SUBMERCADO"] for r in both} == {"SUL", "NORTE"}
    assert {r["DIA"] for r in both} == {"2021-03-01"}


@pytest.mark.parametrize(
    ("action", "kwargs", "expected"),
    [
        ("package_show", {"dataset_id": "no_such_dataset"}, "CKAN Not Found Error"),
        ("datastore_search", {"filters": {"NO_SUCH_COLUMN": "x"}}, "CKAN Validation Error"),
        ("datastore_search", {"sort": "NO_SUCH_COLUMN desc"}, "CKAN Validation Error"),
    ],
    ids=["unknown-dataset", "bad-filter", "bad-sort"],
)
async def test_ckan_errors_raise_api_error_once(
    sb: Sandbox,
    connect: Connect,
    call: Call,
    action: str,
    kwargs: dict[str, Any],
    expected: str,
) -> None:
    """``success: false`` answers are ApiError, sent once (never retried)."""
    handler = await connect(CceeHttpHandler, props(sb))
    if action == "datastore_search":
        kwargs = {"resource_id": await resource_id(handler, 2025), **kwargs}
    sb.faults("ccee").reset_stats()
    with pytest.raises(ApiError) as caught:
        await call(handler, action, **kwargs)
    assert expected in str(caught.value)
    assert caught.value.status_code in (404, 409)
    assert hits(sb, action) == 1


async def test_hundred_coroutines_warm_up_once(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """100 coroutines starting at once on a fresh handler cause exactly one warm-up."""
    handler = handlers(CceeHttpHandler(props(sb), skip_connect=True, **fast))
    results = await asyncio.gather(*(handler.async_package_list() for _ in range(100)))
    assert all("pld_horario" in result for result in results)
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["requests"]["/"] == 1
    assert hits(sb, "package_list") == 100


async def test_pager_survives_random_faults(
    make_sb: Callable[..., Sandbox], connect: Connect, mode: str
) -> None:
    """503s, 429s with Retry-After 0 and dropped connections: the pull is still complete."""
    sb = make_sb(ccee_rows_per_resource=4000, ccee_max_limit=50)
    handler = await connect(CceeHttpHandler, props(sb))
    rid = await resource_id(handler, 2022, dataset="pld_media_diaria")
    sb.faults("ccee").configure(
        error_rate=0.1, error_statuses=[503], rate_limit_rate=0.1, retry_after=0, drop_rate=0.08
    )
    records = await collect(handler, mode, rid, page_size=50)
    assert_complete(records, 4000)
    faults = stats(sb)["faults"]
    assert faults.get("error", 0) > 0
    assert faults.get("rate_limit", 0) > 0
    assert faults.get("drop", 0) > 0


async def test_waf_cookie_is_redacted(sb: Sandbox, connect: Connect, call: Call) -> None:
    """The WAF cookie is a registered secret: masked even where the server echoes it."""
    handler = await connect(CceeHttpHandler, props(sb))
    response = await call(handler, "get", f"{ACTION}/package_list")
    cookie = response.request.headers["Cookie"].split("ak_bmsc=", 1)[1].split(";")[0]
    assert redact(f"<{cookie}>") == "<***>"
    with pytest.raises(ApiError) as caught:  # CKAN echoes the unknown resource id
        await call(handler, "datastore_search", cookie)
    assert cookie not in str(caught.value)
    assert "***" in str(caught.value)


async def test_blocked_warmup_is_not_retried(sb: Sandbox, connect: Connect) -> None:
    """A bot-like User-Agent is blocked at the warm-up itself: WafBlockedError, one request."""
    blocked = HttpConnProperties(host=sb.urls.ccee, headers={"User-Agent": "curl/8.5.0"})
    with pytest.raises(WafBlockedError, match="blocked the warm-up request itself"):
        await connect(CceeHttpHandler, blocked)
    assert stats(sb)["requests"] == {"/": 1}
    assert stats(sb)["warmups"] == 0


async def test_sync_warmup_serves_the_async_client(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """The WAF cookie of the sync connect is reused by the async client: one warm-up."""
    handler = handlers(CceeHttpHandler(props(sb), **fast))
    assert "pld_horario" in await handler.async_package_list()
    assert "pld_horario" in handler.package_list()
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["waf_blocks"] == 0
