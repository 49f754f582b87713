"""What Airflow itself sees: the CLI (in subprocesses) and the connection-form metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS
from echo_connhandler_provider import get_provider_info

PACKAGE = "echo-connhandler-provider"
HOOKS = {
    "echo_http": "echo_connhandler_provider.hooks.http.EchoHttpHook",
    "bazefield": "echo_connhandler_provider.hooks.bazefield.BazefieldHook",
    "ccee": "echo_connhandler_provider.hooks.ccee.CceeHook",
    "ons": "echo_connhandler_provider.hooks.ons.OnsHook",
}
PROVIDER_COMMANDS = {
    "list": ["providers", "list", "-o", "json"],
    "hooks": ["providers", "hooks", "-o", "json"],
    "behaviours": ["providers", "behaviours", "-o", "json"],
    "widgets": ["providers", "widgets", "-o", "json"],
    "get": ["providers", "get", PACKAGE, "--full", "-o", "json"],
}


def _conn_fields() -> dict[str, dict[str, Any]]:
    return {t["connection-type"]: t["conn-fields"] for t in get_provider_info()["connection-types"]}


def _cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without its Airflow settings, plus a fresh home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
    )
    env.update(extra)
    return env


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary AIRFLOW_HOME for the CLI subprocesses."""
    return tmp_path_factory.mktemp("airflow-cli-home")


@pytest.fixture(scope="module")
def providers_cli(cli_home: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """The ``airflow providers ...`` commands, run once: the first alone, then the rest at once.

    The first run writes airflow.cfg into the fresh home; the others only read it.
    """
    env = _cli_env(cli_home)
    first, *others = PROVIDER_COMMANDS
    results = {first: _airflow(PROVIDER_COMMANDS[first], env)}
    with ThreadPoolExecutor(max_workers=len(others)) as pool:
        futures = {name: pool.submit(_airflow, PROVIDER_COMMANDS[name], env) for name in others}
        results.update({name: future.result() for name, future in futures.items()})
    return results


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    # Our package must not appear in the log (a failed import or a rejected field).
    assert "echo_connhandler" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def test_providers_list_shows_the_provider(providers_cli: dict[str, Any]) -> None:
    """``airflow providers list`` shows the package with its version."""
    rows = {row["package_name"]: row for row in _json(providers_cli["list"])}
    assert rows[PACKAGE]["version"] == "0.1.0"
    assert rows[PACKAGE]["description"].startswith("Bazefield, CCEE Dados Abertos")


def _stringified(value: Any) -> Any:
    """``value`` with every non-string scalar as text, as the CLI's JSON output prints it."""
    if isinstance(value, dict):
        return {k: _stringified(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringified(v) for v in value]
    return value if isinstance(value, str) or value is None else str(value)


def test_providers_get_returns_the_provider_info(providers_cli: dict[str, Any]) -> None:
    """``airflow providers get --full`` returns what get_provider_info() declares."""
    (info,) = _json(providers_cli["get"])
    assert info["package-name"] == PACKAGE
    # Airflow 3.3.2's CLI prints numbers and booleans nested in the info as strings.
    expected = _stringified(get_provider_info()["connection-types"])
    assert info["connection-types"] == expected


def test_providers_hooks_shows_the_four_types(providers_cli: dict[str, Any]) -> None:
    """``airflow providers hooks`` lists each type with its class, conn_id attribute and name."""
    rows = {
        row["connection_type"]: row
        for row in _json(providers_cli["hooks"])
        if row["package_name"] == PACKAGE
    }
    assert {t: r["class"] for t, r in rows.items()} == HOOKS
    assert {r["conn_id_attribute_name"] for r in rows.values()} == {"conn_id"}
    assert rows["ons"]["hook_name"] == "ONS SAGER / SINAPSE"
    assert rows["ccee"]["hook_name"] == "CCEE Dados Abertos"


def test_providers_behaviours_lists_the_types(providers_cli: dict[str, Any]) -> None:
    """``airflow providers behaviours`` knows the field behaviours of the four types."""
    names = {row["field_behaviours"] for row in _json(providers_cli["behaviours"])}
    assert set(HOOKS) <= names


def test_providers_widgets_show_every_field(providers_cli: dict[str, Any]) -> None:
    """``airflow providers widgets`` shows every conn-field as ``extra__<type>__<name>``."""
    rows = {
        row["connection_parameter_name"]: row
        for row in _json(providers_cli["widgets"])
        if row["package_name"] == PACKAGE
    }
    expected = {
        f"extra__{conn_type}__{name}": (HOOKS[conn_type], entry["schema"]["type"])
        for conn_type, fields in _conn_fields().items()
        for name, entry in fields.items()
    }
    assert {k: (r["class"], r["field_type"]) for k, r in rows.items()} == expected
    assert rows["extra__ons__login_target"]["field_type"] == "string"
    assert rows["extra__bazefield__api_key"]["field_type"] == ["string", "null"]


def test_providers_manager_connection_form_widgets() -> None:
    """ProvidersManager builds a widget per field; api_key widgets are sensitive, others not."""
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    for conn_type, fields in _conn_fields().items():
        for name, entry in fields.items():
            widget = widgets[f"extra__{conn_type}__{name}"]
            assert widget.hook_class_name == HOOKS[conn_type]
            assert widget.package_name == PACKAGE
            assert widget.field_name == name
            assert widget.is_sensitive is (name == "api_key")
            assert widget.field["schema"]["title"] == entry["label"]
            assert widget.field["description"] == entry["description"]
            assert widget.field["value"] == entry["schema"].get("default")
    assert widgets["extra__bazefield__api_key"].field["schema"]["format"] == "password"
    assert widgets["extra__echo_http__api_key"].is_sensitive is True
    assert widgets["extra__ons__login_target"].field["schema"]["enum"] == ["SAGER", "SINAPSE"]


def test_providers_manager_field_behaviours() -> None:
    """Hidden fields, relabeling and placeholders reach ProvidersManager for each type."""
    from airflow.providers_manager import ProvidersManager

    behaviours = ProvidersManager().field_behaviours
    assert behaviours["ccee"]["hidden_fields"] == ["schema", "port", "login", "password"]
    assert behaviours["ccee"]["placeholders"]["host"] == "https://dadosabertos.ccee.org.br"
    assert behaviours["bazefield"]["hidden_fields"] == ["schema", "port"]
    assert behaviours["bazefield"]["relabeling"] == {
        "host": "Base URL",
        "login": "User",
        "password": "Password",
    }
    assert behaviours["ons"]["placeholders"]["login"] == "my.user"
    assert behaviours["echo_http"]["hidden_fields"] == ["port"]
    assert behaviours["echo_http"]["relabeling"]["schema"].startswith("Scheme")
    assert behaviours["echo_http"]["placeholders"]["schema"] == "https"


def test_ui_hook_metadata() -> None:
    """The React UI's hook metadata: standard fields hidden/relabelled, extra fields typed."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    ccee = meta["ccee"]
    assert ccee.hook_name == "CCEE Dados Abertos"
    assert ccee.standard_fields is not None
    assert ccee.standard_fields.login is not None
    assert ccee.standard_fields.login.hidden
    assert ccee.standard_fields.password is not None
    assert ccee.standard_fields.password.hidden
    assert ccee.standard_fields.host is not None
    assert ccee.standard_fields.host.title == "Base URL"
    assert ccee.standard_fields.host.placeholder == "https://dadosabertos.ccee.org.br"
    baze = meta["bazefield"]
    assert baze.standard_fields is not None
    assert baze.standard_fields.login is not None
    assert baze.standard_fields.login.hidden is False
    assert baze.standard_fields.login.title == "User"
    assert baze.extra_fields is not None
    assert baze.extra_fields["api_key"]["schema"]["format"] == "password"
    assert baze.extra_fields["max_retries"]["value"] == 8
    for conn_type, fields in _conn_fields().items():
        assert meta[conn_type].hook_class_name == HOOKS[conn_type]
        assert set(meta[conn_type].extra_fields or {}) == set(fields)


@pytest.mark.parametrize(
    ("conn_id", "password", "ok", "expected"),
    [
        ("bazefield_json", None, True, "Connection success!"),
        ("ons_sinapse_uri", None, True, "Connection success!"),
        ("ccee_uri", None, True, "Connection success!"),
        ("bazefield_json", "wrong-password-1", False, "bad user or password"),
        ("ons_sager_json", "wrong-password-2", False, "bad user or password"),
    ],
)
def test_connections_test_cli(
    conns: Any,
    cli_home: Path,
    conn_id: str,
    password: str | None,
    ok: bool,
    expected: str,
) -> None:
    """``airflow connections test`` succeeds on sandbox connections, fails on a bad password."""
    env = _cli_env(cli_home)
    env.update({k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")})
    if password is not None:
        definition = json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])
        definition["password"] = password
        conn_id = "cli_bad_password"
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(definition)
    result = _airflow(["connections", "test", conn_id], env)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) is ok, output
    assert expected in output
    if not ok:
        assert "Connection failed!" in output
        assert password is not None
        assert password not in output
        assert DEMO_CREDENTIALS["bazefield"]["password"] not in output


def test_connections_test_cli_refused_port(conns: Any, cli_home: Path, refused_port: int) -> None:
    """A host nothing listens on fails with an 'unreachable' message."""
    definition = {"conn_type": "ccee", "host": f"http://127.0.0.1:{refused_port}"}
    env = _cli_env(cli_home, AIRFLOW_CONN_CLI_REFUSED=json.dumps(definition))
    result = _airflow(["connections", "test", "cli_refused"], env)
    assert result.returncode != 0
    assert "Connection failed!" in result.stdout
    assert "unreachable" in result.stdout.lower()
