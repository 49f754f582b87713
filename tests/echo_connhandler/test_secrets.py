"""The secret registry: register_secret, redact, redact_url and secret hooks."""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest

from echo_connhandler import (
    HttpConnProperties,
    HttpStatusError,
    SecretScope,
    add_secret_hook,
    redact,
    register_secret,
    remove_secret_hook,
)
from echo_connhandler import _secrets as registry
from echo_connhandler._secrets import MASK, MIN_SECRET_LENGTH, redact_url


def unique(prefix: str = "secret") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.fixture
def received() -> Iterator[list[str]]:
    """A secret hook that records what it is given from now on; removed afterwards."""
    seen: list[str] = []
    hook = seen.append
    add_secret_hook(hook)
    seen.clear()  # forget the replay of the secrets registered by earlier tests
    yield seen
    remove_secret_hook(hook)


def test_registered_secret_is_redacted() -> None:
    """A registered value is replaced by *** wherever it appears."""
    secret = unique()
    assert redact(f"a {secret} b {secret}") == f"a {secret} b {secret}"
    register_secret(secret)
    assert redact(f"a {secret} b {secret}") == "a *** b ***"
    assert MASK == "***"


@pytest.mark.parametrize("value", [None, "", "a", "abcd"])
def test_short_values_are_ignored(value: str | None, received: list[str]) -> None:
    """None, empty and values shorter than MIN_SECRET_LENGTH are not secrets."""
    register_secret(value)
    assert received == []
    if value:
        assert redact(f"x {value} y") == f"x {value} y"


def test_min_length_value_is_registered() -> None:
    """A value of exactly MIN_SECRET_LENGTH characters is a secret."""
    value = "Zq#k~"  # nothing else in the suite contains it
    assert len(value) == MIN_SECRET_LENGTH
    register_secret(value)
    assert redact(value) == MASK


def test_longest_secret_is_masked_whole() -> None:
    """A secret that contains another is masked as one piece."""
    short = unique("tok")
    long = f"{short}-extended"
    register_secret(short)
    register_secret(long)
    assert redact(f"[{long}] [{short}]") == "[***] [***]"


def test_regex_characters_are_literal() -> None:
    """Secrets with regex metacharacters are matched literally."""
    secret = f"p@ss.w*rd+(1)|{uuid.uuid4().hex[:6]}"
    register_secret(secret)
    assert redact(f"x{secret}y") == "x***y"
    assert redact("p@ssXw*rd") == "p@ssXw*rd"


def test_registration_is_thread_safe() -> None:
    """Secrets registered from many threads at once are all redacted."""
    values = [unique(f"thread{i}") for i in range(64)]
    threads = [threading.Thread(target=register_secret, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert redact(" ".join(values)) == " ".join([MASK] * len(values))


def test_oldest_tokens_are_forgotten_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run-time tokens are kept up to MAX_EPHEMERAL_SECRETS, the oldest forgotten first."""
    monkeypatch.setattr(registry, "_ephemeral", {})
    monkeypatch.setattr(registry, "MAX_EPHEMERAL_SECRETS", 3)
    values = [unique(f"evict{i}") for i in range(5)]
    for value in values:
        register_secret(value, ephemeral=True)
    assert list(registry._ephemeral) == values[2:]
    assert redact(values[0]) == values[0]
    assert redact(values[4]) == MASK


def test_credentials_are_never_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """A password registered first is still masked after many token refreshes."""
    monkeypatch.setattr(registry, "_ephemeral", {})
    monkeypatch.setattr(registry, "MAX_EPHEMERAL_SECRETS", 3)
    password = unique("long-lived-password")
    register_secret(password)
    for i in range(10):
        register_secret(unique(f"token{i}"), ephemeral=True)
    assert redact(f"x {password} y") == f"x {MASK} y"


# -- redact_url -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/x?page=2", "https://api.example.com/x?page=2"),
        ("https://u:p4ss@api.example.com/x", "https://api.example.com/x"),
        ("https://user@api.example.com:8443/x", "https://api.example.com:8443/x"),
        ("https://h/x?api_key=abc&page=2", "https://h/x?api_key=***&page=2"),
        ("https://h/x?API_KEY=abc", "https://h/x?API_KEY=***"),
        ("https://h/x?apikey=abc", "https://h/x?apikey=***"),
        ("https://h/x?accessToken=abc", "https://h/x?accessToken=***"),
        ("https://h/x?password=abc&passwd=def", "https://h/x?password=***&passwd=***"),
        ("https://h/x?client_secret=abc", "https://h/x?client_secret=***"),
        ("https://h/x?Authorization=abc", "https://h/x?Authorization=***"),
        ("https://h/x?token=", "https://h/x?token=***"),
        ("https://h/x?q=a+b&empty=", "https://h/x?q=a+b&empty="),
        ("https://h/x?page=2#frag", "https://h/x?page=2#frag"),
        ("https://h/x", "https://h/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """User info is dropped and sensitive query values are masked; the rest is kept."""
    assert redact_url(url) == expected


def test_redact_url_masks_registered_secrets_in_the_path() -> None:
    """A registered secret anywhere in the URL is masked too."""
    secret = unique("path")
    register_secret(secret)
    assert redact_url(f"https://h/session/{secret}/data?q={secret}") == (
        "https://h/session/***/data?q=***"
    )


# -- hooks ----------------------------------------------------------------------------------------
def test_hook_receives_new_secrets(received: list[str]) -> None:
    """A hook is called with every secret registered after it was added, once each."""
    secret = unique()
    register_secret(secret)
    register_secret(secret)
    assert received.count(secret) == 1


def test_hook_receives_already_known_secrets() -> None:
    """Adding a hook replays the secrets registered before it."""
    earlier = unique("earlier")
    register_secret(earlier)
    seen: list[str] = []
    add_secret_hook(seen.append)
    try:
        assert earlier in seen
    finally:
        remove_secret_hook(seen.append)


def test_hook_added_twice_is_called_once() -> None:
    """The same hook added twice is one hook."""
    seen: list[str] = []

    def hook(value: str) -> None:
        seen.append(value)

    add_secret_hook(hook)
    add_secret_hook(hook)
    try:
        secret = unique()
        register_secret(secret)
        assert seen.count(secret) == 1
    finally:
        remove_secret_hook(hook)


def test_removed_hook_is_not_called() -> None:
    """remove_secret_hook stops the calls; removing an unknown hook is not an error."""
    seen: list[str] = []

    def hook(value: str) -> None:
        seen.append(value)

    add_secret_hook(hook)
    remove_secret_hook(hook)
    remove_secret_hook(hook)
    seen.clear()
    register_secret(unique())
    assert seen == []


def test_properties_register_their_secrets(received: list[str]) -> None:
    """Password, API key and sensitive header/payload values go to the registry and hooks."""
    password, api_key = unique("pw"), unique("key")
    header, payload, plain = unique("hdr"), unique("pay"), unique("plain")
    HttpConnProperties(
        host="https://api.example.com",
        user="me",
        password=password,
        headers={"X-Session-Id": header, "X-Tenant": plain},
        payload_kwargs={"api_token": payload, "tenant": plain},
    )
    HttpConnProperties(host="https://api.example.com", api_key=api_key)
    for secret in (password, api_key, header, payload):
        assert secret in received
        assert redact(secret) == MASK
    assert plain not in received
    assert redact(plain) == plain


@pytest.mark.parametrize("scheme", ["Bearer", "Basic", "Token"])
def test_credential_of_an_authorization_header_is_a_secret(scheme: str) -> None:
    """An 'Authorization: <scheme> <credential>' header registers the credential alone too."""
    credential = unique("cred")
    HttpConnProperties(
        host="https://api.example.com", headers={"Authorization": f"{scheme} {credential}"}
    )
    assert redact(f"echoed back: {credential}") == "echoed back: ***"
    assert redact(f"{scheme} {credential}") == MASK


def test_http_stack_log_records_are_redacted(
    caplog: pytest.LogCaptureFixture, make_handler: Any
) -> None:
    """httpx's request line and httpcore's header traces never show a registered secret."""
    token = "payload-token-in-query-123"
    handler = make_handler(payload_kwargs={"api_token": token}, payload_kwargs_key="params")
    with (
        caplog.at_level(logging.DEBUG, logger="httpx"),
        caplog.at_level(logging.DEBUG, logger="httpcore"),
    ):
        handler.get("cookie/session/session-value-abc123")
    messages = [record.getMessage() for record in caplog.records]
    assert any("HTTP Request" in m for m in messages)  # the capture did see httpx's line
    assert any("set-cookie" in m.lower() for m in messages)  # and httpcore's header trace
    assert not any(token in m for m in messages)
    # The cookie value is in the request path (httpx's line) but never in a header trace.
    assert not any("session-value-abc123" in m for m in messages if "set-cookie" in m.lower())


# -- escaped forms, scopes, HTTP Basic ------------------------------------------------------------
@pytest.mark.parametrize(
    "render",
    [
        lambda s: repr(s.encode("utf-8")),  # httpx's "Illegal header value b'...'"
        lambda s: repr(s),
        lambda s: json.dumps({"password": s}),
        lambda s: json.dumps({"password": s}, ensure_ascii=False),
        lambda s: "password=" + quote_plus(s),
    ],
)
def test_escaped_forms_of_a_secret_are_redacted(render: Any) -> None:
    """A secret shows up escaped in reprs of bytes, in JSON and URL-encoded: all are masked."""
    secret = unique("sënha 'secreta'\\ç")
    register_secret(secret)
    shown = render(secret)
    assert MASK in redact(shown)
    assert "cret" not in redact(shown).replace(MASK, "")


def test_a_scope_keeps_its_secrets_until_released() -> None:
    """A handler's scope: registered while held, gone once released, kept if still held
    elsewhere."""
    first, second = SecretScope(), SecretScope()
    token = unique("scoped-token")
    first.add(token)
    second.add(token)
    assert redact(token) == MASK
    first.release()
    assert redact(token) == MASK  # the second scope still holds it
    second.release()
    assert redact(token) == token


def test_a_scope_forgets_superseded_values_beyond_its_size() -> None:
    scope = SecretScope(keep=2)
    values = [unique(f"superseded{i}") for i in range(4)]
    for value in values:
        scope.add(value)
    assert [redact(v) == MASK for v in values] == [False, False, True, True]
    scope.release()


def test_basic_credentials_echoed_by_a_server_are_redacted(make_handler: Any) -> None:
    """The base64 of user:password (HTTP Basic) is a secret: an echo of it is masked."""
    user, password = "basic.user", unique("basic-password")
    handler = make_handler(user=user, password=password)
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    with pytest.raises(HttpStatusError) as info:
        handler.get("echo-basic", response_ok=201)  # the echo answers 200 with the headers
    assert encoded not in str(info.value)
    assert "Basic ***" in str(info.value)


# -- presigned URLs --------------------------------------------------------------------------------
_SIGNATURE = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.mark.parametrize(
    ("url", "kept", "masked"),
    [
        (  # AWS SigV4 (S3 presigned GET)
            "https://b.s3.amazonaws.com/o.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
            f"&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE&X-Amz-Signature={_SIGNATURE}",
            ["X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Expires=300", "X-Amz-Date=20240101"],
            ["AKIAEXAMPLE", "FwoGZXIvYXdzEXAMPLE", _SIGNATURE],
        ),
        (  # GCS V4
            "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=sa%40proj.iam.gserviceaccount.com%2F20240101%2Fauto"
            f"&X-Goog-Expires=900&X-Goog-Signature={_SIGNATURE}",
            ["X-Goog-Algorithm=GOOG4-RSA-SHA256", "X-Goog-Expires=900"],
            ["gserviceaccount", _SIGNATURE],
        ),
        (  # Azure SAS: the expiry and version stay readable, the signature does not
            f"https://acct.blob.core.windows.net/c/b.csv?sv=2022-11-02&se=2024-01-01T00%3A00%3A00Z"
            f"&sr=b&sp=r&sig={_SIGNATURE}%2B%3D",
            ["sv=2022-11-02", "sp=r", "sr=b"],
            [_SIGNATURE],
        ),
        (  # CloudFront signed URL (canned and custom policy)
            f"https://d111.cloudfront.net/o.csv?Expires=1700000000&Policy=eyJTdGF0ZW1lbnQiOiJ4In0"
            f"&Signature={_SIGNATURE}~&Key-Pair-Id=K2JCJMDEHXQW5F",
            ["Expires=1700000000"],
            ["eyJTdGF0ZW1lbnQiOiJ4In0", _SIGNATURE, "K2JCJMDEHXQW5F"],
        ),
    ],
)
def test_presigned_url_signatures_are_masked(url: str, kept: list[str], masked: list[str]) -> None:
    """A presigned URL loses its signature (and credential) in redact_url and in redact."""
    for text in (redact_url(url), redact(f"GET {url} -> HTTP 403")):
        for value in masked:
            assert value not in text, text
        for value in kept:
            assert value in text, text
        assert MASK in text


def test_signed_parameter_names_match_in_any_case() -> None:
    """Services differ in case (X-Amz-Signature, x-amz-signature): both are masked."""
    for name in ("x-amz-signature", "X-AMZ-SIGNATURE", "SIG", "signature"):
        assert _SIGNATURE not in redact_url(f"https://h/o?{name}={_SIGNATURE}")
        assert _SIGNATURE not in redact(f"https://h/o?a=1&{name}={_SIGNATURE}&b=2")


def test_a_presigned_url_inside_a_query_value_is_masked() -> None:
    """A redirect endpoint that carries the target URL-encoded (?to=...%3FX-Amz-Signature%3D...)
    still hides the signature, and what follows it stays readable."""
    target = quote_plus(f"https://b.s3.amazonaws.com/o?X-Amz-Signature={_SIGNATURE}&X-Amz-Date=1")
    for text in (redact_url(f"https://api/redirect?to={target}"), redact(f"?to={target}")):
        assert _SIGNATURE not in text
        assert "X-Amz-Date%3D1" in text


def test_sigv4_authorization_and_s3_error_bodies_are_masked() -> None:
    """The SigV4 header form (``Signature=`` after a comma) and S3's SignatureDoesNotMatch body
    (``<SignatureProvided>``) lose the signature too."""
    header = (
        f"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x, SignedHeaders=host, Signature={_SIGNATURE}"
    )
    assert _SIGNATURE not in redact(header)
    body = (
        "<Error><Code>SignatureDoesNotMatch</Code>"
        f"<SignatureProvided>{_SIGNATURE}</SignatureProvided>"
    )
    assert redact(body) == (
        "<Error><Code>SignatureDoesNotMatch</Code><SignatureProvided>***</SignatureProvided>"
    )


@pytest.mark.parametrize(
    "text",
    [
        "design=1 assignature=2 mysig=3 signatures=4",
        "https://h/o?signed=1&sigma=2&x-amz-date=20240101",
        "a plain sentence about a signature and a policy",
    ],
)
def test_names_that_only_contain_a_signed_parameter_are_kept(text: str) -> None:
    """Only the exact parameter names are masked: ``mysig=`` or ``signed=`` are not."""
    assert redact(text) == text


# -- run-time tokens: hooks, index, loggers ------------------------------------------------------
def test_credential_only_hook_never_sees_run_time_tokens() -> None:
    """A hook added with run_time=False gets passwords and keys, not scope or ephemeral tokens."""
    seen: list[str] = []
    add_secret_hook(seen.append, run_time=False)
    try:
        password, token, ephemeral = unique("pw"), unique("tok"), unique("eph")
        scope = SecretScope()
        scope.add(token)
        register_secret(ephemeral, ephemeral=True)
        register_secret(password)
        assert password in seen
        assert token not in seen
        assert ephemeral not in seen
        assert redact(f"{token} {ephemeral}") == f"{MASK} {MASK}"  # masked by the library
        scope.release()
    finally:
        remove_secret_hook(seen.append)


def test_released_tokens_leave_the_index() -> None:
    """5,000 logins on scopes that are released leave the registry as it was."""
    before = len(registry._forms), len(registry._grams), len(registry._short)
    for _ in range(5000):
        scope = SecretScope()
        scope.add(unique("bearer"))
        scope.add(uuid.uuid4().hex[:7])  # a short one: searched whole
        scope.release()
    assert (len(registry._forms), len(registry._grams), len(registry._short)) == before


@pytest.mark.parametrize("offset", range(9))
def test_tokens_are_found_at_any_offset(offset: int) -> None:
    """The index probes one position in eight: a token is found wherever it starts."""
    token = unique("offset")
    scope = SecretScope()
    scope.add(token)
    prefix = "x" * offset
    assert redact(f"{prefix}{token}{prefix}") == f"{prefix}{MASK}{prefix}"
    assert redact(f"{token}{token}") == MASK * 2  # every occurrence, adjacent ones too
    scope.release()
    assert redact(token) == token


def test_overlapping_secrets_leave_no_fragment() -> None:
    """Two secrets that overlap in a text are masked as one run, no piece of either shown."""
    first, second = "abcdefghijklmnop-1234", "1234-qrstuvwxyzABCDEF"
    scope = SecretScope()
    scope.add(first)
    scope.add(second)
    assert redact("[abcdefghijklmnop-1234-qrstuvwxyzABCDEF]") == f"[{MASK}]"
    scope.release()


def test_exception_chain_is_redacted_in_place() -> None:
    """The filter masks exception args along the chain (an httpx cause's message too)."""
    token = unique("chain")
    scope = SecretScope()
    scope.add(token)
    inner = ValueError(f"inner {token}")
    outer = RuntimeError(f"outer {token}", 3)
    outer.__cause__ = inner
    registry._redact_chain(outer)
    assert outer.args == (f"outer {MASK}", 3)
    assert inner.args == (f"inner {MASK}",)
    scope.release()


def test_library_loggers_created_later_are_covered(caplog: pytest.LogCaptureFixture) -> None:
    """A logger of the library's namespace made after import masks the next token it prints."""
    name = f"echo_connhandler_provider.late_{uuid.uuid4().hex[:8]}"
    late = logging.getLogger(name)
    token = unique("late")
    scope = SecretScope()
    scope.add(token)  # a new token: the filter reaches the loggers made since the last one
    with caplog.at_level(logging.INFO, logger=name):
        try:
            raise RuntimeError(f"failed with {token}")
        except RuntimeError:
            late.exception("sent %s", token)
    record = caplog.records[-1]
    assert record.getMessage() == f"sent {MASK}"
    assert record.exc_info is not None
    assert token not in str(record.exc_info[1])
    scope.release()
