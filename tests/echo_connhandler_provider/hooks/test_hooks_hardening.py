"""Hardening seen through the hooks: a bad API key and a failing health check.

- An ``echo_http`` connection whose ``api_key`` extra ends with a newline (pasted from a file):
  ``test_connection()`` fails with a message naming ``api_key`` that never shows the key, and
  ``get_conn()`` / ``aget_conn()`` raise ``ValueError`` before anything is sent.
- A health endpoint answering 404: ``test_connection()`` fails with a short message that says
  which statuses were expected (``2xx or 3xx``), not a list of two hundred numbers.

Connections are ``AIRFLOW_CONN_*`` variables (JSON or URI), as in the other hook tests.
"""

from __future__ import annotations

import json
import secrets
import traceback
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from echo_connhandler_provider.hooks import EchoHttpHook


def _define(monkeypatch: pytest.MonkeyPatch, conn_id: str, value: dict[str, Any] | str) -> str:
    """An Airflow connection from the environment: a dict as JSON, a str as a URI."""
    text = value if isinstance(value, str) else json.dumps(value)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", text)
    return conn_id


def _api_key() -> str:
    return "k-" + secrets.token_hex(15)  # "k-" + 30 hex characters


def _bad_key_connections(
    monkeypatch: pytest.MonkeyPatch, server: Any, key: str, suffix: str
) -> list[str]:
    """The same echo_http connection in JSON and in URI form, its api_key ending in ``suffix``."""
    parts = urlsplit(server.url)
    json_id = _define(
        monkeypatch,
        f"bad_key_json_{secrets.token_hex(4)}",
        {"conn_type": "echo_http", "host": server.url, "extra": {"api_key": key + suffix}},
    )
    uri_id = _define(
        monkeypatch,
        f"bad_key_uri_{secrets.token_hex(4)}",
        f"echo-http://{parts.hostname}:{parts.port}/http?api_key={quote(key + suffix, safe='')}",
    )
    return [json_id, uri_id]


def _assert_key_not_shown(text: str, key: str) -> None:
    assert key not in text, text
    assert key[2:] not in text, text  # not even the hex part


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00"])
def test_test_connection_names_a_bad_api_key_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, server: Any, suffix: str
) -> None:
    """A key with a trailing newline: (False, message naming api_key), the key never in it."""
    key = _api_key()
    for conn_id in _bad_key_connections(monkeypatch, server, key, suffix):
        ok, message = EchoHttpHook(conn_id).test_connection()
        assert ok is False
        assert "api_key" in message, message
        assert message.startswith("Invalid connection settings:"), message
        _assert_key_not_shown(message, key)


def test_test_connection_with_a_bad_api_key_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, server: Any
) -> None:
    """The key is refused before any request: the server never sees it."""
    key = _api_key()
    for conn_id in _bad_key_connections(monkeypatch, server, key, "\n"):
        EchoHttpHook(conn_id).test_connection()
    assert server.hits(key) == 0
    with server.state.lock:
        assert not any(key in line for line in server.state.log)


def test_get_conn_raises_value_error_for_a_bad_api_key(
    monkeypatch: pytest.MonkeyPatch, server: Any
) -> None:
    """get_conn(): ValueError naming api_key; the key is in no part of the exception."""
    key = _api_key()
    for conn_id in _bad_key_connections(monkeypatch, server, key, "\n"):
        hook = EchoHttpHook(conn_id)
        with pytest.raises(ValueError) as info:
            hook.get_conn()
        assert type(info.value) is ValueError
        assert "api_key" in str(info.value)
        for text in (
            str(info.value),
            repr(info.value),
            "".join(traceback.format_exception(info.value)),
        ):
            _assert_key_not_shown(text, key)
        hook.close()


async def test_aget_conn_raises_value_error_for_a_bad_api_key(
    monkeypatch: pytest.MonkeyPatch, server: Any
) -> None:
    key = _api_key()
    for conn_id in _bad_key_connections(monkeypatch, server, key, "\r\n"):
        hook = EchoHttpHook(conn_id)
        with pytest.raises(ValueError) as info:
            await hook.aget_conn()
        assert "api_key" in str(info.value)
        _assert_key_not_shown(str(info.value), key)
        await hook.aclose()


def test_a_clean_api_key_still_works(monkeypatch: pytest.MonkeyPatch, server: Any) -> None:
    """The same connection without the newline: test_connection() succeeds, the key is sent."""
    key = _api_key()
    conn_id = _define(
        monkeypatch,
        "good_key",
        {
            "conn_type": "echo_http",
            "host": server.url,
            "extra": {"api_key": key, "health_endpoint": f"health-{key[2:10]}"},
        },
    )
    ok, message = EchoHttpHook(conn_id).test_connection()
    assert ok is True, message
    assert server.hits(f"health-{key[2:10]}") == 1


# -- a health endpoint that answers 404 ----------------------------------------------------------
def _health_connection(monkeypatch: pytest.MonkeyPatch, server: Any, endpoint: str) -> str:
    return _define(
        monkeypatch,
        f"health_{secrets.token_hex(4)}",
        {"conn_type": "echo_http", "host": server.url, "extra": {"health_endpoint": endpoint}},
    )


def test_test_connection_health_endpoint_404_has_a_short_message(
    monkeypatch: pytest.MonkeyPatch, server: Any
) -> None:
    """(False, 'Unexpected answer (HTTP 404): ... expected status 2xx or 3xx ...'), short."""
    conn_id = _health_connection(monkeypatch, server, "status/404")
    ok, message = EchoHttpHook(conn_id).test_connection()
    assert ok is False
    assert message.startswith("Unexpected answer (HTTP 404)"), message
    assert "expected status 2xx or 3xx" in message, message
    assert len(message) < 600, message
    assert "range(" not in message


def test_test_connection_health_endpoint_5xx_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, server: Any, key: str
) -> None:
    """test_connection() makes one attempt: a 503 fails at once, with the same short message."""
    conn_id = _health_connection(monkeypatch, server, f"flaky/{key}/5")
    ok, message = EchoHttpHook(conn_id).test_connection()
    assert ok is False
    assert "expected status 2xx or 3xx" in message, message
    assert len(message) < 600, message
    assert server.hits(key) == 1


@pytest.mark.parametrize("status", [200, 204, 302])
def test_test_connection_accepts_2xx_and_3xx(
    monkeypatch: pytest.MonkeyPatch, server: Any, status: int
) -> None:
    """The counterpart: any 2xx/3xx answer of the health endpoint is a working connection."""
    conn_id = _health_connection(monkeypatch, server, f"status/{status}")
    ok, message = EchoHttpHook(conn_id).test_connection()
    assert ok is True, message
    assert f"answered HTTP {status}" in message, message
