"""OnsHttpHandler against the ONS emulator (POP OAuth2, SAGER, SINAPSE), sync and async."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote

import openpyxl
import pytest

from echo_connhandler import (
    AuthenticationError,
    HttpConnProperties,
    HttpStatusError,
    OnsHttpConnProperties,
    OnsHttpHandler,
    ProfileSelectionError,
    UnexpectedContentError,
    redact,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox

Connect = Callable[..., Awaitable[Any]]
Call = Callable[..., Awaitable[Any]]

CREDS = DEMO_CREDENTIALS["ons"]
WRONG_PASSWORD = "not-the-ons-password-5521"
SAGER_ORIGIN = "https://apps18.ons.org.br"
FEDERATION = "/ons.pop.federation/"
TOKEN = "/ons.pop.federation/oauth2/token"
SAGER_EXPORT = "/api/sager/renovaveis/api/relatorioapuracaousinasrenovaveis/exportarrelatorio"
SINAPSE_EXPORT = "/sinapse/api/solicitacao/pesquisa/exportar"
PROFILES = "/sinapse/api/usuario/perfis"
ECHO_PROFILE = "Apurador Agente/AGENTES/189/ECHO ENERGIA"
OTHER_PROFILE = "Consulta Agente/AGENTES/190/ECHO EOLICA SANDBOX"
SINAPSE_HEADER = "Número;Data de Abertura;Origem;Destino;Status;Assunto"


def sager(sb: Sandbox, password: str = CREDS["password"], **kwargs: Any) -> OnsHttpConnProperties:
    return OnsHttpConnProperties(
        host=sb.urls.ons_sager,
        user=CREDS["user"],
        password=password,
        login_target="SAGER",
        auth_url=sb.urls.ons_auth_url,
        **kwargs,
    )


def sinapse(sb: Sandbox, user: str = CREDS["user"], **kwargs: Any) -> OnsHttpConnProperties:
    kwargs.setdefault("profile_url", sb.urls.ons_profile_url)
    return OnsHttpConnProperties(
        host=sb.urls.ons_sinapse,
        user=user,
        password=CREDS["password"],
        login_target="SINAPSE",
        auth_url=sb.urls.ons_auth_url,
        **kwargs,
    )


def stats(sb: Sandbox) -> Any:
    return sb.faults("ons").stats


def hits(sb: Sandbox, path: str) -> int:
    return int(stats(sb)["requests"].get(path.lower(), 0))


def logins(sb: Sandbox) -> dict[str, int]:
    return dict(stats(sb)["logins"])


def form(request: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.content.decode()).items()}


async def test_sager_login_on_connect(
    sb: Sandbox, connect: Connect, recording: Callable[..., type]
) -> None:
    """Connect: federation GET, then the password grant with an Origin header; cookies kept."""
    handler = await connect(recording(OnsHttpHandler), sager(sb))
    assert logins(sb) == {"password": 1}
    assert stats(sb)["requests"] == {FEDERATION: 1, TOKEN: 1}
    federation, token = handler.sent
    assert federation.method == "GET"
    assert federation.url.path == FEDERATION
    assert federation.url.params["ReturnUrl"] == f"{SAGER_ORIGIN}/"
    assert token.method == "POST"
    assert token.headers["Origin"] == SAGER_ORIGIN
    assert ".ONSPOPAUTH=" in token.headers["Cookie"]
    assert form(token) == {
        "grant_type": "password",
        "username": CREDS["user"],
        "password": CREDS["password"],
        "client_id": "SAGER",
    }


async def test_export_sager_report(sb: Sandbox, connect: Connect, call: Call) -> None:
    """The SAGER report comes back as .xlsx bytes, readable with openpyxl."""
    handler = await connect(OnsHttpHandler, sager(sb))
    content = await call(handler, "export_sager_report", "2024-01-01", "2024-01-03")
    assert content[:2] == b"PK"
    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:5] == ("Data", "Agente", "Conjunto", "Usina", "Fonte")
    assert rows[0][5] == "Potência Instalada (MW)"
    assert len(rows) == 1 + 3 * 6  # 3 days x 6 usinas
    assert rows[1][0] == datetime(2024, 1, 1)
    assert rows[1][3] == "EOL Aurora I"
    assert rows[1][5] == 30.0
    assert rows[-1][0] == datetime(2024, 1, 3)
    one = await call(
        handler,
        "export_sager_report",
        datetime(2024, 2, 1, 12, 30),
        "2024-02-02T00:00:00Z",
        tipo_relatorio=2,
        ids_usinas=[1004],
    )
    rows = list(openpyxl.load_workbook(io.BytesIO(one)).active.iter_rows(values_only=True))
    assert rows[0][5] == "Geração de Referência (MWmed)"
    assert [(row[0], row[3]) for row in rows[1:]] == [
        (datetime(2024, 2, 1), "UFV Sertão I"),
        (datetime(2024, 2, 2), "UFV Sertão I"),
    ]
    assert logins(sb) == {"password": 1}


async def test_export_sager_report_without_data(sb: Sandbox, connect: Connect, call: Call) -> None:
    """A period without data answers an empty body: b""."""
    handler = await connect(OnsHttpHandler, sager(sb))
    assert await call(handler, "export_sager_report", "2019-01-01", "2019-01-31") == b""
    assert (
        await call(handler, "export_sager_report", "2024-01-01", "2024-01-02", ids_usinas=[9])
        == b""
    )


async def test_token_is_refreshed_before_expiry(
    make_sb: Callable[..., Sandbox], connect: Connect, call: Call
) -> None:
    """A token near its expiry is refreshed (refresh_token grant) before the request: no 401."""
    sb = make_sb(ons_expires_in=2)  # refreshed 0.5 s before expiry
    handler = await connect(OnsHttpHandler, sager(sb))
    assert await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    await asyncio.sleep(1.6)  # sync path: the loop is idle meanwhile
    assert await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    assert logins(sb) == {"password": 1, "refresh_token": 1}
    assert hits(sb, SAGER_EXPORT) == 2
    assert hits(sb, FEDERATION) == 1


async def test_concurrent_calls_share_one_refresh(
    make_sb: Callable[..., Sandbox], fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """50 coroutines meeting an expiring token cause one refresh between them."""
    sb = make_sb(ons_expires_in=2)
    handler = handlers(OnsHttpHandler(sager(sb), skip_connect=True, **fast))
    await handler.async_reconnect()
    await asyncio.sleep(1.6)
    calls = [handler.async_export_sager_report("2024-01-01", "2024-01-01") for _ in range(50)]
    assert all(content[:2] == b"PK" for content in await asyncio.gather(*calls))
    assert logins(sb) == {"password": 1, "refresh_token": 1}
    assert hits(sb, SAGER_EXPORT) == 50


async def test_sync_and_async_callers_share_one_refresh(
    make_sb: Callable[..., Sandbox], fast: dict[str, Any], handlers: Callable[..., Any]
) -> None:
    """A thread and coroutines meeting an expiring token refresh once (a refresh is single-use)."""
    sb = make_sb(ons_expires_in=2, latency_ms=50)
    handler = handlers(OnsHttpHandler(sager(sb), **fast))
    await asyncio.sleep(1.6)

    def sync_calls() -> list[bytes]:
        return [handler.export_sager_report("2024-01-01", "2024-01-01") for _ in range(5)]

    thread_results = asyncio.create_task(asyncio.to_thread(sync_calls))
    calls = [handler.async_export_sager_report("2024-01-01", "2024-01-01") for _ in range(5)]
    results = [*await asyncio.gather(*calls), *await thread_results]
    assert all(content[:2] == b"PK" for content in results)
    assert logins(sb) == {"password": 1, "refresh_token": 1}


@pytest.mark.parametrize("failure", ["token-endpoint-500", "refresh-token-revoked"])
async def test_failed_refresh_falls_back_to_login(
    make_sb: Callable[..., Sandbox], connect: Connect, call: Call, failure: str
) -> None:
    """When the proactive refresh fails, the handler logs in again with the password."""
    sb = make_sb(ons_expires_in=2)
    handler = await connect(OnsHttpHandler, sager(sb))
    await asyncio.sleep(1.6)  # sync path: the loop is idle meanwhile
    if failure == "token-endpoint-500":
        sb.faults("ons").script("oauth2/token", status=500)
    else:
        sb.faults("ons").expire_tokens(refresh_tokens=True)
    assert await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    assert logins(sb) == {"password": 2}
    assert hits(sb, TOKEN) == 3  # login, failed refresh, login
    assert hits(sb, FEDERATION) == 2
    assert hits(sb, SAGER_EXPORT) == 1


async def test_401_after_expiry_refreshes_once(sb: Sandbox, connect: Connect, call: Call) -> None:
    """Server-side expiry: the 401 causes one refresh and one resend, then calls go on."""
    handler = await connect(OnsHttpHandler, sager(sb))
    await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    sb.faults("ons").expire_tokens()
    assert (await call(handler, "export_sager_report", "2024-01-01", "2024-01-01"))[:2] == b"PK"
    await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    assert logins(sb) == {"password": 1, "refresh_token": 1}
    assert hits(sb, SAGER_EXPORT) == 4  # ok, 401, ok after the refresh, ok


async def test_401_with_revoked_refresh_token_logs_in(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """When the refresh token is revoked too, the 401 leads to one full login."""
    handler = await connect(OnsHttpHandler, sager(sb))
    sb.faults("ons").expire_tokens(refresh_tokens=True)
    assert (await call(handler, "export_sager_report", "2024-01-01", "2024-01-01"))[:2] == b"PK"
    assert logins(sb) == {"password": 2}
    assert hits(sb, TOKEN) == 3
    assert hits(sb, SAGER_EXPORT) == 2


@pytest.mark.parametrize("lazy", [False, True], ids=["on-connect", "on-first-request"])
async def test_bad_password_fails_at_once(
    sb: Sandbox, connect: Connect, call: Call, lazy: bool
) -> None:
    """A refused password grant raises AuthenticationError after one attempt, password hidden."""
    props = sager(sb, password=WRONG_PASSWORD)
    if lazy:
        handler = await connect(OnsHttpHandler, props, connect=False)
        with pytest.raises(AuthenticationError) as caught:
            await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    else:
        with pytest.raises(AuthenticationError) as caught:
            await connect(OnsHttpHandler, props)
    message = str(caught.value)
    assert "ONS refused the login for SAGER (invalid_grant)" in message
    assert WRONG_PASSWORD not in message
    assert hits(sb, TOKEN) == 1
    assert hits(sb, SAGER_EXPORT) == 0
    assert logins(sb) == {}


async def test_federation_page_failure_is_tolerated(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """A failing federation page (HTTP 500) does not stop the login."""
    sb.faults("ons").script(FEDERATION, status=500)
    handler = await connect(OnsHttpHandler, sager(sb))
    assert stats(sb)["faults"] == {"error": 1}
    assert logins(sb) == {"password": 1}
    assert (await call(handler, "export_sager_report", "2024-01-01", "2024-01-01"))[:2] == b"PK"


@pytest.mark.parametrize("fault", [{"drop": True}, {"delay_s": 0.5}])
async def test_federation_transport_failure_is_tolerated(
    sb: Sandbox, connect: Connect, call: Call, fault: dict[str, Any]
) -> None:
    """A federation page that drops or times out costs one retry; the login goes on without it."""
    sb.faults("ons").script(FEDERATION, **fault)
    props = sager(sb, request_timeout=0.2)
    handler = await connect(OnsHttpHandler, props)
    assert logins(sb) == {"password": 1}
    assert hits(sb, FEDERATION) == 1  # not asked again on the retry
    assert (await call(handler, "export_sager_report", "2024-01-01", "2024-01-01"))[:2] == b"PK"


async def test_rate_limited_token_endpoint_is_retried(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """A 429 (Retry-After 0) on the password grant is retried; the login then succeeds."""
    sb.faults("ons").script("oauth2/token", retry_after=0)
    handler = await connect(OnsHttpHandler, sager(sb))
    assert logins(sb) == {"password": 1}
    assert hits(sb, TOKEN) == 2
    assert (await call(handler, "export_sager_report", "2024-01-01", "2024-01-01"))[:2] == b"PK"


async def test_sinapse_profile_from_profile_url(
    sb: Sandbox, connect: Connect, call: Call, recording: Callable[..., type]
) -> None:
    """One-profile user: the profile is read once and sent URL-encoded as Perfil-Selecionado."""
    handler = await connect(recording(OnsHttpHandler), sinapse(sb))
    assert hits(sb, PROFILES) == 1
    token = next(r for r in handler.sent if r.url.path == TOKEN)
    assert token.headers["Origin"] == "https://pops.ons.org.br"
    assert form(token)["client_id"] == "SINAPSE"
    content = await call(handler, "export_sinapse", "2024-01-01", "2024-01-07")
    lines = content.decode("utf-8").splitlines()
    assert lines[0] == SINAPSE_HEADER
    assert len(lines) > 1
    assert all("ECHO ENERGIA" in line for line in lines[1:])
    export = handler.sent[-1]
    assert export.url.path == SINAPSE_EXPORT
    assert export.headers["Perfil-Selecionado"] == quote(ECHO_PROFILE, safe="")
    analytic = await call(handler, "export_sinapse", "2024-01-01", "2024-01-07", analitico=True)
    assert analytic.decode("utf-8").splitlines()[0].split(";")[-3:] == [
        "Mensagem",
        "Data da Última Atualização",
        "Responsável",
    ]
    only_open = await call(handler, "export_sinapse", "2024-01-01", "2024-01-31", status="Aberta")
    assert {line.split(";")[4] for line in only_open.decode().splitlines()[1:]} == {"Aberta"}
    sb.faults("ons").expire_tokens()
    assert await call(handler, "export_sinapse", "2024-01-01", "2024-01-07") == content
    assert handler.sent[-1].headers["Perfil-Selecionado"] == quote(ECHO_PROFILE, safe="")
    assert hits(sb, PROFILES) == 1  # the refresh keeps the profile
    assert logins(sb) == {"password": 1, "refresh_token": 1}


async def test_multi_profile_user_must_select(sb: Sandbox, connect: Connect, call: Call) -> None:
    """Several profiles and no selected_profile: ProfileSelectionError listing them."""
    props = sinapse(sb, user=CREDS["multi_profile_user"])
    handler = await connect(OnsHttpHandler, props, connect=False)
    with pytest.raises(ProfileSelectionError) as caught:
        await call(handler, "export_sinapse", "2024-01-01", "2024-01-07")
    message = str(caught.value)
    assert "3 SINAPSE profiles" in message
    assert ECHO_PROFILE in message
    assert OTHER_PROFILE in message
    assert "Apurador Conjunto/CONJUNTOS/501/CONJUNTO AURORA SANDBOX" in message
    assert "selected_profile" in message
    assert hits(sb, SINAPSE_EXPORT) == 0
    with pytest.raises(ProfileSelectionError):  # and again: never a request without a profile
        await call(handler, "export_sinapse", "2024-01-01", "2024-01-07")
    assert hits(sb, SINAPSE_EXPORT) == 0


@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "url-encoded"])
async def test_selected_profile_skips_profile_url(
    sb: Sandbox, connect: Connect, call: Call, encoded: bool
) -> None:
    """A selected_profile (plain or already URL-encoded) is used as is; no profile call."""
    selected = quote(OTHER_PROFILE, safe="") if encoded else OTHER_PROFILE
    props = sinapse(sb, user=CREDS["multi_profile_user"], selected_profile=selected)
    handler = await connect(OnsHttpHandler, props)
    content = await call(handler, "export_sinapse", "2024-03-01", "2024-03-10")
    lines = content.decode("utf-8").splitlines()
    assert lines[0] == SINAPSE_HEADER
    assert len(lines) > 1
    assert all("ECHO EOLICA SANDBOX" in line for line in lines[1:])
    assert hits(sb, PROFILES) == 0
    assert logins(sb) == {"password": 1}


@pytest.mark.parametrize("answer", ["404", "html"])
async def test_profile_url_failure_says_what_to_set(
    sb: Sandbox, connect: Connect, answer: str
) -> None:
    """An unusable profile URL raises ProfileSelectionError naming selected_profile/profile_url."""
    if answer == "404":
        props = sinapse(sb, profile_url=f"{sb.urls.ons_sinapse}/no/such/profiles")
    else:
        sb.faults("ons").script("usuario/perfis", html=True)
        props = sinapse(sb)
    with pytest.raises(ProfileSelectionError) as caught:
        await connect(OnsHttpHandler, props)
    message = str(caught.value)
    assert "set selected_profile" in message
    assert "profile_url" in message
    assert ("HTTP 404" in message) == (answer == "404")
    assert hits(sb, SINAPSE_EXPORT) == 0


@pytest.mark.parametrize("target", ["SAGER", "SINAPSE"])
async def test_hundred_coroutines_log_in_once(
    sb: Sandbox, fast: dict[str, Any], handlers: Callable[..., Any], target: str
) -> None:
    """100 coroutines on a fresh handler: one federation GET, one grant, one profile call."""
    if target == "SAGER":
        handler = handlers(OnsHttpHandler(sager(sb), skip_connect=True, **fast))
        calls = [handler.async_export_sager_report("2024-01-01", "2024-01-01") for _ in range(100)]
        export = SAGER_EXPORT
    else:
        handler = handlers(OnsHttpHandler(sinapse(sb), skip_connect=True, **fast))
        calls = [handler.async_export_sinapse("2024-01-01", "2024-01-02") for _ in range(100)]
        export = SINAPSE_EXPORT
    results = await asyncio.gather(*calls)
    assert all(len(result) > 0 for result in results)
    assert logins(sb) == {"password": 1}
    assert hits(sb, FEDERATION) == 1
    assert hits(sb, PROFILES) == (1 if target == "SINAPSE" else 0)
    assert hits(sb, export) == 100


async def test_maintenance_page_is_unexpected_content(
    sb: Sandbox, connect: Connect, call: Call
) -> None:
    """An HTML maintenance page with HTTP 200 instead of the report: UnexpectedContentError."""
    handler = await connect(OnsHttpHandler, sager(sb))
    sb.faults("ons").script("exportarRelatorio", html=True)
    with pytest.raises(UnexpectedContentError) as caught:
        await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    assert "HTML page instead of the SAGER report" in str(caught.value)
    assert hits(sb, SAGER_EXPORT) == 1
    sb.faults("ons").script("exportarRelatorio", html=True, status=503)
    assert (await call(handler, "export_sager_report", "2024-01-01", "2024-01-01"))[:2] == b"PK"
    assert hits(sb, SAGER_EXPORT) == 3  # the 503 page is retried (read-only export)


def test_plain_properties_are_refused(sb: Sandbox) -> None:
    """OnsHttpHandler needs OnsHttpConnProperties."""
    props = HttpConnProperties(host=sb.urls.ons_sager, user=CREDS["user"], password="x-pass-1")
    with pytest.raises(TypeError, match="OnsHttpHandler needs OnsHttpConnProperties"):
        OnsHttpHandler(props, skip_connect=True)
    assert stats(sb)["requests"] == {}


async def test_runtime_tokens_are_redacted(
    sb: Sandbox, connect: Connect, call: Call, recording: Callable[..., type]
) -> None:
    """Tokens and the POP session cookie are registered secrets: masked even when echoed."""
    handler = await connect(recording(OnsHttpHandler), sager(sb))
    await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    first_access = handler.sent[-1].headers["Authorization"].split(" ", 1)[1]
    sb.faults("ons").expire_tokens()
    await call(handler, "export_sager_report", "2024-01-01", "2024-01-01")
    refresh = form(next(r for r in handler.sent if b"refresh_token" in r.content))["refresh_token"]
    access = handler.sent[-1].headers["Authorization"].split(" ", 1)[1]
    assert access != first_access
    token_request = next(r for r in handler.sent if r.url.path == TOKEN)
    federation_cookie = token_request.headers["Cookie"].split(".ONSPOPAUTH=", 1)[1].split(";")[0]
    secrets = [first_access, access, refresh, federation_cookie, CREDS["password"]]
    for secret in secrets:
        assert redact(f"[{secret}]") == "[***]"
    # SAGER echoes a bad date in its 400 answer: the token must not leak through it.
    body = {"dataInicio": access, "dataFim": "2024-01-01", "tipoRelatorio": 1}
    with pytest.raises(HttpStatusError) as caught:
        await call(
            handler, "post", "RelatorioApuracaoUsinasRenovaveis/exportarRelatorio", json=body
        )
    assert caught.value.status_code == 400
    assert "dataInicio" in str(caught.value)
    assert all(secret not in str(caught.value) for secret in secrets)
    with pytest.raises(AuthenticationError) as refused:
        await connect(OnsHttpHandler, sager(sb, password=WRONG_PASSWORD))
    assert all(secret not in str(refused.value) for secret in [*secrets, WRONG_PASSWORD])
