"""The ONS emulator: POP login and tokens, SAGER xlsx reports, SINAPSE profiles and CSV."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import openpyxl
import pytest

from echo_connhandler.sandbox import Sandbox, SandboxConfig, ons_app

OnsLogin = Callable[..., dict[str, Any]]
REPORT = "/RelatorioApuracaoUsinasRenovaveis/exportarRelatorio"
EXPORT = "/solicitacao/pesquisa/exportar"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


def report_body(start: str, end: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataInicio": start,
        "dataFim": end,
        "tipoRelatorio": 1,
        "idsConjuntos": [],
        "idsUsinas": [],
        "idsAgentes": [],
        "idsFontes": [],
        "apenasAgentesFavoritos": False,
        "periodoBase": "DIA",
    }
    body.update(overrides)
    return body


def bearer(token: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}", **extra}


def profile_header(profile: dict[str, Any]) -> str:
    value = f"{profile['perfil']}/{profile['tipoEscopo']}/{profile['idEscopo']}/"
    return quote(value + profile["nomeEscopo"], safe="")


# ---------------------------------------------------------------------- POP login


def test_login_page_sets_cookie_and_never_checks_credentials(
    sb: Sandbox, client: httpx.Client
) -> None:
    page = client.get(f"{sb.urls.ons_auth_url}/", params={"ReturnUrl": "https://apps18/x"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert ".ONSPOPAUTH" in page.cookies
    posted = client.post(f"{sb.urls.ons_auth_url}/", data={"username": "x", "password": "y"})
    assert posted.status_code == 200


def test_password_grant(sb: Sandbox, client: httpx.Client, ons_login: OnsLogin) -> None:
    token = ons_login(client, sb.urls.ons_auth_url)
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 1199
    assert token["access_token"].count(".") == 2
    assert token["refresh_token"]
    assert sb.faults("ons").stats["logins"] == {"password": 1}


@pytest.mark.parametrize(
    ("form", "headers", "error"),
    [
        (
            {"client_id": "SAGER", "username": "demo.user", "password": "bad"},
            {"Origin": "https://apps18.ons.org.br"},
            "invalid_grant",
        ),
        (
            {"client_id": "OTHER", "username": "demo.user", "password": "demo-password"},
            {"Origin": "https://apps18.ons.org.br"},
            "invalid_client",
        ),
        (
            {"client_id": "SAGER", "username": "demo.user", "password": "demo-password"},
            {},
            "invalid_request",
        ),
    ],
)
def test_token_errors(
    sb: Sandbox,
    client: httpx.Client,
    form: dict[str, str],
    headers: dict[str, str],
    error: str,
) -> None:
    response = client.post(
        f"{sb.urls.ons_auth_url}/oauth2/token",
        data={"grant_type": "password", **form},
        headers=headers,
    )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]
    assert sb.faults("ons").stats["logins"] == {}


async def test_origin_not_required_when_configured() -> None:
    app = ons_app(SandboxConfig(ons_require_origin=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ons") as client:
        response = await client.post(
            "/ons.pop.federation/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": "SINAPSE",
                "username": "demo.user",
                "password": "demo-password",
            },
        )
    assert response.status_code == 200


def test_refresh_grant_consumes_the_old_refresh_token(
    sb: Sandbox, client: httpx.Client, ons_login: OnsLogin
) -> None:
    token = ons_login(client, sb.urls.ons_auth_url)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": "SAGER",
    }
    url = f"{sb.urls.ons_auth_url}/oauth2/token"
    origin = {"Origin": "https://apps18.ons.org.br"}
    refreshed = client.post(url, data=form, headers=origin)
    assert refreshed.status_code == 200
    assert refreshed.json()["access_token"] != token["access_token"]
    again = client.post(url, data=form, headers=origin)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert sb.faults("ons").stats["logins"] == {"password": 1, "refresh_token": 1}


def test_expire_tokens(sb: Sandbox, client: httpx.Client, ons_login: OnsLogin) -> None:
    token = ons_login(client, sb.urls.ons_auth_url, "SINAPSE")
    assert client.get(sb.urls.ons_profile_url, headers=bearer(token)).status_code == 200
    sb.faults("ons").expire_tokens()
    expired = client.get(sb.urls.ons_profile_url, headers=bearer(token))
    assert expired.status_code == 401
    assert expired.json()["error"] == "invalid_token"
    url = f"{sb.urls.ons_auth_url}/oauth2/token"
    form = {"grant_type": "refresh_token", "client_id": "SINAPSE"}
    origin = {"Origin": "https://pops.ons.org.br"}
    refreshed = client.post(
        url, data={**form, "refresh_token": token["refresh_token"]}, headers=origin
    ).json()
    assert client.get(sb.urls.ons_profile_url, headers=bearer(refreshed)).status_code == 200
    sb.faults("ons").expire_tokens(refresh_tokens=True)
    revoked = client.post(
        url, data={**form, "refresh_token": refreshed["refresh_token"]}, headers=origin
    )
    assert revoked.status_code == 400


def test_tokens_expire_after_expires_in(client: httpx.Client, ons_login: OnsLogin) -> None:
    with Sandbox(SandboxConfig(ons_expires_in=1)) as short:
        token = ons_login(client, short.urls.ons_auth_url, "SINAPSE")
        assert token["expires_in"] == 1
        assert client.get(short.urls.ons_profile_url, headers=bearer(token)).status_code == 200
        time.sleep(1.2)
        expired = client.get(short.urls.ons_profile_url, headers=bearer(token))
        assert expired.status_code == 401
        assert expired.json()["error"] == "invalid_token"


# ---------------------------------------------------------------------- SAGER


def test_sager_report_is_a_real_xlsx(
    sb: Sandbox, client: httpx.Client, ons_login: OnsLogin
) -> None:
    token = ons_login(client, sb.urls.ons_auth_url)
    body = report_body("2024-01-01T00:00:00.000Z", "2024-01-31T00:00:00.000Z")
    response = client.post(sb.urls.ons_sager + REPORT, json=body, headers=bearer(token))
    assert response.status_code == 200
    assert response.headers["content-type"] == XLSX
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    rows = list(workbook.active.iter_rows(values_only=True))
    workbook.close()
    assert rows[0][:4] == ("Data", "Agente", "Conjunto", "Usina")
    usinas = {row[3] for row in rows[1:]}
    assert len(rows) - 1 == 31 * len(usinas)
    again = client.post(sb.urls.ons_sager + REPORT, json=body, headers=bearer(token))
    second = openpyxl.load_workbook(io.BytesIO(again.content), read_only=True)
    assert list(second.active.iter_rows(values_only=True)) == rows
    second.close()


def test_sager_filters_and_report_types(
    sb: Sandbox, client: httpx.Client, ons_login: OnsLogin
) -> None:
    token = ons_login(client, sb.urls.ons_auth_url)
    body = report_body(
        "2023-06-01T00:00:00.000Z", "2023-06-02T00:00:00.000Z", tipoRelatorio=2, idsUsinas=[1001]
    )
    response = client.post(sb.urls.ons_sager + REPORT, json=body, headers=bearer(token))
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    rows = list(workbook.active.iter_rows(values_only=True))
    workbook.close()
    assert "Geração de Referência (MWmed)" in rows[0]
    assert len(rows) == 1 + 2
    favorites = report_body(
        "2023-06-01T00:00:00.000Z", "2023-06-01T00:00:00.000Z", apenasAgentesFavoritos=True
    )
    response = client.post(sb.urls.ons_sager + REPORT, json=favorites, headers=bearer(token))
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    agents = {row[1] for row in list(workbook.active.iter_rows(values_only=True))[1:]}
    workbook.close()
    assert agents == {"ECHO ENERGIA"}


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2019-01-01T00:00:00.000Z", "2019-12-31T00:00:00.000Z"),
        (
            (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT00:00:00.000Z"),
            (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT00:00:00.000Z"),
        ),
    ],
)
def test_sager_empty_body_when_no_data(
    sb: Sandbox, client: httpx.Client, ons_login: OnsLogin, start: str, end: str
) -> None:
    token = ons_login(client, sb.urls.ons_auth_url)
    response = client.post(
        sb.urls.ons_sager + REPORT, json=report_body(start, end), headers=bearer(token)
    )
    assert response.status_code == 200
    assert response.content == b""


def test_sager_errors(sb: Sandbox, client: httpx.Client, ons_login: OnsLogin) -> None:
    sager = ons_login(client, sb.urls.ons_auth_url)
    sinapse = ons_login(client, sb.urls.ons_auth_url, "SINAPSE")
    url = sb.urls.ons_sager + REPORT
    bad = client.post(url, json=report_body("not a date", "2024-01-01"), headers=bearer(sager))
    assert bad.status_code == 400
    assert bad.json()["mensagem"]
    missing = client.post(url, json={"tipoRelatorio": 1}, headers=bearer(sager))
    assert missing.status_code == 400
    good = report_body("2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z")
    assert client.post(url, json=good).status_code == 401
    wrong_client = client.post(url, json=good, headers=bearer(sinapse))
    assert wrong_client.status_code == 401
    assert wrong_client.json()["error"] == "invalid_token"


# ---------------------------------------------------------------------- SINAPSE


def test_profiles(sb: Sandbox, client: httpx.Client, ons_login: OnsLogin) -> None:
    demo = ons_login(client, sb.urls.ons_auth_url, "SINAPSE")
    profiles = client.get(sb.urls.ons_profile_url, headers=bearer(demo)).json()
    assert profiles == [
        {
            "perfil": "Apurador Agente",
            "tipoEscopo": "AGENTES",
            "idEscopo": 189,
            "nomeEscopo": "ECHO ENERGIA",
        }
    ]
    multi = ons_login(client, sb.urls.ons_auth_url, "SINAPSE", user="multi.user")
    assert len(client.get(sb.urls.ons_profile_url, headers=bearer(multi)).json()) == 3
    sager = ons_login(client, sb.urls.ons_auth_url)
    assert client.get(sb.urls.ons_profile_url, headers=bearer(sager)).status_code == 401


def test_sinapse_exports_csv(sb: Sandbox, client: httpx.Client, ons_login: OnsLogin) -> None:
    token = ons_login(client, sb.urls.ons_auth_url, "SINAPSE", user="multi.user")
    profiles = client.get(sb.urls.ons_profile_url, headers=bearer(token)).json()
    headers = bearer(token, **{"Perfil-Selecionado": profile_header(profiles[2])})
    body = {"periodoInicial": "2024-01-01", "periodoFinal": "2024-01-31"}
    response = client.post(sb.urls.ons_sinapse + EXPORT, json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.text), delimiter=";"))
    assert rows[0][:3] == ["Número", "Data de Abertura", "Origem"]
    assert len(rows) > 5
    assert all(profiles[2]["nomeEscopo"] in (row[2], row[3]) for row in rows[1:])
    analytic = client.post(sb.urls.ons_sinapse + EXPORT + "-analitico", json=body, headers=headers)
    analytic_rows = list(csv.reader(io.StringIO(analytic.text), delimiter=";"))
    assert len(analytic_rows[0]) > len(rows[0])
    assert [row[0] for row in analytic_rows] == [row[0] for row in rows]
    status = rows[1][4]
    filtered = client.post(
        sb.urls.ons_sinapse + EXPORT, json={**body, "status": status}, headers=headers
    )
    filtered_rows = list(csv.reader(io.StringIO(filtered.text), delimiter=";"))[1:]
    assert filtered_rows
    assert {row[4] for row in filtered_rows} == {status}


def test_sinapse_profile_header_is_checked(
    sb: Sandbox, client: httpx.Client, ons_login: OnsLogin
) -> None:
    token = ons_login(client, sb.urls.ons_auth_url, "SINAPSE")
    body = {"periodoInicial": "2024-01-01", "periodoFinal": "2024-01-05"}
    url = sb.urls.ons_sinapse + EXPORT
    mine = {
        "perfil": "Apurador Agente",
        "tipoEscopo": "AGENTES",
        "idEscopo": 189,
        "nomeEscopo": "ECHO ENERGIA",
    }
    other = {**mine, "idEscopo": 501}
    raw = "Apurador Agente/AGENTES/189/ECHO ENERGIA"
    for value in (None, profile_header(other), raw.replace(" ", "%20")):
        headers = bearer(token) if value is None else bearer(token, **{"Perfil-Selecionado": value})
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 403
        assert response.json() == {"mensagem": "Perfil inválido"}
    ok = client.post(
        url, json=body, headers=bearer(token, **{"Perfil-Selecionado": profile_header(mine)})
    )
    assert ok.status_code == 200
    bad_period = client.post(
        url,
        json={"periodoInicial": "x"},
        headers=bearer(token, **{"Perfil-Selecionado": profile_header(mine)}),
    )
    assert bad_period.status_code == 400
    assert bad_period.json()["mensagem"]


@pytest.mark.parametrize("moment", ["2024-01-01", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00"])
def test_sager_refuses_dates_not_in_its_format(
    sb: Sandbox, client: httpx.Client, ons_login: OnsLogin, moment: str
) -> None:
    """SAGER takes AAAA-MM-DDTHH:MM:SS.mmmZ only: any other shape is a 400 naming the field."""
    token = ons_login(client, sb.urls.ons_auth_url)
    body = report_body(moment, "2024-01-02T00:00:00.000Z")
    response = client.post(sb.urls.ons_sager + REPORT, json=body, headers=bearer(token))
    assert response.status_code == 400
    assert "dataInicio" in response.json()["mensagem"]
