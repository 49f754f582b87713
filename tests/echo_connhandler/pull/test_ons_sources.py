"""The ONS export sources (SAGER .xlsx, SINAPSE CSV) with the pull engine, against the sandbox.

Each file is compared with a direct export of the same period through the handler; the days the
files hold are read back to show that months neither overlap nor leave a day out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from echo_connhandler import (
    BazeHttpHandler,
    HttpConnProperties,
    HttpStatusError,
    OnsHttpConnProperties,
    OnsHttpHandler,
)
from echo_connhandler.pull import OnsSagerReportSource, OnsSinapseExportSource, run_pull
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
CREDS = DEMO_CREDENTIALS["ons"]
SAGER_PATH = "/api/sager/renovaveis/api/relatorioapuracaousinasrenovaveis/exportarrelatorio"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=5)) as running:
        yield running


def _sager(sb: Sandbox) -> OnsHttpHandler:
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sager,
        user=CREDS["user"],
        password=CREDS["password"],
        login_target="SAGER",
        auth_url=sb.urls.ons_auth_url,
    )
    return OnsHttpHandler(props, skip_connect=True, **FAST)


def _sinapse(sb: Sandbox) -> OnsHttpHandler:
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sinapse,
        user=CREDS["user"],
        password=CREDS["password"],
        login_target="SINAPSE",
        auth_url=sb.urls.ons_auth_url,
        profile_url=sb.urls.ons_profile_url,
    )
    return OnsHttpHandler(props, skip_connect=True, **FAST)


def _xlsx_rows(content: bytes) -> list[tuple[Any, ...]]:
    """The cells of a report (its bytes differ between two exports: the .xlsx, a zip, holds the
    time it was written)."""
    assert content[:2] == b"PK"
    workbook = load_workbook(io.BytesIO(content), read_only=True)
    sheet = workbook.active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    workbook.close()
    return rows


def _xlsx_days(content: bytes) -> list[date]:
    rows = _xlsx_rows(content)
    assert rows[0][0] == "Data"
    return [cell.date() if isinstance(cell, datetime) else cell for cell, *_ in rows[1:]]


def _csv_days(content: bytes) -> list[date]:
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8")), delimiter=";"))
    return [datetime.strptime(r["Data de Abertura"], "%d/%m/%Y %H:%M").date() for r in rows]


def _all_days(first: date, end: date) -> set[date]:
    return {first + timedelta(days=n) for n in range((end - first).days)}


async def test_sager_one_file_per_month_equal_to_direct_exports(
    sb: Sandbox, tmp_path: Path
) -> None:
    source = OnsSagerReportSource(start="2024-01-15", end=date(2024, 4, 1), ids_agentes=[189])
    folder = tmp_path / "sager"
    async with _sager(sb) as handler:
        summary = await run_pull(handler, source, folder, concurrency=3)
        direct = [
            await handler.async_export_sager_report(
                first, last, ids_agentes=[189], tipo_relatorio=1
            )
            for first, last in [
                (date(2024, 1, 15), date(2024, 1, 31)),
                (date(2024, 2, 1), date(2024, 2, 29)),
                (date(2024, 3, 1), date(2024, 3, 31)),
            ]
        ]
    names = [
        "sager_20240115_20240201.xlsx",
        "sager_20240201_20240301.xlsx",
        "sager_20240301_20240401.xlsx",
    ]
    assert summary["format"] == "files"
    assert summary["chunks"] == 3
    assert summary["files"] == [str(folder / n) for n in names]
    assert source.file_names == names
    assert sorted(p.name for p in folder.iterdir()) == names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sager"]  # no checkpoint left
    contents = [(folder / n).read_bytes() for n in names]
    assert summary["bytes"] == sum(map(len, contents))
    assert [_xlsx_rows(c) for c in contents] == [_xlsx_rows(c) for c in direct]
    days = [day for content in contents for day in _xlsx_days(content)]
    usinas = 3  # agent 189's usinas in the sandbox
    assert len(days) == len(_all_days(date(2024, 1, 15), date(2024, 4, 1))) * usinas
    assert set(days) == _all_days(date(2024, 1, 15), date(2024, 4, 1))  # none twice, none lost
    assert _xlsx_days(contents[0])[0] == date(2024, 1, 15)
    assert _xlsx_days(contents[0])[-1] == date(2024, 1, 31)


async def test_sinapse_months_equal_direct_exports(sb: Sandbox, tmp_path: Path) -> None:
    source = OnsSinapseExportSource(
        start=datetime(2023, 11, 1), end="2024-02-01T00:00:00Z", analitico=True, destino="ONS"
    )
    async with _sinapse(sb) as handler:
        summary = await run_pull(handler, source, tmp_path / "out")
        direct = [
            await handler.async_export_sinapse(first, last, analitico=True, destino="ONS")
            for first, last in [
                ("2023-11-01", "2023-11-30"),
                ("2023-12-01", "2023-12-31"),
                ("2024-01-01", "2024-01-31"),
            ]
        ]
    names = [
        "sinapse_20231101_20231201.csv",
        "sinapse_20231201_20240101.csv",
        "sinapse_20240101_20240201.csv",
    ]
    assert [Path(f).name for f in summary["files"]] == names
    contents = [(tmp_path / "out" / n).read_bytes() for n in names]
    assert contents == direct
    header = contents[0].decode("utf-8").splitlines()[0]
    assert header.startswith("Número;Data de Abertura;Origem;Destino;Status;Assunto;Mensagem")
    for content, month in zip(contents, (11, 12, 1), strict=True):
        days = _csv_days(content)
        assert days
        assert {d.month for d in days} == {month}
        assert all(row.split(";")[3] == "ONS" for row in content.decode().splitlines()[1:])


async def test_one_export_for_the_whole_range(sb: Sandbox, tmp_path: Path) -> None:
    source = OnsSinapseExportSource(start="2024-01-01", end="2024-03-10", split="none")
    async with _sinapse(sb) as handler:
        summary = await run_pull(handler, source, tmp_path / "out")
        direct = await handler.async_export_sinapse("2024-01-01", "2024-03-09")
    assert summary["chunks"] == 1
    file = tmp_path / "out" / "sinapse_20240101_20240310.csv"
    assert summary["files"] == [str(file)]
    assert file.read_bytes() == direct
    days = _csv_days(direct)
    assert min(days) >= date(2024, 1, 1)
    assert max(days) == date(2024, 3, 9)


async def test_a_period_without_data_is_an_empty_file(sb: Sandbox, tmp_path: Path) -> None:
    source = OnsSagerReportSource(start="2019-11-01", end="2020-02-01")
    async with _sager(sb) as handler:
        summary = await run_pull(handler, source, tmp_path)
    files = [Path(f) for f in summary["files"]]
    assert [f.name for f in files] == [
        "sager_20191101_20191201.xlsx",
        "sager_20191201_20200101.xlsx",
        "sager_20200101_20200201.xlsx",
    ]
    assert [f.read_bytes() for f in files[:2]] == [b"", b""]  # SAGER has no data before 2020
    assert files[2].read_bytes()[:2] == b"PK"


async def test_templates_with_last_day_and_index(sb: Sandbox, tmp_path: Path) -> None:
    source = OnsSagerReportSource(
        start="2024-02-01",
        end="2024-04-01",
        tipo_relatorio=2,
        ids_usinas=[1001],
        file_name="{index:02d}-{start:%Y-%m-%d}_{last:%Y-%m-%d}.xlsx",
    )
    async with _sager(sb) as handler:
        summary = await run_pull(handler, source, tmp_path)
    assert [Path(f).name for f in summary["files"]] == [
        "00-2024-02-01_2024-02-29.xlsx",
        "01-2024-03-01_2024-03-31.xlsx",
    ]
    workbook = load_workbook(io.BytesIO(Path(summary["files"][0]).read_bytes()), read_only=True)
    sheet = workbook.active
    assert sheet is not None
    header = next(sheet.iter_rows(values_only=True))
    workbook.close()
    assert "Geração de Referência (MWmed)" in header


async def test_a_second_run_restores_a_deleted_file(sb: Sandbox, tmp_path: Path) -> None:
    source = OnsSagerReportSource(start="2024-01-01", end="2024-04-01")
    folder = tmp_path / "sager"
    async with _sager(sb) as handler:
        first = await run_pull(handler, source, folder)
        before = {Path(f).name: _xlsx_rows(Path(f).read_bytes()) for f in first["files"]}
        Path(first["files"][1]).unlink()
        second = await run_pull(handler, source, folder)
    assert second["files"] == first["files"]
    assert {p.name: _xlsx_rows(p.read_bytes()) for p in folder.iterdir()} == before
    assert sb.faults("ons").stats["requests"][SAGER_PATH] == 6


async def test_a_two_year_range_is_split_below_the_period_limit(
    sb: Sandbox, tmp_path: Path
) -> None:
    """The sandbox refuses one export of more than 366 days; months always fit."""
    async with _sinapse(sb) as handler:
        with pytest.raises(HttpStatusError, match="366"):
            await handler.async_export_sinapse("2022-01-01", "2023-12-31")
        summary = await run_pull(
            handler,
            OnsSinapseExportSource(start="2022-01-01", end="2024-01-01"),
            tmp_path,
            concurrency=8,
        )
    assert summary["chunks"] == 24
    assert len({Path(f).name for f in summary["files"]}) == 24
    with pytest.raises(ValueError, match="split"):
        OnsSinapseExportSource(start="2022-01-01", end="2024-01-01", split="none")


async def test_the_handler_must_match_the_export(sb: Sandbox, tmp_path: Path) -> None:
    async with _sinapse(sb) as handler:
        with pytest.raises(ValueError, match="login_target='SAGER'"):
            await run_pull(
                handler, OnsSagerReportSource(start="2024-01-01", end="2024-02-01"), tmp_path
            )
    baze = BazeHttpHandler(HttpConnProperties(host=sb.urls.bazefield), skip_connect=True)
    with pytest.raises(TypeError, match="OnsHttpHandler"):
        await run_pull(baze, OnsSinapseExportSource(start="2024-01-01", end="2024-02-01"), tmp_path)


def test_identities_are_json_with_iso_dates() -> None:
    sager = OnsSagerReportSource(
        start=datetime(2024, 1, 1, tzinfo=UTC), end=date(2024, 3, 1), ids_usinas=(1001, 1002)
    )
    identity = sager.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["start"] == "2024-01-01"
    assert identity["end"] == "2024-03-01"
    assert identity["ids_usinas"] == [1001, 1002]
    sinapse = OnsSinapseExportSource(start="2024-01-01", end="2024-03-01", status="Aberta")
    assert json.loads(json.dumps(sinapse.identity())) == sinapse.identity()
    assert sinapse.identity()["status"] == "Aberta"


SAGER_ARGS: dict[str, Any] = {"start": "2024-01-01", "end": "2024-03-01"}


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"start": "2024-13-01"}, "start"),
        ({"start": 20240101}, "start"),
        ({"start": "2024-01-01T10:00:00"}, "start"),
        ({"end": datetime(2024, 3, 1, 12)}, "end"),
        ({"end": "2024-01-01"}, "start must be before end"),
        ({"end": "2023-12-01"}, "start must be before end"),
        ({"split": "week"}, "split"),
        ({"start": "2023-01-01", "split": "none"}, "split"),
        ({"tipo_relatorio": 3}, "tipo_relatorio"),
        ({"tipo_relatorio": True}, "tipo_relatorio"),
        ({"ids_usinas": "1001"}, "ids_usinas"),
        ({"ids_conjuntos": ["501"]}, "ids_conjuntos"),
        ({"ids_agentes": [True]}, "ids_agentes"),
        ({"ids_fontes": None}, "ids_fontes"),
        ({"apenas_agentes_favoritos": "yes"}, "apenas_agentes_favoritos"),
        ({"periodo_base": 202401}, "periodo_base"),
        ({"file_name": "sager.xlsx"}, "file_name"),
        ({"file_name": "sager_{year}.xlsx"}, "file_name"),
        ({"file_name": "sager_{}.xlsx"}, "file_name"),
        ({"file_name": "{start:%Y}/{index}.xlsx"}, "file_name"),
        ({"file_name": "sager_{start:%Y}.xlsx"}, "file_name"),  # two parts, one name
        ({"file_name": ""}, "file_name"),
    ],
)
def test_bad_sager_arguments_are_named(overrides: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        OnsSagerReportSource(**{**SAGER_ARGS, **overrides})


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"analitico": 1}, "analitico"),
        ({"origem": 5}, "origem"),
        ({"destino": ["ONS"]}, "destino"),
        ({"status": b"Aberta"}, "status"),
        ({"mensagem": 1.5}, "mensagem"),
        ({"split": None}, "split"),
        ({"file_name": "{index"}, "file_name"),
    ],
)
def test_bad_sinapse_arguments_are_named(overrides: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        OnsSinapseExportSource(**{**SAGER_ARGS, **overrides})


def test_a_single_part_needs_no_placeholder() -> None:
    source = OnsSinapseExportSource(start="2024-01-01", end="2024-02-01", file_name="january.csv")
    assert source.file_names == ["january.csv"]
