"""Misbehaviours: wrong data answered 200, on demand (Python, admin endpoint, command line)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from echo_connhandler.sandbox import Sandbox, SandboxConfig
from echo_connhandler.sandbox.__main__ import _misbehaviour, main
from echo_connhandler.sandbox._faults import MISBEHAVIOURS, FaultInjector

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=3, ccee_rows_per_resource=40)) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.reset()


@contextlib.contextmanager
def _ccee(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.urls.ccee, headers=BROWSER) as client:
        client.get("/")  # the warm-up: the WAF cookie
        yield client


def _page(client: httpx.Client, offset: int, **params: Any) -> dict[str, Any]:
    resources = client.get("/api/3/action/package_show", params={"id": "pld_horario"}).json()
    resource_id = resources["result"]["resources"][-1]["id"]
    answer = client.get(
        "/api/3/action/datastore_search",
        params={"resource_id": resource_id, "limit": 10, "offset": offset, **params},
    )
    result: dict[str, Any] = answer.json()["result"]
    return result


def test_an_unknown_misbehaviour_is_refused_naming_the_known_ones() -> None:
    faults = FaultInjector("ccee")
    with pytest.raises(ValueError, match=r"unknown misbehaviour 'nope' for ccee; known: .*"):
        faults.misbehave("nope")
    assert set(MISBEHAVIOURS) == {"bazefield", "ccee", "ons"}


def test_reset_and_behave_end_misbehaviours() -> None:
    faults = FaultInjector("ccee")
    faults.misbehave("ignore_offset")
    faults.misbehave("duplicate_id")
    faults.behave("ignore_offset")
    assert faults.misbehaviour("ignore_offset") is None
    assert faults.misbehaviour("duplicate_id") == {}
    faults.reset()
    assert faults.misbehaviour("duplicate_id") is None


def test_the_admin_endpoint_turns_a_misbehaviour_on(sb: Sandbox) -> None:
    with _ccee(sb) as client:
        assert _page(client, 10)["records"][0]["_id"] == 11
        answer = client.post("/_sandbox/misbehave", json={"kind": "ignore_offset"})
        assert answer.json() == {"ok": True}
        page = _page(client, 10)
        assert page["offset"] == 10  # it says offset 10 ...
        assert page["records"][0]["_id"] == 1  # ... and serves the first page
        bad = client.post("/_sandbox/misbehave", json={"kind": "label_interval_end"})
        assert bad.status_code == 400
        assert "unknown misbehaviour" in bad.json()["error"]


def test_a_republication_changes_values_and_the_version_but_not_the_total(sb: Sandbox) -> None:
    with _ccee(sb) as client:
        before = _page(client, 0)
        version = client.get("/api/3/action/package_show", params={"id": "pld_horario"}).json()
        sb.faults("ccee").misbehave("republish", after=0)
        after = _page(client, 0)
        again = client.get("/api/3/action/package_show", params={"id": "pld_horario"}).json()
    assert after["total"] == before["total"]
    assert [r["_id"] for r in after["records"]] == [r["_id"] for r in before["records"]]
    assert after["records"] != before["records"]
    old = version["result"]["resources"][-1]["last_modified"]
    assert again["result"]["resources"][-1]["last_modified"] != old


def test_the_command_line_parses_misbehaviours() -> None:
    assert _misbehaviour("ccee:republish:after=5") == ("ccee", "republish", {"after": 5})
    assert _misbehaviour("bazefield:drop_object:object=1001,at=2025-01-01") == (
        "bazefield",
        "drop_object",
        {"object": 1001, "at": "2025-01-01"},
    )
    with pytest.raises(ValueError, match=r"expected SERVICE:KIND"):
        _misbehaviour("ccee")
    with pytest.raises(ValueError, match=r"option 'after' is not KEY=VALUE"):
        _misbehaviour("ccee:republish:after")


def test_the_command_line_refuses_an_unknown_misbehaviour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--misbehave", "ccee:nope"]) == 2
    error = capsys.readouterr().err
    assert "--misbehave ccee:nope: unknown" in error
    assert "ccee:ignore_offset" in error
