"""What a session expiry costs a batch of concurrent requests on one handler.

For each service of the sandbox (Bazefield user/password login, ONS token, CCEE WAF warm-up)
and each batch size, on one handler with the sandbox's latency set to ``--latency-ms``:

- ``baseline``: the batch's time with a valid session;
- ``expiry``: the same batch, the session invalidated on the server ``--expire-after-ms``
  after the batch started (requests already sent are rejected and must log in again);
- ``extra``: what the expiry added; ``logins``: logins (or warm-ups) the server saw during the
  expiry batch; ``resent``: requests sent twice (rejected once, then resent after the login).

Before the fix of the hardening issue, rejected requests held their pooled connections while
they waited for the re-login, the login found no free connection, and a batch of 150 took the
whole pool timeout (``request_timeout``) with PoolTimeout retries. Run::

    python benchmarks/login_under_load.py [--sizes 10 150 1000] [--request-timeout 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from echo_connhandler import (
    BazeHttpHandler,
    CceeHttpHandler,
    HttpConnProperties,
    HttpHandler,
    OnsHttpConnProperties,
    OnsHttpHandler,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig


def _handlers(sb: Sandbox, request_timeout: float) -> dict[str, Callable[[], HttpHandler]]:
    """One handler factory per service; SINAPSE's profile is selected for a one-profile user."""
    urls = sb.urls
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]
    options: dict[str, Any] = {"skip_connect": True, "retry_wait_time": 0.5}
    return {
        "bazefield": lambda: BazeHttpHandler(
            HttpConnProperties(
                host=urls.bazefield,
                user=baze["user"],
                password=baze["password"],
                request_timeout=request_timeout,
            ),
            **options,
        ),
        "ons": lambda: OnsHttpHandler(
            OnsHttpConnProperties(
                host=urls.ons_sinapse,
                user=ons["user"],
                password=ons["password"],
                login_target="SINAPSE",
                auth_url=urls.ons_auth_url,
                profile_url=urls.ons_profile_url,
                request_timeout=request_timeout,
            ),
            **options,
        ),
        "ccee": lambda: CceeHttpHandler(
            HttpConnProperties(host=urls.ccee, request_timeout=request_timeout), **options
        ),
    }


#: One cheap authenticated GET per service.
_ENDPOINTS = {
    "bazefield": "BazeField.Services/api/allocationtypes",
    "ons": "usuario/perfis",
    "ccee": "api/3/action/package_list",
}


def _invalidate(sb: Sandbox, service: str) -> None:
    if service == "ccee":
        sb.faults("ccee").block_waf()
    else:
        sb.faults(service).expire_tokens()


def _counts(sb: Sandbox, service: str) -> tuple[int, int]:
    """Logins (or warm-ups) and API requests the emulator has seen so far."""
    stats = sb.faults(service).stats
    path = "/" + _ENDPOINTS[service].lower()
    sent = sum(n for p, n in stats["requests"].items() if p.endswith(path))
    return sum(stats["logins"].values()) + stats["warmups"], sent


async def _batch(
    handler: HttpHandler, endpoint: str, size: int, during: Callable[[], Awaitable[None]] | None
) -> float:
    started = time.perf_counter()
    calls = [handler.async_get(endpoint) for _ in range(size)]
    if during is not None:
        await asyncio.gather(*calls, during())
    else:
        await asyncio.gather(*calls)
    return time.perf_counter() - started


async def _measure(
    sb: Sandbox, service: str, make: Callable[[], HttpHandler], size: int, expire_after: float
) -> dict[str, Any]:
    handler = make()
    endpoint = _ENDPOINTS[service]
    try:
        await handler.async_get(endpoint)  # log in once: both batches start with a session
        baseline = await _batch(handler, endpoint, size, None)
        logins_before, sent_before = _counts(sb, service)

        async def expire() -> None:
            await asyncio.sleep(expire_after)
            _invalidate(sb, service)

        expiry = await _batch(handler, endpoint, size, expire)
        logins_after, sent_after = _counts(sb, service)
        return {
            "baseline": baseline,
            "expiry": expiry,
            "logins": logins_after - logins_before,
            "resent": sent_after - sent_before - size,
        }
    finally:
        await handler.async_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 150, 1000])
    parser.add_argument("--services", nargs="+", default=list(_ENDPOINTS))
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--expire-after-ms", type=float, default=250)
    parser.add_argument("--request-timeout", type=float, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"latency {args.latency_ms:g} ms, request_timeout {args.request_timeout:g} s")
    print(
        f"{'service':<10} {'in flight':>9} {'baseline s':>11} {'expiry s':>9} "
        f"{'extra s':>8} {'logins':>7} {'resent':>7}"
    )
    with Sandbox(SandboxConfig(seed=7, latency_ms=args.latency_ms)) as sb:
        makers = _handlers(sb, args.request_timeout)
        for service in args.services:
            for size in args.sizes:
                row = asyncio.run(
                    _measure(sb, service, makers[service], size, args.expire_after_ms / 1000)
                )
                print(
                    f"{service:<10} {size:>9} {row['baseline']:>11.2f} {row['expiry']:>9.2f} "
                    f"{row['expiry'] - row['baseline']:>8.2f} {row['logins']:>7} "
                    f"{row['resent']:>7}"
                )


if __name__ == "__main__":
    main()
