"""Unit tests of the field table: coercion, validation, routing and the base URL."""

from __future__ import annotations

from typing import Any

import pytest

from echo_connhandler_provider._fields import CONNECTION_TYPES, ConnectionSettings, build_settings


def settings(
    conn_type: str = "echo_http",
    extra: dict[str, Any] | None = None,
    *,
    conn_id: str = "my_conn",
    host: str | None = "https://api.example.com",
    schema: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
) -> ConnectionSettings:
    """``build_settings`` with defaults for the parts a test does not care about."""
    return build_settings(
        conn_type,
        conn_id=conn_id,
        host=host,
        schema=schema,
        port=port,
        login=login,
        password=password,
        extra=extra or {},
    )


def test_uri_strings_are_coerced_to_the_field_types() -> None:
    """Every value of a URI connection arrives as a string and leaves with its field's type."""
    result = settings(
        extra={
            "conn_timeout": "2.5",
            "request_timeout": "10",
            "attempt_deadline": "45",
            "verify_ssl": "false",
            "headers": '{"X-Tenant": "echo"}',
            "payload_kwargs": '{"page": 1, "tags": ["a"]}',
            "payload_kwargs_key": "params",
            "max_retries": "3",
            "max_conn_retries": "0",
            "retry_wait_time": "0.5",
            "exponential_multiplier": "2",
            "health_endpoint": "health",
        }
    )
    props = result.properties
    assert props["conn_timeout"] == 2.5
    assert props["request_timeout"] == 10
    assert props["attempt_deadline"] == 45
    assert props["verify_ssl"] is False
    assert props["headers"] == {"X-Tenant": "echo"}
    assert props["payload_kwargs"] == {"page": 1, "tags": ["a"]}
    assert props["payload_kwargs_key"] == "params"
    assert result.handler_kwargs == {
        "max_retries": 3,
        "max_conn_retries": 0,
        "retry_wait_time": 0.5,
        "exponential_multiplier": 2,
    }
    assert type(result.handler_kwargs["max_retries"]) is int
    assert type(result.handler_kwargs["max_conn_retries"]) is int
    assert result.hook_options == {"health_endpoint": "health"}


def test_typed_values_from_json_connections_are_kept() -> None:
    """Values of a JSON connection that already have the right type pass unchanged."""
    result = settings(
        extra={"verify_ssl": True, "max_retries": 2, "headers": {"A": "b"}, "conn_timeout": 3}
    )
    assert result.properties["verify_ssl"] is True
    assert result.properties["headers"] == {"A": "b"}
    assert result.properties["conn_timeout"] == 3
    assert result.handler_kwargs["max_retries"] == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("True", True),
        (" YES ", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
        (False, False),
    ],
)
def test_boolean_spellings(raw: object, expected: bool) -> None:
    """Common spellings of true and false are understood."""
    assert settings(extra={"verify_ssl": raw}).properties["verify_ssl"] is expected


@pytest.mark.parametrize(
    ("field", "raw", "why"),
    [
        ("verify_ssl", "maybe", "true or false"),
        ("max_retries", "three", "a number"),
        ("max_retries", "2.5", "whole number"),
        ("max_retries", "-1", ">= 0"),
        ("max_retries", True, "a number"),
        ("conn_timeout", "0", ">= 0.001"),
        ("conn_timeout", "nan", "finite"),
        ("request_timeout", "inf", "finite"),
        ("attempt_deadline", "0", ">= 0.001"),
        ("attempt_deadline", "soon", "a number"),
        ("headers", "{not json", "invalid JSON"),
        ("headers", "[1, 2]", "JSON object"),
        ("payload_kwargs", "42", "JSON object"),
        ("payload_kwargs_key", "body", "json, data, params"),
        ("health_endpoint", 42, "expected text"),
    ],
)
def test_bad_values_name_the_connection_and_the_field(field: str, raw: object, why: str) -> None:
    """A bad value raises ValueError naming the connection id, the field and the problem."""
    with pytest.raises(ValueError) as info:
        settings(extra={field: raw}, conn_id="weather_api")
    message = str(info.value)
    assert "'weather_api'" in message
    assert f"'{field}'" in message
    assert why in message


def test_concurrency_below_minimum_is_refused() -> None:
    """A hook option is validated too (concurrency >= 1)."""
    with pytest.raises(ValueError, match=r"'ccee_x'.*'concurrency'.*>= 1"):
        settings("ccee", {"concurrency": "0"}, conn_id="ccee_x")


@pytest.mark.parametrize("conn_type", sorted(CONNECTION_TYPES))
def test_unknown_extra_keys_are_rejected_and_listed(conn_type: str) -> None:
    """Unknown keys raise ValueError listing each of them, the known ones, and the headers hint."""
    extra = {"X-Api-Key": "abc12345", "timeout": "3"}
    if conn_type == "ons":
        extra["login_target"] = "SAGER"
    with pytest.raises(ValueError) as info:
        settings(conn_type, extra, conn_id="typo_conn", login="u", password="p")
    message = str(info.value)
    assert "'typo_conn'" in message
    assert conn_type in message
    assert "X-Api-Key, timeout" in message
    assert "known: " in message
    assert "conn_timeout" in message.split("known: ", 1)[1]
    assert "'headers' field" in message


def test_unknown_keys_never_become_headers() -> None:
    """A header-looking unknown key is refused rather than sent: nothing reaches the headers."""
    with pytest.raises(ValueError, match="X-Tenant"):
        settings(extra={"X-Tenant": "echo", "headers": {"Accept": "application/json"}})
    result = settings(extra={"headers": {"X-Tenant": "echo"}})
    assert result.properties["headers"] == {"X-Tenant": "echo"}


def test_fields_of_another_connection_type_are_unknown() -> None:
    """A field declared for another type only (ONS login_target on Bazefield) is refused."""
    with pytest.raises(ValueError, match="login_target"):
        settings("bazefield", {"login_target": "SAGER"})
    with pytest.raises(ValueError, match="concurrency"):
        settings("echo_http", {"concurrency": 2})


def test_empty_values_are_ignored() -> None:
    """Blank form fields (None, "", {} and "{}") count as unset, not as errors."""
    result = settings(
        extra={
            "api_key": "",
            "headers": "{}",
            "payload_kwargs": {},
            "max_retries": None,
            "conn_timeout": "",
            "health_endpoint": "",
        }
    )
    assert result.properties == {"host": "https://api.example.com"}
    assert result.handler_kwargs == {}
    assert result.hook_options == {}


def test_airflow2_prefixed_keys_are_accepted() -> None:
    """``extra__<type>__<name>`` keys (Airflow 2 forms) are read as ``<name>``."""
    result = settings(
        "bazefield",
        {
            "extra__bazefield__api_key": "key-123456",
            "extra__bazefield__max_retries": "2",
            "extra__bazefield__concurrency": "3",
        },
    )
    assert result.properties["api_key"] == "key-123456"
    assert result.handler_kwargs == {"max_retries": 2}
    assert result.hook_options == {"concurrency": 3}


def test_prefix_of_another_type_is_unknown() -> None:
    """Only the connection's own prefix is stripped."""
    with pytest.raises(ValueError, match="extra__ccee__api_key"):
        settings("bazefield", {"extra__ccee__api_key": "key-123456"})


def test_values_go_to_properties_handler_or_hook() -> None:
    """Each field lands where its table row says: properties, handler kwargs or hook options."""
    result = settings(
        "ons",
        {
            "login_target": "SINAPSE",
            "auth_url": "https://idp.example.com/pop",
            "selected_profile": "Perfil/AGENTES/1/ECHO",
            "legacy_tls_renegotiation": "yes",
            "max_retries": "4",
            "retry_after_cap": "10",
        },
        login="user",
        password="secret-pw",
    )
    assert result.properties == {
        "host": "https://api.example.com",
        "login_target": "SINAPSE",
        "auth_url": "https://idp.example.com/pop",
        "selected_profile": "Perfil/AGENTES/1/ECHO",
        "legacy_tls_renegotiation": True,
        "user": "user",
        "password": "secret-pw",
    }
    assert result.handler_kwargs == {"max_retries": 4, "retry_after_cap": 10}
    assert result.hook_options == {}


def test_ons_login_target_must_be_sager_or_sinapse() -> None:
    """An unknown login target names both allowed values."""
    with pytest.raises(ValueError, match=r"'ons_x'.*'login_target'.*SAGER, SINAPSE.*'BOTH'"):
        settings("ons", {"login_target": "BOTH"}, conn_id="ons_x")


def test_ons_login_target_is_required() -> None:
    """A missing required field is a ValueError naming the connection and the field."""
    with pytest.raises(ValueError, match=r"'ons_x'.*'login_target'"):
        settings("ons", {}, conn_id="ons_x", login="user", password="secret-pw")


def test_login_and_password_become_user_and_password() -> None:
    """Connection login/password map to the properties' user/password; empty ones are unset."""
    result = settings("bazefield", login="demo.user", password="pw-12345")
    assert result.properties["user"] == "demo.user"
    assert result.properties["password"] == "pw-12345"
    empty = settings("bazefield", login="", password="")
    assert "user" not in empty.properties
    assert "password" not in empty.properties


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        ("https://h.example/api", None, None, "https://h.example/api"),
        ("http://h.example/", "https", None, "http://h.example"),
        ("h.example", "http", None, "http://h.example"),
        ("h.example", "HTTP", None, "http://h.example"),
        ("h.example", None, None, "https://h.example"),
        ("h.example", "", None, "https://h.example"),
        ("h.example", "  ", None, "https://h.example"),
        ("https://h.example/api", "public", None, "https://h.example/api"),
        ("h.example", "http", 8080, "http://h.example:8080"),
        ("http://h.example/api/v1", None, 8080, "http://h.example:8080/api/v1"),
        ("http://h.example:9000/api", None, 8080, "http://h.example:9000/api"),
        ("  https://h.example/  ", None, None, "https://h.example"),
        ("127.0.0.1", "http", 5000, "http://127.0.0.1:5000"),
    ],
)
def test_base_url(host: str, schema: str | None, port: int | None, expected: str) -> None:
    """Scheme kept from the host; schema used only when the host has none; port added."""
    assert settings(host=host, schema=schema, port=port).properties["host"] == expected


@pytest.mark.parametrize("schema", ["base/path", "htps", "public", "ftp", "https/api"])
def test_schema_that_is_not_a_scheme_is_an_error(schema: str) -> None:
    """A schema other than http/https (a base path, a typo) is refused, not replaced by https."""
    with pytest.raises(ValueError) as info:
        settings(host="api.example.com", schema=schema, port=8443, conn_id="weather_api")
    message = str(info.value)
    assert "'weather_api'" in message
    assert "'schema'" in message
    assert repr(schema) in message
    assert "must be http or https" in message
    assert "URL-encoded" in message


def test_uri_path_is_refused_not_dropped() -> None:
    """``echo-http://api.example.com:8443/base/path``: the path arrives as the schema; refused."""
    from airflow.models.connection import Connection

    conn = Connection(uri="echo-http://api.example.com:8443/base/path")
    assert conn.schema == "base/path"
    with pytest.raises(ValueError, match=r"'schema'.*'base/path'"):
        settings(host=conn.host, schema=conn.schema, port=conn.port)


@pytest.mark.parametrize("host", [None, "", "   "])
def test_ccee_default_host(host: str | None) -> None:
    """A CCEE connection without a host uses the public portal."""
    result = settings("ccee", host=host)
    assert result.properties["host"] == "https://dadosabertos.ccee.org.br"


@pytest.mark.parametrize("conn_type", ["echo_http", "bazefield", "ons"])
def test_empty_host_is_an_error_without_default(conn_type: str) -> None:
    """Types without a default host name the connection and the host field."""
    with pytest.raises(ValueError, match=r"'no_host'.*host"):
        settings(
            conn_type,
            {"login_target": "SAGER"} if conn_type == "ons" else {},
            conn_id="no_host",
            host=None,
        )


def test_ccee_custom_host_wins_over_default() -> None:
    """A host given on a CCEE connection replaces the default."""
    assert settings("ccee", host="mirror.example", schema="http").properties["host"] == (
        "http://mirror.example"
    )


def test_header_numbers_and_booleans_become_text() -> None:
    """A JSON connection's headers may hold numbers; they are sent as text."""
    settings = build_settings(
        "echo_http",
        conn_id="num_headers",
        host="https://api.example.com",
        schema=None,
        port=None,
        login=None,
        password=None,
        extra={"headers": {"X-Num": 1, "X-Flag": True}},
    )
    assert settings.properties["headers"] == {"X-Num": "1", "X-Flag": "true"}


def test_header_with_nested_value_names_connection_and_key() -> None:
    """A nested header value is an error naming the connection and the header."""
    with pytest.raises(ValueError, match=r"'bad_headers'.*'headers'.*'X-Obj'"):
        build_settings(
            "echo_http",
            conn_id="bad_headers",
            host="https://api.example.com",
            schema=None,
            port=None,
            login=None,
            password=None,
            extra={"headers": {"X-Obj": {"a": 1}}},
        )


def _library_defaults() -> dict[str, dict[str, Any]]:
    """The library's own defaults, by target: properties dataclasses and handler signature."""
    import dataclasses
    import inspect

    from echo_connhandler import HttpConnProperties, HttpHandler, OnsHttpConnProperties

    def dataclass_defaults(cls: type[Any]) -> dict[str, Any]:
        return {
            f.name: None if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(cls)
        }

    handler = {
        name: param.default
        for name, param in inspect.signature(HttpHandler.__init__).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    return {
        "http": dataclass_defaults(HttpConnProperties),
        "ons": dataclass_defaults(OnsHttpConnProperties),
        "handler": handler,
    }


@pytest.mark.parametrize("conn_type", sorted(CONNECTION_TYPES))
def test_form_defaults_are_the_library_defaults(conn_type: str) -> None:
    """Every field's form default is the library's: the properties field or the handler argument.

    ``_fields`` copies the defaults as literals (it must not import the library, to keep
    ``get_provider_info()`` light); this test is what ties them together.
    """
    from echo_connhandler._retry import DEFAULT_RETRY_AFTER_CAP

    library = _library_defaults()
    assert library["handler"]["retry_after_cap"] == DEFAULT_RETRY_AFTER_CAP
    props = library["ons" if conn_type == "ons" else "http"]
    checked = 0
    for item in CONNECTION_TYPES[conn_type].fields:
        if item.target == "hook":
            continue  # hook options have no library counterpart
        source = props if item.target == "props" else library["handler"]
        assert item.name in source, f"{conn_type}.{item.name} is not a {item.target} argument"
        expected = source[item.name]
        assert item.default == expected, (
            f"{conn_type}.{item.name}: {item.default!r} != {expected!r}"
        )
        numbers = [v for v in (item.default, expected) if type(v) in (int, float)]
        assert type(item.default) is type(expected) or len(numbers) == 2, (
            f"{conn_type}.{item.name}: type {type(item.default)} != {type(expected)}"
        )
        checked += 1
    assert checked >= 10


def test_library_defaults_check_catches_a_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tie works: a form default that differs from the library's is caught."""
    import dataclasses

    from echo_connhandler_provider import _fields

    spec = CONNECTION_TYPES["ccee"]
    drifted = tuple(
        dataclasses.replace(f, default=9) if f.name == "max_retries" else f for f in spec.fields
    )
    monkeypatch.setitem(_fields.CONNECTION_TYPES, "ccee", dataclasses.replace(spec, fields=drifted))
    with pytest.raises(AssertionError, match="max_retries"):
        test_form_defaults_are_the_library_defaults("ccee")


@pytest.mark.parametrize("conn_type", sorted(CONNECTION_TYPES))
def test_attempt_deadline_is_a_field_of_every_type(conn_type: str) -> None:
    """attempt_deadline is on every form, empty by default (the library derives it from
    request_timeout), and reaches the properties, where HttpConnProperties accepts it."""
    from echo_connhandler import HttpConnProperties

    item = {f.name: f for f in CONNECTION_TYPES[conn_type].fields}["attempt_deadline"]
    assert item.default is None
    assert item.target == "props"
    assert item.form_entry()["schema"]["type"] == ["number", "null"]
    value = build_settings(
        conn_type,
        conn_id="c",
        host="https://api.example.com",
        schema=None,
        port=None,
        login=None,
        password=None,
        extra={"attempt_deadline": "90", "login_target": "SAGER"}
        if conn_type == "ons"
        else {"attempt_deadline": "90"},
    ).properties["attempt_deadline"]
    assert HttpConnProperties(host="https://h", attempt_deadline=value).attempt_deadline == 90.0
