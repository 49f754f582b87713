"""The sandbox faults the reliability suites added: a body of the caller's choosing, a truncated
answer, the per-path ``faulted`` counter; and a bad output refused before any request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from echo_connhandler import CceeHttpHandler, HttpConnProperties
from echo_connhandler.pull import CceeDatastoreSource, run_pull
from echo_connhandler.sandbox import Sandbox

STATUS = "/api/3/action/status_show"


def test_scripted_body_is_sent_as_given(sb: Sandbox) -> None:
    faults = sb.faults("ccee")
    faults.script("status_show", body="{not json", times=2)
    faults.script("status_show", status=502, body=b"<oops>", content_type="text/plain")
    with httpx.Client(base_url=sb.urls.ccee) as client:
        for _ in range(2):
            response = client.get(STATUS)
            assert response.status_code == 200
            assert response.content == b"{not json"
            assert response.headers["content-type"].startswith("application/json")
        response = client.get(STATUS)
    assert (response.status_code, response.content) == (502, b"<oops>")
    assert response.headers["content-type"].startswith("text/plain")
    stats = faults.stats
    assert stats["faults"] == {"body": 3}
    assert faults.faulted == {STATUS: 3}
    assert stats["requests"] == {STATUS: 3}


def test_truncated_answer_keeps_its_length_and_sends_half(sb: Sandbox) -> None:
    faults = sb.faults("ccee")
    with httpx.Client(base_url=sb.urls.ccee) as client:
        whole = client.get(STATUS).content
        faults.script("status_show", truncate=True)
        with pytest.raises(
            httpx.RemoteProtocolError,
            match=rf"received {len(whole) // 2} bytes, expected {len(whole)}",
        ):
            client.get(STATUS)
        assert client.get(STATUS).content == whole  # one time only
    assert faults.stats["faults"] == {"truncate": 1}
    assert faults.faulted == {STATUS: 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop": True, "html": True},
        {"truncate": True, "body": "x"},
        {"truncate": True, "status": 500},
        {"body": 5},
        {"body": "x", "content_type": "text/plain\nX: y"},
    ],
)
def test_bad_scripts_are_refused(sb: Sandbox, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sb.faults("ccee").script("x", **kwargs)  # type: ignore[arg-type]


def test_script_endpoint_takes_the_new_keys(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.urls.ccee) as client:
        answer = client.post(
            "/_sandbox/script",
            json={"path_contains": "status_show", "body": "[]", "content_type": "text/csv"},
        )
        assert answer.json() == {"ok": True}
        response = client.get(STATUS)
    assert response.content == b"[]"
    assert response.headers["content-type"].startswith("text/csv")


def test_random_faults_are_counted_per_path(sb: Sandbox) -> None:
    faults = sb.faults("ccee")
    faults.configure(error_rate=0.5, error_statuses=(503,))
    with httpx.Client(base_url=sb.urls.ccee) as client:
        statuses = [client.get(STATUS).status_code for _ in range(20)]
    assert faults.faulted == {STATUS: statuses.count(503)}
    assert 0 < statuses.count(503) < 20


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_a_bad_output_fails_before_any_request(sb: Sandbox, tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    output = tmp_path / "a-file" / "out.jsonl" if where == "under-a-file" else tmp_path / "a-folder"

    async def pull() -> object:
        props = HttpConnProperties(host=sb.urls.ccee)
        async with CceeHttpHandler(props, skip_connect=True) as ccee:
            source = CceeDatastoreSource(dataset="pld_media_diaria", years=[2024])
            return await run_pull(ccee, source, output, format="jsonl")

    with pytest.raises(OSError, match=r"^output '"):
        asyncio.run(pull())
    assert sb.faults("ccee").stats["requests"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"]
    assert list((tmp_path / "a-folder").iterdir()) == []
