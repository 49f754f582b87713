"""Pulls under a fault mix complete exactly: the same file as a run without faults.

503s, 429s with Retry-After, dropped connections, and the session expiring in the middle of the
pull (a Bazefield re-login, an ONS token refresh), on the real sandbox over sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler import (
    BazeHttpHandler,
    HttpConnProperties,
    OnsHttpConnProperties,
    OnsHttpHandler,
)
from echo_connhandler.pull import (
    BazefieldTimeseriesSource,
    OnsSinapseExportSource,
    Progress,
    run_pull,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=3)) as running:
        yield running


def _faulty(sb: Sandbox, service: str) -> None:
    sb.faults(service).configure(
        error_rate=0.2,
        error_statuses=(502, 503),
        rate_limit_rate=0.08,
        retry_after=0,
        drop_rate=0.06,
    )


def _expire_at(sb: Sandbox, service: str, chunk: int) -> Any:
    def expire(progress: Progress) -> None:
        if progress.chunks_done == chunk:
            sb.faults(service).expire_tokens()

    return expire


def _baze(sb: Sandbox) -> BazeHttpHandler:
    creds = DEMO_CREDENTIALS["bazefield"]
    props = HttpConnProperties(
        host=sb.urls.bazefield, user=creds["user"], password=creds["password"]
    )
    return BazeHttpHandler(props, skip_connect=True, **FAST)


def _source() -> BazefieldTimeseriesSource:
    return BazefieldTimeseriesSource(
        objects=["1001", "1002", "2001"],
        points=["ActivePower", "WindSpeed"],
        aggregates=["Average"],
        start="2024-03-01T00:00:00Z",
        end="2024-03-03T00:00:00Z",
        interval="10m",
        window=timedelta(hours=6),
    )


async def test_bazefield_pull_under_faults_and_a_session_expiry(
    sb: Sandbox, tmp_path: Path
) -> None:
    async with _baze(sb) as clean:
        reference = await run_pull(clean, _source(), tmp_path / "clean.csv")
    _faulty(sb, "bazefield")
    logins_before = sum(sb.faults("bazefield").stats["logins"].values())
    async with _baze(sb) as handler:
        summary = await run_pull(
            handler,
            _source(),
            tmp_path / "faulty.csv",
            concurrency=3,
            on_progress=_expire_at(sb, "bazefield", 3),
        )
    assert (tmp_path / "faulty.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert summary["rows"] == reference["rows"] == 3 * 2 * 288
    assert summary["retries"] > 0
    # one login to start, one after the expiry (never one per rejected request)
    assert sum(sb.faults("bazefield").stats["logins"].values()) - logins_before == 2


def _sinapse(sb: Sandbox) -> OnsHttpHandler:
    creds = DEMO_CREDENTIALS["ons"]
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sinapse,
        user=creds["user"],
        password=creds["password"],
        login_target="SINAPSE",
        auth_url=sb.urls.ons_auth_url,
        profile_url=sb.urls.ons_profile_url,
    )
    return OnsHttpHandler(props, skip_connect=True, **FAST)


async def test_ons_exports_under_faults_and_a_token_expiry(sb: Sandbox, tmp_path: Path) -> None:
    source = OnsSinapseExportSource(start="2023-01-01", end="2024-01-01")
    async with _sinapse(sb) as clean:
        reference = await run_pull(clean, source, tmp_path / "clean")
    _faulty(sb, "ons")
    async with _sinapse(sb) as handler:
        summary = await run_pull(
            handler,
            source,
            tmp_path / "faulty",
            concurrency=2,
            on_progress=_expire_at(sb, "ons", 2),
        )
    assert summary["chunks"] == reference["chunks"] == 12
    clean_files = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert sorted(p.name for p in (tmp_path / "faulty").iterdir()) == clean_files
    for name in clean_files:
        assert (tmp_path / "faulty" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert summary["retries"] > 0
