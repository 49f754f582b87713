"""No secret in the hooks' logs or exceptions; credentials (not run-time tokens) reach Airflow's
masker."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from echo_connhandler import AuthenticationError
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook

API = "BazeField.Services/api"
BAD_PASSWORD = "wrong-secret-password-42"
LOGGERS = ("airflow", "echo_connhandler", "echo_connhandler_provider", "httpx", "httpcore")


class _Collector(logging.Handler):
    """Keeps every record it sees, attached straight to the loggers of interest."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collector(caplog: pytest.LogCaptureFixture) -> Iterator[_Collector]:
    """DEBUG capture of the root logger (caplog) and of each named logger (own handler)."""
    caplog.set_level(logging.DEBUG)
    handler = _Collector()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    yield handler
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _record_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += "".join(traceback.format_exception(record.exc_info[1]))
    return text


def _exception_text(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc)), repr(exc)]
    for attribute in ("request", "response"):
        value = getattr(exc, attribute, None)
        if value is not None:
            parts.append(repr(value))
    return "\n".join(parts)


class _Secrets:
    """Every secret seen during a scenario: configured ones and those obtained at run time."""

    def __init__(self) -> None:
        baze = DEMO_CREDENTIALS["bazefield"]
        self.configured = {baze["password"], baze["api_key"], BAD_PASSWORD}
        self.runtime: set[str] = set()

    def collect(self, handler: Any) -> None:
        auth = handler._auth
        for name in ("_bearer", "_session_id", "_access_token", "_refresh_token"):
            value = getattr(auth, name, None)
            if value:
                self.runtime.add(value)
        jar = getattr(getattr(auth, "cookies", None), "jar", ())
        for cookie in jar:
            if cookie.value and len(cookie.value) >= 5:
                self.runtime.add(cookie.value)

    @property
    def all(self) -> set[str]:
        return self.configured | self.runtime


def _define_bad(conns: Any, conn_id: str, **changes: Any) -> str:
    definition = json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"])
    definition.update(changes)
    return conns.define(f"{conn_id}_bad", definition)


async def _run_scenarios(conns: Any, sb: Sandbox, secrets: _Secrets) -> list[str]:
    """Logins, requests, re-logins and failures on every hook; returns exception texts."""
    errors: list[str] = []

    # Bazefield, user/password: login, request, expired session -> re-login, both paths.
    baze = BazefieldHook("bazefield_json")
    handler = baze.get_conn()
    handler.get(f"{API}/allocationTypes")
    secrets.collect(handler)
    sb.faults("bazefield").expire_tokens()
    handler.get(f"{API}/allocationTypes")
    secrets.collect(handler)
    baze.close()
    abaze = BazefieldHook("bazefield_uri")
    ahandler = await abaze.aget_conn()
    await ahandler.async_get(f"{API}/allocationTypes")
    secrets.collect(ahandler)
    await abaze.aclose()

    # API key on both hooks that take one, and a retried request (a warning is logged).
    sb.faults("bazefield").script("allocationtypes", status=503)
    key_hook = EchoHttpHook("echo_http_json", retry_wait_time=0, exponential_min_retry_wait_time=0)
    key_hook.get_conn().get("allocationTypes")
    key_hook.close()
    akey = BazefieldHook("bazefield_key_uri")
    await (await akey.aget_conn()).async_get(f"{API}/allocationTypes")
    await akey.aclose()

    # ONS: login, export, expired token -> refresh, revoked refresh token -> full login.
    ons = OnsHook("ons_sager_json")
    handler = ons.get_conn()
    handler.export_sager_report("2024-01-01", "2024-01-02")
    secrets.collect(handler)
    sb.faults("ons").expire_tokens()
    handler.export_sager_report("2024-01-01", "2024-01-02")
    secrets.collect(handler)
    sb.faults("ons").expire_tokens(refresh_tokens=True)
    handler._auth._expires_at = 0.0  # due for a proactive refresh, which is now refused
    handler.export_sager_report("2024-01-01", "2024-01-02")
    secrets.collect(handler)
    ons.close()
    sinapse = OnsHook("ons_sinapse_uri")
    ahandler = await sinapse.aget_conn()
    await ahandler.async_export_sinapse("2024-01-01", "2024-01-02")
    secrets.collect(ahandler)
    await sinapse.aclose()

    # CCEE: warm-up cookie, both paths.
    ccee = CceeHook("ccee_json")
    handler = ccee.get_conn()
    handler.package_list()
    secrets.collect(handler)
    ccee.close()
    accee = CceeHook("ccee_uri")
    ahandler = await accee.aget_conn()
    await ahandler.async_package_list()
    secrets.collect(ahandler)
    await accee.aclose()

    # Failures: bad passwords through test_connection and through get_conn / aget_conn.
    for conn_id, hook_cls in (("bazefield_json", BazefieldHook), ("ons_sinapse_json", OnsHook)):
        bad = _define_bad(conns, conn_id, password=BAD_PASSWORD)
        ok, message = hook_cls(bad).test_connection()
        assert not ok
        errors.append(message)
        with pytest.raises(AuthenticationError) as sync_info:
            hook_cls(bad).get_conn()
        errors.append(_exception_text(sync_info.value))
        failing = hook_cls(bad)
        with pytest.raises(AuthenticationError) as async_info:
            await failing.aget_conn()
        await failing.aclose()
        errors.append(_exception_text(async_info.value))
    bad_key = _define_bad(conns, "bazefield_key_json", extra={"api_key": "bad-api-key-12345"})
    secrets.configured.add("bad-api-key-12345")
    ok, message = BazefieldHook(bad_key).test_connection()
    assert not ok
    errors.append(message)
    return errors


async def test_no_secret_in_logs_or_exceptions(
    conns: Any,
    sb: Sandbox,
    collector: _Collector,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Passwords, API keys, tokens, session ids and cookies never reach logs or exceptions."""
    secrets = _Secrets()
    errors = await _run_scenarios(conns, sb, secrets)

    # The scenarios obtained the run-time secrets they were meant to.
    assert len(secrets.runtime) >= 8
    records = collector.records + caplog.records
    texts = [_record_text(r) for r in records]
    # The capture works: httpx's request lines, httpcore's traces and the retry warning are in.
    assert any(t.startswith("HTTP Request: POST") for t in texts)
    assert any(r.name.startswith("httpcore") and r.levelno == logging.DEBUG for r in records)
    assert any(
        r.name.startswith("echo_connhandler") and r.levelno >= logging.WARNING for r in records
    )
    # ONS: SAGER login, refresh, login after the refused refresh, SINAPSE login.
    assert sb.faults("ons").stats["logins"] == {"password": 3, "refresh_token": 1}
    outputs = capsys.readouterr()
    haystacks = {
        "log records": "\n".join(texts),
        "exceptions": "\n".join(errors),
        "stdout/stderr": outputs.out + outputs.err,
    }
    leaks = {
        (where, secret[:12] + "...")
        for where, text in haystacks.items()
        for secret in secrets.all
        if secret in text
    }
    assert not leaks


def _airflow_patterns() -> int:
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    return len(_secrets_masker().patterns)


def _assert_split(credentials: set[str], runtime: set[str]) -> None:
    """Credentials masked by Airflow's redact(); run-time tokens by the library's, not Airflow's."""
    from airflow.sdk.log import redact as airflow_redact

    from echo_connhandler import redact

    for secret in credentials:
        assert airflow_redact(f"before {secret} after") == "before *** after"
    for secret in runtime:
        assert secret in airflow_redact(f"before {secret} after")
        assert redact(f"before {secret} after") == "before *** after"


def test_sync_logins_give_airflow_credentials_only(conns: Any, sb: Sandbox) -> None:
    """Sync logins: the password reaches Airflow's masker; tokens, session ids and cookies do not
    (the library masks them while the handler lives)."""
    secrets = _Secrets()
    hooks = (BazefieldHook("bazefield_json"), OnsHook("ons_sager_uri"), CceeHook("ccee_json"))
    for hook in hooks:
        secrets.collect(hook.get_conn())
    assert len(secrets.runtime) >= 7  # bearer, session id, 2 cookies, 2 ONS tokens, WAF cookie
    _assert_split({DEMO_CREDENTIALS["bazefield"]["password"]}, secrets.runtime)
    for hook in hooks:
        hook.close()


async def test_async_logins_do_not_grow_airflow_masker(conns: Any, sb: Sandbox) -> None:
    """Logins, refreshes and re-logins on the async path add no pattern to Airflow's masker."""
    # The passwords are credentials, given to Airflow's masker once for good: first use of
    # each connection here, so that the count below sees only what the logins add.
    for warm in (BazefieldHook("bazefield_uri"), OnsHook("ons_sinapse_json")):
        await warm.aget_conn()
        await warm.aclose()
    before = _airflow_patterns()
    secrets = _Secrets()
    ons = OnsHook("ons_sinapse_json")
    handler = await ons.aget_conn()
    secrets.collect(handler)
    sb.faults("ons").expire_tokens()
    await handler.async_export_sinapse("2024-01-01", "2024-01-02")  # 401 -> refresh
    secrets.collect(handler)
    live = [BazefieldHook("bazefield_uri") for _ in range(5)]
    for baze in live:
        secrets.collect(await baze.aget_conn())
    _assert_split(set(), secrets.runtime)  # masked by the library while the handlers live
    for hook in (ons, *live):
        await hook.aclose()
    assert len(secrets.runtime) >= 12
    assert _airflow_patterns() == before


def test_hooks_work_without_the_private_masker_module(airflow_home: str) -> None:
    """If a future Airflow drops the private masker module, the hooks still import and mask.

    In a fresh interpreter where ``_secrets_masker`` cannot be imported from the private module,
    the hooks import, and a secret registered inside an event loop is masked once the
    ``amask_secret`` task has run.
    """
    code = """
import asyncio
import airflow.sdk._shared.secrets_masker as private
from airflow.sdk.log import redact

del private._secrets_masker  # a future Airflow without it: importing it raises ImportError
from echo_connhandler_provider.hooks import _base
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook

SECRET = "a-run-time-token-12345"

async def main():
    _base._mask_for_airflow(SECRET)
    assert SECRET in redact(SECRET), "no local masker: nothing masked before the task runs"
    assert len(_base._pending_masks) == 1
    for _ in range(5):
        await asyncio.sleep(0)

asyncio.run(main())
assert redact(f"x {SECRET} y") == "x *** y", redact(f"x {SECRET} y")
print("ok")
"""
    env = {
        **os.environ,
        "AIRFLOW_HOME": airflow_home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
