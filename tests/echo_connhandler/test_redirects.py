"""Bodies never follow a redirect to another origin unless the caller allows it.

httpx re-sends the body on 307/308. The loopback ``server`` redirects (``/redirect?to=``) to the
``tls_server``, another origin (another port); the target counts what reached it, so "nothing
was sent there" is checked where it matters, at the foreign host.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import pytest

from echo_connhandler import HttpStatusError, HttpTransportError, UnsafeRedirectError


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


# -- presigned URLs in a redirect ------------------------------------------------------------------
_SIGNATURE = "5f1e0c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
_CREDENTIAL = "AKIAEXAMPLEKEYID%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"


def _presigned(base: str, key: str) -> str:
    """An S3-style presigned URL (SigV4 query parameters) under ``base``."""
    return (
        f"{base}?k={key}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={_CREDENTIAL}"
        f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=300&X-Amz-Signature={_SIGNATURE}"
    )


def _check_no_signature(text: str) -> None:
    assert _SIGNATURE not in text
    assert "AKIAEXAMPLEKEYID" not in text


@pytest.mark.parametrize("path", ["sync", "async"])
async def test_presigned_redirect_target_failing_hides_the_signature(
    make_handler: Any, server: Any, key: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A redirect to a presigned URL whose target answers 403: the error names the target URL
    without its signature or credential (docs/errors.md, "Secrets")."""
    handler = make_handler(max_retries=2)
    endpoint = _redirect(_presigned(f"{server.url}/status/403", key))

    async def get() -> None:
        if path == "sync":
            handler.get(endpoint)
        else:
            try:
                await handler.async_get(endpoint)
            finally:
                await handler.async_close()

    with caplog.at_level(logging.DEBUG), pytest.raises(HttpStatusError) as info:
        await get()
    message = str(info.value)
    assert info.value.status_code == 403
    assert "/status/403" in message
    assert "X-Amz-Signature=***" in message
    assert "X-Amz-Expires=300" in message  # what is not a credential stays readable
    _check_no_signature(message)
    _check_no_signature(caplog.text)
    assert server.hits(key) == 2  # the redirect, then its target


def test_presigned_redirect_to_a_dead_host_hides_the_signature(
    make_handler: Any, closed_port: int, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The target refuses the connection: the transport error and the retry warnings print the
    request's URL, whose query carries the presigned URL URL-encoded: masked there too."""
    handler = make_handler(max_retries=1)
    endpoint = _redirect(_presigned(f"http://127.0.0.1:{closed_port}/o.csv", key))
    with caplog.at_level(logging.DEBUG), pytest.raises(HttpTransportError) as info:
        handler.get(endpoint)
    _check_no_signature(str(info.value))
    _check_no_signature(caplog.text)
    assert "Retrying GET" in caplog.text  # the retry warning was logged, and masked
