"""The pull engine with the CCEE datastore source, against the sandbox over real sockets.

Outputs are compared with what the handler's own pager reads from the sandbox (rows, order,
first and last); server-side request counts show what a resumed pull fetches again.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from echo_connhandler import (
    CceeHttpHandler,
    DataConsistencyError,
    EchoHttpError,
    HttpConnProperties,
)
from echo_connhandler._ccee import CKAN_MAX_LIMIT
from echo_connhandler.pull import (
    CceeDatastoreSource,
    Chunk,
    Column,
    LocalStorage,
    Plan,
    Progress,
    Source,
    UnknownFieldError,
    read_checkpoint,
    run_pull,
)
from echo_connhandler.sandbox import Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
SEARCH = "/api/3/action/datastore_search"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=11, ccee_rows_per_resource=12_000)) as running:
        yield running


def _handler(sb: Sandbox) -> CceeHttpHandler:
    return CceeHttpHandler(HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **FAST)


def _searches(sb: Sandbox) -> int:
    return sb.faults("ccee").stats["requests"].get(SEARCH, 0)


async def _expected(sb: Sandbox, years: list[int]) -> list[dict[str, Any]]:
    """What the handler's own (verified) pager reads, resource by resource."""
    rows: list[dict[str, Any]] = []
    async with _handler(sb) as ccee:
        resources = {r.year: r for r in await ccee.async_resources("pld_horario")}
        for year in years:
            async for record in ccee.aiter_datastore_records(resources[year].id):
                rows.append(record)
    return rows


def _read(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The output parsed back, with the CSV's text turned into the JSON types."""
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    raw = gzip.decompress(path.read_bytes()) if fmt.endswith(".gz") else path.read_bytes()
    text = raw.decode("utf-8")
    if fmt.startswith("jsonl"):
        return [json.loads(line) for line in text.splitlines()]
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row["_id"], row["HORA"] = int(row["_id"]), int(row["HORA"])
        row["PLD_HORA"] = float(row["PLD_HORA"])
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "csv.gz", "parquet"])
async def test_every_format_holds_exactly_the_rows(sb: Sandbox, tmp_path: Path, fmt: str) -> None:
    """Two years (two resources), pages of 5 000 rows, 4 in flight: the sandbox's rows, in order."""
    expected = await _expected(sb, [2023, 2024])
    output = tmp_path / f"pld.{fmt}"
    source = CceeDatastoreSource(dataset="pld_horario", years=[2023, 2024], page_size=5_000)
    async with _handler(sb) as ccee:
        summary = await run_pull(ccee, source, output, concurrency=4)
    assert summary["rows"] == len(expected) == 24_000
    assert summary["chunks"] == 6  # 3 pages per resource
    assert summary["format"] == fmt
    assert len(summary["source_ids"]) == 2
    got = _read(output, fmt)
    assert got == expected
    assert len({(r["_id"], r["MES_REFERENCIA"]) for r in got}) == len(got)
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # no checkpoint left


async def test_parquet_types_come_from_ckan_fields(sb: Sandbox, tmp_path: Path) -> None:
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024])
    async with _handler(sb) as ccee:
        await run_pull(ccee, source, tmp_path / "pld.parquet")
    schema = pq.read_schema(tmp_path / "pld.parquet")
    types = {field.name: str(field.type) for field in schema}
    assert types == {
        "_id": "int64",
        "MES_REFERENCIA": "string",
        "SUBMERCADO": "string",
        "DIA": "string",
        "HORA": "int64",
        "PLD_HORA": "double",
    }


async def test_a_resource_far_above_the_cap(make_big: Any, tmp_path: Path) -> None:
    """100 000 rows in one resource: 4 pages of the 32 000 CKAN applies, exactly once each."""
    sb = make_big
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=CKAN_MAX_LIMIT)
    async with _handler(sb) as ccee:
        summary = await run_pull(ccee, source, tmp_path / "big.jsonl", concurrency=2)
    assert summary["rows"] == 100_000
    assert summary["chunks"] == 4
    lines = (tmp_path / "big.jsonl").read_text().splitlines()
    ids = [json.loads(line)["_id"] for line in lines]
    assert ids == list(range(1, 100_001))


@pytest.fixture(scope="module")
def make_big() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=5, ccee_rows_per_resource=100_000)) as running:
        yield running


class _Crash(Exception):
    """Stands for a worker killed, a task retried, a triggerer restarted."""


async def test_a_killed_pull_resumes_with_only_the_missing_chunks(
    sb: Sandbox, tmp_path: Path
) -> None:
    output = tmp_path / "pld.csv.gz"
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=1_000)

    def crash_after_five(progress: Progress) -> None:
        if progress.chunks_done == 5:
            raise _Crash

    async with _handler(sb) as ccee:
        with pytest.raises(_Crash):
            await run_pull(ccee, source, output, concurrency=2, on_progress=crash_after_five)
        assert not output.exists()  # never a partial file at the final name
        [checkpoint] = [p for p in tmp_path.iterdir() if ".parts-" in p.name]
        recorded = read_checkpoint(LocalStorage(), str(checkpoint))
        assert recorded is not None
        assert sorted(recorded["done"]) == [0, 1, 2, 3, 4]

        await asyncio.sleep(0.3)  # a request cancelled in flight may still reach the server
        before = _searches(sb)
        resumed = await run_pull(ccee, source, output, concurrency=2)
        fetched_again = _searches(sb) - before
    assert resumed["chunks_resumed"] == 5
    assert resumed["chunks"] == 12
    assert fetched_again == 12 - 5  # no plan requests, no finished chunk fetched again

    uninterrupted = tmp_path / "again" / "pld.csv.gz"
    uninterrupted.parent.mkdir()
    async with _handler(sb) as ccee:
        await run_pull(ccee, source, uninterrupted, concurrency=2)
    assert output.read_bytes() == uninterrupted.read_bytes()


async def test_another_pull_never_reuses_a_checkpoint(sb: Sandbox, tmp_path: Path) -> None:
    output = tmp_path / "pld.jsonl"
    first = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=2_000)

    def crash(progress: Progress) -> None:
        if progress.chunks_done == 2:
            raise _Crash

    async with _handler(sb) as ccee:
        with pytest.raises(_Crash):
            await run_pull(ccee, first, output, on_progress=crash)
        other = CceeDatastoreSource(
            dataset="pld_horario", years=[2024], page_size=2_000, filters={"SUBMERCADO": "SUL"}
        )
        summary = await run_pull(ccee, other, output)
    assert summary["chunks_resumed"] == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert {r["SUBMERCADO"] for r in rows} == {"SUL"}
    assert len(rows) == 3_000


async def test_a_failed_pull_leaves_nothing_at_the_output(sb: Sandbox, tmp_path: Path) -> None:
    output = tmp_path / "pld.parquet"
    sb.faults("ccee").script("datastore_search", status=404, times=50)
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=4_000)
    async with _handler(sb) as ccee:
        with pytest.raises(EchoHttpError):
            await run_pull(ccee, source, output)
    assert not output.exists()


async def test_a_pull_under_faults_completes_exactly(sb: Sandbox, tmp_path: Path) -> None:
    """429 with Retry-After, 503, dropped connections and a WAF block in the middle."""
    expected = await _expected(sb, [2024])
    faults = sb.faults("ccee")
    faults.configure(
        error_rate=0.15, error_statuses=(503,), rate_limit_rate=0.1, retry_after=0, drop_rate=0.1
    )
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=1_500)

    def block_once(progress: Progress) -> None:
        if progress.chunks_done == 3:
            faults.block_waf()

    async with _handler(sb) as ccee:
        summary = await run_pull(
            ccee, source, tmp_path / "pld.jsonl", concurrency=3, on_progress=block_once
        )
    got = _read(tmp_path / "pld.jsonl", "jsonl")
    assert got == expected
    assert summary["retries"] > 0
    assert faults.stats["warmups"] >= 2  # the WAF block cost one warm-up more


async def test_years_that_do_not_exist_are_named(sb: Sandbox, tmp_path: Path) -> None:
    source = CceeDatastoreSource(dataset="pld_horario", years=[1990, 2024])
    async with _handler(sb) as ccee:
        with pytest.raises(ValueError, match="1990"):
            await run_pull(ccee, source, tmp_path / "x.jsonl")


async def test_pages_are_decoded_in_worker_processes(sb: Sandbox, tmp_path: Path) -> None:
    """The big JSON pages are parsed and encoded in the decode pool's processes, never in this
    process (its event loop never waits behind that work): each part names the process that
    encoded it."""
    import echo_connhandler.pull._engine as engine

    pids: list[int] = []
    original = engine.offload_to_process

    async def recording(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        pid, encoded = await original(_with_pid, function)
        pids.append(pid)
        return encoded

    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=4_000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "offload_to_process", recording)
        async with _handler(sb) as ccee:
            summary = await run_pull(ccee, source, tmp_path / "x.csv", decode="process")
    assert summary["chunks"] == len(pids) == 3
    assert os.getpid() not in pids


async def test_pages_are_decoded_off_the_event_loop_in_thread_mode(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default (decode="thread"), pages are parsed in the pull's worker thread, not on the
    loop's."""
    import echo_connhandler.pull._ccee as ccee_source

    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = ccee_source._page_rows

    def recording(*args: Any) -> Any:
        seen.append(threading.get_ident())
        return original(*args)

    monkeypatch.setattr(ccee_source, "_page_rows", recording)
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=4_000)
    async with _handler(sb) as ccee:
        await run_pull(ccee, source, tmp_path / "x.csv")
    assert len(seen) == 3
    assert loop_thread not in seen


async def test_process_and_thread_decoding_write_the_same_bytes(
    sb: Sandbox, tmp_path: Path
) -> None:
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=4_000)
    async with _handler(sb) as ccee:
        await run_pull(ccee, source, tmp_path / "p.jsonl.gz", decode="process")
        await run_pull(ccee, source, tmp_path / "t.jsonl.gz", decode="thread")
    assert (tmp_path / "p.jsonl.gz").read_bytes() == (tmp_path / "t.jsonl.gz").read_bytes()


async def test_an_unknown_decode_mode_is_refused(sb: Sandbox, tmp_path: Path) -> None:
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024])
    async with _handler(sb) as ccee:
        with pytest.raises(ValueError, match="decode must be one of"):
            await run_pull(ccee, source, tmp_path / "x.csv", decode="gpu")
    assert not any("datastore" in path for path in sb.faults("ccee").stats["requests"])
    assert not (tmp_path / "x.csv").exists()


def _with_pid(job: Any) -> tuple[int, Any]:
    """Run ``job`` (in a worker process); its result and that process's id."""
    return os.getpid(), job()


class _Sneaky(Source):
    """A source whose rows carry a field its plan does not declare."""

    def identity(self) -> dict[str, Any]:
        return {"sneaky": True}

    async def plan(self, handler: Any) -> Plan:
        return Plan([Chunk(0, "only")], [Column("a", "int")], ["x"])

    async def fetch(self, handler: Any, chunk: Chunk, plan: Plan) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return [{"a": 1, "surprise": 2}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
async def test_an_unknown_field_is_an_error_that_names_it(
    sb: Sandbox, tmp_path: Path, fmt: str
) -> None:
    async with _handler(sb) as ccee:
        with pytest.raises(UnknownFieldError, match="'surprise'"):
            await run_pull(ccee, _Sneaky(), tmp_path / f"x.{fmt}")
    assert not (tmp_path / f"x.{fmt}").exists()


async def test_object_storage_through_fsspec(sb: Sandbox) -> None:
    """An fsspec URL (the in-memory filesystem here; s3:// works the same way)."""
    import fsspec

    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=5_000)
    async with _handler(sb) as ccee:
        summary = await run_pull(ccee, source, "memory://lake/ccee/pld.jsonl.gz")
    memory = fsspec.filesystem("memory")
    data = gzip.decompress(memory.cat_file("/lake/ccee/pld.jsonl.gz"))
    assert len(data.splitlines()) == summary["rows"] == 12_000
    assert memory.ls("/lake/ccee", detail=False) == ["/lake/ccee/pld.jsonl.gz"]


async def test_bad_arguments_are_named(sb: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset"):
        CceeDatastoreSource()
    with pytest.raises(ValueError, match="page_size"):
        CceeDatastoreSource(dataset="pld_horario", page_size=0)
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024])
    async with _handler(sb) as ccee:
        with pytest.raises(ValueError, match="concurrency"):
            await run_pull(ccee, source, tmp_path / "x.jsonl", concurrency=0)
        with pytest.raises(ValueError, match="format"):
            await run_pull(ccee, source, tmp_path / "x.txt")


async def test_a_resource_that_changes_mid_pull_fails_instead_of_losing_rows(
    sb: Sandbox, tmp_path: Path
) -> None:
    """A page whose total differs from the plan's is a DataConsistencyError."""
    source = CceeDatastoreSource(dataset="pld_horario", years=[2024], page_size=6_000)
    async with _handler(sb) as ccee:
        plan = await source.plan(ccee)
        changed = Plan(
            plan.chunks, plan.columns, plan.source_ids, {"totals": {plan.source_ids[0]: 5}}
        )
        with pytest.raises(DataConsistencyError, match="changed"):
            (await source.fetch(ccee, plan.chunks[0], changed)).rows()
