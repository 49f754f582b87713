"""Connection properties: what a handler needs to know to reach and authenticate to a service.

Validated on construction: a bad value raises ``ValueError`` naming the field, before anything
is sent. ``repr()``/``str()`` never show a password, an API key or a sensitive header/payload value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from echo_connhandler._secrets import MASK, is_sensitive_name, redact_url, register_secret

__all__ = [
    "DEFAULT_ONS_AUTH_URL",
    "DEFAULT_SINAPSE_PROFILE_URL",
    "ONS_DEFAULT_ORIGINS",
    "AsyncTransportName",
    "HttpConnProperties",
    "OnsHttpConnProperties",
    "PayloadKwargsKey",
    "is_sensitive_name",
]

PayloadKwargsKey = Literal["json", "data", "params"]
PAYLOAD_KWARGS_KEYS: tuple[str, ...] = ("json", "data", "params")
AsyncTransportName = Literal["httpx", "aiohttp"]
ASYNC_TRANSPORTS: tuple[str, ...] = ("httpx", "aiohttp")

#: ONS POP identity provider (docs/services/ons.md, "The login"); token at
#: ``{auth_url}/oauth2/token``.
DEFAULT_ONS_AUTH_URL = "https://pops.ons.org.br/ons.pop.federation"
#: SINAPSE profile list. ASSUMPTION (docs/services/ons.md, "SINAPSE profile": not public);
#: override it with ``profile_url`` or skip the call with ``selected_profile``.
DEFAULT_SINAPSE_PROFILE_URL = "https://api.sinapse.ons.org.br/api/usuario/perfis"
#: ``Origin`` sent on the token request by every public client (docs/services/ons.md, "The login").
ONS_DEFAULT_ORIGINS = {"SAGER": "https://apps18.ons.org.br", "SINAPSE": "https://pops.ons.org.br"}


def _masked(mapping: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if mapping is None:
        return None
    return {k: (MASK if is_sensitive_name(k) else v) for k, v in mapping.items()}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: An HTTP header name (RFC 9110 ``token``).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _check_text(name: str, value: object, *, ascii_only: bool = False) -> str:
    """``value`` as a non-empty string without control characters; the error never shows it.

    A key or password read from a file often ends with a newline: httpx then refuses the header
    with a message that prints the whole value, so it is refused here, before anything is sent.
    """
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a non-empty string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    bad = _CONTROL.search(value)
    if bad:
        hint = " (a trailing newline from a file?)" if bad.start() == len(value) - 1 else ""
        raise ValueError(
            f"{name} contains a control character {bad.group()!r} at position {bad.start()}"
            f"{hint}: remove it"
        )
    if ascii_only and not value.isascii():
        where = next(i for i, char in enumerate(value) if not char.isascii())
        raise ValueError(
            f"{name} contains a non-ASCII character at position {where}: HTTP header values "
            "must be ASCII"
        )
    return value


def _check_absolute_url(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be an absolute http(s) URL, got {value!r}")
    value = value.strip()
    shown = redact_url(value)  # never echo a password given in user info
    if _CONTROL.search(value) or any(char.isspace() for char in value):
        raise ValueError(
            f"{name} must not contain spaces or control characters (newline, tab, NUL), "
            f"got {shown!r}"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{name} must be an absolute http(s) URL such as 'https://api.example.com', "
            f"got {shown!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{name} must not carry user info (user:password@); give user and password instead"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"{name} must not carry a query or fragment (endpoints are appended to it), "
            f"got {shown!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
        httpx.URL(value)  # what every request will parse: fail here, not on each request
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"{name} is not a valid URL ({exc}): {shown!r}") from None
    return value.rstrip("/")


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


#: The wall-clock limit of one attempt when ``attempt_deadline`` is not given: four read
#: timeouts, at least a minute (docs/handlers.md, "Connection properties").
DEFAULT_ATTEMPT_DEADLINE_FACTOR = 4
DEFAULT_ATTEMPT_DEADLINE_MIN = 60.0


def _check_headers(name: str, value: object) -> dict[str, str] | None:
    """Header names that are HTTP tokens, values that are ASCII text without control characters."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of header names to values, got {value!r}")
    checked: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            shown = MASK if isinstance(key, str) and is_sensitive_name(key) else repr(item)
            raise ValueError(f"{name} keys and values must be strings, got {key!r}: {shown}")
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(f"{name} has an invalid header name {key!r}")
        checked[key] = _check_text(f"{name}[{key!r}]", item, ascii_only=True)
    return checked


@dataclass(frozen=True, repr=False)
class HttpConnProperties:
    """How to reach a service: base URL, credentials, timeouts, default headers and payload.

    ``api_key`` (sent as ``Authorization: Bearer <key>``) and ``user``/``password`` are mutually
    exclusive. ``payload_kwargs`` are merged into every request under ``payload_kwargs_key``
    (``"json"``, ``"data"`` or ``"params"``); values given on a call win. ``async_transport``
    picks what carries the async client's requests: httpx's own (``"httpx"``, the default) or
    aiohttp (``"aiohttp"``, the ``aiohttp`` extra: faster under many concurrent requests,
    docs/performance.md, "Async throughput"); the handler behaves the same with either.

    ``request_timeout`` bounds each read, and a server that sends a byte now and then never
    trips it: ``attempt_deadline`` bounds one attempt of a request as a whole (seconds of wall
    clock, from sending it to the last byte of its answer, a login inside it included); ``None``
    means ``max(60, 4 * request_timeout)`` (:attr:`effective_attempt_deadline`).
    """

    host: str
    user: str | None = None
    password: str | None = None
    api_key: str | None = None
    conn_timeout: float = 30
    request_timeout: float = 300
    verify_ssl: bool = True
    headers: dict[str, str] | None = None
    payload_kwargs: dict[str, Any] | None = None
    payload_kwargs_key: PayloadKwargsKey = "json"
    async_transport: AsyncTransportName = "httpx"
    attempt_deadline: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise through the back door, once
        set_(self, "host", _check_absolute_url("host", self.host))
        if self.api_key is not None and (self.user is not None or self.password is not None):
            raise ValueError(
                "api_key and user/password cannot use both: give either api_key or user+password"
            )
        if (self.user is None) != (self.password is None):
            given, missing = ("user", "password") if self.password is None else ("password", "user")
            raise ValueError(f"{missing} is required when {given} is set")
        for name in ("user", "password", "api_key"):
            value = getattr(self, name)
            if value is not None:
                # The API key travels in a header (ASCII); user/password go into bodies too.
                _check_text(name, value, ascii_only=name == "api_key")
        set_(self, "conn_timeout", _check_timeout("conn_timeout", self.conn_timeout))
        set_(self, "request_timeout", _check_timeout("request_timeout", self.request_timeout))
        if self.attempt_deadline is not None:
            set_(
                self, "attempt_deadline", _check_timeout("attempt_deadline", self.attempt_deadline)
            )
        if not isinstance(self.verify_ssl, bool):
            raise ValueError(f"verify_ssl must be True or False, got {self.verify_ssl!r}")
        set_(self, "headers", _check_headers("headers", self.headers))
        if self.payload_kwargs is not None and not isinstance(self.payload_kwargs, Mapping):
            raise ValueError(
                f"payload_kwargs must be a mapping, got {type(self.payload_kwargs).__name__}"
            )
        if self.payload_kwargs is not None:
            set_(self, "payload_kwargs", dict(self.payload_kwargs))
        if not isinstance(self.payload_kwargs_key, str) or (
            self.payload_kwargs_key not in PAYLOAD_KWARGS_KEYS
        ):
            raise ValueError(
                f"payload_kwargs_key must be one of {', '.join(PAYLOAD_KWARGS_KEYS)}, "
                f"got {self.payload_kwargs_key!r}"
            )
        if not isinstance(self.async_transport, str) or (
            self.async_transport not in ASYNC_TRANSPORTS
        ):
            raise ValueError(
                f"async_transport must be one of {', '.join(ASYNC_TRANSPORTS)}, "
                f"got {self.async_transport!r}"
            )
        self._register_secrets()

    @property
    def effective_attempt_deadline(self) -> float:
        """Seconds one attempt of a request may last: ``attempt_deadline``, or
        ``max(60, 4 * request_timeout)`` when it is ``None``."""
        if self.attempt_deadline is not None:
            return self.attempt_deadline
        return max(
            DEFAULT_ATTEMPT_DEADLINE_MIN, DEFAULT_ATTEMPT_DEADLINE_FACTOR * self.request_timeout
        )

    def _register_secrets(self) -> None:
        register_secret(self.password)
        register_secret(self.api_key)
        for mapping in (self.headers, self.payload_kwargs):
            for key, value in (mapping or {}).items():
                if is_sensitive_name(key) and isinstance(value, str):
                    register_secret(value)
                    # "Bearer <token>", "Basic <creds>": the credential alone is a secret too.
                    scheme, space, credential = value.partition(" ")
                    if space and scheme.isalpha():
                        register_secret(credential.strip())

    def _repr_fields(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "user": self.user,
            "password": MASK if self.password is not None else None,
            "api_key": MASK if self.api_key is not None else None,
            "conn_timeout": self.conn_timeout,
            "request_timeout": self.request_timeout,
            "verify_ssl": self.verify_ssl,
            "headers": _masked(self.headers),
            "payload_kwargs": _masked(self.payload_kwargs),
            "payload_kwargs_key": self.payload_kwargs_key,
            "async_transport": self.async_transport,
            "attempt_deadline": self.attempt_deadline,
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({inner})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False, kw_only=True)
class OnsHttpConnProperties(HttpConnProperties):
    """Properties for ONS SAGER / SINAPSE: adds the login target and the identity provider.

    - ``login_target``: ``"SAGER"`` or ``"SINAPSE"``; it is also the OAuth2 ``client_id``.
    - ``auth_url``: the POP identity provider; the token endpoint is ``{auth_url}/oauth2/token``.
    - ``origin``: ``Origin`` header of the token request; default per target
      (docs/services/ons.md: every public client sends it; whether ONS checks it is an
      ASSUMPTION, so it is configurable).
    - ``profile_url`` (SINAPSE): where the user's profiles are listed. ASSUMPTION, see
      :data:`DEFAULT_SINAPSE_PROFILE_URL`.
    - ``selected_profile`` (SINAPSE): the ``Perfil-Selecionado`` value
      (``"<perfil>/<tipo escopo>/<id escopo>/<nome escopo>"``, plain or already URL-encoded);
      skips the profile call.
    - ``legacy_tls_renegotiation``: opt-in ``ssl.OP_LEGACY_SERVER_CONNECT``, needed by several
      clients to reach ``integra.ons.org.br`` under OpenSSL 3 (docs/services/ons.md, "TLS").
    """

    login_target: Literal["SAGER", "SINAPSE"]
    auth_url: str = DEFAULT_ONS_AUTH_URL
    profile_url: str | None = None
    selected_profile: str | None = None
    origin: str | None = None
    legacy_tls_renegotiation: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.login_target, str) or self.login_target not in ONS_DEFAULT_ORIGINS:
            raise ValueError(
                f"login_target must be 'SAGER' or 'SINAPSE', got {self.login_target!r}"
            )
        if self.api_key is not None:
            raise ValueError("api_key is not used by ONS: give user and password (OAuth2 login)")
        if self.user is None:
            raise ValueError("user and password are required for ONS (OAuth2 password grant)")
        set_ = object.__setattr__
        set_(self, "auth_url", _check_absolute_url("auth_url", self.auth_url))
        if self.profile_url is not None:
            set_(self, "profile_url", _check_absolute_url("profile_url", self.profile_url))
        if self.origin is not None:
            set_(self, "origin", _check_absolute_url("origin", self.origin))
        if self.selected_profile is not None:
            _check_text("selected_profile", self.selected_profile)
            if not self.selected_profile.strip():
                raise ValueError("selected_profile must not be empty when given")
        if not isinstance(self.legacy_tls_renegotiation, bool):
            raise ValueError("legacy_tls_renegotiation must be True or False")

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint."""
        return f"{self.auth_url}/oauth2/token"

    @property
    def effective_origin(self) -> str:
        """The ``Origin`` header sent with the token request."""
        return self.origin or ONS_DEFAULT_ORIGINS[self.login_target]

    @property
    def effective_profile_url(self) -> str:
        """Where SINAPSE profiles are listed."""
        return self.profile_url or DEFAULT_SINAPSE_PROFILE_URL

    def _repr_fields(self) -> dict[str, Any]:
        fields = super()._repr_fields()
        fields.update(
            login_target=self.login_target,
            auth_url=self.auth_url,
            profile_url=self.profile_url,
            selected_profile=self.selected_profile,
            origin=self.origin,
            legacy_tls_renegotiation=self.legacy_tls_renegotiation,
        )
        return fields
