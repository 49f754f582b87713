"""HttpConnProperties / OnsHttpConnProperties: validation, normalisation, redacted repr."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from echo_connhandler import HttpConnProperties, OnsHttpConnProperties
from echo_connhandler._properties import (
    DEFAULT_ONS_AUTH_URL,
    DEFAULT_SINAPSE_PROFILE_URL,
    ONS_DEFAULT_ORIGINS,
    is_sensitive_name,
)

HOST = "https://api.example.com"


def test_defaults_match_the_docs() -> None:
    """Defaults are those of docs/handlers.md, "Connection properties"."""
    props = HttpConnProperties(host=HOST)
    assert (props.user, props.password, props.api_key) == (None, None, None)
    assert props.conn_timeout == 30
    assert props.request_timeout == 300
    assert props.verify_ssl is True
    assert props.headers is None
    assert props.payload_kwargs is None
    assert props.payload_kwargs_key == "json"


def test_user_guide_signature_is_accepted() -> None:
    """Every keyword of the guide's 'Connection properties' snippet is accepted."""
    props = HttpConnProperties(
        host=HOST,
        api_key="my-secret-key",
        conn_timeout=30,
        request_timeout=300,
        verify_ssl=False,
        headers={"accept": "application/json"},
        payload_kwargs={"api_token": "xyz"},
        payload_kwargs_key="json",
    )
    assert props.verify_ssl is False
    assert props.headers == {"accept": "application/json"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.example.com/", "https://api.example.com"),
        ("  http://api.example.com/base//  ", "http://api.example.com/base"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("HTTPS://API.example.com/v1", "HTTPS://API.example.com/v1"),
    ],
)
def test_host_is_normalised(given: str, expected: str) -> None:
    """Whitespace and trailing slashes are removed from the host."""
    assert HttpConnProperties(host=given).host == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        "   ",
        "api.example.com",
        "/relative/path",
        "ftp://api.example.com",
        "file:///etc/passwd",
        "https://",
        "http://host:notaport",
        None,
        42,
    ],
)
def test_bad_host_names_the_field(host: Any) -> None:
    """A host that is not an absolute http(s) URL raises ValueError naming 'host'."""
    with pytest.raises(ValueError, match=r"^host "):
        HttpConnProperties(host=host)


@pytest.mark.parametrize(
    "credentials",
    [
        {"api_key": "k" * 10, "user": "me", "password": "pw-123456"},
        {"api_key": "k" * 10, "user": "me"},
        {"api_key": "k" * 10, "password": "pw-123456"},
    ],
)
def test_api_key_with_user_or_password_is_rejected(credentials: dict[str, str]) -> None:
    """api_key together with user and/or password: 'cannot use both'."""
    with pytest.raises(ValueError, match="cannot use both") as info:
        HttpConnProperties(host=HOST, **credentials)
    assert "api_key" in str(info.value)


@pytest.mark.parametrize(
    ("credentials", "missing"),
    [({"user": "me"}, "password"), ({"password": "pw-123456"}, "user")],
)
def test_half_a_user_password_pair_names_the_missing_field(
    credentials: dict[str, str], missing: str
) -> None:
    """user without password (or the reverse) names the missing one."""
    with pytest.raises(ValueError, match=rf"^{missing} is required"):
        HttpConnProperties(host=HOST, **credentials)


@pytest.mark.parametrize(
    ("field", "credentials"),
    [
        ("user", {"user": "", "password": "pw-123456"}),
        ("password", {"user": "me", "password": ""}),
        ("api_key", {"api_key": ""}),
        ("api_key", {"api_key": 12345}),
    ],
)
def test_empty_or_non_string_credentials_are_rejected(
    field: str, credentials: dict[str, Any]
) -> None:
    """Credentials must be non-empty strings."""
    with pytest.raises(ValueError, match=rf"^{field} must be a non-empty string"):
        HttpConnProperties(host=HOST, **credentials)


@pytest.mark.parametrize("key", ["body", "JSON", "", None, "files", "content"])
def test_bad_payload_kwargs_key_names_the_field(key: Any) -> None:
    """payload_kwargs_key outside json/data/params is a ValueError naming the field."""
    with pytest.raises(ValueError, match=r"^payload_kwargs_key must be one of json, data, params"):
        HttpConnProperties(host=HOST, payload_kwargs_key=key)


@pytest.mark.parametrize("key", ["json", "data", "params"])
def test_good_payload_kwargs_keys(key: str) -> None:
    """The three places payload_kwargs can go are accepted."""
    assert HttpConnProperties(host=HOST, payload_kwargs_key=key).payload_kwargs_key == key  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["conn_timeout", "request_timeout"])
@pytest.mark.parametrize("value", [0, -1, -0.5, float("inf"), float("nan"), "30", None, True])
def test_bad_timeouts_name_the_field(field: str, value: Any) -> None:
    """Timeouts must be finite positive numbers; the message names the field."""
    with pytest.raises(ValueError, match=rf"^{field} must be a"):
        HttpConnProperties(host=HOST, **{field: value})


@pytest.mark.parametrize("field", ["conn_timeout", "request_timeout"])
def test_int_timeouts_become_floats(field: str) -> None:
    """An int timeout is stored as a float."""
    value = getattr(HttpConnProperties(host=HOST, **{field: 7}), field)
    assert value == 7.0
    assert isinstance(value, float)


@pytest.mark.parametrize("value", ["false", 0, 1, None])
def test_verify_ssl_must_be_a_bool(value: Any) -> None:
    """verify_ssl accepts only True or False."""
    with pytest.raises(ValueError, match=r"^verify_ssl must be True or False"):
        HttpConnProperties(host=HOST, verify_ssl=value)


@pytest.mark.parametrize(
    "headers", [["accept", "application/json"], "accept: json", {"x": 1}, {1: "x"}]
)
def test_bad_headers_name_the_field(headers: Any) -> None:
    """headers must be a mapping of strings to strings."""
    with pytest.raises(ValueError, match=r"^headers "):
        HttpConnProperties(host=HOST, headers=headers)


@pytest.mark.parametrize("payload", [["a", 1], "token=x", 3])
def test_bad_payload_kwargs_name_the_field(payload: Any) -> None:
    """payload_kwargs must be a mapping."""
    with pytest.raises(ValueError, match=r"^payload_kwargs must be a mapping"):
        HttpConnProperties(host=HOST, payload_kwargs=payload)


def test_mappings_are_copied() -> None:
    """Later changes to the caller's dicts do not reach the properties."""
    headers, payload = {"accept": "application/json"}, {"a": 1}
    props = HttpConnProperties(host=HOST, headers=headers, payload_kwargs=payload)
    headers["accept"] = "text/html"
    payload["a"] = 2
    assert props.headers == {"accept": "application/json"}
    assert props.payload_kwargs == {"a": 1}


def test_properties_are_frozen() -> None:
    """Properties cannot be changed after validation."""
    props = HttpConnProperties(host=HOST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        props.host = "not a url"  # type: ignore[misc]


SECRETS = {
    "password": "pw-very-secret-1",
    "api_key": "api-key-very-secret-2",
    "header": "header-token-secret-3",
    "payload": "payload-token-secret-4",
}


@pytest.mark.parametrize("render", [repr, str])
def test_repr_and_str_hide_secrets(render: Any) -> None:
    """repr()/str() show neither password, api_key nor sensitive header/payload values."""
    with_user = HttpConnProperties(
        host=HOST,
        user="some.user",
        password=SECRETS["password"],
        headers={"X-Auth-Token": SECRETS["header"], "Accept": "application/json"},
        payload_kwargs={"api_token": SECRETS["payload"], "page_size": 50},
    )
    with_key = HttpConnProperties(host=HOST, api_key=SECRETS["api_key"])
    text = render(with_user) + render(with_key)
    for secret in SECRETS.values():
        assert secret not in text
    assert "some.user" in text
    assert "application/json" in text
    assert "page_size" in text
    assert "50" in text
    assert "password='***'" in text
    assert "api_key='***'" in text


def test_repr_shows_none_for_missing_credentials() -> None:
    """A missing secret shows as None, not as a mask."""
    text = repr(HttpConnProperties(host=HOST))
    assert text.startswith("HttpConnProperties(host='https://api.example.com'")
    assert "password=None" in text
    assert "api_key=None" in text


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("Authorization", True),
        ("X-Api-Key", True),
        ("api_token", True),
        ("Cookie", True),
        ("client_secret", True),
        ("SessionId", True),
        ("Accept", False),
        ("Content-Type", False),
        ("page_size", False),
    ],
)
def test_is_sensitive_name(name: str, sensitive: bool) -> None:
    """Header and payload names that carry credentials are recognised."""
    assert is_sensitive_name(name) is sensitive


# -- ONS ----------------------------------------------------------------------------------------
ONS_HOST = "https://integra.ons.org.br/api/sager/renovaveis/api"


def ons(**kwargs: Any) -> OnsHttpConnProperties:
    base: dict[str, Any] = {"host": ONS_HOST, "user": "my.user", "password": "my-password"}
    return OnsHttpConnProperties(**{**base, **kwargs})


@pytest.mark.parametrize("target", ["SAGER", "SINAPSE"])
def test_ons_defaults(target: str) -> None:
    """Default auth_url, token_url, origin and profile URL."""
    props = ons(login_target=target)
    assert props.auth_url == DEFAULT_ONS_AUTH_URL
    assert props.token_url == "https://pops.ons.org.br/ons.pop.federation/oauth2/token"
    assert props.effective_origin == ONS_DEFAULT_ORIGINS[target]
    assert props.effective_profile_url == DEFAULT_SINAPSE_PROFILE_URL
    assert props.legacy_tls_renegotiation is False
    assert isinstance(props, HttpConnProperties)


def test_ons_overrides_are_normalised() -> None:
    """auth_url, origin and profile_url are validated and lose their trailing slash."""
    props = ons(
        login_target="SINAPSE",
        auth_url="http://127.0.0.1:9/idp/",
        origin="http://127.0.0.1:9/",
        profile_url="http://127.0.0.1:9/profiles/",
        selected_profile="perfil/escopo/1/nome",
    )
    assert props.token_url == "http://127.0.0.1:9/idp/oauth2/token"
    assert props.effective_origin == "http://127.0.0.1:9"
    assert props.effective_profile_url == "http://127.0.0.1:9/profiles"
    assert props.selected_profile == "perfil/escopo/1/nome"


@pytest.mark.parametrize("target", ["sager", "Sinapse", "", None, "OTHER"])
def test_ons_bad_login_target(target: Any) -> None:
    """login_target must be SAGER or SINAPSE."""
    with pytest.raises(ValueError, match=r"^login_target must be 'SAGER' or 'SINAPSE'"):
        ons(login_target=target)


def test_ons_login_target_is_required() -> None:
    """login_target has no default."""
    with pytest.raises(TypeError, match="login_target"):
        ons()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user": None, "password": None, "api_key": "k" * 10}, "^api_key is not used by ONS"),
        ({"user": None, "password": None}, "^user and password are required for ONS"),
        ({"auth_url": "pops.ons.org.br"}, "^auth_url "),
        ({"profile_url": "/perfis"}, "^profile_url "),
        ({"origin": "apps18.ons.org.br"}, "^origin "),
        ({"selected_profile": "   "}, "^selected_profile must not be empty"),
        ({"legacy_tls_renegotiation": "yes"}, "^legacy_tls_renegotiation must be True or False"),
    ],
)
def test_ons_validation_names_the_field(kwargs: dict[str, Any], message: str) -> None:
    """Each ONS-specific validation error names its field."""
    with pytest.raises(ValueError, match=message):
        ons(login_target="SAGER", **kwargs)


def test_ons_repr_hides_password_and_shows_target() -> None:
    """The ONS repr adds its fields and still hides the password."""
    text = repr(ons(login_target="SINAPSE", password="ons-secret-password"))
    assert text.startswith("OnsHttpConnProperties(")
    assert "ons-secret-password" not in text
    assert "login_target='SINAPSE'" in text
    assert f"auth_url='{DEFAULT_ONS_AUTH_URL}'" in text


@pytest.mark.parametrize("host", ["https://h/base?x=1", "https://h/base#frag"])
def test_host_with_query_or_fragment_is_rejected(host: str) -> None:
    """Endpoints are appended to the host, so a query or fragment there is an error."""
    with pytest.raises(ValueError, match="host must not carry a query or fragment"):
        HttpConnProperties(host=host)


def test_host_with_user_info_is_rejected_without_echoing_the_password() -> None:
    """user:password@ in the host is refused, and the message never shows the password."""
    with pytest.raises(ValueError, match="host must not carry user info") as info:
        HttpConnProperties(host="https://alice:topsecret99@api.example.com")
    assert "topsecret99" not in str(info.value)


def test_invalid_scheme_message_hides_user_info() -> None:
    """Even a rejected URL is shown without its user info."""
    with pytest.raises(ValueError, match="absolute http") as info:
        HttpConnProperties(host="ftp://alice:topsecret99@api.example.com")
    assert "topsecret99" not in str(info.value)


# -- attempt_deadline ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "60", True])
def test_bad_attempt_deadline_names_the_field(value: Any) -> None:
    """attempt_deadline is checked like the timeouts (None is allowed: the default)."""
    with pytest.raises(ValueError, match=r"^attempt_deadline must be a"):
        HttpConnProperties(host=HOST, attempt_deadline=value)


@pytest.mark.parametrize(
    ("request_timeout", "attempt_deadline", "effective"),
    [
        (300, None, 1200.0),  # the defaults: four read timeouts
        (2, None, 60.0),  # at least a minute
        (20, None, 80.0),
        (300, 45, 45.0),  # given: used as is, even below request_timeout
    ],
)
def test_effective_attempt_deadline(
    request_timeout: float, attempt_deadline: float | None, effective: float
) -> None:
    """None means max(60, 4 * request_timeout); a given value is stored as a float."""
    props = HttpConnProperties(
        host=HOST, request_timeout=request_timeout, attempt_deadline=attempt_deadline
    )
    assert props.effective_attempt_deadline == effective
    assert isinstance(props.effective_attempt_deadline, float)
    assert props.attempt_deadline == attempt_deadline
    assert "attempt_deadline=" in repr(props)
