"""A pull in two stages: fetch (pages kept as delivered, nothing decoded), then finish (decode,
check, encode, assemble) in another run, as a deferred Airflow pull does (the trigger moves bytes,
the task computes). The output is the one-stage pull's, to the byte, and every check holds."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler import (
    BazeHttpHandler,
    CceeHttpHandler,
    DataConsistencyError,
    HttpConnProperties,
)
from echo_connhandler.pull import (
    BazefieldTimeseriesSource,
    CceeDatastoreSource,
    read_checkpoint,
    run_pull,
)
from echo_connhandler.pull._checkpoint import checkpoint_folder
from echo_connhandler.pull._engine import _fingerprint, _identity
from echo_connhandler.pull._storage import storage_for
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
SEARCH = "/api/3/action/datastore_search"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=11, ccee_rows_per_resource=120)) as running:
        yield running


def _ccee(sb: Sandbox) -> CceeHttpHandler:
    return CceeHttpHandler(HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **FAST)


def _source() -> CceeDatastoreSource:
    return CceeDatastoreSource(dataset="pld_horario", years=[2024, 2025], page_size=25)


def _searches(sb: Sandbox) -> int:
    return sb.faults("ccee").stats["requests"].get(SEARCH, 0)


async def _run(sb: Sandbox, output: Path, **kwargs: Any) -> Any:
    async with _ccee(sb) as ccee:
        return await run_pull(ccee, _source(), output, concurrency=3, **kwargs)


def _folder(sb: Sandbox, output: Path, fmt: str) -> Path:
    storage, path = storage_for(str(output))
    identity = _identity(_source(), fmt, storage.url(path), sb.urls.ccee)
    return Path(checkpoint_folder(storage, path, _fingerprint(identity)))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv.gz"])
async def test_fetch_then_finish_gives_the_one_stage_output(
    sb: Sandbox, tmp_path: Path, fmt: str
) -> None:
    reference = tmp_path / f"reference.{fmt}"
    await _run(sb, reference)

    output = tmp_path / f"two-stage.{fmt}"
    fetched = await _run(sb, output, stage="fetch", where="triggerer")
    assert fetched["stage"] == "fetched"
    assert not output.exists()
    record = read_checkpoint(*storage_for(str(_folder(sb, output, fmt))))
    assert record is not None
    kept = [r for r in record["done"].values() if r.get("raw")]
    assert len(kept) == fetched["chunks"]  # every page kept as delivered, none decoded
    assert fetched["phases"] == [
        {
            "phase": "fetch",
            "where": "triggerer",
            "seconds": fetched["phases"][0]["seconds"],
            "chunks": fetched["chunks"],
        }
    ]

    searches = _searches(sb)
    done = await _run(sb, output, where="worker")
    assert _searches(sb) == searches  # decoded from the checkpoint: no page asked again
    assert done["stage"] == "done"
    assert done["chunks_resumed"] == 0
    assert [p["phase"] for p in done["phases"]] == ["decode", "assemble"]
    assert done["phases"][0] == {**done["phases"][0], "where": "worker", "chunks": done["chunks"]}
    assert done["rows"] == 240
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(output).equals(pq.read_table(reference))
    else:
        assert output.read_bytes() == reference.read_bytes()
    assert not _folder(sb, output, fmt).exists()


async def test_a_misbehaving_server_is_caught_when_the_pages_are_decoded(
    sb: Sandbox, tmp_path: Path
) -> None:
    """Overlapping pages pass the fetch stage (nothing is decoded there) and fail the finish:
    nothing reaches the output."""
    sb.faults("ccee").misbehave("ignore_offset")
    output = tmp_path / "pld.jsonl"
    await _run(sb, output, stage="fetch")
    sb.faults("ccee").behave()
    with pytest.raises(DataConsistencyError, match="does not follow the page before it"):
        await _run(sb, output)
    assert not output.exists()


async def test_a_republication_between_the_stages_starts_the_pull_afresh(
    sb: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = tmp_path / "reference.jsonl"
    output = tmp_path / "pld.jsonl"
    await _run(sb, output, stage="fetch")
    sb.ccee_publish("pld_horario")
    await _run(sb, reference)
    with caplog.at_level(logging.WARNING, logger="echo_connhandler.pull"):
        summary = await _run(sb, output)
    assert "starting this pull afresh" in caplog.text
    assert [p["phase"] for p in summary["phases"]] == ["fetch", "assemble"]
    assert output.read_bytes() == reference.read_bytes()


async def test_a_damaged_kept_page_is_fetched_again(
    sb: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = tmp_path / "reference.jsonl"
    await _run(sb, reference)
    output = tmp_path / "pld.jsonl"
    await _run(sb, output, stage="fetch")
    part = sorted(_folder(sb, output, "jsonl").glob("part-*.raw"))[2]
    part.write_bytes(part.read_bytes()[:-10])
    searches = _searches(sb)
    with caplog.at_level(logging.WARNING, logger="echo_connhandler.pull"):
        summary = await _run(sb, output)
    assert "fetching it again" in caplog.text
    assert _searches(sb) == searches + 1
    assert {p["phase"]: p["chunks"] for p in summary["phases"]}["fetch"] == 1
    assert output.read_bytes() == reference.read_bytes()


async def test_a_record_naming_a_foreign_function_is_never_called(
    sb: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tampered checkpoint cannot make the engine call a function of another module: the
    page is fetched again instead."""
    reference = tmp_path / "reference.jsonl"
    await _run(sb, reference)
    output = tmp_path / "pld.jsonl"
    await _run(sb, output, stage="fetch")
    folder = _folder(sb, output, "jsonl")
    for journal in folder.glob("journal-*.jsonl"):
        lines = [json.loads(line) for line in journal.read_text().splitlines()]
        for line in lines:
            line["raw"]["decode"] = "os:system"
        journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with caplog.at_level(logging.WARNING, logger="echo_connhandler.pull"):
        summary = await _run(sb, output)
    assert "not a function of the source's module" in caplog.text
    assert {p["phase"]: p["chunks"] for p in summary["phases"]}["fetch"] == summary["chunks"]
    assert output.read_bytes() == reference.read_bytes()


async def test_bazefield_pages_keep_their_decode_arguments(sb: Sandbox, tmp_path: Path) -> None:
    """Decode arguments with datetimes and tuples survive the journal exactly."""
    props = HttpConnProperties(
        host=sb.urls.bazefield, api_key=DEMO_CREDENTIALS["bazefield"]["api_key"]
    )

    def source() -> BazefieldTimeseriesSource:
        return BazefieldTimeseriesSource(
            objects=["1001", "1002"],
            points=["ActivePower"],
            aggregates=["Average", "Max"],
            start="2024-01-01T00:00:00Z",
            end="2024-01-02T00:00:00Z",
            interval="10m",
            window=timedelta(hours=5),
        )

    async def run(output: Path, **kwargs: Any) -> Any:
        async with BazeHttpHandler(props, skip_connect=True, **FAST) as baze:
            return await run_pull(baze, source(), output, **kwargs)

    reference = tmp_path / "reference.jsonl"
    await run(reference)
    output = tmp_path / "two-stage.jsonl"
    await run(output, stage="fetch")
    summary = await run(output, decode="process")
    assert summary["phases"][0]["phase"] == "decode"
    assert output.read_bytes() == reference.read_bytes()


async def test_a_bad_stage_is_refused(sb: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"stage must be one of \('all', 'fetch'\)"):
        await _run(sb, tmp_path / "x.jsonl", stage="decode")
