"""CceeHttpHandler against the CCEE emulator (CKAN behind a WAF), sync and async.

Each scenario is a pair: ``test_..._sync`` (plain function, sync API, no event loop) and
``test_..._async`` (coroutine, ``async_*`` API); their non-I/O checks are shared helpers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
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

SyncConnect = Callable[..., Any]
AsyncConnect = Callable[..., Awaitable[Any]]
Records = list[dict[str, Any]]

ACTION = "/api/3/action"
YEARS = [2021, 2022, 2023, 2024, 2025]
#: pld_horario 2024: 366 days x 24 hours x 4 submarkets, more than CKAN's 32 000 cap.
ROWS_2024 = 366 * 24 * 4
PERSISTENT_BLOCK = pytest.mark.parametrize("status", [403, 200], ids=["html-403", "html-200"])
CKAN_ERRORS = pytest.mark.parametrize(
    ("action", "kwargs", "expected"),
    [
        ("package_show", {"dataset_id": "no_such_dataset"}, "CKAN Not Found Error"),
        ("datastore_search", {"filters": {"NO_SUCH_COLUMN": "x"}}, "CKAN Validation Error"),
        ("datastore_search", {"sort": "NO_SUCH_COLUMN desc"}, "CKAN Validation Error"),
    ],
    ids=["unknown-dataset", "bad-filter", "bad-sort"],
)
RANDOM_FAULTS: dict[str, Any] = {
    "error_rate": 0.1,
    "error_statuses": [503],
    "rate_limit_rate": 0.1,
    "retry_after": 0,
    "drop_rate": 0.08,
}
SUL_2021: dict[str, Any] = {
    "filters": {"SUBMERCADO": "SUL"},
    "page_size": 3000,
    "fields": ["_id", "DIA"],
}
SUL_NORTE_DAY: dict[str, Any] = {"filters": {"SUBMERCADO": ["SUL", "NORTE"], "DIA": "2021-03-01"}}


def props(sb: Sandbox) -> HttpConnProperties:
    return HttpConnProperties(host=sb.urls.ccee)


def stats(sb: Sandbox) -> Any:
    return sb.faults("ccee").stats


def hits(sb: Sandbox, action: str) -> int:
    return int(stats(sb)["requests"].get(f"{ACTION}/{action}", 0))


def pick(resources: list[CkanResource], year: int) -> str:
    return next(r.id for r in resources if r.year == year)


def resource_id_sync(handler: CceeHttpHandler, year: int, dataset: str = "pld_horario") -> str:
    return pick(handler.resources(dataset), year)


async def resource_id_async(
    handler: CceeHttpHandler, year: int, dataset: str = "pld_horario"
) -> str:
    return pick(await handler.async_resources(dataset), year)


def collect_sync(handler: CceeHttpHandler, rid: str, **kwargs: Any) -> Records:
    return list(handler.iter_datastore_records(rid, **kwargs))


async def collect_async(handler: CceeHttpHandler, rid: str, **kwargs: Any) -> Records:
    return [record async for record in handler.aiter_datastore_records(rid, **kwargs)]


def assert_complete(records: Records, total: int) -> None:
    ids = [record["_id"] for record in records]
    assert len(records) == total
    assert ids == list(range(1, total + 1))


# -- warm-up and the WAF --------------------------------------------------------------------------
def check_warmed_up_on_connect(sb: Sandbox) -> None:
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["requests"] == {"/": 1}


def check_browser_like(sb: Sandbox, response: httpx.Response) -> None:
    assert response.request.headers["Referer"] == f"{sb.urls.ccee}/"
    assert response.request.headers["Accept-Language"].startswith("pt-BR")
    assert "ak_bmsc=" in response.request.headers["Cookie"]


def check_one_warmup_no_block(sb: Sandbox) -> None:
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["waf_blocks"] == 0


def test_warmup_on_connect_and_referer_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """Connecting warms up once (GET /); API calls then carry the portal as Referer (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    check_warmed_up_on_connect(sb)
    response = handler.get(f"{ACTION}/package_list")
    check_browser_like(sb, response)
    assert handler.package_list() == sorted(response.json()["result"])
    check_one_warmup_no_block(sb)


async def test_warmup_on_connect_and_referer_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """Connecting warms up once (GET /); API calls then carry the portal as Referer (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    check_warmed_up_on_connect(sb)
    response = await handler.async_get(f"{ACTION}/package_list")
    check_browser_like(sb, response)
    assert await handler.async_package_list() == sorted(response.json()["result"])
    check_one_warmup_no_block(sb)


def check_rewarmed_once(sb: Sandbox) -> None:
    assert stats(sb)["warmups"] == 2
    assert stats(sb)["waf_blocks"] == 1
    assert hits(sb, "package_list") == 4  # ok, 403, ok after the re-warm, ok


def test_block_mid_session_rewarms_once_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """After the WAF invalidates the cookies, the next call warms up again once (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    assert "pld_horario" in handler.package_list()
    sb.faults("ccee").block_waf()
    assert "pld_horario" in handler.package_list()
    assert "pld_horario" in handler.package_list()
    check_rewarmed_once(sb)


async def test_block_mid_session_rewarms_once_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """After the WAF invalidates the cookies, the next call warms up again once (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    assert "pld_horario" in await handler.async_package_list()
    sb.faults("ccee").block_waf()
    assert "pld_horario" in await handler.async_package_list()
    assert "pld_horario" in await handler.async_package_list()
    check_rewarmed_once(sb)


def check_pull_after_block(sb: Sandbox, records: Records) -> None:
    assert_complete(records, 3000)
    assert stats(sb)["warmups"] == 2
    assert stats(sb)["waf_blocks"] >= 1


def test_block_mid_pull_completes_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect
) -> None:
    """A WAF block between two pages of a pull costs one re-warm, and no row (sync)."""
    sb = make_sb(ccee_rows_per_resource=3000, ccee_max_limit=500)
    handler = sync_connect(CceeHttpHandler, props(sb))
    rid = resource_id_sync(handler, 2023)
    records: Records = []
    for page in handler.iter_datastore_pages(rid):
        records += page.records
        if page.offset == 1000:
            sb.faults("ccee").block_waf()
    check_pull_after_block(sb, records)


async def test_block_mid_pull_completes_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect
) -> None:
    """A WAF block between two pages of a pull costs one re-warm, and no row (async)."""
    sb = make_sb(ccee_rows_per_resource=3000, ccee_max_limit=500)
    handler = await async_connect(CceeHttpHandler, props(sb))
    rid = await resource_id_async(handler, 2023)
    records: Records = []
    async for page in handler.aiter_datastore_pages(rid, concurrency=1):
        records += page.records
        if page.offset == 1000:
            sb.faults("ccee").block_waf()
    check_pull_after_block(sb, records)


async def test_block_during_concurrent_pull_rewarms_once(
    make_sb: Callable[..., Sandbox], fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """Eight pages in flight all blocked at once share a single re-warm."""
    sb = make_sb(ccee_rows_per_resource=3000, ccee_max_limit=500)
    handler = async_handlers(CceeHttpHandler(props(sb), skip_connect=True, **fast))
    rid = await resource_id_async(handler, 2024)
    records: Records = []
    async for page in handler.aiter_datastore_pages(rid, concurrency=8):
        if page.offset == 0:
            sb.faults("ccee").block_waf()
        records += page.records
    assert_complete(records, 3000)
    assert stats(sb)["warmups"] == 2
    assert 1 <= stats(sb)["waf_blocks"] <= 5  # at most the five pages fetched after the block


def check_persistent_block(
    sb: Sandbox, caught: pytest.ExceptionInfo[WafBlockedError], status: int
) -> None:
    message = str(caught.value)
    assert "blocked by the CCEE WAF" in message
    assert "even after a fresh warm-up" in message
    assert caught.value.status_code == status
    assert hits(sb, "package_list") == 2
    assert stats(sb)["requests"]["/"] == 2  # connect + one re-warm
    assert stats(sb)["warmups"] == 2


@PERSISTENT_BLOCK
def test_persistent_block_raises_without_looping_sync(
    sb: Sandbox, sync_connect: SyncConnect, status: int
) -> None:
    """A WAF page again after the re-warm raises WafBlockedError: no third attempt (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").script("package_list", status=status, html=True, times=5)
    with pytest.raises(WafBlockedError) as caught:
        handler.package_list()
    check_persistent_block(sb, caught, status)


@PERSISTENT_BLOCK
async def test_persistent_block_raises_without_looping_async(
    sb: Sandbox, async_connect: AsyncConnect, status: int
) -> None:
    """A WAF page again after the re-warm raises WafBlockedError: no third attempt (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").script("package_list", status=status, html=True, times=5)
    with pytest.raises(WafBlockedError) as caught:
        await handler.async_package_list()
    check_persistent_block(sb, caught, status)


def block_everything(sb: Sandbox) -> None:
    sb.faults("ccee").configure(waf_block_rate=1.0)
    sb.faults("ccee").reset_stats()


def check_blocked_everywhere(sb: Sandbox, caught: pytest.ExceptionInfo[WafBlockedError]) -> None:
    assert caught.value.status_code == 403
    assert "Acesso bloqueado" in str(caught.value)
    assert stats(sb)["requests"] == {"/": 1, f"{ACTION}/package_show": 2}
    assert stats(sb)["waf_blocks"] == 2


def test_waf_blocking_every_request_raises_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """With every request blocked, the call stops after warm-up + two attempts (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    block_everything(sb)
    with pytest.raises(WafBlockedError) as caught:
        handler.package_show("pld_horario")
    check_blocked_everywhere(sb, caught)


async def test_waf_blocking_every_request_raises_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """With every request blocked, the call stops after warm-up + two attempts (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    block_everything(sb)
    with pytest.raises(WafBlockedError) as caught:
        await handler.async_package_show("pld_horario")
    check_blocked_everywhere(sb, caught)


def check_html_rewarm(sb: Sandbox, package: dict[str, Any]) -> None:
    assert package["name"] == "pld_media_diaria"
    assert stats(sb)["warmups"] == 2
    assert hits(sb, "package_show") == 2


def test_html_200_where_json_expected_rewarms_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """An HTML page with HTTP 200 on the API is a WAF answer too: re-warm once (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").script("package_show", html=True)
    check_html_rewarm(sb, handler.package_show("pld_media_diaria"))


async def test_html_200_where_json_expected_rewarms_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """An HTML page with HTTP 200 on the API is a WAF answer too: re-warm once (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    sb.faults("ccee").script("package_show", html=True)
    check_html_rewarm(sb, await handler.async_package_show("pld_media_diaria"))


def check_blocked_warmup(sb: Sandbox) -> None:
    assert stats(sb)["requests"] == {"/": 1}
    assert stats(sb)["warmups"] == 0


def bot_props(sb: Sandbox) -> HttpConnProperties:
    return HttpConnProperties(host=sb.urls.ccee, headers={"User-Agent": "curl/8.5.0"})


def test_blocked_warmup_is_not_retried_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """A bot-like User-Agent is blocked at the warm-up itself: one request (sync)."""
    with pytest.raises(WafBlockedError, match="blocked the warm-up request itself"):
        sync_connect(CceeHttpHandler, bot_props(sb))
    check_blocked_warmup(sb)


async def test_blocked_warmup_is_not_retried_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """A bot-like User-Agent is blocked at the warm-up itself: one request (async)."""
    with pytest.raises(WafBlockedError, match="blocked the warm-up request itself"):
        await async_connect(CceeHttpHandler, bot_props(sb))
    check_blocked_warmup(sb)


# -- CKAN actions ---------------------------------------------------------------------------------
def check_package_list(names: list[str]) -> None:
    assert names == ["geracao_horaria_submercado", "pld_horario", "pld_media_diaria"]


def check_package_and_resources(package: dict[str, Any], resources: list[CkanResource]) -> None:
    assert package["name"] == "pld_horario"
    assert len(package["resources"]) == len(YEARS)
    assert all(isinstance(r, CkanResource) for r in resources)
    assert [r.year for r in resources] == YEARS
    assert [r.name for r in resources] == [f"PLD_HORARIO_{year}" for year in YEARS]
    assert all(r.datastore_active and r.format == "CSV" for r in resources)
    assert {r.id for r in resources} == {raw["id"] for raw in package["resources"]}


def test_package_helpers_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """package_list, package_show and resources() (one per year, sorted by year) (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    check_package_list(handler.package_list())
    package = handler.package_show("pld_horario")
    check_package_and_resources(package, handler.resources("pld_horario"))


async def test_package_helpers_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """package_list, package_show and resources() (one per year, sorted by year) (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    check_package_list(await handler.async_package_list())
    package = await handler.async_package_show("pld_horario")
    check_package_and_resources(package, await handler.async_resources("pld_horario"))


def check_single_page(result: dict[str, Any]) -> None:
    assert result["total"] == ROWS_2024
    assert result["limit"] == 10
    assert [r["_id"] for r in result["records"]] == list(range(21, 31))
    assert {f["id"] for f in result["fields"]} >= {"_id", "SUBMERCADO", "DIA", "HORA", "PLD_HORA"}


def check_capped(capped: dict[str, Any]) -> None:
    assert capped["limit"] == 32_000
    assert len(capped["records"]) == 32_000


def test_datastore_search_single_page_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """One datastore_search call returns the page asked for, total and echoed limit (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    rid = resource_id_sync(handler, 2024)
    check_single_page(handler.datastore_search(rid, limit=10, offset=20, sort="_id"))
    check_capped(handler.datastore_search(rid, limit=50_000, fields=["_id"]))


async def test_datastore_search_single_page_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """One datastore_search call returns the page asked for, total and echoed limit (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    rid = await resource_id_async(handler, 2024)
    check_single_page(await handler.async_datastore_search(rid, limit=10, offset=20, sort="_id"))
    check_capped(await handler.async_datastore_search(rid, limit=50_000, fields=["_id"]))


def check_ckan_error(
    sb: Sandbox, caught: pytest.ExceptionInfo[ApiError], action: str, expected: str
) -> None:
    assert expected in str(caught.value)
    assert caught.value.status_code in (404, 409)
    assert hits(sb, action) == 1


@CKAN_ERRORS
def test_ckan_errors_raise_api_error_once_sync(
    sb: Sandbox, sync_connect: SyncConnect, action: str, kwargs: dict[str, Any], expected: str
) -> None:
    """``success: false`` answers are ApiError, sent once (never retried) (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    if action == "datastore_search":
        kwargs = {"resource_id": resource_id_sync(handler, 2025), **kwargs}
    sb.faults("ccee").reset_stats()
    with pytest.raises(ApiError) as caught:
        getattr(handler, action)(**kwargs)
    check_ckan_error(sb, caught, action, expected)


@CKAN_ERRORS
async def test_ckan_errors_raise_api_error_once_async(
    sb: Sandbox,
    async_connect: AsyncConnect,
    action: str,
    kwargs: dict[str, Any],
    expected: str,
) -> None:
    """``success: false`` answers are ApiError, sent once (never retried) (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    if action == "datastore_search":
        kwargs = {"resource_id": await resource_id_async(handler, 2025), **kwargs}
    sb.faults("ccee").reset_stats()
    with pytest.raises(ApiError) as caught:
        await getattr(handler, f"async_{action}")(**kwargs)
    check_ckan_error(sb, caught, action, expected)


# -- the pager ------------------------------------------------------------------------------------
def check_large_resource(sb: Sandbox, records: Records) -> None:
    assert_complete(records, ROWS_2024)
    assert records[0]["DIA"] == "2024-01-01"
    assert records[-1]["DIA"] == "2024-12-31"
    assert hits(sb, "datastore_search") == 2


def test_pager_returns_large_resource_complete_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """A resource above the 32 000 cap comes back whole, in order, no duplicates (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    rid = resource_id_sync(handler, 2024)
    check_large_resource(sb, collect_sync(handler, rid))


async def test_pager_returns_large_resource_complete_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """A resource above the 32 000 cap comes back whole, in order, no duplicates (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    rid = await resource_id_async(handler, 2024)
    check_large_resource(sb, await collect_async(handler, rid))


async def test_async_pager_concurrency_gives_identical_results(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """Concurrency 1 and 8 return the same pages in the same order."""
    handler = async_handlers(CceeHttpHandler(props(sb), skip_connect=True, **fast))
    rid = await resource_id_async(handler, 2022, dataset="geracao_horaria_submercado")
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


def check_echoed_limit(sb: Sandbox, records: Records) -> None:
    assert_complete(records, 35040)
    assert hits(sb, "datastore_search") == math.ceil(35040 / 1000)


def test_pager_steps_by_the_echoed_limit_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect
) -> None:
    """When the server caps the limit below page_size, pages follow the echoed limit (sync)."""
    sb = make_sb(ccee_max_limit=1000)
    handler = sync_connect(CceeHttpHandler, props(sb))
    rid = resource_id_sync(handler, 2023)
    check_echoed_limit(sb, collect_sync(handler, rid, page_size=32_000))


async def test_pager_steps_by_the_echoed_limit_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect
) -> None:
    """When the server caps the limit below page_size, pages follow the echoed limit (async)."""
    sb = make_sb(ccee_max_limit=1000)
    handler = await async_connect(CceeHttpHandler, props(sb))
    rid = await resource_id_async(handler, 2023)
    check_echoed_limit(sb, await collect_async(handler, rid, page_size=32_000))


def check_sul(records: Records) -> None:
    assert len(records) == 365 * 24
    assert all(set(r) == {"_id", "DIA"} for r in records)
    ids = [r["_id"] for r in records]
    assert ids == list(range(2, 35040 + 1, 4))  # SUL is the second submarket of each hour


def check_sul_norte_day(both: Records) -> None:
    assert len(both) == 48
    assert {r["SUBMERCADO"] for r in both} == {"SUL", "NORTE"}
    assert {r["DIA"] for r in both} == {"2021-03-01"}


def test_pager_with_filters_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """Filters restrict the pull; the filtered rows still come complete and ordered (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    rid = resource_id_sync(handler, 2021)
    check_sul(collect_sync(handler, rid, **SUL_2021))
    check_sul_norte_day(collect_sync(handler, rid, **SUL_NORTE_DAY))


async def test_pager_with_filters_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """Filters restrict the pull; the filtered rows still come complete and ordered (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    rid = await resource_id_async(handler, 2021)
    check_sul(await collect_async(handler, rid, **SUL_2021))
    check_sul_norte_day(await collect_async(handler, rid, **SUL_NORTE_DAY))


def check_survived_faults(sb: Sandbox, records: Records) -> None:
    assert_complete(records, 4000)
    faults = stats(sb)["faults"]
    assert faults.get("error", 0) > 0
    assert faults.get("rate_limit", 0) > 0
    assert faults.get("drop", 0) > 0


def test_pager_survives_random_faults_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect
) -> None:
    """503s, 429s with Retry-After 0 and dropped connections: the pull is complete (sync)."""
    sb = make_sb(ccee_rows_per_resource=4000, ccee_max_limit=50)
    handler = sync_connect(CceeHttpHandler, props(sb))
    rid = resource_id_sync(handler, 2022, dataset="pld_media_diaria")
    sb.faults("ccee").configure(**RANDOM_FAULTS)
    check_survived_faults(sb, collect_sync(handler, rid, page_size=50))


async def test_pager_survives_random_faults_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect
) -> None:
    """503s, 429s with Retry-After 0 and dropped connections: the pull is complete (async)."""
    sb = make_sb(ccee_rows_per_resource=4000, ccee_max_limit=50)
    handler = await async_connect(CceeHttpHandler, props(sb))
    rid = await resource_id_async(handler, 2022, dataset="pld_media_diaria")
    sb.faults("ccee").configure(**RANDOM_FAULTS)
    check_survived_faults(sb, await collect_async(handler, rid, page_size=50))


# -- secrets and concurrency ----------------------------------------------------------------------
def waf_cookie(response: httpx.Response) -> str:
    cookie = response.request.headers["Cookie"].split("ak_bmsc=", 1)[1].split(";")[0]
    assert redact(f"<{cookie}>") == "<***>"
    return cookie


def check_cookie_hidden(caught: pytest.ExceptionInfo[ApiError], cookie: str) -> None:
    assert cookie not in str(caught.value)
    assert "***" in str(caught.value)


def test_waf_cookie_is_redacted_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """The WAF cookie is a registered secret: masked even where the server echoes it (sync)."""
    handler = sync_connect(CceeHttpHandler, props(sb))
    cookie = waf_cookie(handler.get(f"{ACTION}/package_list"))
    with pytest.raises(ApiError) as caught:  # CKAN echoes the unknown resource id
        handler.datastore_search(cookie)
    check_cookie_hidden(caught, cookie)


async def test_waf_cookie_is_redacted_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """The WAF cookie is a registered secret: masked even where the server echoes it (async)."""
    handler = await async_connect(CceeHttpHandler, props(sb))
    cookie = waf_cookie(await handler.async_get(f"{ACTION}/package_list"))
    with pytest.raises(ApiError) as caught:  # CKAN echoes the unknown resource id
        await handler.async_datastore_search(cookie)
    check_cookie_hidden(caught, cookie)


async def test_hundred_coroutines_warm_up_once(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """100 coroutines starting at once on a fresh handler cause exactly one warm-up."""
    handler = async_handlers(CceeHttpHandler(props(sb), skip_connect=True, **fast))
    results = await asyncio.gather(*(handler.async_package_list() for _ in range(100)))
    assert all("pld_horario" in result for result in results)
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["requests"]["/"] == 1
    assert hits(sb, "package_list") == 100


async def test_sync_warmup_serves_the_async_client(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """The WAF cookie of the sync connect is reused by the async client: one warm-up.

    The sync parts run in a worker thread, as an async caller would run them, never on the loop.
    """
    handler = async_handlers(
        await asyncio.to_thread(CceeHttpHandler, props(sb), **fast)  # sync connect
    )
    assert "pld_horario" in await handler.async_package_list()
    assert "pld_horario" in await asyncio.to_thread(handler.package_list)
    assert stats(sb)["warmups"] == 1
    assert stats(sb)["waf_blocks"] == 0
