"""ONS exports are checked before they are written: an .xlsx must be a workbook, a SINAPSE CSV
``;``-separated text with a header (issue 15, "ONS exports"; docs/services/ons.md, "Pulling
exports").

Each case makes the sandbox answer HTTP 200 with a wrong body (``FaultInjector.script(...,
body=...)``), runs the pull over real sockets and checks the typed error, its message (the
export, the period and the file named; the body's excerpt redacted) and that nothing was
written under the part's final file name.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler import (
    ApiError,
    OnsHttpConnProperties,
    OnsHttpHandler,
    UnexpectedContentError,
    register_secret,
)
from echo_connhandler.pull import OnsSagerReportSource, OnsSinapseExportSource, run_pull
from echo_connhandler.pull._ons import sinapse_csv_problem, xlsx_problem
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig
from echo_connhandler.sandbox._ons import XLSX_MEDIA_TYPE, build_report, sinapse_rows

FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}
CREDS = DEMO_CREDENTIALS["ons"]
SAGER_PATH = "relatorioapuracaousinasrenovaveis/exportarrelatorio"
SINAPSE_PATH = "solicitacao/pesquisa/exportar"
SAGER_NAME = "sager_20240101_20240201.xlsx"
SINAPSE_NAME = "sinapse_20240101_20240201.csv"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=7)) as running:
        yield running


def _handler(sb: Sandbox, target: str) -> OnsHttpHandler:
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sager if target == "SAGER" else sb.urls.ons_sinapse,
        user=CREDS["user"],
        password=CREDS["password"],
        login_target=target,  # type: ignore[arg-type]
        auth_url=sb.urls.ons_auth_url,
        profile_url=sb.urls.ons_profile_url,
    )
    return OnsHttpHandler(props, skip_connect=True, **FAST)


def _sager() -> OnsSagerReportSource:
    return OnsSagerReportSource(start="2024-01-01", end="2024-02-01", ids_agentes=[189])


def _sinapse(**options: Any) -> OnsSinapseExportSource:
    return OnsSinapseExportSource(start="2024-01-01", end="2024-02-01", **options)


async def _pull_fails(
    sb: Sandbox, source: OnsSagerReportSource | OnsSinapseExportSource, folder: Path
) -> pytest.ExceptionInfo[Exception]:
    """Run the pull, expect it to fail, and check that no part reached its final name."""
    async with _handler(sb, source.target) as handler:
        with pytest.raises((ApiError, UnexpectedContentError)) as info:
            await run_pull(handler, source, folder)
    for name in source.file_names:
        assert not (folder / name).exists(), name
    assert not folder.exists() or not any(folder.iterdir())
    return info


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _report() -> bytes:
    """A real SAGER report, as the sandbox builds it."""
    from echo_connhandler.sandbox._ons import _USINAS

    return build_report(7, list(_USINAS[:2]), [date(2024, 1, 1), date(2024, 1, 2)], 1)


# -- SAGER -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["application/json", XLSX_MEDIA_TYPE])
async def test_sager_json_error_with_200_is_an_api_error(
    sb: Sandbox, tmp_path: Path, content_type: str
) -> None:
    """SAGER answers 200 with a JSON error (whatever its content type): ApiError naming the
    export, its period and its file, with the redacted message of the body; nothing written."""
    secret = "sager-leaked-token-4f8a2c"
    register_secret(secret)
    body = json.dumps({"mensagem": f"Erro interno ao gerar o relatório (token {secret})"})
    sb.faults("ons").script(SAGER_PATH, body=body, content_type=content_type)
    info = await _pull_fails(sb, _sager(), tmp_path / "sager")
    assert isinstance(info.value, ApiError)
    message = str(info.value)
    assert "SAGER report of 2024-01-01..2024-01-31" in message
    assert SAGER_NAME in message
    assert "JSON error instead of an .xlsx file" in message
    assert "Erro interno ao gerar o relat" in message
    assert secret not in message
    assert info.value.status_code == 200


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x00\x01\x02garbage bytes\xff\xfe" * 20, "zip signature"),
        (b"OK", "zip signature"),
        (b'["not", "a", "report"]', "answered JSON instead of an .xlsx file"),
        (_zip({"report.csv": b"Data;Usina\r\n"}), "without [Content_Types].xml and xl/workbook"),
        (_report()[:-200], "damaged zip"),
    ],
    ids=["bytes", "short-text", "json-list", "zip-not-xlsx", "truncated-xlsx"],
)
async def test_sager_body_that_is_not_an_xlsx_is_refused(
    sb: Sandbox, tmp_path: Path, body: bytes, why: str
) -> None:
    """Arbitrary bytes, a zip of something else or a cut workbook: UnexpectedContentError."""
    sb.faults("ons").script(SAGER_PATH, body=body, content_type=XLSX_MEDIA_TYPE)
    info = await _pull_fails(sb, _sager(), tmp_path / "sager")
    assert type(info.value) is UnexpectedContentError
    message = str(info.value)
    assert why in message
    assert "SAGER report of 2024-01-01..2024-01-31" in message
    assert SAGER_NAME in message


async def test_sager_xlsx_with_a_damaged_member_is_refused(sb: Sandbox, tmp_path: Path) -> None:
    """A workbook whose structure is whole but one member's data is altered: the CRC says so."""
    good = _zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>" * 50})
    archive = zipfile.ZipFile(io.BytesIO(good))
    info = archive.getinfo("xl/workbook.xml")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    damaged = bytearray(good)
    damaged[start + 2] ^= 0xFF
    sb.faults("ons").script(SAGER_PATH, body=bytes(damaged), content_type=XLSX_MEDIA_TYPE)
    error = (await _pull_fails(sb, _sager(), tmp_path / "sager")).value
    assert type(error) is UnexpectedContentError
    assert "damaged" in str(error)


async def test_a_refused_part_is_fetched_again_on_the_next_run(sb: Sandbox, tmp_path: Path) -> None:
    """The failure is not sticky: once the service answers a workbook, the same pull writes it."""
    folder = tmp_path / "sager"
    sb.faults("ons").script(SAGER_PATH, body=b"not a workbook", content_type=XLSX_MEDIA_TYPE)
    await _pull_fails(sb, _sager(), folder)
    async with _handler(sb, "SAGER") as handler:
        summary = await run_pull(handler, _sager(), folder)
    content = (folder / SAGER_NAME).read_bytes()
    assert xlsx_problem(content) is None
    assert content[:4] == b"PK\x03\x04"
    assert len(summary["files"]) == 1
    assert summary["files"][0].endswith(SAGER_NAME)


def test_xlsx_check_accepts_real_workbooks_and_the_empty_answer() -> None:
    """The sandbox's report (written by openpyxl) passes; SAGER's empty body means no data."""
    assert xlsx_problem(_report()) is None
    assert xlsx_problem(b"") is None


# -- SINAPSE ---------------------------------------------------------------------------------------
async def test_sinapse_json_error_with_200_is_an_api_error(sb: Sandbox, tmp_path: Path) -> None:
    body = json.dumps(
        {"error": "invalid_request", "message": "Período inválido"}, ensure_ascii=False
    )
    sb.faults("ons").script(SINAPSE_PATH, body=body, content_type="text/csv; charset=utf-8")
    info = await _pull_fails(sb, _sinapse(), tmp_path / "sinapse")
    assert isinstance(info.value, ApiError)
    message = str(info.value)
    assert "SINAPSE export of 2024-01-01..2024-01-31" in message
    assert SINAPSE_NAME in message
    assert "JSON error instead of a SINAPSE CSV export" in message
    assert "Período inválido" in message


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "an empty body instead of a SINAPSE CSV export"),
        (b"\r\n", "an empty body"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text"),
        (b"PK\x03\x04\x00\x00binary\x00", "binary content"),
        (b"<html><body>Manuten\xc3\xa7\xc3\xa3o</body></html>", "markup"),
        (b"OK\r\n", "not a ';'-separated header"),
        ("Número;Origem;Destino\r\n1;ONS\r\n".encode(), "line 2 has 2 fields, the header 3"),
    ],
    ids=["empty", "blank", "png", "nul", "html-as-csv", "no-header", "ragged"],
)
async def test_sinapse_body_that_is_not_the_csv_is_refused(
    sb: Sandbox, tmp_path: Path, body: bytes, why: str
) -> None:
    """A 0-byte answer, binary data, a page served as CSV, a line that is no header, or rows
    that do not fit the header: UnexpectedContentError, nothing written."""
    sb.faults("ons").script(SINAPSE_PATH, body=body, content_type="text/csv; charset=utf-8")
    info = await _pull_fails(sb, _sinapse(), tmp_path / "sinapse")
    assert type(info.value) is UnexpectedContentError
    assert why in str(info.value)
    assert SINAPSE_NAME in str(info.value)


async def test_sinapse_export_without_rows_is_a_header_only_csv(
    sb: Sandbox, tmp_path: Path
) -> None:
    """A period without matching requests is the header line alone, written as such."""
    folder = tmp_path / "sinapse"
    async with _handler(sb, "SINAPSE") as handler:
        await run_pull(handler, _sinapse(status="Nenhum status assim"), folder)
    content = (folder / SINAPSE_NAME).read_bytes()
    assert content == "Número;Data de Abertura;Origem;Destino;Status;Assunto\r\n".encode()


def test_sinapse_check_accepts_real_exports() -> None:
    """Sandbox exports (plain and analytic, with quoted ';' inside a field, with a BOM) pass."""
    from echo_connhandler.sandbox._ons import _ECHO, _csv_bytes

    days = [date(2024, 1, day) for day in range(1, 10)]
    for analytic, columns in ((False, 6), (True, 9)):
        rows = sinapse_rows(7, _ECHO, days, analytic, {})
        header = tuple(f"c{n}" for n in range(columns))
        assert rows
        assert sinapse_csv_problem(_csv_bytes(header, rows)) is None
    quoted = 'Número;Assunto\r\n1;"a; b"\r\n'.encode()
    assert sinapse_csv_problem(quoted) is None
    assert sinapse_csv_problem(b"\xef\xbb\xbf" + quoted) is None
    assert sinapse_csv_problem("Número;Assunto;\r\n1;x;\r\n".encode()) is None
