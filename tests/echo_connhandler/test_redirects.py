"""Bodies never follow a redirect to another origin unless the caller allows it.

httpx re-sends the body on 307/308. The loopback ``server`` redirects (``/redirect?to=``) to the
``tls_server``, another origin (another port); the target counts what reached it, so "nothing
was sent there" is checked where it matters, at the foreign host.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from echo_connhandler import HttpStatusError, UnsafeRedirectError


def _redirect(to: str) -> str:
    return f"redirect?to={quote(to, safe='')}"


def _foreign(tls_server: Any, key: str) -> str:
    return f"{tls_server.url}/steal-{key}"


def _check_refused(info: pytest.ExceptionInfo[UnsafeRedirectError], tls_server: Any) -> None:
    message = str(info.value)
    assert f"127.0.0.1:{tls_server.port}" in message  # names the target
    assert "allow_cross_origin_body" in message
    assert info.value.status_code == 307


@pytest.mark.parametrize(
    ("props", "body"),
    [
        ({}, {"json": {"token": "abc"}}),
        ({}, {"data": {"token": "abc"}}),
        ({}, {"content": b"raw secret body"}),
        ({"payload_kwargs": {"api_token": "pk-1234567"}, "payload_kwargs_key": "json"}, {}),
        ({"payload_kwargs": {"api_token": "pk-1234567"}, "payload_kwargs_key": "data"}, {}),
    ],
)
def test_body_is_not_sent_to_another_origin_sync(
    make_handler: Any, tls_server: Any, key: str, props: dict[str, Any], body: dict[str, Any]
) -> None:
    handler = make_handler(verify_ssl=False, max_retries=3, **props)
    with pytest.raises(UnsafeRedirectError) as info:
        handler.post(_redirect(_foreign(tls_server, key)), **body)
    _check_refused(info, tls_server)
    assert tls_server.hits(key) == 0


@pytest.mark.parametrize(
    ("props", "body"),
    [
        ({}, {"json": {"token": "abc"}}),
        ({"payload_kwargs": {"api_token": "pk-1234567"}, "payload_kwargs_key": "data"}, {}),
    ],
)
async def test_body_is_not_sent_to_another_origin_async(
    make_async_handler: Any,
    tls_server: Any,
    key: str,
    props: dict[str, Any],
    body: dict[str, Any],
) -> None:
    handler = make_async_handler(verify_ssl=False, max_retries=3, **props)
    with pytest.raises(UnsafeRedirectError) as info:
        await handler.async_post(_redirect(_foreign(tls_server, key)), **body)
    _check_refused(info, tls_server)
    assert tls_server.hits(key) == 0


def test_refused_redirect_is_not_retried(make_handler: Any, tls_server: Any, key: str) -> None:
    handler = make_handler(verify_ssl=False, max_retries=3)
    target = _redirect(_foreign(tls_server, key))
    with pytest.raises(UnsafeRedirectError):
        handler.put(target, json={"a": 1})
    assert handler.connection is not None
    assert make_handler.__name__ == "factory"  # the fixture, not a stand-in
    assert tls_server.hits(key) == 0


def test_caller_may_allow_the_body_to_follow(make_handler: Any, tls_server: Any, key: str) -> None:
    handler = make_handler(verify_ssl=False)
    response = handler.post(
        _redirect(_foreign(tls_server, key)), json={"keep": "me"}, allow_cross_origin_body=True
    )
    assert response.json()["json"] == {"keep": "me"}
    assert tls_server.hits(key) == 1


async def test_caller_may_allow_the_body_to_follow_async(
    make_async_handler: Any, tls_server: Any, key: str
) -> None:
    handler = make_async_handler(verify_ssl=False)
    response = await handler.async_post(
        _redirect(_foreign(tls_server, key)), json={"keep": "me"}, allow_cross_origin_body=True
    )
    assert response.json()["json"] == {"keep": "me"}
    assert tls_server.hits(key) == 1


def test_same_origin_redirect_keeps_its_body(make_handler: Any, server: Any, key: str) -> None:
    handler = make_handler()
    response = handler.post(_redirect(f"{server.url}/same-{key}"), json={"a": 1})
    assert response.json()["path"] == f"/same-{key}"
    assert response.json()["json"] == {"a": 1}


def test_bodyless_request_follows_a_foreign_redirect(
    make_handler: Any, tls_server: Any, key: str
) -> None:
    """A GET carries no body: it follows (credential headers are withheld, as before)."""
    handler = make_handler(verify_ssl=False, api_key="k-foreign-redirect-123")
    response = handler.get(_redirect(_foreign(tls_server, key)))
    assert "authorization" not in response.json()["headers"]
    assert tls_server.hits(key) == 1


def test_redirect_refusal_is_a_response_error(make_handler: Any, tls_server: Any) -> None:
    """UnsafeRedirectError is an HttpResponseError (a RuntimeError), not a status error."""
    assert issubclass(UnsafeRedirectError, RuntimeError)
    assert not issubclass(UnsafeRedirectError, HttpStatusError)
