"""Fault injection (scripted, random, over HTTP), counters and determinism."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from echo_connhandler.sandbox import (
    FaultInjector,
    Sandbox,
    SandboxConfig,
    bazefield_app,
)

TYPES = "/BazeField.Services/api/allocationTypes"
HEADERS = {"Accept": "application/json", "Authorization": "Bearer sandbox-baze-api-key"}
BROWSER = {"User-Agent": "Mozilla/5.0 (sandbox tests)"}


@pytest.fixture
def baze(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.urls.bazefield, headers=HEADERS, timeout=30) as client:
        yield client


def statuses(client: httpx.Client, count: int, path: str = TYPES) -> list[int]:
    result = []
    for _ in range(count):
        try:
            result.append(client.get(path).status_code)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            result.append(-1)
    return result


# ---------------------------------------------------------------------- scripted


def test_scripted_status_with_retry_after(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").script("allocationtypes", status=503, retry_after=7, times=2)
    for _ in range(2):
        response = baze.get(TYPES)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["responseStatus"]["errorCode"] == "ServiceUnavailable"
    assert baze.get(TYPES).status_code == 200
    assert sb.faults("bazefield").stats["faults"] == {"error": 2}


def test_scripted_retry_after_alone_means_429(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").script("ALLOCATIONTYPES", retry_after="3")
    response = baze.get(TYPES)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_scripted_only_matching_paths(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").script("objects/structure", status=500)
    assert baze.get(TYPES).status_code == 200
    assert baze.get("/BazeField.Services/api/objects/structure?type=1").status_code == 500


def test_scripted_html_maintenance_page(sb: Sandbox) -> None:
    sb.faults("ons").script("perfis", status=503, html=True)
    with httpx.Client() as client:
        response = client.get(sb.urls.ons_profile_url)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "manutenção" in response.text


def test_scripted_drop_breaks_the_response(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").script("allocationtypes", drop=True)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        baze.get(TYPES)
    assert baze.get(TYPES).status_code == 200  # the client reconnects
    assert sb.faults("bazefield").stats["faults"] == {"drop": 1}


def test_drop_while_streaming(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").script("allocationtypes", drop=True)
    with baze.stream("GET", TYPES) as response:
        assert response.status_code == 200  # the headers arrive, then the body is cut
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            response.read()


def test_scripted_delay(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").script("allocationtypes", delay_s=0.3)
    started = time.perf_counter()
    assert baze.get(TYPES).status_code == 200
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    assert baze.get(TYPES).status_code == 200
    assert time.perf_counter() - started < 0.3


# ---------------------------------------------------------------------- random


def test_configured_latency(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").configure(latency_ms=150)
    started = time.perf_counter()
    baze.get(TYPES)
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    baze.get("/_sandbox/stats")  # admin endpoints are never faulted
    assert time.perf_counter() - started < 0.15


async def test_config_latency_applies_to_every_request() -> None:
    app = bazefield_app(SandboxConfig(latency_ms=120))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://baze") as client:
        started = time.perf_counter()
        response = await client.get(TYPES, headers=HEADERS)
        assert time.perf_counter() - started >= 0.12
        assert response.status_code == 200
        app.state.faults.reset()  # the configured base latency survives reset()
        started = time.perf_counter()
        await client.get(TYPES, headers=HEADERS)
        assert time.perf_counter() - started >= 0.12


def test_error_and_rate_limit_rates(sb: Sandbox, baze: httpx.Client) -> None:
    faults = sb.faults("bazefield")
    faults.configure(error_rate=1.0, error_statuses=(502, 504))
    assert set(statuses(baze, 10)) <= {502, 504}
    faults.configure(rate_limit_rate=1.0, retry_after=9)
    response = baze.get(TYPES)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "9"
    faults.configure(drop_rate=1.0)
    assert statuses(baze, 2) == [-1, -1]
    faults.reset()
    assert statuses(baze, 3) == [200, 200, 200]


def test_admin_endpoints_are_not_faulted(sb: Sandbox, baze: httpx.Client) -> None:
    sb.faults("bazefield").configure(error_rate=1.0, drop_rate=1.0)
    assert baze.get("/_sandbox/stats").status_code == 200
    assert baze.post("/_sandbox/reset").status_code == 200
    assert baze.get(TYPES).status_code == 200


def test_random_faults_are_reproducible(sb: Sandbox, baze: httpx.Client) -> None:
    settings: dict[str, Any] = {
        "error_rate": 0.3,
        "rate_limit_rate": 0.1,
        "error_statuses": (500, 503),
    }
    sb.faults("bazefield").configure(**settings)
    first = statuses(baze, 40)
    sb.faults("bazefield").configure(**settings)
    assert statuses(baze, 40) == first
    assert {200, 500, 503, 429} == set(first)
    with (
        Sandbox(SandboxConfig(seed=42)) as twin,
        httpx.Client(base_url=twin.urls.bazefield, headers=HEADERS) as client,
    ):
        twin.faults("bazefield").configure(**settings)
        assert statuses(client, 40) == first
    with (
        Sandbox(SandboxConfig(seed=7)) as other,
        httpx.Client(base_url=other.urls.bazefield, headers=HEADERS) as client,
    ):
        other.faults("bazefield").configure(**settings)
        assert statuses(client, 40) != first


def test_same_seed_same_data(sb: Sandbox) -> None:
    def page(sandbox: Sandbox) -> tuple[object, object]:
        with httpx.Client(base_url=sandbox.urls.ccee, headers=BROWSER) as client:
            client.get("/")
            shown = client.get("/api/3/action/package_show", params={"id": "pld_horario"})
            resource_id = shown.json()["result"]["resources"][1]["id"]
            params = {"resource_id": resource_id, "offset": 1000, "limit": 50}
            result = client.get("/api/3/action/datastore_search", params=params).json()
        with httpx.Client(base_url=sandbox.urls.bazefield, headers=HEADERS) as client:
            series = client.get(
                "/BazeField.Services/api/objects/timeseries/aggregated",
                params={
                    "ObjectIds": "2001",
                    "Points": "ActivePower",
                    "Aggregates": "AVG",
                    "From": "2024-05-01",
                    "To": "2024-05-02",
                    "Interval": "1h",
                },
            ).json()
        return result["result"], series

    mine = page(sb)
    with Sandbox(SandboxConfig(seed=42)) as twin:
        assert page(twin) == mine
    with Sandbox(SandboxConfig(seed=43)) as other:
        theirs = page(other)
    assert theirs[0] != mine[0]
    assert theirs[1] != mine[1]


# ---------------------------------------------------------------------- admin over HTTP


def test_admin_endpoints_over_http(sb: Sandbox, baze: httpx.Client) -> None:
    ok = {"ok": True}
    assert (
        baze.post("/_sandbox/faults", json={"error_rate": 1, "error_statuses": [502]}).json() == ok
    )
    assert baze.get(TYPES).status_code == 502
    assert baze.post("/_sandbox/reset").json() == ok
    script = {"path_contains": "allocationtypes", "status": 503, "retry_after": 2, "times": 1}
    assert baze.post("/_sandbox/script", json=script).json() == ok
    scripted = baze.get(TYPES)
    assert (scripted.status_code, scripted.headers["Retry-After"]) == (503, "2")
    stats = baze.get("/_sandbox/stats").json()
    assert stats["requests"]["/bazefield.services/api/allocationtypes"] == 2
    assert stats["faults"] == {"error": 2}
    assert set(stats) == {"requests", "logins", "warmups", "waf_blocks", "faults"}
    assert baze.post("/_sandbox/reset-stats").json() == ok
    assert baze.get("/_sandbox/stats").json()["requests"] == {}
    assert baze.post("/_sandbox/expire-tokens", json={"refresh_tokens": True}).json() == ok
    assert baze.post("/_sandbox/block-waf").json() == ok
    assert baze.post("/_sandbox/faults", json={"nope": 1}).status_code == 400
    assert baze.post("/_sandbox/faults", json={"error_rate": 5}).status_code == 400
    assert baze.post("/_sandbox/script", json={"status": 500}).status_code == 400
    assert baze.post("/_sandbox/script", content=b"[1]").status_code == 400


def test_stats_under_concurrency(sb: Sandbox) -> None:
    sb.faults("bazefield").configure(error_rate=0.5)

    def worker(_: int) -> list[int]:
        with httpx.Client(base_url=sb.urls.bazefield, headers=HEADERS) as client:
            return statuses(client, 25)

    with ThreadPoolExecutor(4) as pool:
        results = [code for codes in pool.map(worker, range(4)) for code in codes]
    stats = sb.faults("bazefield").stats
    assert stats["requests"]["/bazefield.services/api/allocationtypes"] == 100
    assert stats["faults"].get("error", 0) == sum(1 for code in results if code != 200)


def test_injector_validates_arguments() -> None:
    faults = FaultInjector("ccee", 1)
    with pytest.raises(ValueError):
        faults.configure(error_rate=1.5)
    with pytest.raises(ValueError):
        faults.configure(error_statuses=())
    with pytest.raises(ValueError):
        faults.script("x", times=0)
    with pytest.raises(ValueError):
        faults.script("x", status=99)
    faults.block_waf()
    faults.expire_tokens()
    assert (faults.waf_generation, faults.token_generation, faults.refresh_generation) == (1, 1, 0)
