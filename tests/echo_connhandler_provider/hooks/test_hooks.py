"""The four hooks against the sandbox: JSON and URI connections, sync and async paths."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import pytest

from echo_connhandler import (
    BazeHttpHandler,
    CceeHttpHandler,
    HttpHandler,
    OnsHttpHandler,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook

API = "BazeField.Services/api"
HOOK_OF = {
    "echo_http": (EchoHttpHook, HttpHandler),
    "bazefield": (BazefieldHook, BazeHttpHandler),
    "ccee": (CceeHook, CceeHttpHandler),
    "ons": (OnsHook, OnsHttpHandler),
}
ALL_CONNS = [
    f"{name}_{form}"
    for name in (
        "echo_http",
        "bazefield",
        "bazefield_key",
        "ccee",
        "ons_sager",
        "ons_sinapse",
    )
    for form in ("json", "uri")
]
SINAPSE_HEADER = "Número;Data de Abertura;Origem;Destino;Status;Assunto"


def _hook_cls(conn_id: str) -> type[Any]:
    kind = conn_id.split("_")[0]
    return HOOK_OF["echo_http" if kind == "echo" else kind][0]


def _handler_cls(conn_id: str) -> type[HttpHandler]:
    kind = conn_id.split("_")[0]
    return HOOK_OF["echo_http" if kind == "echo" else kind][1]


def _service(conn_id: str) -> str:
    return {"echo": "bazefield", "bazefield": "bazefield", "ccee": "ccee", "ons": "ons"}[
        conn_id.split("_")[0]
    ]


def _allocation_endpoint(conn_id: str) -> str:
    # echo_http_json's base URL is the API root; the URI form's is the host root.
    return "allocationTypes" if conn_id == "echo_http_json" else f"{API}/allocationTypes"


def _check_sync(conn_id: str, handler: Any) -> None:
    """One real call per service, on the sync path, with a check of what came back."""
    if conn_id.startswith(("echo_http", "bazefield")):
        body = handler.get(_allocation_endpoint(conn_id)).json()
        assert {"id": 1, "name": "Disponível"} in body["allocationTypes"]
    elif conn_id.startswith("ccee"):
        assert "pld_horario" in handler.package_list()
        resource = handler.resources("pld_horario")[0]
        page = handler.datastore_search(resource.id, limit=5)
        assert len(page["records"]) == 5
        assert page["total"] > 5
    elif conn_id.startswith("ons_sager"):
        content = handler.export_sager_report("2024-01-01", "2024-01-03")
        assert content.startswith(b"PK")
    else:
        _check_csv(handler.export_sinapse("2024-01-01", "2024-01-07"))


async def _check_async(conn_id: str, handler: Any) -> None:
    """The same calls on the async path."""
    if conn_id.startswith(("echo_http", "bazefield")):
        body = (await handler.async_get(_allocation_endpoint(conn_id))).json()
        assert {"id": 1, "name": "Disponível"} in body["allocationTypes"]
    elif conn_id.startswith("ccee"):
        assert "pld_horario" in await handler.async_package_list()
        resource = (await handler.async_resources("pld_horario"))[0]
        page = await handler.async_datastore_search(resource.id, limit=5)
        assert len(page["records"]) == 5
    elif conn_id.startswith("ons_sager"):
        content = await handler.async_export_sager_report("2024-01-01", "2024-01-03")
        assert content.startswith(b"PK")
    else:
        _check_csv(await handler.async_export_sinapse("2024-01-01", "2024-01-07"))


def _check_csv(content: bytes) -> None:
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig")), delimiter=";"))
    assert ";".join(rows[0]) == SINAPSE_HEADER
    assert len(rows) > 1


def _logins(sb: Sandbox, conn_id: str) -> int:
    return sum(sb.faults(_service(conn_id)).stats["logins"].values())


@pytest.mark.parametrize("conn_id", ALL_CONNS)
def test_get_conn_returns_a_connected_working_handler(
    conns: Any, sb: Sandbox, make_hook: Any, conn_id: str
) -> None:
    """get_conn() logs in once, returns the cached handler, works, and close() closes it."""
    hook = make_hook(_hook_cls(conn_id), conn_id)
    handler = hook.get_conn()
    assert type(handler) is _handler_cls(conn_id)
    assert handler.is_connected
    assert handler.async_connection is None
    _check_sync(conn_id, handler)
    assert hook.get_conn() is handler
    _check_sync(conn_id, handler)
    expected_logins = 1 if conn_id.startswith(("bazefield_json", "bazefield_uri", "ons")) else 0
    assert _logins(sb, conn_id) == expected_logins
    if conn_id.startswith("ccee"):
        assert sb.faults("ccee").stats["warmups"] == 1
    hook.close()
    assert not handler.is_connected


@pytest.mark.parametrize("conn_id", ALL_CONNS)
async def test_aget_conn_opens_only_the_async_client(
    conns: Any, sb: Sandbox, make_async_hook: Any, conn_id: str
) -> None:
    """await aget_conn() works on the async path, opens no sync client, and is cached."""
    hook = make_async_hook(_hook_cls(conn_id), conn_id)
    handler = await hook.aget_conn()
    assert type(handler) is _handler_cls(conn_id)
    assert handler.is_connected is False
    assert handler.async_connection is not None
    await _check_async(conn_id, handler)
    assert await hook.aget_conn() is handler
    assert handler.is_connected is False
    expected_logins = 1 if conn_id.startswith(("bazefield_json", "bazefield_uri", "ons")) else 0
    assert _logins(sb, conn_id) == expected_logins
    await hook.aclose()
    assert handler.async_connection is None
    assert handler.is_connected is False


async def test_sync_and_async_share_one_handler(conns: Any, sb: Sandbox, make_hook: Any) -> None:
    """A hook used on both paths keeps one handler; the login of one path serves the other."""
    hook = make_hook(OnsHook, "ons_sager_json")
    handler = await hook.aget_conn()
    assert hook.get_conn() is handler
    assert handler.is_connected
    assert sb.faults("ons").stats["logins"] == {"password": 1}
    await hook.aclose()
    assert not handler.is_connected
    assert handler.async_connection is None


@pytest.mark.parametrize("form", ["json", "uri"])
def test_json_and_uri_connections_build_the_same_properties(
    conns: Any, make_hook: Any, form: str
) -> None:
    """Both forms of a connection give the same base URL, user and coerced settings."""
    hook = make_hook(BazefieldHook, f"bazefield_{form}")
    handler = hook.get_conn()
    assert handler.props.host.startswith("http://127.0.0.1:")
    assert handler.props.user == DEMO_CREDENTIALS["bazefield"]["user"]
    assert handler.retry_policy.max_retries == 1
    assert handler.max_conn_retries == 0
    if form == "uri":
        assert hook.options == {"concurrency": 2}
        assert handler.props.request_timeout == 30.0


def test_options_are_read_when_asked_for(conns: Any, make_hook: Any) -> None:
    """hook.options reads the Connection itself: no get_conn() needed first."""
    hook = make_hook(BazefieldHook, "bazefield_uri")
    assert hook.options == {"concurrency": 2}
    assert hook._handler is None  # nothing connected to answer it


async def test_options_are_read_without_blocking_the_loop(conns: Any, make_hook: Any) -> None:
    """aget_options() reads the Connection on the async path."""
    hook = make_hook(BazefieldHook, "bazefield_uri")
    assert await hook.aget_options() == {"concurrency": 2}


def test_ons_uri_connection_keeps_host_path_and_extras(conns: Any, sb: Sandbox) -> None:
    """An ONS URI with a URL-encoded host keeps the path; its extras are coerced."""
    hook = OnsHook("ons_sinapse_uri")
    settings = hook._load_settings()
    assert settings.properties["host"] == sb.urls.ons_sinapse
    assert settings.properties["login_target"] == "SINAPSE"
    assert settings.properties["profile_url"] == sb.urls.ons_profile_url
    assert settings.handler_kwargs == {
        "max_retries": 1,
        "max_conn_retries": 0,
        "retry_wait_time": 0,
    }


def test_hook_kwargs_override_connection_retry_settings(conns: Any, make_hook: Any) -> None:
    """Keyword arguments of the hook override the connection's handler settings."""
    handler = make_hook(BazefieldHook, "bazefield_key_json", max_retries=5).get_conn()
    assert handler.retry_policy.max_retries == 5


def _define_typo(conns: Any, sb: Sandbox) -> str:
    return conns.define(
        "typo",
        {
            "conn_type": "bazefield",
            "host": sb.urls.bazefield,
            "extra": {"api_key": DEMO_CREDENTIALS["bazefield"]["api_key"], "X-Tenant": "echo"},
        },
    )


def test_unknown_extra_key_is_a_value_error(conns: Any, sb: Sandbox) -> None:
    """An unknown extra key raises ValueError naming it, before anything is sent."""
    hook = BazefieldHook(_define_typo(conns, sb))
    with pytest.raises(ValueError, match=r"'typo'.*X-Tenant"):
        hook.get_conn()
    assert sb.faults("bazefield").stats["requests"] == {}


async def test_unknown_extra_key_is_a_value_error_async(conns: Any, sb: Sandbox) -> None:
    """The async path refuses an unknown extra key the same way."""
    hook = BazefieldHook(_define_typo(conns, sb))
    with pytest.raises(ValueError, match=r"'typo'.*X-Tenant"):
        await hook.aget_conn()
    assert sb.faults("bazefield").stats["requests"] == {}


def test_uri_with_bad_value_names_connection_and_field(conns: Any, sb: Sandbox) -> None:
    """A URI value that does not coerce raises ValueError naming connection and field."""
    conns.define("bad_uri", "ccee://127.0.0.1:1/http?max_retries=many")
    with pytest.raises(ValueError, match=r"'bad_uri'.*'max_retries'.*many"):
        CceeHook("bad_uri").get_conn()


@pytest.mark.parametrize("conn_id", ALL_CONNS)
def test_test_connection_succeeds(conns: Any, sb: Sandbox, conn_id: str) -> None:
    """test_connection() is true for every good connection and says what it checked."""
    hook = _hook_cls(conn_id)(conn_id)
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith("Connection to http://127.0.0.1:")
    assert "works" in message
    assert hook._handler is None  # the probe used its own short-lived handler


def _with(conns: Any, conn_id: str, **changes: Any) -> str:
    """Define ``<conn_id>_changed``: a copy of a JSON sandbox connection with changes."""
    definition = json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"])
    extra = changes.pop("extra", {})
    definition.update(changes)
    definition["extra"] = {**definition.get("extra", {}), **extra}
    return conns.define(f"{conn_id}_changed", definition)


@pytest.mark.parametrize("conn_id", ["bazefield_json", "ons_sager_json", "ons_sinapse_json"])
def test_test_connection_bad_password(conns: Any, sb: Sandbox, conn_id: str) -> None:
    """A refused login fails with a message about the user or password, tried once."""
    changed = _with(conns, conn_id, password="not-the-password")
    ok, message = _hook_cls(conn_id)(changed).test_connection()
    assert not ok
    assert message.startswith("Login refused: bad user or password")
    assert "not-the-password" not in message
    token_requests = sum(
        n
        for path, n in sb.faults(_service(conn_id)).stats["requests"].items()
        if path.endswith(("/oauth2/token", "/auth/baze"))
    )
    assert token_requests == 1


def test_test_connection_with_api_root_as_host(conns: Any, sb: Sandbox) -> None:
    """A Bazefield host given as the API root itself also passes the test."""
    changed = _with(conns, "bazefield_json", host=f"{sb.urls.bazefield}/{API}")
    ok, message = BazefieldHook(changed).test_connection()
    assert ok, message
    assert message.endswith("login and allocationTypes read (HTTP 200)")


def test_test_connection_bad_api_key(conns: Any, sb: Sandbox) -> None:
    """A refused API key fails with the HTTP status in plain words."""
    changed = _with(conns, "bazefield_key_json", extra={"api_key": "not-a-valid-key"})
    ok, message = BazefieldHook(changed).test_connection()
    assert not ok
    assert message.startswith("Credentials rejected (HTTP 401)")


def test_test_connection_ccee_bot_user_agent_blocked_at_warmup(conns: Any, sb: Sandbox) -> None:
    """A bot-like User-Agent gets the warm-up itself blocked: a WAF message, no retry."""
    changed = _with(conns, "ccee_json", extra={"headers": {"User-Agent": "python-requests/2.31"}})
    ok, message = CceeHook(changed).test_connection()
    assert not ok
    assert message.startswith("Blocked by the CCEE web application firewall")
    assert "warm-up request itself" in message
    stats = sb.faults("ccee").stats
    assert stats["waf_blocks"] == 1
    assert stats["warmups"] == 0


def test_test_connection_ccee_waf_blocks_everything(conns: Any, sb: Sandbox) -> None:
    """When the WAF invalidates every cookie, one fresh warm-up is tried, then it gives up."""
    sb.faults("ccee").configure(waf_block_rate=1.0)
    ok, message = CceeHook("ccee_json").test_connection()
    assert not ok
    assert message.startswith("Blocked by the CCEE web application firewall")
    assert "even after a fresh warm-up" in message
    stats = sb.faults("ccee").stats
    assert stats["warmups"] == 2
    assert stats["waf_blocks"] == 2


@pytest.mark.parametrize("conn_type", ["echo_http", "bazefield", "ccee", "ons"])
def test_test_connection_refused_port(
    conns: Any, sb: Sandbox, refused_port: int, conn_type: str
) -> None:
    """A port nothing listens on fails with 'unreachable (connection refused ...)'."""
    dead = f"http://127.0.0.1:{refused_port}"
    definition: dict[str, Any] = {"conn_type": conn_type, "host": dead}
    if conn_type in ("bazefield", "ons"):
        definition.update(login="demo.user", password="demo-password")
    if conn_type == "ons":
        definition["extra"] = {"login_target": "SAGER", "auth_url": f"{dead}/pop"}
    conns.define("dead", definition)
    ok, message = HOOK_OF[conn_type][0]("dead").test_connection()
    assert not ok
    assert message.startswith("Host unreachable (connection refused or no route)")


def test_test_connection_no_retry_on_server_error(conns: Any, sb: Sandbox) -> None:
    """The probe is tried once: a 503 fails at once with the status in the message."""
    sb.faults("bazefield").script("allocationtypes", status=503, times=5)
    ok, message = BazefieldHook("bazefield_key_json").test_connection()
    assert not ok
    assert message.startswith("Unexpected answer (HTTP 503)")
    requests = sb.faults("bazefield").stats["requests"]
    assert sum(n for path, n in requests.items() if path.endswith("allocationtypes")) == 1


def test_test_connection_sinapse_multi_profile_user(conns: Any, sb: Sandbox) -> None:
    """A SINAPSE user with several profiles and none selected gets them listed."""
    ons = DEMO_CREDENTIALS["ons"]
    changed = _with(
        conns,
        "ons_sinapse_json",
        login=ons["multi_profile_user"],
        password=ons["multi_profile_password"],
    )
    ok, message = OnsHook(changed).test_connection()
    assert not ok
    assert message.startswith("SINAPSE profile:")
    assert "3 SINAPSE profiles" in message
    for profile in (
        "Apurador Agente/AGENTES/189/ECHO ENERGIA",
        "Consulta Agente/AGENTES/190/ECHO EOLICA SANDBOX",
        "Apurador Conjunto/CONJUNTOS/501/CONJUNTO AURORA SANDBOX",
    ):
        assert profile in message
    assert "selected_profile" in message


def test_sinapse_multi_profile_user_with_selected_profile(
    conns: Any, sb: Sandbox, make_hook: Any
) -> None:
    """With selected_profile set, the multi-profile user logs in and exports."""
    ons = DEMO_CREDENTIALS["ons"]
    changed = _with(
        conns,
        "ons_sinapse_json",
        login=ons["multi_profile_user"],
        password=ons["multi_profile_password"],
        extra={"selected_profile": "Consulta Agente/AGENTES/190/ECHO EOLICA SANDBOX"},
    )
    hook = make_hook(OnsHook, changed)
    ok, message = hook.test_connection()
    assert ok, message
    assert message.endswith("SINAPSE login succeeded and profile selected")
    _check_csv(hook.get_conn().export_sinapse("2024-01-01", "2024-01-07"))
    assert "usuario/perfis" not in " ".join(sb.faults("ons").stats["requests"])


def test_test_connection_health_endpoint_failure(conns: Any, sb: Sandbox) -> None:
    """echo_http probes health_endpoint: a 404 there fails the test with the status."""
    changed = _with(conns, "echo_http_json", extra={"health_endpoint": "no/such/thing"})
    ok, message = EchoHttpHook(changed).test_connection()
    assert not ok
    assert "HTTP 404" in message
