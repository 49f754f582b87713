"""The CCEE emulator: WAF, CKAN actions, datastore paging and CSV dumps."""

from __future__ import annotations

import codecs
import csv
import io
import json
from typing import Any

import httpx
import pytest

from echo_connhandler.sandbox import Sandbox, SandboxConfig, ccee_app

ACTION = "/api/3/action"


def resources(client: httpx.Client, dataset: str = "pld_horario") -> dict[str, dict[str, Any]]:
    response = client.get(f"{ACTION}/package_show", params={"id": dataset})
    assert response.status_code == 200
    return {resource["name"]: resource for resource in response.json()["result"]["resources"]}


def search(client: httpx.Client, **params: Any) -> dict[str, Any]:
    query = {
        key: json.dumps(value) if isinstance(value, dict) else value
        for key, value in params.items()
    }
    response = client.get(f"{ACTION}/datastore_search", params=query)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    result: dict[str, Any] = body["result"]
    return result


# ---------------------------------------------------------------------- WAF


def test_waf_blocks_api_without_warmup(sb: Sandbox, browser_headers: dict[str, str]) -> None:
    with httpx.Client(base_url=sb.urls.ccee, headers=browser_headers) as client:
        response = client.get(f"{ACTION}/package_list")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Acesso bloqueado" in response.text
    assert sb.faults("ccee").stats["waf_blocks"] == 1


@pytest.mark.parametrize(
    "user_agent", ["python-httpx/0.28.1", "curl/8.5.0", "Googlebot/2.1", "python-requests/2.32", ""]
)
def test_waf_blocks_bot_user_agents_even_with_cookie(
    ccee_client: httpx.Client, user_agent: str
) -> None:
    response = ccee_client.get(f"{ACTION}/package_list", headers={"User-Agent": user_agent})
    assert response.status_code == 403
    assert "Acesso bloqueado" in response.text


def test_default_httpx_client_is_blocked_everywhere(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.urls.ccee) as client:
        assert client.get("/").status_code == 403
        assert client.get(f"{ACTION}/package_list").status_code == 403


def test_warmup_sets_cookie_and_unblocks(sb: Sandbox, ccee_client: httpx.Client) -> None:
    response = ccee_client.get(f"{ACTION}/package_list")
    assert response.status_code == 200
    assert sb.faults("ccee").stats["warmups"] == 1


def test_dataset_page_is_a_warmup(sb: Sandbox, browser_headers: dict[str, str]) -> None:
    with httpx.Client(base_url=sb.urls.ccee, headers=browser_headers) as client:
        page = client.get("/dataset/pld_horario")
        assert page.status_code == 200
        assert "PLD_HORARIO_2023" in page.text
        assert client.get(f"{ACTION}/package_list").status_code == 200
    assert sb.faults("ccee").stats["warmups"] == 1


def test_block_waf_invalidates_cookies_until_next_warmup(
    sb: Sandbox, ccee_client: httpx.Client
) -> None:
    assert ccee_client.get(f"{ACTION}/package_list").status_code == 200
    sb.faults("ccee").block_waf()
    blocked = ccee_client.get(f"{ACTION}/package_list")
    assert blocked.status_code == 403
    assert "Acesso bloqueado" in blocked.text
    assert ccee_client.get("/").status_code == 200
    assert ccee_client.get(f"{ACTION}/package_list").status_code == 200
    stats = sb.faults("ccee").stats
    assert stats["warmups"] == 2
    assert stats["waf_blocks"] == 1


def test_waf_block_rate_blocks_mid_pull(sb: Sandbox, ccee_client: httpx.Client) -> None:
    sb.faults("ccee").configure(waf_block_rate=1.0)
    assert ccee_client.get(f"{ACTION}/package_list").status_code == 403
    sb.faults("ccee").reset()
    assert ccee_client.get(f"{ACTION}/package_list").status_code == 403  # cookie stays invalid
    assert ccee_client.get("/").status_code == 200
    assert ccee_client.get(f"{ACTION}/package_list").status_code == 200


def test_scripted_block_page_with_status_200(sb: Sandbox, ccee_client: httpx.Client) -> None:
    sb.faults("ccee").script("package_list", html=True)
    response = ccee_client.get(f"{ACTION}/package_list")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Acesso bloqueado" in response.text
    assert ccee_client.get(f"{ACTION}/package_list").json()["success"] is True


def test_admin_endpoints_bypass_the_waf(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.urls.ccee) as client:  # bot UA, no cookie
        assert client.post("/_sandbox/block-waf").json() == {"ok": True}
        assert client.get("/_sandbox/stats").status_code == 200


# ---------------------------------------------------------------------- CKAN actions


def test_package_list(ccee_client: httpx.Client) -> None:
    body = ccee_client.get(f"{ACTION}/package_list").json()
    assert body["success"] is True
    assert {"pld_horario", "pld_media_diaria", "geracao_horaria_submercado"} <= set(body["result"])


def test_package_show_has_one_resource_per_year(sb: Sandbox, ccee_client: httpx.Client) -> None:
    result = ccee_client.get(f"{ACTION}/package_show", params={"id": "pld_horario"}).json()
    package = result["result"]
    assert package["name"] == "pld_horario"
    assert package["id"]
    assert package["title"]
    names = [resource["name"] for resource in package["resources"]]
    assert names == [f"PLD_HORARIO_{year}" for year in sb.config.ccee_years]
    for resource in package["resources"]:
        assert resource["format"] == "CSV"
        assert resource["datastore_active"] is True
        assert resource["last_modified"]
        assert resource["url"].startswith(sb.urls.ccee + "/dataset/")
        assert resource["url"].endswith(f"{resource['name']}.csv")
    again = ccee_client.get(f"{ACTION}/package_show", params={"id": package["id"]}).json()
    assert again["result"]["resources"] == package["resources"]  # stable ids, lookup by id


def test_package_show_unknown_is_404(ccee_client: httpx.Client) -> None:
    response = ccee_client.get(f"{ACTION}/package_show", params={"id": "nope"})
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert response.json()["error"]["__type"] == "Not Found Error"
    missing = ccee_client.get(f"{ACTION}/package_show")
    assert missing.status_code == 409
    assert missing.json()["error"]["__type"] == "Validation Error"


def test_unknown_action_is_400(ccee_client: httpx.Client) -> None:
    response = ccee_client.get(f"{ACTION}/no_such_action")
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_package_search_and_resource_show(ccee_client: httpx.Client) -> None:
    found = ccee_client.get(f"{ACTION}/package_search", params={"q": "pld"}).json()["result"]
    assert found["count"] == 2
    resource = resources(ccee_client)["PLD_HORARIO_2022"]
    shown = ccee_client.get(f"{ACTION}/resource_show", params={"id": resource["id"]}).json()
    assert shown["result"] == resource
    assert ccee_client.get(f"{ACTION}/resource_show", params={"id": "x"}).status_code == 404


# ---------------------------------------------------------------------- datastore_search


def test_datastore_search_defaults_and_fields(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    result = search(ccee_client, resource_id=resource_id)
    assert result["limit"] == 100
    assert result["offset"] == 0
    assert result["total"] == 8760 * 4
    assert len(result["records"]) == 100
    assert [field["id"] for field in result["fields"]] == [
        "_id",
        "MES_REFERENCIA",
        "SUBMERCADO",
        "DIA",
        "HORA",
        "PLD_HORA",
    ]
    first = result["records"][0]
    assert first["_id"] == 1
    assert first["MES_REFERENCIA"] == "202301"
    assert first["SUBMERCADO"] == "SUDESTE"
    assert first["DIA"] == "2023-01-01"
    assert first["HORA"] == 0
    assert isinstance(first["PLD_HORA"], float)
    assert [record["SUBMERCADO"] for record in result["records"][:4]] == [
        "SUDESTE",
        "SUL",
        "NORDESTE",
        "NORTE",
    ]
    assert result["records"][4]["HORA"] == 1
    assert "offset=100" in result["_links"]["next"]


def test_paging_by_echoed_limit_yields_exactly_total(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2024"]["id"]
    records: list[dict[str, Any]] = []
    offset, total = 0, None
    while total is None or offset < total:
        result = search(ccee_client, resource_id=resource_id, limit=100_000, offset=offset)
        assert result["limit"] == 32000  # the cap is echoed
        total = result["total"]
        records.extend(result["records"])
        offset += result["limit"]
    assert total == 8784 * 4  # leap year: more than one capped page
    assert len(records) == total
    ids = [record["_id"] for record in records]
    assert ids == list(range(1, total + 1))
    assert records[-1]["DIA"] == "2024-12-31"
    assert records[-1]["HORA"] == 23
    assert records[-1]["SUBMERCADO"] == "NORTE"


def test_filters_are_exact_and_fast(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    south = search(ccee_client, resource_id=resource_id, filters={"SUBMERCADO": "SUL"}, limit=5)
    assert south["total"] == 8760
    assert {record["SUBMERCADO"] for record in south["records"]} == {"SUL"}
    combined = search(
        ccee_client,
        resource_id=resource_id,
        filters={"MES_REFERENCIA": "202302", "HORA": 5, "SUBMERCADO": ["SUL", "NORTE"]},
        limit=1000,
    )
    assert combined["total"] == 28 * 2
    assert all(record["HORA"] == 5 for record in combined["records"])
    assert all(record["DIA"].startswith("2023-02") for record in combined["records"])
    day = search(ccee_client, resource_id=resource_id, filters={"DIA": "2023-03-01"}, limit=0)
    assert day["total"] == 96
    assert day["records"] == []


def test_filter_on_value_column_and_q(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    sample = search(ccee_client, resource_id=resource_id, offset=5000, limit=1)["records"][0]
    price = sample["PLD_HORA"]
    matched = search(ccee_client, resource_id=resource_id, filters={"PLD_HORA": price}, limit=100)
    assert matched["total"] >= 1
    assert all(record["PLD_HORA"] == price for record in matched["records"])
    assert sample in matched["records"]
    text = search(ccee_client, resource_id=resource_id, q="2023-06-15", limit=200)
    assert text["total"] == 96
    assert {record["DIA"] for record in text["records"]} == {"2023-06-15"}


def test_sort_and_fields(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    last = search(ccee_client, resource_id=resource_id, sort="_id desc", limit=2)
    assert [record["_id"] for record in last["records"]] == [35040, 35039]
    by_price = search(
        ccee_client,
        resource_id=resource_id,
        filters={"DIA": "2023-01-10"},
        sort="PLD_HORA desc",
        fields="_id,PLD_HORA",
        limit=96,
    )
    prices = [record["PLD_HORA"] for record in by_price["records"]]
    assert prices == sorted(prices, reverse=True)
    assert set(by_price["records"][0]) == {"_id", "PLD_HORA"}
    assert [field["id"] for field in by_price["fields"]] == ["_id", "PLD_HORA"]


def test_post_datastore_search_matches_get(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    body = {"resource_id": resource_id, "filters": {"SUBMERCADO": "NORTE"}, "limit": 7}
    posted = ccee_client.post(f"{ACTION}/datastore_search", json=body).json()["result"]
    got = search(ccee_client, resource_id=resource_id, filters={"SUBMERCADO": "NORTE"}, limit=7)
    assert posted["records"] == got["records"]
    assert posted["total"] == got["total"] == 8760


@pytest.mark.parametrize(
    ("params", "status", "kind"),
    [
        ({"filters": "{not json"}, 409, "Validation Error"),
        ({"filters": '{"NOPE": 1}'}, 409, "Validation Error"),
        ({"filters": "[1, 2]"}, 409, "Validation Error"),
        ({"sort": "NOPE asc"}, 409, "Validation Error"),
        ({"limit": "abc"}, 409, "Validation Error"),
        ({"resource_id": "no-such-resource"}, 404, "Not Found Error"),
    ],
)
def test_datastore_search_errors(
    ccee_client: httpx.Client, params: dict[str, str], status: int, kind: str
) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    response = ccee_client.get(
        f"{ACTION}/datastore_search", params={"resource_id": resource_id, **params}
    )
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False
    assert body["error"]["__type"] == kind
    assert body["error"]["message"]


def test_other_datasets(ccee_client: httpx.Client) -> None:
    daily_id = resources(ccee_client, "pld_media_diaria")["PLD_MEDIA_DIARIA_2023"]["id"]
    daily = search(ccee_client, resource_id=daily_id, limit=4)
    assert daily["total"] == 365 * 4
    assert "HORA" not in daily["records"][0]
    assert isinstance(daily["records"][0]["PLD_MEDIA_DIA"], float)
    generation = resources(ccee_client, "geracao_horaria_submercado")
    generation_id = generation["GERACAO_HORARIA_SUBMERCADO_2021"]["id"]
    hourly = search(ccee_client, resource_id=generation_id, limit=1)
    assert hourly["records"][0]["DATA"] == "2021-01-01"
    assert hourly["records"][0]["GERACAO_MWH"] > 0


# ---------------------------------------------------------------------- CSV


def test_dump_streams_the_whole_csv(ccee_client: httpx.Client) -> None:
    resource_id = resources(ccee_client)["PLD_HORARIO_2023"]["id"]
    response = ccee_client.get(f"/datastore/dump/{resource_id}", params={"bom": "True"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["_id", "MES_REFERENCIA", "SUBMERCADO", "DIA", "HORA", "PLD_HORA"]
    assert len(rows) == 8760 * 4 + 1
    first = search(ccee_client, resource_id=resource_id, limit=1)["records"][0]
    assert rows[1] == [str(first[column]) for column in rows[0]]


def test_resource_url_downloads_filtered_csv(ccee_client: httpx.Client) -> None:
    resource = resources(ccee_client)["PLD_HORARIO_2025"]
    response = ccee_client.get(
        resource["url"], params={"filters": json.dumps({"DIA": "2025-01-02"})}
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text), delimiter=";"))
    assert len(rows) == 1 + 96


async def test_millions_of_rows_without_materialising() -> None:
    app = ccee_app(SandboxConfig(ccee_rows_per_resource=3_000_001, ccee_years=(2024,)))
    headers = {"User-Agent": "Mozilla/5.0 (sandbox test)"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ccee", headers=headers) as c:
        assert (await c.get("/")).status_code == 200
        shown = (await c.get(f"{ACTION}/package_show", params={"id": "pld_horario"})).json()
        resource_id = shown["result"]["resources"][0]["id"]
        params = {"resource_id": resource_id, "offset": 2_999_999, "limit": 10}
        tail = (await c.get(f"{ACTION}/datastore_search", params=params)).json()["result"]
        assert tail["total"] == 3_000_001
        assert [record["_id"] for record in tail["records"]] == [3_000_000, 3_000_001]
        params = {"resource_id": resource_id, "filters": '{"SUBMERCADO": "SUL"}', "limit": 1}
        south = (await c.get(f"{ACTION}/datastore_search", params=params)).json()["result"]
        assert south["total"] == 750_000
        params = {"resource_id": resource_id, "filters": '{"SUBMERCADO": "SUDESTE"}', "limit": 1}
        southeast = (await c.get(f"{ACTION}/datastore_search", params=params)).json()["result"]
        assert southeast["total"] == 750_001
