"""A CCEE pull against a misbehaving CKAN (the sandbox's misbehaviours, over real sockets): every
case ends in the right output or a typed error naming the cause, never a plausible wrong file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echo_connhandler import (
    ApiError,
    CceeHttpHandler,
    DataConsistencyError,
    HttpConnProperties,
)
from echo_connhandler.pull import (
    CceeDatastoreSource,
    Chunk,
    Column,
    ColumnTypeError,
    DecodedPage,
    Plan,
    Progress,
    Source,
    run_pull,
)
from echo_connhandler.pull._ccee import _page_rows
from echo_connhandler.sandbox import Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
ROWS = 100  # per resource: 10 pages of 10


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=5, ccee_rows_per_resource=ROWS)) as running:
        yield running


def _handler(sb: Sandbox) -> CceeHttpHandler:
    return CceeHttpHandler(HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **FAST)


def _source(**kwargs: Any) -> CceeDatastoreSource:
    return CceeDatastoreSource(dataset="pld_horario", years=[2025], page_size=10, **kwargs)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def _pull(sb: Sandbox, output: Path, source: Source | None = None, **kwargs: Any) -> Any:
    async with _handler(sb) as ccee:
        return await run_pull(ccee, source or _source(), output, concurrency=1, **kwargs)


def _nothing_at(output: Path) -> None:
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if ".tmp-" in p.name]


async def test_a_well_behaved_server_gives_every_row_once(sb: Sandbox, tmp_path: Path) -> None:
    output = tmp_path / "pld.jsonl"
    summary = await _pull(sb, output)
    ids = [row["_id"] for row in _lines(output)]
    assert ids == list(range(1, ROWS + 1))
    assert summary["rows"] == ROWS
    assert summary["tolerated"] == {}


@pytest.mark.parametrize(
    ("kind", "options"),
    [("ignore_offset", {}), ("overlap_pages", {"rows": 10}), ("overlap_pages", {"rows": 3})],
)
async def test_pages_that_repeat_or_overlap_fail(
    sb: Sandbox, tmp_path: Path, kind: str, options: dict[str, Any]
) -> None:
    sb.faults("ccee").misbehave(kind, **options)
    output = tmp_path / "pld.jsonl"
    with pytest.raises(DataConsistencyError, match=r"does not follow the page before it"):
        await _pull(sb, output)
    _nothing_at(output)


async def test_a_duplicated_id_inside_a_page_fails(sb: Sandbox, tmp_path: Path) -> None:
    sb.faults("ccee").misbehave("duplicate_id")
    output = tmp_path / "pld.jsonl"
    with pytest.raises(DataConsistencyError, match=r"_id 1 appears twice in the page at offset 0"):
        await _pull(sb, output)
    _nothing_at(output)


async def test_rows_shifted_mid_pull_are_caught_by_the_version(sb: Sandbox, tmp_path: Path) -> None:
    """One row deleted at the front, one appended at the end after the first page: the same
    total, keys still increasing, a row lost; the resource's version changed with it."""
    sb.faults("ccee").misbehave("shift_rows", after=1)
    output = tmp_path / "pld.jsonl"
    with pytest.raises(DataConsistencyError, match=r"republished during the pull") as info:
        await _pull(sb, output)
    assert "PLD_HORARIO_2025" in str(info.value) or "resource " in str(info.value)
    _nothing_at(output)


async def test_a_resource_republished_mid_pull_fails_naming_both_versions(
    sb: Sandbox, tmp_path: Path
) -> None:
    sb.faults("ccee").misbehave("republish", after=5)
    output = tmp_path / "pld.parquet"
    with pytest.raises(DataConsistencyError) as info:
        await _pull(sb, output)
    message = str(info.value)
    assert "republished during the pull" in message
    planned, now = message.split("version ")[1].split(" planned, ")
    assert planned != now.split(" now")[0]
    _nothing_at(output)
    # The retry (the same pull again) starts afresh on the new version: one version only.
    summary = await _pull(sb, output)
    assert summary["chunks_resumed"] == 0
    values = pq.read_table(output).column("PLD_HORA").to_pylist()
    sb.faults("ccee").behave()
    assert len(values) == ROWS


class _Crash(Exception):
    pass


async def test_a_republication_between_a_crash_and_the_retry_restarts_the_pull(
    sb: Sandbox, tmp_path: Path
) -> None:
    output = tmp_path / "pld.jsonl"

    def crash_after_six(progress: Progress) -> None:
        if progress.chunks_done == 6:
            raise _Crash

    with pytest.raises(_Crash):
        await _pull(sb, output, on_progress=crash_after_six)
    old = await _pull(sb, tmp_path / "old.jsonl")
    sb.faults("ccee").misbehave("republish", after=0)
    summary = await _pull(sb, output)
    assert summary["chunks_resumed"] == 0  # 60 old rows were not kept next to 40 new ones
    rows = _lines(output)
    new = await _pull(sb, tmp_path / "new.jsonl")
    assert rows == _lines(tmp_path / "new.jsonl")
    assert rows != _lines(tmp_path / "old.jsonl")
    assert old["rows"] == new["rows"] == ROWS


async def test_a_column_missing_from_later_pages_fails(sb: Sandbox, tmp_path: Path) -> None:
    sb.faults("ccee").misbehave("drop_column", column="PLD_HORA", after=2)
    output = tmp_path / "pld.csv"
    with pytest.raises(DataConsistencyError, match=r"offset 20 lacks 'PLD_HORA'"):
        await _pull(sb, output)
    _nothing_at(output)


async def test_two_resources_for_one_year_is_an_error_naming_both(
    sb: Sandbox, tmp_path: Path
) -> None:
    sb.faults("ccee").misbehave("two_resources_per_year")
    with pytest.raises(DataConsistencyError, match=r"two datastore resources for 2025") as info:
        await _pull(sb, tmp_path / "pld.jsonl")
    assert "PLD_HORARIO_2025 (" in str(info.value)
    assert "PLD_HORARIO_2025_RETIFICADO (" in str(info.value)


@pytest.mark.parametrize(
    ("result", "match"),
    [
        ({"total": ROWS, "records": {"_id": 1}}, r"records at offset 0 is not a list of objects"),
        ({"total": ROWS, "records": [1, 2]}, r"records at offset 0 is not a list of objects"),
        ({"total": "many", "records": []}, r"total at offset 0 is not a count"),
        ({"total": None, "records": []}, r"total at offset 0 is not a count"),
    ],
)
async def test_pages_of_the_wrong_shape_raise_the_librarys_errors(
    sb: Sandbox, tmp_path: Path, result: dict[str, Any], match: str
) -> None:
    async with _handler(sb) as ccee:
        source = _source()
        plan = await source.plan(ccee)
        body = json.dumps({"success": True, "result": result})
        sb.faults("ccee").script("datastore_search", body=body)
        page = await source.fetch(ccee, plan.chunks[0], plan)
        with pytest.raises(ApiError, match=match):
            page.rows()


async def test_a_plan_answer_of_the_wrong_shape_is_an_api_error(
    sb: Sandbox, tmp_path: Path
) -> None:
    body = json.dumps({"success": True, "result": {"total": "12", "fields": []}})
    async with _handler(sb) as ccee:
        await ccee.async_resources("pld_horario")  # the warm-up first, then the scripted answer
        sb.faults("ccee").script("datastore_search", body=body)
        with pytest.raises(ApiError, match=r"total is not a count \('12'\)"):
            await _source().plan(ccee)


class _Rows(Source):
    """A source of given rows and columns (the encoders' rules, the same for every format)."""

    def __init__(self, columns: list[Column], rows: list[dict[str, Any]]) -> None:
        self.columns, self.rows = columns, rows

    def identity(self) -> dict[str, Any]:
        return {"rows": repr(self.rows)}

    async def plan(self, handler: Any) -> Plan:
        return Plan([Chunk(0, "only")], self.columns, ["x"])

    async def fetch(self, handler: Any, chunk: Chunk, plan: Plan) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "csv.gz", "parquet"])
async def test_text_in_a_numeric_column_fails_in_every_format(
    sb: Sandbox, tmp_path: Path, fmt: str
) -> None:
    source = _Rows(
        [Column("_id", "int"), Column("PLD_HORA", "float")],
        [{"_id": 1, "PLD_HORA": 1.5}, {"_id": 2, "PLD_HORA": "n/d"}],
    )
    output = tmp_path / f"x.{fmt}"
    with pytest.raises(
        ColumnTypeError, match=r"column 'PLD_HORA' is float but a value \(row _id 2\)"
    ):
        await _pull(sb, output, source)
    _nothing_at(output)


async def test_numbers_as_text_fit_numeric_columns_in_every_format(
    sb: Sandbox, tmp_path: Path
) -> None:
    source = _Rows([Column("n", "int"), Column("x", "float")], [{"n": "7", "x": "1.25"}])
    for fmt in ("jsonl", "csv", "parquet"):
        summary = await _pull(sb, tmp_path / f"x.{fmt}", source)
        assert summary["rows"] == 1
    assert pq.read_table(tmp_path / "x.parquet").to_pylist() == [{"n": 7, "x": 1.25}]


async def test_lists_and_objects_in_a_text_column_are_json_in_every_format(
    sb: Sandbox, tmp_path: Path
) -> None:
    source = _Rows(
        [Column("tags", "text")], [{"tags": ["a", "ção"]}, {"tags": {"k": 1}}, {"tags": "x"}]
    )
    for fmt in ("jsonl", "csv", "parquet"):
        await _pull(sb, tmp_path / f"x.{fmt}", source)
    expected = ['["a","ção"]', '{"k":1}', "x"]
    assert pq.read_table(tmp_path / "x.parquet").column("tags").to_pylist() == expected
    assert [row["tags"] for row in _lines(tmp_path / "x.jsonl")] == expected
    csv_lines = (tmp_path / "x.csv").read_text("utf-8").splitlines()
    assert csv_lines == ["tags", '"[""a"",""ção""]"', '"{""k"":1}"', "x"]


async def test_a_ckan_timestamp_reaches_parquet_as_a_timestamp(sb: Sandbox, tmp_path: Path) -> None:
    """CKAN's ``timestamp`` fields are naive ISO text: written as they are (no time zone);
    a value with an offset is converted to UTC."""
    source = _Rows(
        [Column("at", "timestamp")],
        [
            {"at": "2025-03-01T10:00:00"},
            {"at": "2025-03-01 11:30:00.250000"},
            {"at": "2025-03-01T12:00:00-03:00"},
            {"at": None},
        ],
    )
    await _pull(sb, tmp_path / "x.parquet", source)
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.schema.field("at").type == pa.timestamp("us")
    assert [str(v) if v else None for v in table.column("at").to_pylist()] == [
        "2025-03-01 10:00:00",
        "2025-03-01 11:30:00.250000",
        "2025-03-01 15:00:00",
        None,
    ]


async def test_a_value_that_is_not_a_timestamp_fails_in_every_format(
    sb: Sandbox, tmp_path: Path
) -> None:
    source = _Rows([Column("at", "timestamp")], [{"at": "ontem"}])
    for fmt in ("jsonl", "parquet"):
        with pytest.raises(ColumnTypeError, match=r"column 'at' is timestamp but a value"):
            await _pull(sb, tmp_path / f"x.{fmt}", source)


class _Counted(_Rows):
    """A source whose every chunk reports irregularities accepted knowingly."""

    async def plan(self, handler: Any) -> Plan:
        return Plan([Chunk(0, "a"), Chunk(1, "b")], self.columns, ["x"])

    async def fetch(self, handler: Any, chunk: Chunk, plan: Plan) -> DecodedPage:
        return DecodedPage([dict(row) for row in self.rows], counts={"gaps": 2})


async def test_accepted_irregularities_are_summed_and_named_in_the_last_line(
    sb: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _Counted([Column("n", "int")], [{"n": 1}])
    with caplog.at_level(logging.INFO, "echo_connhandler.pull"):
        summary = await _pull(sb, tmp_path / "x.jsonl", source)
    assert summary["tolerated"] == {"gaps": 4}
    last = caplog.records[-1].getMessage()
    assert last.startswith("_Counted: done, 2 rows in 2 chunks")
    assert "4 gaps accepted" in last


def _page(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"result": {"total": len(records), "records": records}}).encode()


@pytest.mark.parametrize(
    ("values", "descending"),
    [
        ([1.5, 2.5, "NaN", "NaN", None], False),  # numbers, then NaN, then null (ascending)
        ([None, "NaN", 2.5, 1.5, 1.5], True),  # null first, NaN, then numbers (descending)
    ],
)
def test_keys_are_ordered_as_postgresql_orders_them(values: list[Any], descending: bool) -> None:
    records = [{"v": v, "_id": n + 1} for n, v in enumerate(values)]
    spec = (("v", "float", descending), ("_id", "int", False))
    page = _page_rows(_page(records), "r", 0, 10, len(records), ("v", "_id"), spec)
    assert len(page.rows) == len(records)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        (Column("n", "int"), 2**63, r"column 'n' is int but a value is 9223372036854775808"),
        (Column("n", "int"), "99999999999999999999", r"column 'n' is int"),
        (Column("x", "float"), 2**70, r"column 'x' is float"),
        (Column("d", "date"), "2024-01-01T10:00", r"column 'd' is date"),
        (Column("d", "date"), "20240101", r"column 'd' is date"),
    ],
)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
async def test_values_a_format_cannot_hold_fail_the_same_way_in_every_format(
    sb: Sandbox, tmp_path: Path, column: Column, value: Any, match: str, fmt: str
) -> None:
    source = _Rows([column], [{column.name: value}])
    with pytest.raises(ColumnTypeError, match=match):
        await _pull(sb, tmp_path / f"x.{fmt}", source)
