"""The CCEE emulator's publications: fixed last_modified, the clock, ccee_publish, reset."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from echo_connhandler.sandbox import Sandbox, SandboxConfig
from echo_connhandler.sandbox.__main__ import _banner, _parser

CKAN_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
EVERY = 0.25


def _modified(client: httpx.Client, dataset: str = "pld_horario") -> dict[int, str]:
    result = client.get("/api/3/action/package_show", params={"id": dataset}).json()["result"]
    by_year = {int(r["name"][-4:]): r["last_modified"] for r in result["resources"]}
    assert result["metadata_modified"] == by_year[max(by_year)]
    return by_year


def _utc(text: str) -> datetime:
    assert CKAN_NAIVE.match(text), text
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_fixed_by_default_and_publish_republishes_the_newest(
    sb: Sandbox, ccee_client: httpx.Client
) -> None:
    before = _modified(ccee_client)
    assert before == _modified(ccee_client)  # fixed: the same at every read
    assert all(CKAN_NAIVE.match(v) for v in before.values())
    published = sb.ccee_publish("pld_horario")
    after = _modified(ccee_client)
    assert after[2025] == published["pld_horario"]
    assert _utc(after[2025]) > _utc(before[2025])
    assert {y: v for y, v in after.items() if y != 2025} == {
        y: v for y, v in before.items() if y != 2025
    }
    assert _modified(ccee_client, "pld_media_diaria")[2025] != after[2025]  # other datasets kept
    again = sb.ccee_publish("pld_horario")["pld_horario"]
    assert _utc(again) > _utc(after[2025])  # every publication is later than the one before
    package = ccee_client.get("/api/3/action/package_show", params={"id": "pld_horario"}).json()
    newest = package["result"]["resources"][-1]
    resource = ccee_client.get("/api/3/action/resource_show", params={"id": newest["id"]}).json()
    assert resource["result"]["last_modified"] == again
    sb.reset()
    assert _modified(ccee_client) == before


def test_publish_every_dataset_and_over_http(sb: Sandbox, ccee_client: httpx.Client) -> None:
    published = sb.ccee_publish()
    assert set(published) == {"pld_horario", "pld_media_diaria", "geracao_horaria_submercado"}
    response = ccee_client.post("/_sandbox/publish", json={"dataset": "pld_media_diaria"})
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert (
        _modified(ccee_client, "pld_media_diaria")[2025]
        == body["last_modified"]["pld_media_diaria"]
    )
    bad = ccee_client.post("/_sandbox/publish", json={"dataset": "nope"})
    assert bad.status_code == 400
    assert "nope" in bad.json()["error"]
    with pytest.raises(ValueError, match="unknown CCEE dataset"):
        sb.ccee_publish("nope")


@pytest.fixture(scope="module")
def clocked() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(ccee_publish_every=EVERY)) as running:
        yield running


def test_the_clock_republishes_every_period(clocked: Sandbox) -> None:
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    with httpx.Client(base_url=clocked.urls.ccee, headers=headers, timeout=30) as client:
        client.get("/")
        origin = clocked.app("ccee").state.publications.origin
        seen = {_modified(client)[2025]}
        for _ in range(2000):  # until two ticks later, whatever the machine's speed
            seen.add(_modified(client)[2025])
            if len(seen) >= 3:
                break
            threading.Event().wait(0.02)
        assert len(seen) >= 3
        for value in seen:
            offset = _utc(value) - origin
            assert offset >= timedelta(0)
            assert offset % timedelta(seconds=EVERY) == timedelta(0)  # start + k x period
        older = _modified(client)
        assert older[2024] == "2025-01-15T03:03:00.000000"  # only the newest year moves
        published = clocked.ccee_publish("pld_horario")["pld_horario"]
        assert _utc(_modified(client)[2025]) >= _utc(published)


def test_config_and_command_line() -> None:
    with pytest.raises(ValueError, match="ccee_publish_every"):
        SandboxConfig(ccee_publish_every=0)
    with pytest.raises(ValueError, match="ccee_publish_every"):
        SandboxConfig(ccee_publish_every=float("nan"))
    args = _parser().parse_args(["--ccee-publish-every", "60"])
    assert args.ccee_publish_every == 60.0
    assert _parser().parse_args([]).ccee_publish_every is None


def test_banner_mentions_the_clock(clocked: Sandbox) -> None:
    assert "republished every 0.25 s" in _banner(clocked)
