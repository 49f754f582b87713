"""A session that expires while many requests are in flight costs one login, not a pool stall.

Before the fix, a rejected request waited for the re-login while its unread response still held
its pooled connection: with a full pool of rejected requests, the login itself found no free
connection, and every caller stalled until the pool timeout, with ``PoolTimeout`` retries. The
checks are counts, never timings: the batch succeeds, no PoolTimeout retry is logged, the server
sees exactly one login, and only the requests really on the wire (at most the pool's size)
were rejected and sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import echo_connhandler._handler as handler_module
from echo_connhandler import (
    BazeHttpHandler,
    CceeHttpHandler,
    HttpConnProperties,
    HttpHandler,
    OnsHttpConnProperties,
    OnsHttpHandler,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox

#: The sandbox answers every request after this delay: the whole first wave is on the wire
#: when the session is invalidated ``_EXPIRE_AFTER_S`` after the batch starts.
_LATENCY_MS = 200
_EXPIRE_AFTER_S = 0.05
#: A short pool timeout (= request_timeout): a stall would show up as PoolTimeout retries.
_REQUEST_TIMEOUT = 3.0

_ENDPOINTS = {
    "bazefield": "BazeField.Services/api/allocationtypes",
    "ons": "usuario/perfis",
    "ccee": "api/3/action/package_list",
}


def _handler(sb: Sandbox, service: str) -> HttpHandler:
    options: dict[str, Any] = {"skip_connect": True, "retry_wait_time": 0.2}
    if service == "bazefield":
        creds = DEMO_CREDENTIALS["bazefield"]
        props = HttpConnProperties(
            host=sb.urls.bazefield,
            user=creds["user"],
            password=creds["password"],
            request_timeout=_REQUEST_TIMEOUT,
        )
        return BazeHttpHandler(props, **options)
    if service == "ons":
        creds = DEMO_CREDENTIALS["ons"]
        ons = OnsHttpConnProperties(
            host=sb.urls.ons_sinapse,
            user=creds["user"],
            password=creds["password"],
            login_target="SINAPSE",
            auth_url=sb.urls.ons_auth_url,
            profile_url=sb.urls.ons_profile_url,
            request_timeout=_REQUEST_TIMEOUT,
        )
        return OnsHttpHandler(ons, **options)
    props = HttpConnProperties(host=sb.urls.ccee, request_timeout=_REQUEST_TIMEOUT)
    return CceeHttpHandler(props, **options)


def _invalidate(sb: Sandbox, service: str) -> None:
    if service == "ccee":
        sb.faults("ccee").block_waf()
    else:
        sb.faults(service).expire_tokens()


def _counts(sb: Sandbox, service: str) -> tuple[int, int]:
    """Logins (or warm-ups) and API requests the emulator has seen."""
    stats = sb.faults(service).stats
    path = "/" + _ENDPOINTS[service].lower()
    sent = sum(n for p, n in stats["requests"].items() if p.endswith(path))
    return sum(stats["logins"].values()) + stats["warmups"], sent


def _assert_one_login_no_stall(
    sb: Sandbox,
    service: str,
    before: tuple[int, int],
    size: int,
    pool: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logins, sent = _counts(sb, service)
    assert logins - before[0] == 1
    resent = sent - before[1] - size
    assert 0 < resent <= pool  # only the requests on the wire carried the stale credential
    retries = [r.getMessage() for r in caplog.records if r.name == "echo_connhandler.retry"]
    assert not [m for m in retries if "PoolTimeout" in m], retries


@pytest.mark.parametrize("service", ["bazefield", "ons", "ccee"])
async def test_expiry_under_150_in_flight_costs_one_login(
    make_sb: Any, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    """150 coroutines on one handler (more than the pool's 100 connections), expiry mid-flight."""
    sb = make_sb(latency_ms=_LATENCY_MS)
    handler = _handler(sb, service)
    endpoint = _ENDPOINTS[service]
    try:
        await handler.async_get(endpoint)  # logged in
        before = _counts(sb, service)

        async def expire() -> None:
            await asyncio.sleep(_EXPIRE_AFTER_S)
            _invalidate(sb, service)

        with caplog.at_level(logging.WARNING, "echo_connhandler"):
            *responses, _ = await asyncio.gather(
                *(handler.async_get(endpoint) for _ in range(150)), expire()
            )
        assert [r.status_code for r in responses] == [200] * 150
        _assert_one_login_no_stall(sb, service, before, 150, handler_module.POOL_SIZE, caplog)
    finally:
        await handler.async_close()


def test_expiry_with_more_threads_than_connections_costs_one_login(
    make_sb: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync path: 12 threads on a pool of 4 connections, the session expires mid-flight."""
    monkeypatch.setattr(handler_module, "POOL_SIZE", 4)
    sb = make_sb(latency_ms=_LATENCY_MS)
    handler = _handler(sb, "bazefield")
    endpoint = _ENDPOINTS["bazefield"]
    try:
        handler.get(endpoint)
        before = _counts(sb, "bazefield")
        timer = threading.Timer(_EXPIRE_AFTER_S, _invalidate, (sb, "bazefield"))
        with caplog.at_level(logging.WARNING, "echo_connhandler"), ThreadPoolExecutor(12) as pool:
            timer.start()
            statuses = list(pool.map(lambda _: handler.get(endpoint).status_code, range(12)))
        timer.join()
        assert statuses == [200] * 12
        _assert_one_login_no_stall(sb, "bazefield", before, 12, 4, caplog)
    finally:
        handler.close()


async def test_waiting_for_a_login_does_not_hold_a_connection(
    make_sb: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pool of 1: a rejected request must free its connection before the re-login needs it."""
    monkeypatch.setattr(handler_module, "POOL_SIZE", 1)
    sb = make_sb(latency_ms=_LATENCY_MS)
    handler = _handler(sb, "bazefield")
    endpoint = _ENDPOINTS["bazefield"]
    try:
        await handler.async_get(endpoint)
        sb.faults("bazefield").expire_tokens()
        with caplog.at_level(logging.WARNING, "echo_connhandler"):
            response = await handler.async_get(endpoint)
        assert response.status_code == 200
        assert not [r for r in caplog.records if r.name == "echo_connhandler.retry"]
    finally:
        await handler.async_close()
