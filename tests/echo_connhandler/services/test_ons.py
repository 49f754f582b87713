"""OnsHttpHandler against the ONS emulator (POP OAuth2, SAGER, SINAPSE), sync and async.

Each scenario is a pair: ``test_..._sync`` (plain function, sync API, no event loop) and
``test_..._async`` (coroutine, ``async_*`` API); their non-I/O checks are shared helpers.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
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

SyncConnect = Callable[..., Any]
AsyncConnect = Callable[..., Awaitable[Any]]
Recording = Callable[..., type]

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
#: One day of the SAGER report, the request most scenarios repeat.
DAY = ("2024-01-01", "2024-01-01")
#: A token that expires 2 s after it is issued is refreshed 0.5 s before: wait past that.
PAST_REFRESH_MARGIN_S = 1.6

BAD_PASSWORD = pytest.mark.parametrize(
    "lazy", [False, True], ids=["on-connect", "on-first-request"]
)
FAILED_REFRESH = pytest.mark.parametrize("failure", ["token-endpoint-500", "refresh-token-revoked"])
FEDERATION_FAULT = pytest.mark.parametrize("fault", [{"drop": True}, {"delay_s": 0.5}])
SELECTED_PROFILE = pytest.mark.parametrize("encoded", [False, True], ids=["plain", "url-encoded"])
PROFILE_URL_FAILURE = pytest.mark.parametrize("answer", ["404", "html"])


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


def is_xlsx(content: bytes) -> bool:
    return content[:2] == b"PK"


# -- SAGER login and report -----------------------------------------------------------------------
def check_sager_login(sb: Sandbox, sent: list[httpx.Request]) -> None:
    assert logins(sb) == {"password": 1}
    assert stats(sb)["requests"] == {FEDERATION: 1, TOKEN: 1}
    federation, token = sent
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


def test_sager_login_on_connect_sync(
    sb: Sandbox, sync_connect: SyncConnect, recording: Recording
) -> None:
    """Connect: federation GET, then the password grant with an Origin header (sync)."""
    handler = sync_connect(recording(OnsHttpHandler), sager(sb))
    check_sager_login(sb, handler.sent)


async def test_sager_login_on_connect_async(
    sb: Sandbox, async_connect: AsyncConnect, recording: Recording
) -> None:
    """Connect: federation GET, then the password grant with an Origin header (async)."""
    handler = await async_connect(recording(OnsHttpHandler), sager(sb))
    check_sager_login(sb, handler.sent)


def report_rows(content: bytes) -> list[tuple[Any, ...]]:
    return list(openpyxl.load_workbook(io.BytesIO(content)).active.iter_rows(values_only=True))


def check_general_report(content: bytes) -> None:
    assert is_xlsx(content)
    rows = report_rows(content)
    assert rows[0][:5] == ("Data", "Agente", "Conjunto", "Usina", "Fonte")
    assert rows[0][5] == "Potência Instalada (MW)"
    assert len(rows) == 1 + 3 * 6  # 3 days x 6 usinas
    assert rows[1][0] == datetime(2024, 1, 1)
    assert rows[1][3] == "EOL Aurora I"
    assert rows[1][5] == 30.0
    assert rows[-1][0] == datetime(2024, 1, 3)


def check_reference_report(content: bytes) -> None:
    rows = report_rows(content)
    assert rows[0][5] == "Geração de Referência (MWmed)"
    assert [(row[0], row[3]) for row in rows[1:]] == [
        (datetime(2024, 2, 1), "UFV Sertão I"),
        (datetime(2024, 2, 2), "UFV Sertão I"),
    ]


#: The second report of test_export_sager_report: a datetime and a Z string, type 2, one usina.
REFERENCE_REPORT: tuple[tuple[Any, ...], dict[str, Any]] = (
    (datetime(2024, 2, 1, 12, 30), "2024-02-02T00:00:00Z"),
    {"tipo_relatorio": 2, "ids_usinas": [1004]},
)


def test_export_sager_report_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """The SAGER report comes back as .xlsx bytes, readable with openpyxl (sync)."""
    handler = sync_connect(OnsHttpHandler, sager(sb))
    check_general_report(handler.export_sager_report("2024-01-01", "2024-01-03"))
    args, kwargs = REFERENCE_REPORT
    check_reference_report(handler.export_sager_report(*args, **kwargs))
    assert logins(sb) == {"password": 1}


async def test_export_sager_report_async(sb: Sandbox, async_connect: AsyncConnect) -> None:
    """The SAGER report comes back as .xlsx bytes, readable with openpyxl (async)."""
    handler = await async_connect(OnsHttpHandler, sager(sb))
    check_general_report(await handler.async_export_sager_report("2024-01-01", "2024-01-03"))
    args, kwargs = REFERENCE_REPORT
    check_reference_report(await handler.async_export_sager_report(*args, **kwargs))
    assert logins(sb) == {"password": 1}


def test_export_sager_report_without_data_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """A period without data answers an empty body: b"" (sync)."""
    handler = sync_connect(OnsHttpHandler, sager(sb))
    assert handler.export_sager_report("2019-01-01", "2019-01-31") == b""
    assert handler.export_sager_report("2024-01-01", "2024-01-02", ids_usinas=[9]) == b""


async def test_export_sager_report_without_data_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """A period without data answers an empty body: b"" (async)."""
    handler = await async_connect(OnsHttpHandler, sager(sb))
    assert await handler.async_export_sager_report("2019-01-01", "2019-01-31") == b""
    empty = await handler.async_export_sager_report("2024-01-01", "2024-01-02", ids_usinas=[9])
    assert empty == b""


def check_unexpected_html(sb: Sandbox, caught: pytest.ExceptionInfo[Exception]) -> None:
    assert "HTML page instead of the SAGER report" in str(caught.value)
    assert hits(sb, SAGER_EXPORT) == 1


def test_maintenance_page_is_unexpected_content_sync(
    sb: Sandbox, sync_connect: SyncConnect
) -> None:
    """An HTML maintenance page with HTTP 200 instead of the report: an error (sync)."""
    handler = sync_connect(OnsHttpHandler, sager(sb))
    sb.faults("ons").script("exportarRelatorio", html=True)
    with pytest.raises(UnexpectedContentError) as caught:
        handler.export_sager_report(*DAY)
    check_unexpected_html(sb, caught)
    sb.faults("ons").script("exportarRelatorio", html=True, status=503)
    assert is_xlsx(handler.export_sager_report(*DAY))
    assert hits(sb, SAGER_EXPORT) == 3  # the 503 page is retried (read-only export)


async def test_maintenance_page_is_unexpected_content_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """An HTML maintenance page with HTTP 200 instead of the report: an error (async)."""
    handler = await async_connect(OnsHttpHandler, sager(sb))
    sb.faults("ons").script("exportarRelatorio", html=True)
    with pytest.raises(UnexpectedContentError) as caught:
        await handler.async_export_sager_report(*DAY)
    check_unexpected_html(sb, caught)
    sb.faults("ons").script("exportarRelatorio", html=True, status=503)
    assert is_xlsx(await handler.async_export_sager_report(*DAY))
    assert hits(sb, SAGER_EXPORT) == 3  # the 503 page is retried (read-only export)


# -- tokens: refresh and expiry -------------------------------------------------------------------
def check_refreshed_before_expiry(sb: Sandbox) -> None:
    assert logins(sb) == {"password": 1, "refresh_token": 1}
    assert hits(sb, SAGER_EXPORT) == 2
    assert hits(sb, FEDERATION) == 1


def test_token_is_refreshed_before_expiry_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect
) -> None:
    """A token near its expiry is refreshed (refresh_token grant) before the request (sync)."""
    sb = make_sb(ons_expires_in=2)  # refreshed 0.5 s before expiry
    handler = sync_connect(OnsHttpHandler, sager(sb))
    assert handler.export_sager_report(*DAY)
    time.sleep(PAST_REFRESH_MARGIN_S)
    assert handler.export_sager_report(*DAY)
    check_refreshed_before_expiry(sb)


async def test_token_is_refreshed_before_expiry_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect
) -> None:
    """A token near its expiry is refreshed (refresh_token grant) before the request (async)."""
    sb = make_sb(ons_expires_in=2)  # refreshed 0.5 s before expiry
    handler = await async_connect(OnsHttpHandler, sager(sb))
    assert await handler.async_export_sager_report(*DAY)
    await asyncio.sleep(PAST_REFRESH_MARGIN_S)
    assert await handler.async_export_sager_report(*DAY)
    check_refreshed_before_expiry(sb)


async def test_concurrent_calls_share_one_refresh(
    make_sb: Callable[..., Sandbox], fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """50 coroutines meeting an expiring token cause one refresh between them.

    Tokens live 8 s here (the refresh margin is then 2 s): after the refresh, the 50 exports
    have 6 s before the new token is due for refresh too. With 2-second tokens a loaded machine
    took longer than the new token's 1.5 s and rightly refreshed it a second time.
    """
    sb = make_sb(ons_expires_in=8)
    handler = async_handlers(OnsHttpHandler(sager(sb), skip_connect=True, **fast))
    await handler.async_reconnect()
    await asyncio.sleep(6.2)  # past the margin: 1.8 s left, under 8 / 4
    calls = [handler.async_export_sager_report(*DAY) for _ in range(50)]
    assert all(is_xlsx(content) for content in await asyncio.gather(*calls))
    assert logins(sb) == {"password": 1, "refresh_token": 1}
    assert hits(sb, SAGER_EXPORT) == 50


async def test_sync_and_async_callers_share_one_refresh(
    make_sb: Callable[..., Sandbox], fast: dict[str, Any], async_handlers: Callable[..., Any]
) -> None:
    """A thread and coroutines meeting an expiring token refresh once (a refresh is single-use).

    The sync parts (connect and calls) run in a worker thread, never on the loop.
    """
    sb = make_sb(ons_expires_in=2, latency_ms=50)
    handler = async_handlers(
        await asyncio.to_thread(OnsHttpHandler, sager(sb), **fast)  # sync connect
    )
    await asyncio.sleep(PAST_REFRESH_MARGIN_S)

    def sync_calls() -> list[bytes]:
        return [handler.export_sager_report(*DAY) for _ in range(5)]

    thread_results = asyncio.create_task(asyncio.to_thread(sync_calls))
    calls = [handler.async_export_sager_report(*DAY) for _ in range(5)]
    results = [*await asyncio.gather(*calls), *await thread_results]
    assert all(is_xlsx(content) for content in results)
    assert logins(sb) == {"password": 1, "refresh_token": 1}


def break_refresh(sb: Sandbox, failure: str) -> None:
    if failure == "token-endpoint-500":
        sb.faults("ons").script("oauth2/token", status=500)
    else:
        sb.faults("ons").expire_tokens(refresh_tokens=True)


def check_fell_back_to_login(sb: Sandbox) -> None:
    assert logins(sb) == {"password": 2}
    assert hits(sb, TOKEN) == 3  # login, failed refresh, login
    assert hits(sb, FEDERATION) == 2
    assert hits(sb, SAGER_EXPORT) == 1


@FAILED_REFRESH
def test_failed_refresh_falls_back_to_login_sync(
    make_sb: Callable[..., Sandbox], sync_connect: SyncConnect, failure: str
) -> None:
    """When the proactive refresh fails, the handler logs in again with the password (sync)."""
    sb = make_sb(ons_expires_in=2)
    handler = sync_connect(OnsHttpHandler, sager(sb))
    time.sleep(PAST_REFRESH_MARGIN_S)
    break_refresh(sb, failure)
    assert handler.export_sager_report(*DAY)
    check_fell_back_to_login(sb)


@FAILED_REFRESH
async def test_failed_refresh_falls_back_to_login_async(
    make_sb: Callable[..., Sandbox], async_connect: AsyncConnect, failure: str
) -> None:
    """When the proactive refresh fails, the handler logs in again with the password (async)."""
    sb = make_sb(ons_expires_in=2)
    handler = await async_connect(OnsHttpHandler, sager(sb))
    await asyncio.sleep(PAST_REFRESH_MARGIN_S)
    break_refresh(sb, failure)
    assert await handler.async_export_sager_report(*DAY)
    check_fell_back_to_login(sb)


def check_refreshed_after_401(sb: Sandbox) -> None:
    assert logins(sb) == {"password": 1, "refresh_token": 1}
    assert hits(sb, SAGER_EXPORT) == 4  # ok, 401, ok after the refresh, ok


def test_401_after_expiry_refreshes_once_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """Server-side expiry: the 401 causes one refresh and one resend, then calls go on (sync)."""
    handler = sync_connect(OnsHttpHandler, sager(sb))
    handler.export_sager_report(*DAY)
    sb.faults("ons").expire_tokens()
    assert is_xlsx(handler.export_sager_report(*DAY))
    handler.export_sager_report(*DAY)
    check_refreshed_after_401(sb)


async def test_401_after_expiry_refreshes_once_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """Server-side expiry: the 401 causes one refresh and one resend, then calls go on (async)."""
    handler = await async_connect(OnsHttpHandler, sager(sb))
    await handler.async_export_sager_report(*DAY)
    sb.faults("ons").expire_tokens()
    assert is_xlsx(await handler.async_export_sager_report(*DAY))
    await handler.async_export_sager_report(*DAY)
    check_refreshed_after_401(sb)


def check_full_login_after_401(sb: Sandbox) -> None:
    assert logins(sb) == {"password": 2}
    assert hits(sb, TOKEN) == 3
    assert hits(sb, SAGER_EXPORT) == 2


def test_401_with_revoked_refresh_token_logs_in_sync(
    sb: Sandbox, sync_connect: SyncConnect
) -> None:
    """When the refresh token is revoked too, the 401 leads to one full login (sync)."""
    handler = sync_connect(OnsHttpHandler, sager(sb))
    sb.faults("ons").expire_tokens(refresh_tokens=True)
    assert is_xlsx(handler.export_sager_report(*DAY))
    check_full_login_after_401(sb)


async def test_401_with_revoked_refresh_token_logs_in_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """When the refresh token is revoked too, the 401 leads to one full login (async)."""
    handler = await async_connect(OnsHttpHandler, sager(sb))
    sb.faults("ons").expire_tokens(refresh_tokens=True)
    assert is_xlsx(await handler.async_export_sager_report(*DAY))
    check_full_login_after_401(sb)


# -- login failures -------------------------------------------------------------------------------
def check_bad_password(sb: Sandbox, caught: pytest.ExceptionInfo[AuthenticationError]) -> None:
    message = str(caught.value)
    assert "ONS refused the login for SAGER (invalid_grant)" in message
    assert WRONG_PASSWORD not in message
    assert hits(sb, TOKEN) == 1
    assert hits(sb, SAGER_EXPORT) == 0
    assert logins(sb) == {}


@BAD_PASSWORD
def test_bad_password_fails_at_once_sync(
    sb: Sandbox, sync_connect: SyncConnect, lazy: bool
) -> None:
    """A refused password grant raises AuthenticationError after one attempt (sync)."""
    props = sager(sb, password=WRONG_PASSWORD)
    if lazy:
        handler = sync_connect(OnsHttpHandler, props, connect=False)
        with pytest.raises(AuthenticationError) as caught:
            handler.export_sager_report(*DAY)
    else:
        with pytest.raises(AuthenticationError) as caught:
            sync_connect(OnsHttpHandler, props)
    check_bad_password(sb, caught)


@BAD_PASSWORD
async def test_bad_password_fails_at_once_async(
    sb: Sandbox, async_connect: AsyncConnect, lazy: bool
) -> None:
    """A refused password grant raises AuthenticationError after one attempt (async)."""
    props = sager(sb, password=WRONG_PASSWORD)
    if lazy:
        handler = await async_connect(OnsHttpHandler, props, connect=False)
        with pytest.raises(AuthenticationError) as caught:
            await handler.async_export_sager_report(*DAY)
    else:
        with pytest.raises(AuthenticationError) as caught:
            await async_connect(OnsHttpHandler, props)
    check_bad_password(sb, caught)


def test_federation_page_failure_is_tolerated_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """A failing federation page (HTTP 500) does not stop the login (sync)."""
    sb.faults("ons").script(FEDERATION, status=500)
    handler = sync_connect(OnsHttpHandler, sager(sb))
    assert stats(sb)["faults"] == {"error": 1}
    assert logins(sb) == {"password": 1}
    assert is_xlsx(handler.export_sager_report(*DAY))


async def test_federation_page_failure_is_tolerated_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """A failing federation page (HTTP 500) does not stop the login (async)."""
    sb.faults("ons").script(FEDERATION, status=500)
    handler = await async_connect(OnsHttpHandler, sager(sb))
    assert stats(sb)["faults"] == {"error": 1}
    assert logins(sb) == {"password": 1}
    assert is_xlsx(await handler.async_export_sager_report(*DAY))


def check_login_without_federation_retry(sb: Sandbox) -> None:
    assert logins(sb) == {"password": 1}
    assert hits(sb, FEDERATION) == 1  # not asked again on the retry


@FEDERATION_FAULT
def test_federation_transport_failure_is_tolerated_sync(
    sb: Sandbox, sync_connect: SyncConnect, fault: dict[str, Any]
) -> None:
    """A federation page that drops or times out: the login goes on without it (sync)."""
    sb.faults("ons").script(FEDERATION, **fault)
    handler = sync_connect(OnsHttpHandler, sager(sb, request_timeout=0.2))
    check_login_without_federation_retry(sb)
    assert is_xlsx(handler.export_sager_report(*DAY))


@FEDERATION_FAULT
async def test_federation_transport_failure_is_tolerated_async(
    sb: Sandbox, async_connect: AsyncConnect, fault: dict[str, Any]
) -> None:
    """A federation page that drops or times out: the login goes on without it (async)."""
    sb.faults("ons").script(FEDERATION, **fault)
    handler = await async_connect(OnsHttpHandler, sager(sb, request_timeout=0.2))
    check_login_without_federation_retry(sb)
    assert is_xlsx(await handler.async_export_sager_report(*DAY))


def check_token_retried(sb: Sandbox) -> None:
    assert logins(sb) == {"password": 1}
    assert hits(sb, TOKEN) == 2


def test_rate_limited_token_endpoint_is_retried_sync(
    sb: Sandbox, sync_connect: SyncConnect
) -> None:
    """A 429 (Retry-After 0) on the password grant is retried; the login succeeds (sync)."""
    sb.faults("ons").script("oauth2/token", retry_after=0)
    handler = sync_connect(OnsHttpHandler, sager(sb))
    check_token_retried(sb)
    assert is_xlsx(handler.export_sager_report(*DAY))


async def test_rate_limited_token_endpoint_is_retried_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """A 429 (Retry-After 0) on the password grant is retried; the login succeeds (async)."""
    sb.faults("ons").script("oauth2/token", retry_after=0)
    handler = await async_connect(OnsHttpHandler, sager(sb))
    check_token_retried(sb)
    assert is_xlsx(await handler.async_export_sager_report(*DAY))


def test_plain_properties_are_refused(sb: Sandbox) -> None:
    """OnsHttpHandler needs OnsHttpConnProperties."""
    props = HttpConnProperties(host=sb.urls.ons_sager, user=CREDS["user"], password="x-pass-1")
    with pytest.raises(TypeError, match="OnsHttpHandler needs OnsHttpConnProperties"):
        OnsHttpHandler(props, skip_connect=True)
    assert stats(sb)["requests"] == {}


# -- SINAPSE profiles -----------------------------------------------------------------------------
SINAPSE_WEEK = ("2024-01-01", "2024-01-07")
ANALYTIC_COLUMNS = ["Mensagem", "Data da Última Atualização", "Responsável"]


def check_sinapse_login(sb: Sandbox, sent: list[httpx.Request]) -> None:
    assert hits(sb, PROFILES) == 1
    token = next(r for r in sent if r.url.path == TOKEN)
    assert token.headers["Origin"] == "https://pops.ons.org.br"
    assert form(token)["client_id"] == "SINAPSE"


def check_sinapse_export(content: bytes, sent: list[httpx.Request]) -> None:
    lines = content.decode("utf-8").splitlines()
    assert lines[0] == SINAPSE_HEADER
    assert len(lines) > 1
    assert all("ECHO ENERGIA" in line for line in lines[1:])
    export = sent[-1]
    assert export.url.path == SINAPSE_EXPORT
    assert export.headers["Perfil-Selecionado"] == quote(ECHO_PROFILE, safe="")


def check_analytic(analytic: bytes) -> None:
    assert analytic.decode("utf-8").splitlines()[0].split(";")[-3:] == ANALYTIC_COLUMNS


def check_only_open(only_open: bytes) -> None:
    assert {line.split(";")[4] for line in only_open.decode().splitlines()[1:]} == {"Aberta"}


def check_profile_kept_after_refresh(sb: Sandbox, sent: list[httpx.Request]) -> None:
    assert sent[-1].headers["Perfil-Selecionado"] == quote(ECHO_PROFILE, safe="")
    assert hits(sb, PROFILES) == 1  # the refresh keeps the profile
    assert logins(sb) == {"password": 1, "refresh_token": 1}


def test_sinapse_profile_from_profile_url_sync(
    sb: Sandbox, sync_connect: SyncConnect, recording: Recording
) -> None:
    """One-profile user: the profile is read once, sent URL-encoded as Perfil-Selecionado."""
    handler = sync_connect(recording(OnsHttpHandler), sinapse(sb))
    check_sinapse_login(sb, handler.sent)
    content = handler.export_sinapse(*SINAPSE_WEEK)
    check_sinapse_export(content, handler.sent)
    check_analytic(handler.export_sinapse(*SINAPSE_WEEK, analitico=True))
    check_only_open(handler.export_sinapse("2024-01-01", "2024-01-31", status="Aberta"))
    sb.faults("ons").expire_tokens()
    assert handler.export_sinapse(*SINAPSE_WEEK) == content
    check_profile_kept_after_refresh(sb, handler.sent)


async def test_sinapse_profile_from_profile_url_async(
    sb: Sandbox, async_connect: AsyncConnect, recording: Recording
) -> None:
    """One-profile user: the profile is read once, sent URL-encoded as Perfil-Selecionado."""
    handler = await async_connect(recording(OnsHttpHandler), sinapse(sb))
    check_sinapse_login(sb, handler.sent)
    content = await handler.async_export_sinapse(*SINAPSE_WEEK)
    check_sinapse_export(content, handler.sent)
    check_analytic(await handler.async_export_sinapse(*SINAPSE_WEEK, analitico=True))
    only_open = await handler.async_export_sinapse("2024-01-01", "2024-01-31", status="Aberta")
    check_only_open(only_open)
    sb.faults("ons").expire_tokens()
    assert await handler.async_export_sinapse(*SINAPSE_WEEK) == content
    check_profile_kept_after_refresh(sb, handler.sent)


def check_profiles_listed(sb: Sandbox, caught: pytest.ExceptionInfo[ProfileSelectionError]) -> None:
    message = str(caught.value)
    assert "3 SINAPSE profiles" in message
    assert ECHO_PROFILE in message
    assert OTHER_PROFILE in message
    assert "Apurador Conjunto/CONJUNTOS/501/CONJUNTO AURORA SANDBOX" in message
    assert "selected_profile" in message
    assert hits(sb, SINAPSE_EXPORT) == 0


def test_multi_profile_user_must_select_sync(sb: Sandbox, sync_connect: SyncConnect) -> None:
    """Several profiles and no selected_profile: ProfileSelectionError listing them (sync)."""
    props = sinapse(sb, user=CREDS["multi_profile_user"])
    handler = sync_connect(OnsHttpHandler, props, connect=False)
    with pytest.raises(ProfileSelectionError) as caught:
        handler.export_sinapse(*SINAPSE_WEEK)
    check_profiles_listed(sb, caught)
    with pytest.raises(ProfileSelectionError):  # and again: never a request without a profile
        handler.export_sinapse(*SINAPSE_WEEK)
    assert hits(sb, SINAPSE_EXPORT) == 0


async def test_multi_profile_user_must_select_async(
    sb: Sandbox, async_connect: AsyncConnect
) -> None:
    """Several profiles and no selected_profile: ProfileSelectionError listing them (async)."""
    props = sinapse(sb, user=CREDS["multi_profile_user"])
    handler = await async_connect(OnsHttpHandler, props, connect=False)
    with pytest.raises(ProfileSelectionError) as caught:
        await handler.async_export_sinapse(*SINAPSE_WEEK)
    check_profiles_listed(sb, caught)
    with pytest.raises(ProfileSelectionError):  # and again: never a request without a profile
        await handler.async_export_sinapse(*SINAPSE_WEEK)
    assert hits(sb, SINAPSE_EXPORT) == 0


SELECTED_PERIOD = ("2024-03-01", "2024-03-10")


def selected_props(sb: Sandbox, encoded: bool) -> OnsHttpConnProperties:
    selected = quote(OTHER_PROFILE, safe="") if encoded else OTHER_PROFILE
    return sinapse(sb, user=CREDS["multi_profile_user"], selected_profile=selected)


def check_selected_profile_used(sb: Sandbox, content: bytes) -> None:
    lines = content.decode("utf-8").splitlines()
    assert lines[0] == SINAPSE_HEADER
    assert len(lines) > 1
    assert all("ECHO EOLICA SANDBOX" in line for line in lines[1:])
    assert hits(sb, PROFILES) == 0
    assert logins(sb) == {"password": 1}


@SELECTED_PROFILE
def test_selected_profile_skips_profile_url_sync(
    sb: Sandbox, sync_connect: SyncConnect, encoded: bool
) -> None:
    """A selected_profile (plain or URL-encoded) is used as is; no profile call (sync)."""
    handler = sync_connect(OnsHttpHandler, selected_props(sb, encoded))
    check_selected_profile_used(sb, handler.export_sinapse(*SELECTED_PERIOD))


@SELECTED_PROFILE
async def test_selected_profile_skips_profile_url_async(
    sb: Sandbox, async_connect: AsyncConnect, encoded: bool
) -> None:
    """A selected_profile (plain or URL-encoded) is used as is; no profile call (async)."""
    handler = await async_connect(OnsHttpHandler, selected_props(sb, encoded))
    check_selected_profile_used(sb, await handler.async_export_sinapse(*SELECTED_PERIOD))


def broken_profile_props(sb: Sandbox, answer: str) -> OnsHttpConnProperties:
    if answer == "404":
        return sinapse(sb, profile_url=f"{sb.urls.ons_sinapse}/no/such/profiles")
    sb.faults("ons").script("usuario/perfis", html=True)
    return sinapse(sb)


def check_profile_url_failure(
    sb: Sandbox, caught: pytest.ExceptionInfo[ProfileSelectionError], answer: str
) -> None:
    message = str(caught.value)
    assert "set selected_profile" in message
    assert "profile_url" in message
    assert ("HTTP 404" in message) == (answer == "404")
    assert hits(sb, SINAPSE_EXPORT) == 0


@PROFILE_URL_FAILURE
def test_profile_url_failure_says_what_to_set_sync(
    sb: Sandbox, sync_connect: SyncConnect, answer: str
) -> None:
    """An unusable profile URL: ProfileSelectionError naming what to set (sync)."""
    props = broken_profile_props(sb, answer)
    with pytest.raises(ProfileSelectionError) as caught:
        sync_connect(OnsHttpHandler, props)
    check_profile_url_failure(sb, caught, answer)


@PROFILE_URL_FAILURE
async def test_profile_url_failure_says_what_to_set_async(
    sb: Sandbox, async_connect: AsyncConnect, answer: str
) -> None:
    """An unusable profile URL: ProfileSelectionError naming what to set (async)."""
    props = broken_profile_props(sb, answer)
    with pytest.raises(ProfileSelectionError) as caught:
        await async_connect(OnsHttpHandler, props)
    check_profile_url_failure(sb, caught, answer)


@pytest.mark.parametrize("target", ["SAGER", "SINAPSE"])
async def test_hundred_coroutines_log_in_once(
    sb: Sandbox, fast: dict[str, Any], async_handlers: Callable[..., Any], target: str
) -> None:
    """100 coroutines on a fresh handler: one federation GET, one grant, one profile call."""
    if target == "SAGER":
        handler = async_handlers(OnsHttpHandler(sager(sb), skip_connect=True, **fast))
        calls = [handler.async_export_sager_report(*DAY) for _ in range(100)]
        export = SAGER_EXPORT
    else:
        handler = async_handlers(OnsHttpHandler(sinapse(sb), skip_connect=True, **fast))
        calls = [handler.async_export_sinapse("2024-01-01", "2024-01-02") for _ in range(100)]
        export = SINAPSE_EXPORT
    results = await asyncio.gather(*calls)
    assert all(len(result) > 0 for result in results)
    assert logins(sb) == {"password": 1}
    assert hits(sb, FEDERATION) == 1
    assert hits(sb, PROFILES) == (1 if target == "SINAPSE" else 0)
    assert hits(sb, export) == 100


# -- secrets --------------------------------------------------------------------------------------
def bearer_of(request: httpx.Request) -> str:
    return request.headers["Authorization"].split(" ", 1)[1]


def runtime_secrets(sent: list[httpx.Request], first_access: str) -> tuple[str, list[str]]:
    """The current access token, and every secret obtained at run time (all registered)."""
    refresh = form(next(r for r in sent if b"refresh_token" in r.content))["refresh_token"]
    access = bearer_of(sent[-1])
    assert access != first_access
    token_request = next(r for r in sent if r.url.path == TOKEN)
    federation_cookie = token_request.headers["Cookie"].split(".ONSPOPAUTH=", 1)[1].split(";")[0]
    secrets = [first_access, access, refresh, federation_cookie, CREDS["password"]]
    for secret in secrets:
        assert redact(f"[{secret}]") == "[***]"
    return access, secrets


def echoing_body(access: str) -> dict[str, Any]:
    """SAGER echoes a bad date in its 400 answer: the token must not leak through it."""
    return {"dataInicio": access, "dataFim": "2024-01-01", "tipoRelatorio": 1}


ECHO_ENDPOINT = "RelatorioApuracaoUsinasRenovaveis/exportarRelatorio"


def check_echo_redacted(caught: pytest.ExceptionInfo[HttpStatusError], secrets: list[str]) -> None:
    assert caught.value.status_code == 400
    assert "dataInicio" in str(caught.value)
    assert all(secret not in str(caught.value) for secret in secrets)


def check_refused_redacted(
    refused: pytest.ExceptionInfo[AuthenticationError], secrets: list[str]
) -> None:
    assert all(secret not in str(refused.value) for secret in [*secrets, WRONG_PASSWORD])


def test_runtime_tokens_are_redacted_sync(
    sb: Sandbox, sync_connect: SyncConnect, recording: Recording
) -> None:
    """Tokens and the POP session cookie are registered secrets: masked when echoed (sync)."""
    handler = sync_connect(recording(OnsHttpHandler), sager(sb))
    handler.export_sager_report(*DAY)
    first_access = bearer_of(handler.sent[-1])
    sb.faults("ons").expire_tokens()
    handler.export_sager_report(*DAY)
    access, secrets = runtime_secrets(handler.sent, first_access)
    with pytest.raises(HttpStatusError) as caught:
        handler.post(ECHO_ENDPOINT, json=echoing_body(access))
    check_echo_redacted(caught, secrets)
    with pytest.raises(AuthenticationError) as refused:
        sync_connect(OnsHttpHandler, sager(sb, password=WRONG_PASSWORD))
    check_refused_redacted(refused, secrets)


async def test_runtime_tokens_are_redacted_async(
    sb: Sandbox, async_connect: AsyncConnect, recording: Recording
) -> None:
    """Tokens and the POP session cookie are registered secrets: masked when echoed (async)."""
    handler = await async_connect(recording(OnsHttpHandler), sager(sb))
    await handler.async_export_sager_report(*DAY)
    first_access = bearer_of(handler.sent[-1])
    sb.faults("ons").expire_tokens()
    await handler.async_export_sager_report(*DAY)
    access, secrets = runtime_secrets(handler.sent, first_access)
    with pytest.raises(HttpStatusError) as caught:
        await handler.async_post(ECHO_ENDPOINT, json=echoing_body(access))
    check_echo_redacted(caught, secrets)
    with pytest.raises(AuthenticationError) as refused:
        await async_connect(OnsHttpHandler, sager(sb, password=WRONG_PASSWORD))
    check_refused_redacted(refused, secrets)
