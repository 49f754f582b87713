"""Checkpoints are verified, never trusted: damaged parts are fetched again, a damaged manifest
starts the pull afresh, recording a chunk costs the same whatever the pull's size, attempts may
share a folder, and long output names fit the file system (CCEE sandbox, real sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from echo_connhandler import CceeHttpHandler, HttpConnProperties
from echo_connhandler.pull import (
    CceeDatastoreSource,
    LocalStorage,
    Progress,
    _checkpoint,
    read_checkpoint,
    run_pull,
)
from echo_connhandler.sandbox import Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
ROWS = 100
SEARCH = "/api/3/action/datastore_search"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=9, ccee_rows_per_resource=ROWS)) as running:
        yield running


class _Crash(Exception):
    pass


def _source() -> CceeDatastoreSource:
    return CceeDatastoreSource(dataset="pld_horario", years=[2025], page_size=10)


async def _pull(sb: Sandbox, output: Path, *, crash_at: int | None = None) -> Any:
    def crash(progress: Progress) -> None:
        if progress.chunks_done == crash_at:
            raise _Crash

    handler = CceeHttpHandler(HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **FAST)
    async with handler as ccee:
        return await run_pull(
            ccee, _source(), output, concurrency=1, on_progress=crash if crash_at else None
        )


def _searches(sb: Sandbox) -> int:
    return sb.faults("ccee").stats["requests"].get(SEARCH, 0)


def _folder(output: Path) -> Path:
    [folder] = [p for p in output.parent.iterdir() if ".parts-" in p.name]
    return folder


async def _crashed_checkpoint(sb: Sandbox, output: Path, at: int = 6) -> Path:
    with pytest.raises(_Crash):
        await _pull(sb, output, crash_at=at)
    await asyncio.sleep(0.05)
    return _folder(output)


async def _reference(sb: Sandbox, tmp_path: Path, name: str) -> bytes:
    reference = tmp_path / "reference" / name
    await _pull(sb, reference)
    return reference.read_bytes()


@pytest.mark.parametrize(
    "damage",
    ["truncate", "cut_mid_line", "alter_same_size", "delete"],
)
async def test_a_damaged_or_missing_part_is_fetched_again(
    sb: Sandbox, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected = await _reference(sb, tmp_path, "pld.jsonl")
    output = tmp_path / "pld.jsonl"
    folder = await _crashed_checkpoint(sb, output)
    part = folder / "part-000002.jsonl"
    data = part.read_bytes()
    if damage == "truncate":  # whole lines lost: 5 rows where 10 were recorded
        part.write_bytes(b"".join(data.splitlines(keepends=True)[:5]))
    elif damage == "cut_mid_line":
        part.write_bytes(data[:-7])
    elif damage == "alter_same_size":
        part.write_bytes(data.replace(b'"SUL"', b'"SUD"', 1))
        assert len(part.read_bytes()) == len(data)
    else:
        part.unlink()
    before = _searches(sb)
    with caplog.at_level(logging.WARNING, "echo_connhandler.pull"):
        summary = await _pull(sb, output)
    assert output.read_bytes() == expected
    assert summary["rows"] == ROWS
    assert summary["chunks_resumed"] == 5  # six recorded, one of them bad
    assert _searches(sb) - before == 10 - 5
    assert "part of chunk 2" in caplog.text
    assert "fetching it again" in caplog.text


async def test_a_damaged_parquet_part_is_fetched_again(sb: Sandbox, tmp_path: Path) -> None:
    await _pull(sb, tmp_path / "ref.parquet")
    expected = pq.read_table(tmp_path / "ref.parquet")
    output = tmp_path / "pld.parquet"
    folder = await _crashed_checkpoint(sb, output)
    part = folder / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:-20])
    summary = await _pull(sb, output)
    assert pq.read_table(output).equals(expected)
    assert summary["chunks_resumed"] == 5


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"layout": 2, "identity": 1}'])
async def test_a_corrupt_manifest_is_named_and_the_pull_starts_afresh(
    sb: Sandbox, tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    expected = await _reference(sb, tmp_path, "pld.jsonl")
    output = tmp_path / "pld.jsonl"
    folder = await _crashed_checkpoint(sb, output)
    (folder / "manifest.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, "echo_connhandler.pull"):
        summary = await _pull(sb, output)
    assert output.read_bytes() == expected
    assert summary["chunks_resumed"] == 0
    assert str(folder / "manifest.json") in caplog.text
    assert "starting this pull afresh" in caplog.text
    assert not folder.exists()


async def test_recording_a_chunk_does_not_rewrite_the_manifest(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest is written once; finished chunks go to journal segments written in
    batches: the writes do not grow with the number of chunks done so far."""
    written: list[str] = []
    original = LocalStorage.write_atomic

    def spy(self: LocalStorage, path: str, data: bytes) -> None:
        written.append(Path(path).name)
        original(self, path, data)

    monkeypatch.setattr(LocalStorage, "write_atomic", spy)
    monkeypatch.setattr(_checkpoint, "FLUSH_EVERY_S", 3600.0)
    monkeypatch.setattr(_checkpoint, "FLUSH_EVERY_RECORDS", 4)
    await _pull(sb, tmp_path / "pld.jsonl")
    assert written.count("manifest.json") == 1
    journal = [name for name in written if name.startswith("journal-")]
    assert len(journal) == 3  # 10 chunks: batches of 4, 4 and the last 2
    assert len([name for name in written if name.startswith("part-")]) == 10


async def test_a_crash_keeps_the_records_of_the_batch_in_progress(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_checkpoint, "FLUSH_EVERY_S", 3600.0)
    folder = await _crashed_checkpoint(sb, tmp_path / "pld.jsonl", at=6)
    recorded = read_checkpoint(LocalStorage(), str(folder))
    assert recorded is not None
    assert sorted(recorded["done"]) == [0, 1, 2, 3, 4, 5]


async def test_a_stale_record_of_another_attempt_is_not_used(sb: Sandbox, tmp_path: Path) -> None:
    """Two attempts share the folder: a record whose part does not match it (the other attempt
    wrote that part since) is ignored and the chunk fetched again."""
    expected = await _reference(sb, tmp_path, "pld.jsonl")
    output = tmp_path / "pld.jsonl"
    folder = await _crashed_checkpoint(sb, output, at=3)
    stale = {
        "index": 4,
        "key": json.loads((folder / "manifest.json").read_text())["plan"]["chunks"][4]["key"],
        "rows": 10,
        "bytes": 5,
        "sha256": "0" * 64,
    }
    (folder / "part-000004.jsonl").write_bytes(b"stale")
    (folder / "journal-otherattempt-000001.jsonl").write_text(json.dumps(stale) + "\n")
    summary = await _pull(sb, output)
    assert output.read_bytes() == expected
    assert summary["chunks_resumed"] == 3  # 0-2 of the crashed run; 4 is fetched again


async def test_two_attempts_racing_on_one_output_leave_a_right_output(
    sb: Sandbox, tmp_path: Path
) -> None:
    expected = await _reference(sb, tmp_path, "pld.jsonl")
    output = tmp_path / "pld.jsonl"
    results = await asyncio.gather(_pull(sb, output), _pull(sb, output), return_exceptions=True)
    assert any(isinstance(r, dict) for r in results), results
    # whatever the loser did, the next run is not stuck and the output is right
    await _pull(sb, output)
    assert output.read_bytes() == expected
    assert not [p for p in tmp_path.iterdir() if ".parts-" in p.name or ".tmp-" in p.name]


async def test_a_long_output_name_keeps_checkpoint_names_within_the_limit(
    sb: Sandbox, tmp_path: Path
) -> None:
    output = tmp_path / ("p" * 240 + ".jsonl")  # 246 bytes: a legal name
    folder = await _crashed_checkpoint(sb, output, at=2)
    assert len(folder.name.encode()) <= 255
    summary = await _pull(sb, output)
    assert summary["rows"] == ROWS
    assert summary["chunks_resumed"] == 2
    assert output.exists()


def test_progress_and_summary_lines_read_well() -> None:
    """No "ETA 0 s" when done, sizes in the unit that fits, singular nouns for one."""
    from echo_connhandler.pull import summary_line
    from echo_connhandler.pull._engine import Progress as EngineProgress

    assert EngineProgress(1, 1, 1, 20_300, 2.0, 0).line() == "1/1 chunk, 1 row, 20.3 KB, 0 rows/s"
    assert EngineProgress(2, 4, 20, 4_200_000, 1.0, 0).line() == (
        "2/4 chunks, 20 rows, 4.2 MB, 20 rows/s, ETA 1 s"
    )
    summary: dict[str, Any] = {
        "output": "/lake/x.parquet",
        "format": "parquet",
        "rows": 1,
        "chunks": 1,
        "bytes": 999,
        "seconds": 0.5,
        "retries": 1,
        "chunks_resumed": 0,
        "source_ids": [],
        "files": [],
        "tolerated": {"missing_steps": 6},
    }
    assert summary_line(summary) == (
        "1 row in 1 chunk, 999 B, 0.5 s (0 resumed, 1 retry, 6 missing steps accepted) "
        "-> /lake/x.parquet"
    )
    files = {**summary, "format": "files", "files": ["a.csv"], "tolerated": {}, "retries": 2}
    assert summary_line(files).startswith("1 file in 1 chunk, 999 B, 0.5 s (0 resumed, 2 retries)")


async def test_records_of_an_earlier_plan_of_the_pull_are_never_used(
    sb: Sandbox, tmp_path: Path
) -> None:
    """A zombie attempt still writing under the plan the pull had before it started afresh:
    its records (and parts) are ignored, whatever they hold."""
    expected = await _reference(sb, tmp_path, "pld.jsonl")
    output = tmp_path / "pld.jsonl"
    folder = await _crashed_checkpoint(sb, output, at=3)
    manifest = json.loads((folder / "manifest.json").read_text())
    chunk = manifest["plan"]["chunks"][5]
    stale = b'{"_id": 999}\n'
    (folder / "part-000005.jsonl").write_bytes(stale)
    record = {
        "index": 5,
        "key": chunk["key"],
        "rows": 1,
        "bytes": len(stale),
        "sha256": hashlib.sha256(stale).hexdigest(),
    }
    (folder / "journal-0ldplan0ld00-zombie-000001.jsonl").write_text(json.dumps(record) + "\n")
    summary = await _pull(sb, output)
    assert summary["chunks_resumed"] == 3
    assert output.read_bytes() == expected


async def test_a_batch_of_records_is_written_while_the_next_chunk_is_slow(
    sb: Sandbox, tmp_path: Path
) -> None:
    """The journal is written once a batch is due, not only when the next chunk finishes: a
    crash during a slow chunk loses at most about a second of records."""
    output = tmp_path / "pld.jsonl"
    checked: list[tuple[int, list[int]]] = []
    last = [time.monotonic()]

    def watch(progress: Progress) -> None:
        now = time.monotonic()
        if progress.chunks_done == 1:  # a request soon waits 2.5 s
            sb.faults("ccee").script("datastore_search", delay_s=2.5)
        elif now - last[0] >= 2.0 and not checked:  # the first chunk after the slow request
            [folder] = [p for p in tmp_path.iterdir() if ".parts-" in p.name]
            recorded = read_checkpoint(LocalStorage(), str(folder))
            checked.append((progress.chunks_done, sorted(recorded["done"]) if recorded else []))
        last[0] = now

    handler = CceeHttpHandler(HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **FAST)
    async with handler as ccee:
        await run_pull(ccee, _source(), output, concurrency=1, on_progress=watch)
    [(done, journal)] = checked
    # every chunk finished before the slow one was written during its wait
    assert journal == list(range(done - 1))
