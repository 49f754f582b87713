"""Pulls to object storage: ``s3://`` URLs on a local S3 server (moto), through fsspec + s3fs.

Every output on S3 is compared byte for byte with the same pull to a local folder; an
interrupted pull resumes from its checkpoint on S3 (only the missing chunks are requested
again); a failure never leaves an object at the final key. The ``s3_bucket`` fixture (root
conftest) starts moto once per session and points this process's ``AWS_*`` variables at it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler import (
    CceeHttpHandler,
    EchoHttpError,
    HttpConnProperties,
    OnsHttpConnProperties,
    OnsHttpHandler,
)
from echo_connhandler.pull import (
    CceeDatastoreSource,
    OnsSinapseExportSource,
    Progress,
    read_checkpoint,
    run_pull,
    storage_for,
)
from echo_connhandler.pull._storage import FsspecStorage
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

pytest.importorskip("s3fs")

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
SEARCH = "/api/3/action/datastore_search"
ONS = DEMO_CREDENTIALS["ons"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=11, ccee_rows_per_resource=12_000)) as running:
        yield running


def _ccee(sb: Sandbox, **settings: Any) -> CceeHttpHandler:
    return CceeHttpHandler(
        HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **{**FAST, **settings}
    )


def _sinapse(sb: Sandbox) -> OnsHttpHandler:
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sinapse,
        user=ONS["user"],
        password=ONS["password"],
        login_target="SINAPSE",
        auth_url=sb.urls.ons_auth_url,
        profile_url=sb.urls.ons_profile_url,
    )
    return OnsHttpHandler(props, skip_connect=True, **FAST)


def _searches(sb: Sandbox) -> int:
    return sb.faults("ccee").stats["requests"].get(SEARCH, 0)


def _keys(s3: Any, url: str) -> list[str]:
    """Every object under ``url``, relative to it."""
    root = url.removeprefix("s3://").rstrip("/")
    s3.invalidate_cache()
    return sorted(key[len(root) + 1 :] for key in s3.find(root))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
async def test_a_ccee_pull_to_s3_is_the_local_file(
    sb: Sandbox, s3_bucket: Any, tmp_path: Path, fmt: str
) -> None:
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=2_500)
    url = f"{s3_bucket.url}/ccee/pld_horario.{fmt}"
    local = tmp_path / f"pld_horario.{fmt}"
    async with _ccee(sb) as ccee:
        remote = await run_pull(ccee, source, url, concurrency=3)
        here = await run_pull(ccee, source, local, concurrency=3)

    s3 = s3_bucket.filesystem()
    assert s3.cat_file(url) == local.read_bytes()
    assert remote["output"] == url
    assert remote["rows"] == here["rows"] == 12_000
    assert remote["chunks"] == 5
    assert remote["bytes"] == here["bytes"]
    # the parts, the manifest and the temporary object are gone: only the output is left
    assert _keys(s3, s3_bucket.url) == [f"ccee/pld_horario.{fmt}"]


async def test_an_ons_files_pull_to_s3_is_the_local_folder(
    sb: Sandbox, s3_bucket: Any, tmp_path: Path
) -> None:
    source = OnsSinapseExportSource(
        start=datetime(2023, 11, 1), end="2024-02-01T00:00:00Z", analitico=True, destino="ONS"
    )
    url = f"{s3_bucket.url}/ons/sinapse"
    async with _sinapse(sb) as ons:
        remote = await run_pull(ons, source, url)
        await run_pull(ons, source, tmp_path / "sinapse")

    names = sorted(p.name for p in (tmp_path / "sinapse").iterdir())
    assert len(names) == 3
    assert remote["files"] == [f"{url}/{name}" for name in names]
    s3 = s3_bucket.filesystem()
    assert _keys(s3, s3_bucket.url) == [f"ons/sinapse/{name}" for name in names]
    for name in names:
        assert s3.cat_file(f"{url}/{name}") == (tmp_path / "sinapse" / name).read_bytes()


async def test_an_interrupted_pull_resumes_from_its_checkpoint_on_s3(
    sb: Sandbox, s3_bucket: Any, tmp_path: Path
) -> None:
    """A chunk fails after the handler's retries (503 on every attempt) once four chunks are
    done; the rerun reads the plan and the parts from S3 and fetches only the missing ones."""
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=1_000)
    url = f"{s3_bucket.url}/ccee/pld.jsonl.gz"

    def fail_next_chunk(progress: Progress) -> None:
        if progress.chunks_done == 4:  # every attempt of the next request fails
            sb.faults("ccee").script("datastore_search", status=503, times=100)

    async with _ccee(sb, max_retries=2) as ccee:
        with pytest.raises(EchoHttpError):
            await run_pull(ccee, source, url, concurrency=1, on_progress=fail_next_chunk)
    s3 = s3_bucket.filesystem()
    left = _keys(s3, s3_bucket.url)
    # nothing at (or next to) the final key, only the checkpoint folder
    assert "ccee/pld.jsonl.gz" not in left
    assert all(key.startswith("ccee/pld.jsonl.gz.parts-") for key in left), left
    [manifest_key] = [key for key in left if key.endswith("/manifest.json")]
    folder = f"{s3_bucket.url}/{manifest_key}".rsplit("/", 1)[0]
    recorded = read_checkpoint(*storage_for(folder))
    assert recorded is not None
    done = sorted(recorded["done"])
    # the four chunks, and the one already in flight when the fault was set
    assert done in ([0, 1, 2, 3], [0, 1, 2, 3, 4])
    names = sorted(key.rsplit("/", 1)[-1] for key in left)
    journal = [name for name in names if name.startswith("journal-")]
    assert journal  # the finished chunks were recorded before the pull failed
    assert [name for name in names if name not in journal] == [
        "manifest.json",
        *(f"part-{i:06d}.jsonl.gz" for i in done),
    ]

    sb.reset()  # the service is back
    await asyncio.sleep(0.2)  # a request cancelled in flight may still reach the server
    before = _searches(sb)
    async with _ccee(sb) as ccee:
        resumed = await run_pull(ccee, source, url, concurrency=2)
        fetched = _searches(sb) - before
        await run_pull(ccee, source, tmp_path / "pld.jsonl.gz", concurrency=2)
    assert resumed["chunks_resumed"] == len(done)
    assert resumed["chunks"] == 12
    assert fetched == 12 - len(done)  # no plan requests, no finished chunk fetched again
    assert s3.cat_file(url) == (tmp_path / "pld.jsonl.gz").read_bytes()
    assert _keys(s3, s3_bucket.url) == ["ccee/pld.jsonl.gz"]


async def test_a_failure_while_assembling_leaves_nothing_at_the_final_key(
    sb: Sandbox, s3_bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step (the temporary object moved to the output) fails: no object at the output,
    the temporary object removed, the parts kept; the next run only assembles."""
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=4_000)
    url = f"{s3_bucket.url}/ccee/pld.parquet"
    original = FsspecStorage.move

    def broken(self: FsspecStorage, src: str, dst: str) -> None:
        if dst.endswith("/pld.parquet"):
            raise OSError("the store went away")
        original(self, src, dst)

    monkeypatch.setattr(FsspecStorage, "move", broken)
    async with _ccee(sb) as ccee:
        with pytest.raises(OSError, match="went away"):
            await run_pull(ccee, source, url)
    s3 = s3_bucket.filesystem()
    left = _keys(s3, s3_bucket.url)
    assert "ccee/pld.parquet" not in left
    assert not [key for key in left if ".tmp-" in key], left
    assert len([key for key in left if key.endswith(".parquet") and "/part-" in key]) == 3

    monkeypatch.setattr(FsspecStorage, "move", original)
    before = _searches(sb)
    async with _ccee(sb) as ccee:
        summary = await run_pull(ccee, source, url)
        fetched = _searches(sb) - before
        await run_pull(ccee, source, tmp_path / "pld.parquet")
    assert summary["chunks_resumed"] == 3
    assert fetched == 0
    assert s3.cat_file(url) == (tmp_path / "pld.parquet").read_bytes()
    assert _keys(s3, s3_bucket.url) == ["ccee/pld.parquet"]
