"""Emulator of the ONS POP login, SAGER renováveis and SINAPSE, see docs/services/ons.md.

One app serves the three hosts of the real service under path prefixes:

* **POP identity provider**, ``/ons.pop.federation``:

  - ``GET /ons.pop.federation/`` (any query, e.g. ``?ReturnUrl=...``) and ``POST`` to it answer
    an HTML login page with status 200 and set the (made-up) cookie ``.ONSPOPAUTH``; credentials
    are never checked here (docs/services/ons.md, "The login": "never the credential check");
  - ``POST /ons.pop.federation/oauth2/token``, form-encoded. ``grant_type=password`` with
    ``client_id`` ``SAGER`` or ``SINAPSE``, ``username``, ``password`` -> ``{"access_token"
    (JWT-shaped), "token_type": "bearer", "expires_in", "refresh_token"}``.
    ``grant_type=refresh_token`` with ``refresh_token`` and ``client_id`` -> a new pair (the old
    refresh token is consumed). Errors are 400 ``{"error", "error_description"}``, checked in
    this order: no ``Origin`` header (when ``SandboxConfig.ons_require_origin``; its value is
    not checked, an ASSUMPTION in docs/services/ons.md) -> ``invalid_request``; unknown
    ``client_id`` -> ``invalid_client``; other ``grant_type`` -> ``unsupported_grant_type``; bad
    credentials or an unknown / used / revoked refresh token (or one of another client) ->
    ``invalid_grant``;
  - access tokens expire server-side after ``expires_in`` seconds and on
    ``FaultInjector.expire_tokens()``; refresh tokens only on ``expire_tokens(refresh_tokens=
    True)``. Data endpoints then answer 401 ``{"error": "invalid_token"}`` (with
    ``WWW-Authenticate: Bearer error="invalid_token"``). A token is valid only for its client:
    SAGER tokens on SAGER, SINAPSE tokens on SINAPSE (else 401 too).

* **SAGER**, ``/api/sager/renovaveis/api``: ``POST RelatorioApuracaoUsinasRenovaveis/
  exportarRelatorio`` with the JSON body of docs/services/ons.md, "Exports", returns a real
  ``.xlsx`` (one sheet, header on row 1, one row per day and usina; ``tipoRelatorio`` 1 = general
  report, 2 = reference generation) or an **empty 200 body** when nothing matches (period entirely
  before 2020-01-01 or from today on, or filters that exclude every usina). Days go from the date of
  ``dataInicio`` to the date of ``dataFim``, inclusive. Missing or bad dates or ids: 400
  ``{"mensagem": ...}``; a period longer than 366 days is refused the same way (a sandbox limit, an
  ASSUMPTION).

* **SINAPSE**, ``/sinapse/api``: ``GET usuario/perfis`` (the profile-list endpoint, an ASSUMPTION in
  docs/services/ons.md, "SINAPSE profile") returns ``[{"perfil", "tipoEscopo", "idEscopo",
  "nomeEscopo"}]``: one profile for ``demo.user``, three for ``multi.user``. ``POST
  solicitacao/pesquisa/exportar`` and ``.../exportar-analitico`` need the header
  ``Perfil-Selecionado`` = ``quote("<perfil>/<tipoEscopo>/<idEscopo>/<nomeEscopo>", safe="")``
  naming one of the user's profiles: it must be URL-encoded (a raw ``/`` or space is refused), else
  403 ``{"mensagem": "Perfil inválido"}``. The JSON body has ``periodoInicial`` / ``periodoFinal``
  (ISO dates, required), optional ``origem`` / ``destino`` / ``status`` (equality, case-insensitive)
  and ``mensagem`` (substring of subject or message); the answer is ``;``-separated UTF-8 CSV (dates
  written ``dd/mm/yyyy HH:MM``, as Brazilian exports do).
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

from openpyxl import Workbook
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ._config import DEMO_CREDENTIALS, SandboxConfig
from ._data import html_page, jwt_like, random_token, stable_choice, stable_int, unit
from ._faults import FaultInjector, FaultMiddleware, admin_routes

__all__ = [
    "AUTH_PREFIX",
    "LOGIN_COOKIE",
    "PROFILE_HEADER",
    "SAGER_PREFIX",
    "SINAPSE_PREFIX",
    "XLSX_MEDIA_TYPE",
    "ons_app",
]

AUTH_PREFIX = "/ons.pop.federation"
SAGER_PREFIX = "/api/sager/renovaveis/api"
SINAPSE_PREFIX = "/sinapse/api"
#: Made-up name of the cookie set by the POP login page.
LOGIN_COOKIE = ".ONSPOPAUTH"
PROFILE_HEADER = "Perfil-Selecionado"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

_CLIENTS = ("SAGER", "SINAPSE")
_FIRST_DATA_DAY = date(2020, 1, 1)
_MAX_PERIOD_DAYS = 366

_Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Profile:
    """A SINAPSE profile of a user."""

    perfil: str
    tipo_escopo: str
    id_escopo: int
    nome_escopo: str

    @property
    def header_value(self) -> str:
        """The decoded ``Perfil-Selecionado`` value (send it URL-encoded)."""
        return f"{self.perfil}/{self.tipo_escopo}/{self.id_escopo}/{self.nome_escopo}"

    def as_json(self) -> dict[str, Any]:
        return {
            "perfil": self.perfil,
            "tipoEscopo": self.tipo_escopo,
            "idEscopo": self.id_escopo,
            "nomeEscopo": self.nome_escopo,
        }


_ECHO = Profile("Apurador Agente", "AGENTES", 189, "ECHO ENERGIA")
_PROFILES: dict[str, tuple[Profile, ...]] = {
    "demo.user": (_ECHO,),
    "multi.user": (
        _ECHO,
        Profile("Consulta Agente", "AGENTES", 190, "ECHO EOLICA SANDBOX"),
        Profile("Apurador Conjunto", "CONJUNTOS", 501, "CONJUNTO AURORA SANDBOX"),
    ),
}
_FAVORITE_AGENTS: dict[str, frozenset[int]] = {
    "demo.user": frozenset({189}),
    "multi.user": frozenset({189, 190}),
}


@dataclass(frozen=True)
class Usina:
    """A (made-up) renewable plant of the SAGER report."""

    id: int
    nome: str
    conjunto_id: int
    conjunto: str
    agente_id: int
    agente: str
    fonte_id: int
    fonte: str
    capacidade_mw: float


_USINAS: tuple[Usina, ...] = (
    Usina(1001, "EOL Aurora I", 501, "Conjunto Aurora", 189, "ECHO ENERGIA", 1, "Eólica", 30.0),
    Usina(1002, "EOL Aurora II", 501, "Conjunto Aurora", 189, "ECHO ENERGIA", 1, "Eólica", 27.3),
    Usina(1003, "EOL Brisa Serena", 502, "Conjunto Brisa", 189, "ECHO ENERGIA", 1, "Eólica", 42.0),
    Usina(
        1004, "UFV Sertão I", 503, "Conjunto Sertão", 190, "ECHO EOLICA SANDBOX", 2, "Solar", 50.0
    ),
    Usina(
        1005, "UFV Sertão II", 503, "Conjunto Sertão", 190, "ECHO EOLICA SANDBOX", 2, "Solar", 45.0
    ),
    Usina(1006, "EOL Cajueiro", 504, "Conjunto Cajueiro", 777, "OUTRO AGENTE", 1, "Eólica", 36.0),
)

_STATUSES = ("Aberta", "Em Análise", "Respondida", "Encerrada")
_SUBJECTS = (
    "Restrição de geração",
    "Reclassificação de evento",
    "Consulta sobre apuração",
    "Contestação de indisponibilidade",
)
_SINAPSE_COLUMNS = ("Número", "Data de Abertura", "Origem", "Destino", "Status", "Assunto")
_SINAPSE_ANALYTIC_COLUMNS = (
    *_SINAPSE_COLUMNS,
    "Mensagem",
    "Data da Última Atualização",
    "Responsável",
)


class _BadRequest(ValueError):
    """Answered 400 ``{"mensagem": ...}``."""


@dataclass
class _Grant:
    client_id: str
    user: str
    expires_at: float
    generation: int


@dataclass
class _RefreshGrant:
    client_id: str
    user: str
    generation: int


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _invalid_token(description: str) -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_token", "error_description": description},
        status_code=401,
        headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'
        },
    )


def _mensagem(message: str, status: int) -> JSONResponse:
    return JSONResponse({"mensagem": message}, status_code=status)


def _error_body(status: int) -> object:
    return {"mensagem": f"Erro {status} injetado pelo sandbox", "status": status}


def _maintenance_page() -> str:
    return html_page(
        "ONS - Sistema em manutenção",
        "O sistema está temporariamente indisponível para manutenção. Tente mais tarde.",
    )


#: SAGER's dates: ISO-8601 UTC with milliseconds and ``Z`` (docs/services/ons.md, "Exports").
_SAGER_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def parse_moment(value: object, name: str, *, sager_format: bool = False) -> datetime:
    """An ISO-8601 date or datetime (``Z`` allowed; naive = UTC) or a 400.

    ``sager_format``: only ``2024-01-01T00:00:00.000Z`` is accepted, as the public SAGER clients
    send it, so that a client sending another shape is caught here rather than in production.
    """
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f"O campo {name} é obrigatório.")
    if sager_format and not _SAGER_MOMENT.fullmatch(value.strip()):
        raise _BadRequest(
            f"O campo {name} deve estar no formato AAAA-MM-DDTHH:MM:SS.mmmZ: {value!r}."
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _BadRequest(f"O campo {name} não é uma data válida: {value!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _id_list(body: dict[str, Any], name: str) -> frozenset[int]:
    value = body.get(name)
    if value is None:
        return frozenset()
    if not isinstance(value, list) or any(
        isinstance(item, bool) or not isinstance(item, int | str) for item in value
    ):
        raise _BadRequest(f"O campo {name} deve ser uma lista de identificadores.")
    try:
        return frozenset(int(item) for item in value)
    except ValueError:
        raise _BadRequest(f"O campo {name} deve ser uma lista de identificadores.") from None


def _days(start: datetime, end: datetime) -> list[date]:
    if end < start:
        raise _BadRequest("A data inicial deve ser anterior à data final.")
    first, last = start.date(), end.date()
    if (last - first).days + 1 > _MAX_PERIOD_DAYS:
        raise _BadRequest(f"O período máximo é de {_MAX_PERIOD_DAYS} dias.")
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def build_report(seed: int, usinas: list[Usina], days: list[date], tipo: int) -> bytes:
    """The SAGER report as .xlsx bytes (one row per day and usina)."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Relatorio")
    common = ["Data", "Agente", "Conjunto", "Usina", "Fonte"]
    if tipo == 1:
        sheet.append(
            [
                *common,
                "Potência Instalada (MW)",
                "Geração Verificada (MWmed)",
                "Restrição (MWmed)",
                "Disponibilidade (%)",
            ]
        )
    else:
        sheet.append(
            [
                *common,
                "Geração de Referência (MWmed)",
                "Geração Verificada (MWmed)",
                "Geração Frustrada (MWmed)",
            ]
        )
    for day in days:
        for usina in usinas:
            factor = 0.25 + 0.45 * unit(seed, "sager-factor", usina.id, day.isoformat())
            reference = round(usina.capacidade_mw * factor, 3)
            cut = 0.0
            if unit(seed, "sager-cut", usina.id, day.isoformat()) < 0.15:
                cut = round(reference * 0.3 * unit(seed, "sager-cut-size", usina.id, day), 3)
            verified = round(reference - cut, 3)
            cells: list[object] = [day, usina.agente, usina.conjunto, usina.nome, usina.fonte]
            if tipo == 1:
                availability = round(90 + 10 * unit(seed, "sager-avail", usina.id, day), 2)
                cells += [usina.capacidade_mw, verified, cut, availability]
            else:
                cells += [reference, verified, cut]
            sheet.append(cells)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def sinapse_rows(
    seed: int, profile: Profile, days: list[date], analytic: bool, filters: dict[str, str]
) -> list[list[str]]:
    """Deterministic SINAPSE requests ("solicitações") of a profile, filtered."""
    rows: list[list[str]] = []
    for day in days:
        count = stable_int(0, 3, seed, "sinapse-count", profile.id_escopo, day.isoformat())
        for number in range(1, count + 1):
            key = (seed, profile.id_escopo, day.isoformat(), number)
            incoming = unit(*key, "direction") < 0.5
            origem, destino = (
                ("ONS", profile.nome_escopo) if incoming else (profile.nome_escopo, "ONS")
            )
            status = stable_choice(_STATUSES, *key, "status")
            subject = stable_choice(_SUBJECTS, *key, "subject")
            opened = datetime.combine(day, datetime.min.time()) + timedelta(
                minutes=stable_int(7 * 60, 19 * 60, *key, "minute")
            )
            numero = f"{day:%Y%m%d}{profile.id_escopo:04d}{number:02d}"
            message = f"{subject} - solicitação {numero} (sandbox)"
            if filters.get("origem") and filters["origem"].lower() != origem.lower():
                continue
            if filters.get("destino") and filters["destino"].lower() != destino.lower():
                continue
            if filters.get("status") and filters["status"].lower() != status.lower():
                continue
            needle = filters.get("mensagem", "").lower()
            if needle and needle not in subject.lower() and needle not in message.lower():
                continue
            row = [numero, f"{opened:%d/%m/%Y %H:%M}", origem, destino, status, subject]
            if analytic:
                updated = opened + timedelta(hours=stable_int(1, 72, *key, "updated"))
                row += [message, f"{updated:%d/%m/%Y %H:%M}", "Analista ONS (sandbox)"]
            rows.append(row)
    return rows


def _csv_bytes(columns: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


class _OnsState:
    def __init__(self, config: SandboxConfig, faults: FaultInjector) -> None:
        self.config = config
        self.faults = faults
        credentials = DEMO_CREDENTIALS["ons"]
        self.passwords = {
            credentials["user"]: credentials["password"],
            credentials["multi_profile_user"]: credentials["multi_profile_password"],
        }
        self.access: dict[str, _Grant] = {}
        self.refresh: dict[str, _RefreshGrant] = {}
        #: every token ever issued, in order (for secret scans of what clients left behind)
        self.issued: list[str] = []

    def issue(self, client_id: str, user: str) -> dict[str, Any]:
        expires_in = self.config.ons_expires_in
        token = jwt_like(
            {
                "sub": user,
                "client_id": client_id,
                "iss": "ons.pop.federation (sandbox)",
                "exp": int(time.time()) + expires_in,
            }
        )
        refresh = random_token(32)
        self.access[token] = _Grant(
            client_id, user, time.monotonic() + expires_in, self.faults.token_generation
        )
        self.refresh[refresh] = _RefreshGrant(client_id, user, self.faults.refresh_generation)
        self.issued += (token, refresh)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": expires_in,
            "refresh_token": refresh,
        }

    def check(self, request: Request, client_id: str) -> _Grant | JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _invalid_token("Bearer token required")
        grant = self.access.get(token)
        if grant is None:
            return _invalid_token("Unknown token")
        if grant.generation != self.faults.token_generation or time.monotonic() >= grant.expires_at:
            return _invalid_token("The access token expired")
        if grant.client_id != client_id:
            return _invalid_token(f"Token not valid for {client_id}")
        return grant


def ons_app(config: SandboxConfig | None = None, faults: FaultInjector | None = None) -> Starlette:
    """Build the ONS emulator (POP login, SAGER, SINAPSE).

    Args:
        config: sandbox settings (seed, ``ons_expires_in``, ``ons_require_origin``,
            ``latency_ms``); defaults to ``SandboxConfig()``.
        faults: the injector to use; a new one (named ``"ons"``) when omitted. It is also
            reachable as ``app.state.faults``.
    """
    config = config or SandboxConfig()
    faults = faults or FaultInjector("ons", config.seed, base_latency_ms=config.latency_ms)
    state = _OnsState(config, faults)
    seed = config.seed

    async def login_page(request: Request) -> Response:
        return_url = request.query_params.get("ReturnUrl", "")
        body = (
            '<form method="post" action="">'
            f'<input type="hidden" name="ReturnUrl" value="{html.escape(return_url)}">'
            '<label>Usuário <input name="username"></label>'
            '<label>Senha <input name="password" type="password"></label>'
            "<button>Entrar</button></form>"
        )
        response = HTMLResponse(html_page("ONS - POP - Login", body, escape_body=False))
        response.set_cookie(LOGIN_COOKIE, random_token(24), path="/", httponly=True)
        return response

    async def token(request: Request) -> Response:
        form = {
            key: values[-1]
            for key, values in parse_qs(
                (await request.body()).decode("utf-8", "replace"), keep_blank_values=True
            ).items()
        }
        if config.ons_require_origin and not request.headers.get("origin"):
            return _oauth_error("invalid_request", "Origin header required")
        client_id = form.get("client_id", "").strip().upper()
        if client_id not in _CLIENTS:
            return _oauth_error("invalid_client", "Cliente inválido")
        grant_type = form.get("grant_type", "")
        if grant_type == "password":
            user = form.get("username", "")
            expected = state.passwords.get(user)
            if expected is None or form.get("password", "") != expected:
                return _oauth_error("invalid_grant", "Usuário ou senha inválidos")
        elif grant_type == "refresh_token":
            refresh = state.refresh.pop(form.get("refresh_token", ""), None)
            if (
                refresh is None
                or refresh.client_id != client_id
                or refresh.generation != faults.refresh_generation
            ):
                return _oauth_error("invalid_grant", "Refresh token inválido ou expirado")
            user = refresh.user
        else:
            return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} inválido")
        faults.record_login(grant_type)
        return JSONResponse(state.issue(client_id, user), headers={"Cache-Control": "no-store"})

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise _BadRequest("Corpo da requisição não é um JSON válido.") from None
        if not isinstance(body, dict):
            raise _BadRequest("Corpo da requisição deve ser um objeto JSON.")
        return body

    async def sager_report(request: Request) -> Response:
        grant = state.check(request, "SAGER")
        if isinstance(grant, JSONResponse):
            return grant
        try:
            body = await json_body(request)
            start = parse_moment(body.get("dataInicio"), "dataInicio", sager_format=True)
            end = parse_moment(body.get("dataFim"), "dataFim", sager_format=True)
            days = _days(start, end)
            tipo = body.get("tipoRelatorio")
            if isinstance(tipo, bool) or tipo not in (1, 2, "1", "2"):
                raise _BadRequest("tipoRelatorio deve ser 1 (geral) ou 2 (geração de referência).")
            filters = {
                name: _id_list(body, name)
                for name in ("idsConjuntos", "idsUsinas", "idsAgentes", "idsFontes")
            }
        except _BadRequest as exc:
            return _mensagem(str(exc), 400)
        favorites = _FAVORITE_AGENTS.get(grant.user, frozenset())
        only_favorites = bool(body.get("apenasAgentesFavoritos"))
        usinas = [
            usina
            for usina in _USINAS
            if (not filters["idsConjuntos"] or usina.conjunto_id in filters["idsConjuntos"])
            and (not filters["idsUsinas"] or usina.id in filters["idsUsinas"])
            and (not filters["idsAgentes"] or usina.agente_id in filters["idsAgentes"])
            and (not filters["idsFontes"] or usina.fonte_id in filters["idsFontes"])
            and (not only_favorites or usina.agente_id in favorites)
        ]
        today = datetime.now(UTC).date()
        days = [day for day in days if _FIRST_DATA_DAY <= day < today]
        if not usinas or not days:
            return Response(b"", media_type=XLSX_MEDIA_TYPE)
        content = await asyncio.to_thread(build_report, seed, usinas, days, int(tipo))
        filename = f"RelatorioApuracaoUsinasRenovaveis_{days[0]:%Y%m%d}_{days[-1]:%Y%m%d}.xlsx"
        return Response(
            content,
            media_type=XLSX_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def profiles(request: Request) -> Response:
        grant = state.check(request, "SINAPSE")
        if isinstance(grant, JSONResponse):
            return grant
        return JSONResponse([profile.as_json() for profile in _PROFILES.get(grant.user, ())])

    def export(analytic: bool) -> _Handler:
        async def handler(request: Request) -> Response:
            grant = state.check(request, "SINAPSE")
            if isinstance(grant, JSONResponse):
                return grant
            raw = request.headers.get(PROFILE_HEADER, "")
            selected = next(
                (
                    profile
                    for profile in _PROFILES.get(grant.user, ())
                    if raw
                    and "/" not in raw
                    and " " not in raw
                    and unquote(raw) == profile.header_value
                ),
                None,
            )
            if selected is None:
                return _mensagem("Perfil inválido", 403)
            try:
                body = await json_body(request)
                start = parse_moment(body.get("periodoInicial"), "periodoInicial")
                end = parse_moment(body.get("periodoFinal"), "periodoFinal")
                days = _days(start, end)
            except _BadRequest as exc:
                return _mensagem(str(exc), 400)
            filters = {
                name: str(body.get(name) or "")
                for name in ("origem", "destino", "status", "mensagem")
            }
            rows = sinapse_rows(seed, selected, days, analytic, filters)
            columns = _SINAPSE_ANALYTIC_COLUMNS if analytic else _SINAPSE_COLUMNS
            name = "exportar-analitico" if analytic else "exportar"
            return Response(
                _csv_bytes(columns, rows),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="solicitacoes-{name}.csv"'},
            )

        handler.__name__ = "exportar_analitico" if analytic else "exportar"
        return handler

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = "Recurso não encontrado." if status == 404 else "Método não permitido."
        return _mensagem(message, status)

    routes = [
        *admin_routes(faults),
        Route(AUTH_PREFIX, login_page, methods=["GET", "POST"]),
        Route(f"{AUTH_PREFIX}/", login_page, methods=["GET", "POST"]),
        Route(f"{AUTH_PREFIX}/oauth2/token", token, methods=["POST"]),
        Route(
            f"{SAGER_PREFIX}/RelatorioApuracaoUsinasRenovaveis/exportarRelatorio",
            sager_report,
            methods=["POST"],
        ),
        Route(f"{SINAPSE_PREFIX}/usuario/perfis", profiles, methods=["GET"]),
        Route(f"{SINAPSE_PREFIX}/solicitacao/pesquisa/exportar", export(False), methods=["POST"]),
        Route(
            f"{SINAPSE_PREFIX}/solicitacao/pesquisa/exportar-analitico",
            export(True),
            methods=["POST"],
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                FaultMiddleware,
                faults=faults,
                html_page=_maintenance_page(),
                error_body=_error_body,
            )
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.faults = faults
    app.state.config = config
    app.state.issued = state.issued
    return app
