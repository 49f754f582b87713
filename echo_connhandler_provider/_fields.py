"""The connection fields of each connection type: one table, three uses.

The same :class:`ExtraField` rows produce the Airflow 3 connection form (``conn-fields`` and
``ui-field-behaviour`` in ``get_provider_info()``), validate and coerce a Connection's extras
(URI-style connections deliver every value as a string), and decide where each value goes:
the handler's properties, the handler's constructor, or the hook itself.

Pure Python: importing this module imports neither Airflow nor httpx, so ``get_provider_info()``
stays cheap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "CONNECTION_TYPES",
    "ConnectionSettings",
    "ConnectionType",
    "ExtraField",
    "build_settings",
]

FieldType = Literal["string", "integer", "number", "boolean", "object"]
Target = Literal["props", "handler", "hook"]


@dataclass(frozen=True)
class ExtraField:
    """One typed extra field of a connection form."""

    name: str
    label: str
    description: str
    type: FieldType
    default: Any = None
    target: Target = "props"
    enum: tuple[str, ...] | None = None
    secret: bool = False
    minimum: float | None = None
    required: bool = False
    #: For JSON objects whose values must be text (HTTP headers): numbers and booleans are
    #: turned into text, anything else is an error naming the key.
    text_values: bool = False

    def form_entry(self) -> dict[str, Any]:
        """This field as a ``conn-fields`` entry (a JSON schema for the React form)."""
        # Airflow's form marks a field "required" when its type does not admit null (its UI's
        # rule: schema.type without "null"): only the truly required ones must be so; a field
        # with a default is optional, the default is shown and applies when left empty.
        nullable = not self.required
        schema: dict[str, Any] = {"type": [self.type, "null"] if nullable else self.type}
        if self.default is not None:
            schema["default"] = self.default
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.secret:
            schema["format"] = "password"
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        return {"label": self.label, "description": self.description, "schema": schema}

    def coerce(self, conn_id: str, raw: Any) -> Any:
        """``raw`` (typed, or a string from a URI connection) as this field's type."""
        where = f"connection {conn_id!r}, extra field {self.name!r}"
        value: Any = raw
        if self.type == "boolean":
            value = _to_bool(where, raw)
        elif self.type in ("integer", "number"):
            value = _to_number(where, raw, integer=self.type == "integer")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{where}: must be >= {self.minimum:g}, got {value!r}")
        elif self.type == "object":
            value = _to_object(where, raw)
            if self.text_values:
                value = {str(k): _to_text(f"{where}, key {k!r}", v) for k, v in value.items()}
        elif not isinstance(raw, str):
            raise ValueError(f"{where}: expected text, got {type(raw).__name__}")
        if self.enum is not None and value not in self.enum:
            raise ValueError(f"{where}: must be one of {', '.join(self.enum)}, got {value!r}")
        return value


def _to_bool(where: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{where}: expected true or false, got {raw!r}")


def _to_number(where: str, raw: Any, *, integer: bool) -> float | int:
    if isinstance(raw, bool):
        raise ValueError(f"{where}: expected a number, got {raw!r}")
    try:
        value = float(raw) if not isinstance(raw, int | float) else raw
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {raw!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"{where}: expected a whole number, got {raw!r}")
        return int(value)
    return value


def _to_text(where: str, raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    raise ValueError(f"{where}: expected text, got {type(raw).__name__}")


def _to_object(where: str, raw: Any) -> dict[str, Any]:
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}: expected a JSON object, got invalid JSON ({exc.msg})"
            ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


# -- the fields -------------------------------------------------------------------------------
_API_KEY = ExtraField(
    "api_key",
    "API key",
    "Sent as 'Authorization: Bearer <key>'. Leave User/Password empty.",
    "string",
    secret=True,
)
_TRANSPORT = (
    ExtraField(
        "conn_timeout",
        "Connect timeout (s)",
        "Seconds to establish a connection.",
        "number",
        30,
        minimum=0.001,
    ),
    ExtraField(
        "request_timeout",
        "Request timeout (s)",
        "Seconds to wait for a response.",
        "number",
        300,
        minimum=0.001,
    ),
    ExtraField(
        "attempt_deadline",
        "Attempt deadline (s)",
        "Longest wall-clock time of one attempt of a request, however slowly the server "
        "trickles its answer; a timeout, retried. Empty: max(60, 4 x Request timeout).",
        "number",
        minimum=0.001,
    ),
    ExtraField(
        "verify_ssl",
        "Verify TLS certificates",
        "Turn off only for a trusted test host.",
        "boolean",
        True,
    ),
    ExtraField(
        "headers",
        "Headers",
        'Extra HTTP headers, a JSON object: {"X-Tenant": "echo"}.',
        "object",
        text_values=True,
    ),
    ExtraField(
        "async_transport",
        "Async transport",
        "What carries async requests (deferrable tasks, triggers): httpx, or aiohttp "
        "(faster under many concurrent requests; needs the 'aiohttp' extra). Same behaviour.",
        "string",
        "httpx",
        enum=("httpx", "aiohttp"),
    ),
)
_PAYLOAD = (
    ExtraField(
        "payload_kwargs",
        "Payload fields",
        'Merged into every request under "Payload location", a JSON object.',
        "object",
    ),
    ExtraField(
        "payload_kwargs_key",
        "Payload location",
        "Where payload fields go: json body, form data, or query params.",
        "string",
        "json",
        enum=("json", "data", "params"),
    ),
)
_RETRY = (
    ExtraField(
        "max_retries",
        "Max retries",
        "Attempts after the first for each request.",
        "integer",
        8,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "max_conn_retries",
        "Max connect retries",
        "Attempts after the first of a login or warm-up, on connect or inside a request.",
        "integer",
        3,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "retry_wait_time",
        "Max retry wait (s)",
        "Longest wait between retries.",
        "number",
        30,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "exponential_min_retry_wait_time",
        "Min retry wait (s)",
        "Shortest wait between retries.",
        "number",
        0.1,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "exponential_multiplier",
        "Backoff multiplier",
        "Backoff grows as multiplier * 2^(attempt-1), with jitter.",
        "number",
        1,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "retry_after_cap",
        "Retry-After cap (s)",
        "Longest server-requested wait (Retry-After) honoured.",
        "number",
        300,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "retry_time_budget",
        "Retry time budget (s)",
        "No new attempt of a request starts after this long since its first one.",
        "number",
        900,
        target="handler",
        minimum=0,
    ),
    ExtraField(
        "max_response_bytes",
        "Max response size (bytes)",
        "Refuse a response body larger than this once decoded; empty: no limit.",
        "integer",
        target="handler",
        minimum=1,
    ),
)
_CONCURRENCY = ExtraField(
    "concurrency",
    "Concurrency",
    "Requests in flight at once in pulls (keep it modest: 2-8).",
    "integer",
    4,
    target="hook",
    minimum=1,
)
_HEALTH = ExtraField(
    "health_endpoint",
    "Test endpoint",
    "Endpoint that 'Test connection' GETs (relative to the Base URL); empty: the Base URL.",
    "string",
    target="hook",
)
_ONS = (
    ExtraField(
        "login_target",
        "Login target",
        "SAGER or SINAPSE (also the OAuth2 client_id).",
        "string",
        enum=("SAGER", "SINAPSE"),
        required=True,
    ),
    ExtraField(
        "auth_url",
        "Identity provider URL",
        "ONS POP; the token endpoint is <this>/oauth2/token.",
        "string",
        "https://pops.ons.org.br/ons.pop.federation",
    ),
    ExtraField(
        "profile_url",
        "SINAPSE profile URL",
        "Lists the user's profiles (an assumption: the endpoint is not public). "
        "Empty: https://api.sinapse.ons.org.br/api/usuario/perfis.",
        "string",
    ),
    ExtraField(
        "selected_profile",
        "SINAPSE profile",
        "Perfil-Selecionado, e.g. 'Apurador Agente/AGENTES/189/<AGENTE>'; "
        "skips the profile lookup.",
        "string",
    ),
    ExtraField(
        "origin",
        "Origin header",
        "Origin of the token request; empty: the default of the login target.",
        "string",
    ),
    ExtraField(
        "legacy_tls_renegotiation",
        "Legacy TLS renegotiation",
        "Needed by integra.ons.org.br under OpenSSL 3. Weakens TLS: opt in only if needed.",
        "boolean",
        False,
    ),
)


@dataclass(frozen=True)
class ConnectionType:
    """A connection type: its hook, its form and the fields its extras may hold."""

    conn_type: str
    hook_name: str
    hook_class_name: str
    module: str
    fields: tuple[ExtraField, ...]
    hidden: tuple[str, ...]
    placeholders: Mapping[str, str]
    relabeling: Mapping[str, str] = field(
        default_factory=lambda: {"host": "Base URL", "login": "User", "password": "Password"}
    )
    default_host: str | None = None

    def provider_entry(self) -> dict[str, Any]:
        """This type's ``connection-types`` entry of ``get_provider_info()``."""
        return {
            "connection-type": self.conn_type,
            "hook-class-name": self.hook_class_name,
            "hook-name": self.hook_name,
            "ui-field-behaviour": {
                "hidden-fields": list(self.hidden),
                "relabeling": dict(self.relabeling),
                "placeholders": dict(self.placeholders),
            },
            "conn-fields": {f.name: f.form_entry() for f in self.fields},
        }


_HOOKS = "echo_connhandler_provider.hooks"
CONNECTION_TYPES: dict[str, ConnectionType] = {
    t.conn_type: t
    for t in (
        ConnectionType(
            "echo_http",
            "Echo HTTP",
            f"{_HOOKS}.http.EchoHttpHook",
            f"{_HOOKS}.http",
            (_API_KEY, *_TRANSPORT, *_PAYLOAD, *_RETRY, _HEALTH),
            hidden=("port",),
            placeholders={
                "host": "https://api.example.com",
                "login": "my.user",
                "schema": "https",
                "extra": "{}",
            },
            relabeling={
                "host": "Base URL",
                "login": "User",
                "password": "Password",
                "schema": "Scheme (when the Base URL has none)",
            },
        ),
        ConnectionType(
            "bazefield",
            "Bazefield",
            f"{_HOOKS}.bazefield.BazefieldHook",
            f"{_HOOKS}.bazefield",
            (_API_KEY, *_TRANSPORT, *_RETRY, _CONCURRENCY),
            hidden=("schema", "port"),
            placeholders={"host": "https://bazefield.echoenergia.com.br", "login": "my.user"},
        ),
        ConnectionType(
            "ccee",
            "CCEE Dados Abertos",
            f"{_HOOKS}.ccee.CceeHook",
            f"{_HOOKS}.ccee",
            (*_TRANSPORT, *_RETRY, _CONCURRENCY),
            hidden=("schema", "port", "login", "password"),
            placeholders={"host": "https://dadosabertos.ccee.org.br"},
            default_host="https://dadosabertos.ccee.org.br",
        ),
        ConnectionType(
            "ons",
            "ONS SAGER / SINAPSE",
            f"{_HOOKS}.ons.OnsHook",
            f"{_HOOKS}.ons",
            (*_ONS, *_TRANSPORT, *_RETRY),
            hidden=("schema", "port"),
            placeholders={
                "host": "https://integra.ons.org.br/api/sager/renovaveis/api",
                "login": "my.user",
            },
        ),
    )
}


@dataclass(frozen=True)
class ConnectionSettings:
    """A Connection, validated and split by destination."""

    properties: dict[str, Any]
    handler_kwargs: dict[str, Any]
    hook_options: dict[str, Any]


def _base_url(
    conn_id: str, host: str | None, schema: str | None, port: int | None, default_host: str | None
) -> str:
    host = (host or "").strip() or (default_host or "")
    if not host:
        raise ValueError(f"connection {conn_id!r}: host (Base URL) is empty")
    if "://" not in host:
        # Airflow puts a URI's path in ``schema``: a base path written there must not be
        # dropped silently (nor a typo such as ``htps`` turned into https).
        scheme = (schema or "").strip().lower() or "https"
        if scheme not in ("http", "https"):
            raise ValueError(
                f"connection {conn_id!r}, field 'schema': got {schema!r}; schema is used as "
                "the URL scheme and must be http or https; put a base path in the host, "
                "URL-encoded in URI form (echo-http://https%3A%2F%2Fapi.example.com%2Fbase)"
            )
        host = f"{scheme}://{host}"
    if port:
        parts = urlsplit(host)
        if parts.port is None and parts.hostname:
            netloc = f"{parts.netloc}:{int(port)}"
            host = parts._replace(netloc=netloc).geturl()
    return host.rstrip("/")


def build_settings(
    conn_type: str,
    *,
    conn_id: str,
    host: str | None,
    schema: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any],
) -> ConnectionSettings:
    """Validate a Connection's parts and extras; split them into properties/handler/hook values.

    Unknown extra keys raise ``ValueError`` naming them (they are never sent as headers);
    empty values (a form field left blank) count as unset; keys prefixed the Airflow 2 way
    (``extra__<type>__<name>``) are accepted.
    """
    spec = CONNECTION_TYPES[conn_type]
    known = {f.name: f for f in spec.fields}
    prefix = f"extra__{conn_type}__"
    props: dict[str, Any] = {"host": _base_url(conn_id, host, schema, port, spec.default_host)}
    handler: dict[str, Any] = {}
    hook: dict[str, Any] = {}
    unknown = []
    for key, raw in extra.items():
        name = key.removeprefix(prefix)
        item = known.get(name)
        if item is None:
            unknown.append(key)
            continue
        if raw is None or raw == "" or (item.type == "object" and raw in ({}, "{}")):
            continue
        destination = {"props": props, "handler": handler, "hook": hook}[item.target]
        destination[name] = item.coerce(conn_id, raw)
    if unknown:
        raise ValueError(
            f"connection {conn_id!r} ({conn_type}): unknown extra field(s) "
            f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}. "
            "HTTP headers go in the 'headers' field"
        )
    given = {**props, **handler, **hook}
    missing = [repr(f.name) for f in spec.fields if f.required and f.name not in given]
    if missing:
        raise ValueError(
            f"connection {conn_id!r} ({conn_type}): required extra field(s) missing: "
            f"{', '.join(missing)}"
        )
    if login:
        props["user"] = login
    if password:
        props["password"] = password
    return ConnectionSettings(props, handler, hook)
