"""ONS SAGER / SINAPSE: the POP OAuth2 login, refresh, SINAPSE profile, report exports.

The flow, from docs/services/ons.md, "The login (POP identity provider, HIGH)" (HIGH unless
noted):

1. ``GET {auth_url}/?ReturnUrl=...``: the federation page; sets cookies. A bad password also
   gets HTML 200 here, so this step is never the credential check; a non-200 is tolerated.
2. ``POST {auth_url}/oauth2/token`` (form): ``grant_type=password``, ``client_id`` =
   ``login_target``, ``username``, ``password``, with an ``Origin`` header (ASSUMPTION that it is
   checked; configurable). Errors (``invalid_grant``, ``invalid_client``, ...) are bad
   credentials: :class:`AuthenticationError`, never retried.
3. ``Authorization: Bearer <access_token>``. The token lives ``expires_in`` seconds (~20 min):
   refreshed proactively (``grant_type=refresh_token``) shortly before expiry, at most one refresh
   at a time; a failed refresh falls back to a full login; a 401 causes one refresh and one resend.
4. SINAPSE only: the ``Perfil-Selecionado`` header, URL-encoded
   ``<perfil>/<tipo escopo>/<id escopo>/<nome escopo>`` (MED), from ``selected_profile`` or from
   ``GET {profile_url}`` (ASSUMPTION: a JSON list of profiles).

Exports return raw bytes: SAGER's report is an .xlsx (an empty body means no data), SINAPSE's a
``;``-separated UTF-8 CSV. Both are read-only POST queries, marked idempotent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, ClassVar, TypedDict, Unpack
from urllib.parse import quote, unquote

import httpx
import pendulum

from echo_connhandler._auth import LoginFlow, SessionAuth, derive_request
from echo_connhandler._exceptions import (
    AuthenticationError,
    HttpStatusError,
    ProfileSelectionError,
    UnexpectedContentError,
)
from echo_connhandler._handler import HttpHandler, _origin, expect_json, is_html, ssl_context
from echo_connhandler._properties import OnsHttpConnProperties

__all__ = [
    "SAGER_REPORT_ENDPOINT",
    "SINAPSE_EXPORT_ENDPOINT",
    "OnsHttpHandler",
    "OnsOAuth2",
    "SagerReportOptions",
    "SinapseExportFilters",
    "format_ons_datetime",
    "profile_header_value",
    "sager_report_body",
    "sinapse_export_body",
]

logger = logging.getLogger("echo_connhandler.ons")

SAGER_REPORT_ENDPOINT = "RelatorioApuracaoUsinasRenovaveis/exportarRelatorio"
SINAPSE_EXPORT_ENDPOINT = "solicitacao/pesquisa/exportar"
#: Refresh this long before ``expires_in`` runs out (docs/services/ons.md, "Refresh"); for
#: short-lived tokens, a quarter of their life.
REFRESH_MARGIN_S = 60.0
#: OAuth2 error codes that mean the credentials (or the client id) are wrong.
_CREDENTIAL_ERRORS = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "invalid_credentials",
        "unauthorized_client",
        "invalid_request",
        "access_denied",
    }
)
_PROFILE_KEYS = ("perfil", "tipoEscopo", "idEscopo", "nomeEscopo")


def profile_header_value(profile: str | Mapping[str, Any]) -> str:
    """The URL-encoded ``Perfil-Selecionado`` value for a profile.

    Accepts ``"Apurador Agente/AGENTES/189/ECHO"`` (encoded here), an already encoded value (kept),
    or a profile object with ``perfil``, ``tipoEscopo``, ``idEscopo``, ``nomeEscopo``.
    """
    if isinstance(profile, Mapping):
        missing = [k for k in _PROFILE_KEYS if profile.get(k) in (None, "")]
        if missing:
            raise ProfileSelectionError(f"profile {dict(profile)!r} lacks {', '.join(missing)}")
        profile = "/".join(str(profile[k]) for k in _PROFILE_KEYS)
    if "%" in profile and unquote(profile) != profile:
        return profile  # already encoded
    return quote(profile, safe="")


def format_ons_datetime(value: datetime | date | str) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as SAGER expects (``2024-01-01T00:00:00.000Z``)."""
    if isinstance(value, str):
        moment = pendulum.parse(value, tz="UTC")
        if not isinstance(moment, datetime):
            raise ValueError(f"not a date or date-time: {value!r}")
    elif isinstance(value, datetime):
        moment = pendulum.instance(value, tz="UTC")
    else:
        moment = pendulum.datetime(value.year, value.month, value.day, tz="UTC")
    utc = pendulum.instance(moment).in_timezone("UTC")
    return utc.format("YYYY-MM-DDTHH:mm:ss.SSS") + "Z"


class OnsOAuth2(SessionAuth):
    """The POP password grant, refresh and (SINAPSE) profile selection, as one auth flow."""

    def __init__(self, props: OnsHttpConnProperties) -> None:
        super().__init__()
        self._props = props
        self._access_token: str | None = None
        self._refresh_token: str | None = None
        self._expires_at = 0.0
        #: The federation page's request failed in transport last time (an httpx auth flow
        #: cannot catch that: the attempt fails); the retry's login goes on without it.
        self._skip_federation_once = False
        self._profile: str | None = (
            profile_header_value(props.selected_profile) if props.selected_profile else None
        )

    @property
    def profile(self) -> str | None:
        """The ``Perfil-Selecionado`` value in use (SINAPSE), URL-encoded."""
        return self._profile

    def needs_login(self) -> bool:
        if self._access_token is None:
            return True
        if self._props.login_target == "SINAPSE" and self._profile is None:
            # The profile selection failed: no SINAPSE request may go out without the header.
            return True
        return time.monotonic() >= self._expires_at

    def _token_request(self, template: httpx.Request, data: dict[str, str]) -> httpx.Request:
        return derive_request(
            template,
            "POST",
            self._props.token_url,
            headers={"Origin": self._props.effective_origin, "Accept": "application/json"},
            data={**data, "client_id": self._props.login_target},
        )

    def _store(self, response: httpx.Response) -> None:
        payload = expect_json(response)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not token:
            raise UnexpectedContentError.from_response(
                response, "token answer without access_token"
            )
        expires_in = _expires_in(response, payload.get("expires_in"))
        self.secrets.add(token)
        self.secrets.add(payload.get("refresh_token"))
        self._access_token = token
        self._refresh_token = payload.get("refresh_token") or None
        margin = min(REFRESH_MARGIN_S, expires_in / 4)
        self._expires_at = time.monotonic() + expires_in - margin

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        refreshed = False
        if self._refresh_token:
            refreshed = yield from self._refresh(template)
        if not refreshed:
            yield from self._password_login(template)
        if self._props.login_target == "SINAPSE" and self._profile is None:
            yield from self._select_profile(template)

    def _refresh(self, template: httpx.Request) -> Generator[httpx.Request, httpx.Response, bool]:
        token, self._refresh_token = (
            self._refresh_token or "",
            None,
        )  # a refresh token is single-use
        response = yield self._token_request(
            template, {"grant_type": "refresh_token", "refresh_token": token}
        )
        if response.status_code == 200:
            self._store(response)
            return True
        logger.info("ONS token refresh answered HTTP %s; logging in again", response.status_code)
        return False

    def _password_login(self, template: httpx.Request) -> LoginFlow:
        if self._skip_federation_once:
            logger.info("ONS federation page failed last time; logging in without it")
            self._skip_federation_once = False
        else:
            yield from self._federation(template)
        response = yield self._token_request(
            template,
            {
                "grant_type": "password",
                "username": self._props.user or "",
                "password": self._props.password or "",
            },
        )
        if response.status_code == 200:
            self._store(response)
            return
        error = _oauth_error(response)
        if response.status_code in (400, 401, 403) and (
            error is None or error in _CREDENTIAL_ERRORS
        ):
            raise AuthenticationError.from_response(
                response,
                f"ONS refused the login for {self._props.login_target} "
                f"({error or 'bad credentials'}); check user, password and login_target",
            )
        raise HttpStatusError.from_response(response, "ONS token endpoint failed")

    def _federation(self, template: httpx.Request) -> LoginFlow:
        """Step 1: the federation page sets cookies; any answer is fine (docs/services/ons.md,
        "Login": it is never the credential check, and some public clients skip it)."""
        federation = derive_request(
            template,
            "GET",
            f"{self._props.auth_url}/",
            params={"ReturnUrl": self._props.effective_origin + "/"},
            headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        )
        try:
            response = yield federation
        except GeneratorExit:  # no answer: the request failed in transport (or was cancelled)
            self._skip_federation_once = True
            raise
        if response.status_code != 200:
            logger.info("ONS federation page answered HTTP %s; continuing", response.status_code)

    def _select_profile(self, template: httpx.Request) -> LoginFlow:
        url = self._props.effective_profile_url
        hint = (
            "set selected_profile (the Perfil-Selecionado value, e.g. "
            "'Apurador Agente/AGENTES/189/<AGENTE>') or profile_url"
        )
        request = derive_request(template, "GET", url, headers={"Accept": "application/json"})
        request.headers["Authorization"] = f"Bearer {self._access_token}"
        response = yield request
        if response.status_code != 200:
            raise ProfileSelectionError(
                f"the SINAPSE profile list at {url} answered HTTP {response.status_code}; {hint}"
            )
        try:
            profiles = expect_json(response)
        except UnexpectedContentError as exc:
            raise ProfileSelectionError(f"the SINAPSE profile list is not JSON; {hint}") from exc
        if isinstance(profiles, dict):  # tolerate {"perfis": [...]} / {"result": [...]}
            profiles = next((v for v in profiles.values() if isinstance(v, list)), None)
        if not isinstance(profiles, list) or not profiles:
            raise ProfileSelectionError(f"the SINAPSE profile list has no profiles; {hint}")
        try:
            values = [profile_header_value(p) for p in profiles]
        except (ProfileSelectionError, TypeError) as exc:
            raise ProfileSelectionError(
                f"the SINAPSE profile list has an unexpected shape ({exc}); {hint}"
            ) from exc
        if len(values) > 1:
            listed = "; ".join(unquote(v) for v in values)
            raise ProfileSelectionError(
                f"this user has {len(values)} SINAPSE profiles and none is selected: {listed}. "
                "Set selected_profile to one of them"
            )
        self._profile = values[0]

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self._access_token}"
        if self._profile is not None:
            request.headers.setdefault("Perfil-Selecionado", self._profile)

    def invalidate(self) -> None:
        # Keep the refresh token: a 401 first tries a refresh (docs/services/ons.md, "Login").
        self._access_token = None
        self._expires_at = 0.0

    def close(self) -> None:
        self._refresh_token = None  # its secret is forgotten with the session: never send it
        super().close()


def _expires_in(response: httpx.Response, raw: Any) -> float:
    """Seconds the token lives; 1199 (ONS's usual ~20 min) when the answer leaves it out."""
    if raw is None or raw == "":
        return 1199.0
    if isinstance(raw, bool):
        raise UnexpectedContentError.from_response(
            response, f"token answer with a non-numeric expires_in ({raw!r})"
        )
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise UnexpectedContentError.from_response(
            response, f"token answer with a non-numeric expires_in ({raw!r})"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise UnexpectedContentError.from_response(
            response, f"token answer with an invalid expires_in ({raw!r})"
        )
    return seconds


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return str(error) if error else None


class OnsHttpHandler(HttpHandler):
    """ONS SAGER / SINAPSE: OAuth2 login on connect, refresh, profile header, report exports."""

    properties_type: ClassVar[type[OnsHttpConnProperties]] = OnsHttpConnProperties
    props: OnsHttpConnProperties

    def _build_auth(self) -> httpx.Auth | None:
        return OnsOAuth2(self.props)

    def _trusted_origins(self) -> frozenset[tuple[str, str, int | None]]:
        # The token goes to the identity provider and, for SINAPSE, to the profile list too.
        urls = [self.props.auth_url, self.props.effective_profile_url]
        return super()._trusted_origins() | {_origin(httpx.URL(u)) for u in urls}

    def _ssl_context(self) -> Any:
        return ssl_context(self.props.verify_ssl, self.props.legacy_tls_renegotiation)

    @staticmethod
    def _binary(response: httpx.Response, what: str) -> bytes:
        if is_html(response):
            # ONS maintenance pages arrive as HTML with 200 (docs/services/ons.md, "Failures seen").
            raise UnexpectedContentError.from_response(response, f"HTML page instead of the {what}")
        return response.content

    def export_sager_report(
        self,
        data_inicio: datetime | date | str,
        data_fim: datetime | date | str,
        *,
        endpoint: str = SAGER_REPORT_ENDPOINT,
        **options: Unpack[SagerReportOptions],
    ) -> bytes:
        """The SAGER renewables report as .xlsx bytes (``b""`` when the period has no data).

        Dates (datetime, date or ISO text) are sent as UTC ISO-8601 with milliseconds and ``Z``;
        ``options`` are :class:`SagerReportOptions`.
        """
        body = sager_report_body(data_inicio, data_fim, **options)
        return self._binary(self.post(endpoint, json=body, idempotent=True), "SAGER report")

    async def async_export_sager_report(
        self,
        data_inicio: datetime | date | str,
        data_fim: datetime | date | str,
        *,
        endpoint: str = SAGER_REPORT_ENDPOINT,
        **options: Unpack[SagerReportOptions],
    ) -> bytes:
        """The async :meth:`export_sager_report`."""
        body = sager_report_body(data_inicio, data_fim, **options)
        response = await self.async_post(endpoint, json=body, idempotent=True)
        return self._binary(response, "SAGER report")

    def export_sinapse(
        self,
        periodo_inicial: datetime | date | str,
        periodo_final: datetime | date | str,
        *,
        analitico: bool = False,
        **filters: Unpack[SinapseExportFilters],
    ) -> bytes:
        """SINAPSE ``solicitacao/pesquisa/exportar[-analitico]``: ``;``-separated CSV bytes."""
        body = sinapse_export_body(periodo_inicial, periodo_final, **filters)
        endpoint = SINAPSE_EXPORT_ENDPOINT + ("-analitico" if analitico else "")
        return self._binary(self.post(endpoint, json=body, idempotent=True), "SINAPSE export")

    async def async_export_sinapse(
        self,
        periodo_inicial: datetime | date | str,
        periodo_final: datetime | date | str,
        *,
        analitico: bool = False,
        **filters: Unpack[SinapseExportFilters],
    ) -> bytes:
        """The async :meth:`export_sinapse`."""
        body = sinapse_export_body(periodo_inicial, periodo_final, **filters)
        endpoint = SINAPSE_EXPORT_ENDPOINT + ("-analitico" if analitico else "")
        response = await self.async_post(endpoint, json=body, idempotent=True)
        return self._binary(response, "SINAPSE export")


class SagerReportOptions(TypedDict, total=False):
    """Filters of the SAGER report (docs/services/ons.md, "Exports"); all optional."""

    tipo_relatorio: int  # 1 geral (default), 2 geração de referência
    ids_conjuntos: Sequence[int]
    ids_usinas: Sequence[int]
    ids_agentes: Sequence[int]
    ids_fontes: Sequence[int]
    apenas_agentes_favoritos: bool
    periodo_base: str | None


class SinapseExportFilters(TypedDict, total=False):
    """Filters of the SINAPSE export; all optional, omitted when not given."""

    origem: str | None
    destino: str | None
    status: str | None
    mensagem: str | None


def sager_report_body(
    data_inicio: datetime | date | str,
    data_fim: datetime | date | str,
    **options: Unpack[SagerReportOptions],
) -> dict[str, Any]:
    """The JSON body of ``exportarRelatorio``."""
    tipo = options.get("tipo_relatorio", 1)
    if tipo not in (1, 2):
        raise ValueError(
            f"tipo_relatorio must be 1 (geral) or 2 (geração de referência), got {tipo!r}"
        )
    return {
        "dataInicio": format_ons_datetime(data_inicio),
        "dataFim": format_ons_datetime(data_fim),
        "tipoRelatorio": tipo,
        "idsConjuntos": list(options.get("ids_conjuntos", ())),
        "idsUsinas": list(options.get("ids_usinas", ())),
        "idsAgentes": list(options.get("ids_agentes", ())),
        "idsFontes": list(options.get("ids_fontes", ())),
        "apenasAgentesFavoritos": options.get("apenas_agentes_favoritos", False),
        "periodoBase": options.get("periodo_base"),
    }


def sinapse_export_body(
    periodo_inicial: datetime | date | str,
    periodo_final: datetime | date | str,
    **filters: Unpack[SinapseExportFilters],
) -> dict[str, Any]:
    """The JSON body of ``solicitacao/pesquisa/exportar``."""
    body: dict[str, Any] = {
        "periodoInicial": format_ons_datetime(periodo_inicial),
        "periodoFinal": format_ons_datetime(periodo_final),
    }
    body.update({k: v for k, v in filters.items() if v is not None})
    return body
