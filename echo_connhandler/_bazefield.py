"""Bazefield (ServiceStack REST API under ``/BazeField.Services/api/``).

Quirks handled here, all from docs/services/bazefield.md:

- API key: ``Authorization: Bearer <key>`` (HIGH).
- User/password: ``POST BazeField.Services/api/auth/baze?format=json`` with ``UserName``,
  ``Password``, ``RememberMe``; the answer carries ``sessionId`` (sent back as ``x-ss-id``, and
  ``ss-id``/``ss-pid`` cookies) and may carry ``bearerToken``, which is preferred (MED/ASSUMPTION:
  both are supported, whichever the tenant returns). A 401 or a ``responseStatus.errorCode`` on
  login means bad credentials. The login runs on connect and once more on a later 401.
- ``Accept: application/json`` always, or an HTML preview page may come back with HTTP 200.
- Errors may arrive with HTTP 200 as ``responseStatus`` or ``replyInfo.error``: raised as
  :class:`ApiError`.
- ``objects/timeseries/aggregated`` POST queries are read-only: marked idempotent for retries
  (decided on the exact path, never the query string).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx

from echo_connhandler._auth import BearerAuth, LoginFlow, SessionAuth, derive_request
from echo_connhandler._exceptions import (
    ApiError,
    AuthenticationError,
    HttpStatusError,
    UnexpectedContentError,
)
from echo_connhandler._handler import HttpHandler, expect_json, is_html

__all__ = ["API_ROOT", "BazeHttpHandler", "BazefieldLoginAuth", "bazefield_api_root"]

API_ROOT = "BazeField.Services/api"
#: Read-only queries sent as POST (their bodies can be large), safe to replay: paths under the
#: API root (docs/services/bazefield.md, "Time series").
IDEMPOTENT_POST_PATHS = frozenset({"objects/timeseries/aggregated"})


def bazefield_api_root(host: str) -> str:
    """The API root for a host given as the tenant root or as the API root itself."""
    if host.lower().rstrip("/").endswith("/" + API_ROOT.lower()):
        return host.rstrip("/")
    return f"{host.rstrip('/')}/{API_ROOT}"


def _service_error(payload: Any) -> str | None:
    """The error a ServiceStack body reports, or ``None``."""
    if not isinstance(payload, dict):
        return None
    status = payload.get("responseStatus") or payload.get("ResponseStatus")
    if isinstance(status, dict) and (status.get("errorCode") or status.get("ErrorCode")):
        code = status.get("errorCode") or status.get("ErrorCode")
        message = status.get("message") or status.get("Message") or ""
        return f"{code}: {message}".rstrip(": ")
    reply = payload.get("replyInfo") or payload.get("ReplyInfo")
    if isinstance(reply, dict) and (reply.get("error") or reply.get("Error")):
        return str(reply.get("error") or reply.get("Error"))
    return None


class BazefieldLoginAuth(SessionAuth):
    """User/password login to Bazefield, kept as a bearer token or a session id."""

    def __init__(self, host: str, user: str, password: str) -> None:
        super().__init__()
        self._login_url = f"{bazefield_api_root(host)}/auth/baze"
        self._user = user
        self._password = password
        self._bearer: str | None = None
        self._session_id: str | None = None

    def needs_login(self) -> bool:
        return self._bearer is None and self._session_id is None

    def login_flow(self, template: httpx.Request) -> LoginFlow:
        request = derive_request(
            template,
            "POST",
            self._login_url,
            params={"format": "json"},
            json={"UserName": self._user, "Password": self._password, "RememberMe": True},
        )
        response = yield request
        if response.status_code in (401, 403):
            raise AuthenticationError.from_response(
                response, "Bazefield refused the user name or password"
            )
        if response.status_code != 200:
            raise HttpStatusError.from_response(response, "Bazefield login failed")
        payload = expect_json(response)
        error = _service_error(payload)
        if error is not None:
            raise AuthenticationError.from_response(response, f"Bazefield login refused: {error}")
        bearer = payload.get("bearerToken") if isinstance(payload, dict) else None
        session_id = payload.get("sessionId") if isinstance(payload, dict) else None
        if not bearer and not session_id:
            raise UnexpectedContentError.from_response(
                response, "Bazefield login answered neither bearerToken nor sessionId"
            )
        self.secrets.add(bearer)
        self.secrets.add(session_id)
        self._bearer, self._session_id = bearer or None, session_id or None

    def apply(self, request: httpx.Request) -> None:
        if self._bearer:
            request.headers["Authorization"] = f"Bearer {self._bearer}"
        elif self._session_id:
            request.headers["x-ss-id"] = self._session_id

    def invalidate(self) -> None:
        self._bearer = self._session_id = None
        self.cookies.clear()


class BazeHttpHandler(HttpHandler):
    """Bazefield: API key or user/password login, JSON by default, errors-in-200 raised."""

    default_headers: ClassVar[dict[str, str]] = {"Accept": "application/json"}

    def _build_auth(self) -> httpx.Auth | None:
        props = self.props
        if props.api_key:
            return BearerAuth(props.api_key)
        if props.user and props.password:
            return BazefieldLoginAuth(props.host, props.user, props.password)
        return None

    def _is_idempotent(self, method: str, url: str) -> bool:
        # Decided on the path alone, exactly: a query such as ?next=/objects/timeseries/ on a
        # write endpoint must not make it replayable.
        if method == "POST":
            root = httpx.URL(bazefield_api_root(self.props.host)).path.rstrip("/").lower()
            path = httpx.URL(url).path.rstrip("/").lower()
            if path.startswith(root + "/") and path[len(root) + 1 :] in IDEMPOTENT_POST_PATHS:
                return True
        return super()._is_idempotent(method, url)

    def _check_response(self, response: httpx.Response) -> None:
        if not response.is_success:
            return
        if is_html(response):
            raise UnexpectedContentError.from_response(
                response, "Bazefield answered an HTML page where JSON was expected"
            )
        content = response.content
        # Cheap byte scan first: parse the body only when an error marker is in it at all.
        if b"esponseStatus" not in content and b"eplyInfo" not in content:
            return
        try:
            payload = json.loads(content)
        except ValueError:
            return
        error = _service_error(payload)
        if error is not None:
            raise ApiError.from_response(response, f"Bazefield error: {error}")
