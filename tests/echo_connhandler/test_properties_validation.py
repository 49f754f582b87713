"""Hardening of HttpConnProperties / OnsHttpConnProperties validation.

Control characters and spaces in URLs, credentials and header values, non-ASCII text where HTTP
needs ASCII, invalid header names and wrongly typed ONS fields are refused on construction with
a plain ``ValueError`` that names the field, and that never shows a credential's value.
"""

from __future__ import annotations

import base64
import re
import secrets
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from echo_connhandler import HttpConnProperties, OnsHttpConnProperties

HOST = "https://api.example.com"
ONS_BASE = {
    "host": "https://integra.ons.org.br/api",
    "user": "demo.user",
    "password": "demo-password",
    "login_target": "SAGER",
}


def _value_error(build: Callable[[], Any]) -> ValueError:
    """The exception ``build()`` raises: exactly ``ValueError`` (no subclass, no other type)."""
    with pytest.raises(ValueError) as info:
        build()
    assert type(info.value) is ValueError, repr(info.value)
    return info.value


def _texts(exc: BaseException) -> list[str]:
    """Every way the exception can be shown: str, repr and the formatted traceback."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def _assert_not_shown(exc: BaseException, value: str) -> None:
    """No piece of ``value`` (split at its control characters) appears in the exception."""
    pieces = [piece for piece in re.split(r"[\x00-\x1f\x7f]+", value) if len(piece) >= 6]
    assert pieces, "the secret must have a recognisable part"
    for text in _texts(exc):
        for piece in pieces:
            assert piece not in text, f"{piece!r} shown in {text!r}"


def _api_key() -> str:
    return "k-" + secrets.token_hex(15)  # "k-" + 30 hex characters


# -- URLs: host, auth_url, profile_url, origin -----------------------------------------------------
BAD_URLS = [
    "https://api.exa\nmple.com",
    "https://api.example.com/pa\tth",
    "https://api.example.com\x00",
    "https://api.example .com",
    "https://api.example.com/base path",
    "https://api.exa\rmple.com",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_host_with_control_character_or_space_is_refused(url: str) -> None:
    """A newline, tab, NUL or space inside the host: ValueError whose message starts 'host'."""
    exc = _value_error(lambda: HttpConnProperties(host=url))
    assert str(exc).startswith("host"), str(exc)
    assert "control characters" in str(exc) or "spaces" in str(exc)


@pytest.mark.parametrize("field", ["auth_url", "profile_url", "origin"])
@pytest.mark.parametrize("url", BAD_URLS)
def test_ons_urls_with_control_character_or_space_are_refused(field: str, url: str) -> None:
    """The same for the ONS URLs; the message names the field, not 'host'."""
    exc = _value_error(lambda: OnsHttpConnProperties(**ONS_BASE, **{field: url}))
    assert str(exc).startswith(field), str(exc)


def test_ons_urls_still_accept_good_values() -> None:
    """The check refuses only the bad characters: clean URLs are kept (normalised)."""
    props = OnsHttpConnProperties(
        **ONS_BASE,
        auth_url="https://pops.example.com/federation/",
        profile_url="https://api.example.com/perfis",
        origin="https://apps.example.com",
    )
    assert props.auth_url == "https://pops.example.com/federation"
    assert props.profile_url == "https://api.example.com/perfis"
    assert props.origin == "https://apps.example.com"


# -- credentials ---------------------------------------------------------------------------------
def _with_newline(key: str) -> str:
    return key + "\n"


def _with_crlf(key: str) -> str:
    return key + "\r\n"


def _with_nul_inside(key: str) -> str:
    return key[:12] + "\x00" + key[12:]


def _with_tab_inside(key: str) -> str:
    return key[:12] + "\t" + key[12:]


SPOILERS = [_with_newline, _with_crlf, _with_nul_inside, _with_tab_inside]


@pytest.mark.parametrize("spoil", SPOILERS)
def test_api_key_with_control_character_is_refused_without_showing_it(
    spoil: Callable[[str], str],
) -> None:
    """A key read from a file with its newline: ValueError naming api_key, key never shown."""
    key = _api_key()
    exc = _value_error(lambda: HttpConnProperties(host=HOST, api_key=spoil(key)))
    assert str(exc).startswith("api_key"), str(exc)
    assert "control character" in str(exc)
    _assert_not_shown(exc, key)
    _assert_not_shown(exc, spoil(key))


def test_api_key_trailing_newline_gets_a_hint() -> None:
    """The most common case, a trailing newline, is pointed out."""
    exc = _value_error(lambda: HttpConnProperties(host=HOST, api_key=_api_key() + "\n"))
    assert "newline" in str(exc)


@pytest.mark.parametrize("field", ["password", "user"])
@pytest.mark.parametrize("spoil", SPOILERS)
def test_user_and_password_with_control_character_are_refused_without_showing_them(
    field: str, spoil: Callable[[str], str]
) -> None:
    """The same for user and password: ValueError naming the field, value never shown."""
    value = f"{field}-" + secrets.token_hex(12)
    creds = {"user": "ana.operadora", "password": "pw-" + secrets.token_hex(12)}
    creds[field] = spoil(value)
    exc = _value_error(lambda: HttpConnProperties(host=HOST, **creds))
    assert str(exc).startswith(field), str(exc)
    assert str(exc).split()[0] == field, str(exc)  # "user", not "user/password" or another
    _assert_not_shown(exc, value)


def test_non_ascii_api_key_is_refused_as_non_ascii() -> None:
    """An API key travels in a header: non-ASCII is a ValueError naming api_key, not an
    UnicodeEncodeError on the first request."""
    exc = _value_error(lambda: HttpConnProperties(host=HOST, api_key="chave-ç-123456"))
    assert str(exc).startswith("api_key"), str(exc)
    assert "non-ASCII" in str(exc)
    assert "chave" not in str(exc)


@pytest.mark.parametrize("password", ["senha-ç-123456", "pässwörd-€-42", "パスワード"])
def test_non_ascii_password_is_accepted(password: str) -> None:
    """Passwords go into bodies (logins) as well as Basic auth: non-ASCII is allowed."""
    props = HttpConnProperties(host=HOST, user="ana", password=password)
    assert props.password == password
    assert password not in repr(props)


def test_non_ascii_password_reaches_the_server_as_utf8_basic_auth(make_handler: Any) -> None:
    """A handler built with a non-ASCII password sends it (UTF-8 in HTTP Basic)."""
    handler = make_handler(user="ana", password="senha-ç-123456")
    sent = handler.get("basic-auth-echo").json()["headers"]["authorization"]
    scheme, _, credentials = sent.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode("utf-8") == "ana:senha-ç-123456"


# -- headers -------------------------------------------------------------------------------------
def test_header_value_with_crlf_is_refused_naming_the_header() -> None:
    """Header injection: ValueError naming headers['X-Token'], the value not echoed."""
    exc = _value_error(
        lambda: HttpConnProperties(host=HOST, headers={"X-Token": "abc\r\nInjected: 1"})
    )
    assert "X-Token" in str(exc)
    assert str(exc).startswith("headers['X-Token']"), str(exc)
    assert "Injected" not in str(exc)


def test_sensitive_header_value_with_newline_is_not_shown() -> None:
    """A credential header with a trailing newline: refused, credential never shown."""
    token = "tok-" + secrets.token_hex(16)
    exc = _value_error(
        lambda: HttpConnProperties(host=HOST, headers={"Authorization": f"Bearer {token}\n"})
    )
    assert "Authorization" in str(exc)
    _assert_not_shown(exc, token)


def test_non_ascii_header_value_is_a_value_error_naming_it() -> None:
    """'São Paulo' in a header: ValueError naming X-Name, not UnicodeEncodeError."""
    exc = _value_error(lambda: HttpConnProperties(host=HOST, headers={"X-Name": "São Paulo"}))
    assert not isinstance(exc, UnicodeError)
    assert "X-Name" in str(exc)
    assert "non-ASCII" in str(exc)


@pytest.mark.parametrize("name", ["Bad Header", "X:Y", "X-Token\n", "", "Ñame", "X(Y)"])
def test_invalid_header_name_is_refused(name: str) -> None:
    """A header name must be an HTTP token."""
    exc = _value_error(lambda: HttpConnProperties(host=HOST, headers={name: "x"}))
    assert str(exc).startswith("headers"), str(exc)
    assert "header name" in str(exc)


def test_valid_ascii_headers_are_kept_and_sent(make_handler: Any) -> None:
    """Valid headers pass the check unchanged and reach the server."""
    token = "tok-" + secrets.token_hex(8)
    headers = {"X-Token": token, "X-Name": "Sao Paulo", "Accept": "application/json"}
    assert HttpConnProperties(host=HOST, headers=headers).headers == headers
    handler = make_handler(headers=headers)
    seen = handler.get("echo-headers").json()["headers"]
    assert seen["x-token"] == token
    assert seen["x-name"] == "Sao Paulo"
    assert seen["accept"] == "application/json"


# -- ONS fields of the wrong type ----------------------------------------------------------------
@pytest.mark.parametrize("value", [5, 5.0, b"perfil", ["perfil"]])
def test_selected_profile_of_wrong_type_is_a_value_error(value: object) -> None:
    """selected_profile=5: ValueError naming selected_profile (not AttributeError on .strip)."""
    exc = _value_error(
        lambda: OnsHttpConnProperties(
            **{**ONS_BASE, "login_target": "SINAPSE"}, selected_profile=value
        )
    )
    assert str(exc).startswith("selected_profile"), str(exc)


def test_selected_profile_with_control_character_is_refused() -> None:
    """A header value too: no newline either."""
    exc = _value_error(
        lambda: OnsHttpConnProperties(
            **{**ONS_BASE, "login_target": "SINAPSE"}, selected_profile="AGENTE/USINA\n"
        )
    )
    assert str(exc).startswith("selected_profile"), str(exc)


@pytest.mark.parametrize("value", [5, None, ["SAGER"], "sager", "SAGER\n"])
def test_login_target_of_wrong_type_or_value_is_a_value_error(value: object) -> None:
    """login_target=5 (or any other non-target): ValueError naming login_target."""
    exc = _value_error(lambda: OnsHttpConnProperties(**{**ONS_BASE, "login_target": value}))
    assert str(exc).startswith("login_target"), str(exc)


def test_unhashable_login_target_is_a_value_error() -> None:
    """A dict (unhashable) must not surface as a TypeError from a membership test."""
    exc = _value_error(lambda: OnsHttpConnProperties(**{**ONS_BASE, "login_target": {"a": 1}}))
    assert str(exc).startswith("login_target"), str(exc)


# -- payload_kwargs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload", [["secret-value-123"], "secret-value-123", ("secret-value-123",)]
)
def test_non_mapping_payload_kwargs_error_does_not_echo_its_value(payload: object) -> None:
    """payload_kwargs often carries a token: the error names the type, never the value."""
    exc = _value_error(lambda: HttpConnProperties(host=HOST, payload_kwargs=payload))
    assert str(exc).startswith("payload_kwargs"), str(exc)
    for text in _texts(exc):
        assert "secret-value-123" not in text
