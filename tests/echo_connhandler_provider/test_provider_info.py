"""``get_provider_info()``: valid for Airflow, complete, and cheap to import."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from echo_connhandler_provider import get_provider_info

EXPECTED_TYPES = {
    "echo_http": ("echo_connhandler_provider.hooks.http.EchoHttpHook", "Echo HTTP"),
    "bazefield": ("echo_connhandler_provider.hooks.bazefield.BazefieldHook", "Bazefield"),
    "ccee": ("echo_connhandler_provider.hooks.ccee.CceeHook", "CCEE Dados Abertos"),
    "ons": ("echo_connhandler_provider.hooks.ons.OnsHook", "ONS SAGER / SINAPSE"),
}


def _airflow_schema(name: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("airflow")
    assert spec is not None
    assert spec.origin is not None
    schema: dict[str, Any] = json.loads((Path(spec.origin).parent / name).read_text())
    return schema


def _connection_types() -> dict[str, dict[str, Any]]:
    return {t["connection-type"]: t for t in get_provider_info()["connection-types"]}


def test_validates_against_airflow_provider_info_schema() -> None:
    """The metadata validates against Airflow's own provider_info.schema.json."""
    jsonschema.validate(get_provider_info(), _airflow_schema("provider_info.schema.json"))


def test_connection_types_validate_against_provider_yaml_schema() -> None:
    """The stricter provider.yaml schema (conn-fields, ui-field-behaviour) accepts every entry."""
    schema = _airflow_schema("provider.yaml.schema.json")["properties"]["connection-types"]
    jsonschema.validate(get_provider_info()["connection-types"], schema)


def test_package_name_is_the_distribution_name() -> None:
    """package-name equals the installed distribution's normalised name."""
    info = get_provider_info()
    dist = importlib.metadata.distribution(info["package-name"])
    assert dist.metadata["Name"] == info["package-name"] == "echo-connhandler-provider"
    entry_points = {
        ep.name: ep.value for ep in dist.entry_points.select(group="apache_airflow_provider")
    }
    assert entry_points == {"provider_info": "echo_connhandler_provider:get_provider_info"}


def test_hooks_section_lists_each_hook_module() -> None:
    """The hooks section names every hook module, each importable."""
    modules = [m for item in get_provider_info()["hooks"] for m in item["python-modules"]]
    assert sorted(modules) == sorted(path.rsplit(".", 1)[0] for path, _ in EXPECTED_TYPES.values())
    for module in modules:
        importlib.import_module(module)


@pytest.mark.parametrize("conn_type", sorted(EXPECTED_TYPES))
def test_connection_type_hook_matches(conn_type: str) -> None:
    """Each type's hook class imports and declares the same conn_type, hook_name and conn_id."""
    entry = _connection_types()[conn_type]
    class_path, hook_name = EXPECTED_TYPES[conn_type]
    assert entry["hook-class-name"] == class_path
    assert entry["hook-name"] == hook_name
    module, name = class_path.rsplit(".", 1)
    hook_cls = getattr(importlib.import_module(module), name)
    assert hook_cls.conn_type == conn_type
    assert hook_cls.hook_name == hook_name
    assert hook_cls.conn_name_attr == "conn_id"
    assert hook_cls.default_conn_name == f"{conn_type}_default"
    hook = hook_cls(conn_id="some_conn")
    assert hook.conn_id == "some_conn"


def test_exactly_the_four_connection_types() -> None:
    """No more and no fewer connection types than the table of docs/airflow/connections.md."""
    assert set(_connection_types()) == set(EXPECTED_TYPES)


@pytest.mark.parametrize("conn_type", sorted(EXPECTED_TYPES))
def test_conn_fields_are_complete(conn_type: str) -> None:
    """Every conn-field has a label, a description and a schema with a type."""
    fields = _connection_types()[conn_type]["conn-fields"]
    assert fields
    for name, entry in fields.items():
        assert set(entry) == {"label", "description", "schema"}, name
        assert entry["label"].strip(), name
        assert entry["description"].strip(), name
        assert "type" in entry["schema"], name
        default = entry["schema"].get("default")
        if "enum" in entry["schema"] and default is not None:
            assert default in entry["schema"]["enum"], name


@pytest.mark.parametrize("conn_type", sorted(EXPECTED_TYPES))
def test_secrets_are_password_fields(conn_type: str) -> None:
    """api_key is a password field, and only secrets are."""
    fields = _connection_types()[conn_type]["conn-fields"]
    passwords = {n for n, e in fields.items() if e["schema"].get("format") == "password"}
    assert passwords == ({"api_key"} & set(fields))
    if conn_type in ("echo_http", "bazefield"):
        assert passwords == {"api_key"}


def test_ons_form_requires_login_target() -> None:
    """ONS login_target is a required, non-nullable choice of SAGER and SINAPSE."""
    schema = _connection_types()["ons"]["conn-fields"]["login_target"]["schema"]
    assert schema["type"] == "string"
    assert schema["enum"] == ["SAGER", "SINAPSE"]


@pytest.mark.parametrize("conn_type", sorted(EXPECTED_TYPES))
def test_only_required_fields_are_marked_required_in_the_form(conn_type: str) -> None:
    """Airflow's form puts a "required" asterisk on a field whose schema type does not admit
    null (its UI's rule); a field with a default is optional: its type admits null, and its
    default is shown. Before, 12 of the 15 Bazefield extras carried the asterisk."""
    fields = _connection_types()[conn_type]["conn-fields"]
    required = {"ons": {"login_target"}}.get(conn_type, set())
    for name, entry in fields.items():
        types = entry["schema"]["type"]
        marked = not (isinstance(types, list) and "null" in types)
        assert marked == (name in required), (conn_type, name, types)


@pytest.mark.parametrize("conn_type", sorted(EXPECTED_TYPES))
def test_ui_field_behaviour(conn_type: str) -> None:
    """Hidden fields, relabeling and placeholders are declared for each type."""
    behaviour = _connection_types()[conn_type]["ui-field-behaviour"]
    assert "port" in behaviour["hidden-fields"]
    assert behaviour["relabeling"]["host"] == "Base URL"
    assert behaviour["placeholders"]["host"].startswith("https://")
    if conn_type == "ccee":
        assert {"login", "password"} <= set(behaviour["hidden-fields"])
    else:
        assert behaviour["relabeling"]["login"] == "User"
        assert "login" not in behaviour["hidden-fields"]


def test_provider_info_imports_no_hook_nor_httpx() -> None:
    """In a fresh interpreter, get_provider_info() imports neither httpx nor any hook/handler."""
    code = """
import json, sys
import echo_connhandler_provider
info = echo_connhandler_provider.get_provider_info()
assert info["connection-types"]
print(json.dumps(sorted(sys.modules)))
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "echo_connhandler_provider._fields" in loaded
    forbidden = {
        "httpx",
        "airflow",
        "echo_connhandler._handler",
        "echo_connhandler_provider.hooks",
        *(path.rsplit(".", 1)[0] for path, _ in EXPECTED_TYPES.values()),
    }
    assert not forbidden & loaded, sorted(forbidden & loaded)


def test_description_says_what_the_provider_does() -> None:
    """The Providers page shows the description: pulls into files, deferrable, sensors, the
    asset-watcher trigger and the hooks; nothing the API strips as reST (``_``, backticks,
    angle brackets) so that it reads as written."""
    description = get_provider_info()["description"]
    for words in (
        "pull a dataset or a time range into",
        "Parquet, CSV or JSON Lines files",
        "deferrable",
        "triggerer",
        "sensors",
        "asset-watcher trigger",
        "hooks",
    ):
        assert words in description, words
    assert not set("_`<>") & set(description)
    assert not description.startswith("Hooks for")


def test_documentation_url_is_the_docs_the_local_deployment_serves() -> None:
    """No public site: the docs the local deployment's API server serves (its plugin mounts the
    built docs at DOCS_PATH); the distribution's Project-URL, which Airflow 3.3 shows on the
    Providers page, says the same."""
    from importlib.metadata import metadata

    from echo_connhandler_provider import DOCS_PATH

    assert get_provider_info()["documentation-url"] == DOCS_PATH == "/echo-connhandler-docs/"
    urls = metadata("echo-connhandler-provider").get_all("Project-URL") or []
    assert f"Documentation, {DOCS_PATH}" in urls
    plugin = Path(__file__).resolve().parents[2] / "deploy" / "airflow_plugins" / "echo_docs.py"
    assert "DOCS_PATH" in plugin.read_text()
    jsonschema.validate(get_provider_info(), _airflow_schema("provider_info.schema.json"))
