"""ONS exports as files: the SAGER renewables report (.xlsx) and the SINAPSE search (CSV).

A range of days ``[start, end)`` is cut into calendar months (``split="month"``) or kept whole
(``split="none"``); each part is one export, written as is to a file named by the source's
template (docs/services/ons.md, "Pulling exports"). Both services take the *last day* of a
period, included (``2024-01-01`` to ``2024-01-31`` is January), so a part ``[a, b)`` is asked as
``a`` to ``b - 1 day``: consecutive parts never share a day. An empty SAGER answer (no data for
the period) is written as an empty file, so that every part of the plan has its file.

What the service delivers is checked before it is returned (docs/services/ons.md, "Pulling
exports", "What is checked"): a SAGER report must be an .xlsx (a zip holding the parts of a
workbook), a SINAPSE export ``;``-separated UTF-8 text with a header line. A JSON error or any
other body answered with HTTP 200 raises instead of being written under the part's name.
"""

from __future__ import annotations

import abc
import csv
import io
import json
import string
import zipfile
import zlib
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from echo_connhandler._exceptions import ApiError, UnexpectedContentError
from echo_connhandler._handler import HttpHandler, is_html
from echo_connhandler._ons import (
    SAGER_REPORT_ENDPOINT,
    SINAPSE_EXPORT_ENDPOINT,
    OnsHttpHandler,
    sager_report_body,
    sinapse_export_body,
)
from echo_connhandler._secrets import redact, redact_url
from echo_connhandler._time import parse_moment, utc_moment
from echo_connhandler.pull._offload import offload
from echo_connhandler.pull._plan import Chunk, FilePart, Plan, Source
from echo_connhandler.pull._registry import register_source

__all__ = [
    "MAX_PERIOD_DAYS",
    "OnsSagerReportSource",
    "OnsSinapseExportSource",
    "sinapse_csv_problem",
    "xlsx_problem",
]

#: The longest period of one export the sandbox accepts (an ASSUMPTION about ONS).
MAX_PERIOD_DAYS = 366
SPLITS = ("month", "none")
_TEMPLATE_FIELDS = frozenset({"start", "end", "last", "index"})


def _day(name: str, value: object) -> date:
    """A date, a datetime at midnight (naive = UTC) or ISO-8601 text of either."""
    moment = parse_moment(value, name)
    if not isinstance(moment, datetime):
        return moment
    utc = utc_moment(moment, name)
    if utc.time() != datetime.min.time():
        raise ValueError(
            f"{name} must be a whole day (midnight UTC): the exports work in days, got {value!r}"
        )
    return utc.date()


def _next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def _ids(name: str, values: object) -> list[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of integer ids, got {values!r}")
    result: list[int] = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"{name} must hold integer ids, got {item!r}")
        result.append(item)
    return result


def _optional_text(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be text or None, got {value!r}")
    return value


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


#: The parts every .xlsx holds (ECMA-376 Part 2: the package's content types; Part 1: the
#: workbook part, where Excel and openpyxl put it).
XLSX_PARTS = ("[Content_Types].xml", "xl/workbook.xml")
_ZIP_MAGIC = b"PK\x03\x04"
#: Keys of a JSON object that reports an error (ONS answers ``{"mensagem": ...}``, OAuth2
#: ``{"error": ...}``; docs/services/ons.md, "Exports").
_ERROR_KEYS = frozenset(
    {"mensagem", "message", "erro", "error", "errors", "erros", "detail", "title"}
)
_EXCERPT_CHARS = 200


def _excerpt(content: bytes) -> str:
    """A short, single-line view of a body: its text, or its size and first bytes."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or any(ch in text for ch in "\x00\ufffd"):
        return f"<{len(content)} bytes starting {content[:16]!r}>"
    text = " ".join(redact(text).split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"


def _json_problem(content: bytes, expected: str) -> tuple[str, bool] | None:
    """A JSON body where a file was expected: ``(reason, is_api_error)``, else ``None``."""
    head = content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head not in (b"{", b"["):
        return None
    try:
        value = json.loads(content)
    except ValueError:
        return None  # not JSON after all: judged as the file it should be
    if isinstance(value, dict) and _ERROR_KEYS & {str(k).lower() for k in value}:
        return f"the service answered a JSON error instead of {expected}", True
    return f"the service answered JSON instead of {expected}", False


def xlsx_problem(content: bytes) -> tuple[str, bool] | None:
    """Why ``content`` is not an .xlsx file (``(reason, is_api_error)``), or ``None``.

    An empty body is no problem: SAGER answers one for a period without data
    (docs/services/ons.md, "Exports"). Stdlib only: the zip's signature, its central directory,
    the CRC of every member and the parts of :data:`XLSX_PARTS`.
    """
    if not content:
        return None
    expected = "an .xlsx file"
    problem = _json_problem(content, expected)
    if problem is not None:
        return problem
    if not content.startswith(_ZIP_MAGIC):
        return f"not {expected}: it does not start with the zip signature PK\\x03\\x04", False
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
    ) as exc:
        return f"not {expected}: a damaged zip ({exc})", False
    if damaged is not None:
        return f"not {expected}: the zip member {damaged!r} is damaged (bad CRC)", False
    missing = [part for part in XLSX_PARTS if part not in names]
    if missing:
        return f"not {expected}: a zip without {' and '.join(missing)}", False
    return None


def sinapse_csv_problem(content: bytes) -> tuple[str, bool] | None:
    """Why ``content`` is not a SINAPSE export (``(reason, is_api_error)``), or ``None``.

    The export is ``;``-separated UTF-8 text (a BOM is allowed) whose first line is the header:
    at least two named columns; every row has as many fields as the header. An export without
    rows still has its header (the sandbox's behaviour, an ASSUMPTION about ONS,
    docs/services/ons.md, "Pulling exports"): an empty body is refused.
    """
    expected = "a SINAPSE CSV export"
    if not content.strip():
        return (
            f"an empty body instead of {expected}: an export without rows still has its "
            "header line",
            False,
        )
    problem = _json_problem(content, expected)
    if problem is not None:
        return problem
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"not {expected}: not UTF-8 text ({exc.reason} at byte {exc.start})", False
    if "\x00" in text:
        return f"not {expected}: binary content (NUL bytes)", False
    if text.lstrip()[:1] == "<":
        return f"not {expected}: markup (an HTML or XML page)", False
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    try:
        header = next(rows)
        names = header[:-1] if len(header) > 1 and not header[-1].strip() else header
        if len(names) < 2 or any(not name.strip() for name in names):
            return (
                f"not {expected}: the first line is not a ';'-separated header "
                f"({';'.join(header)[:80]!r})",
                False,
            )
        for number, row in enumerate(rows, start=2):
            if row and len(row) != len(header):
                return (
                    f"not {expected}: line {number} has {len(row)} fields, the header "
                    f"{len(header)}",
                    False,
                )
    except csv.Error as exc:
        return f"not {expected}: unparsable CSV ({exc})", False
    return None


def _content_error(
    response: httpx.Response, reason: str, api: bool
) -> ApiError | UnexpectedContentError:
    """The library's error for a delivered body that is not the expected file."""
    request = response.request
    where = f"{request.method} {redact_url(str(request.url))}"
    message = f"{where} -> HTTP {response.status_code}: {reason} | body: "
    message += _excerpt(response.content)
    cls = ApiError if api else UnexpectedContentError
    return cls(message, response=response)


class _OnsExportSource(Source):
    """Parts of ``[start, end)``, one export and one file each."""

    kind = "files"
    #: What ``login_target`` the handler must have.
    target = ""
    #: The export's endpoint (under the service's API root).
    endpoint = ""
    handler_class = OnsHttpHandler

    def __init__(self, *, start: object, end: object, split: str, file_name: str) -> None:
        self.start = _day("start", start)
        self.end = _day("end", end)
        if self.start >= self.end:
            raise ValueError(f"start must be before end, got start={self.start} end={self.end}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.split = split
        if split == "none" and (self.end - self.start).days > MAX_PERIOD_DAYS:
            raise ValueError(
                f"split='none' asks for {(self.end - self.start).days} days in one export, more "
                f"than the {MAX_PERIOD_DAYS} days the service accepts: use split='month'"
            )
        self.file_name = file_name
        self._parts = self._make_parts()
        self._names = [self._render(i, a, b) for i, (a, b) in enumerate(self._parts)]
        if len(set(self._names)) != len(self._names):
            raise ValueError(
                f"file_name {file_name!r} gives the same name to several parts: use "
                "{start}, {end} or {index} in it"
            )

    def _make_parts(self) -> list[tuple[date, date]]:
        if self.split == "none":
            return [(self.start, self.end)]
        parts = []
        begin = self.start
        while begin < self.end:
            finish = min(_next_month(begin), self.end)
            parts.append((begin, finish))
            begin = finish
        return parts

    def _render(self, index: int, begin: date, finish: date) -> str:
        template = self.file_name
        if not isinstance(template, str) or not template.strip():
            raise ValueError(f"file_name must be a non-empty template, got {template!r}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            unknown = {f.split(".")[0].split("[")[0] for f in fields} - _TEMPLATE_FIELDS
            if unknown or "" in fields:
                raise ValueError(f"unknown field(s) {', '.join(sorted(unknown)) or '{}'}")
            name = template.format(
                start=_midnight(begin),
                end=_midnight(finish),
                last=_midnight(finish - timedelta(days=1)),
                index=index,
            )
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            raise ValueError(
                f"file_name {template!r} is not a valid template ({exc}); it may use {{start}}, "
                "{end} (the part's first day and the day after its last), {last} (its last day) "
                "and {index}, e.g. 'sager_{start:%Y%m%d}.xlsx'"
            ) from None
        if "/" in name or "\\" in name or name in (".", "..") or not name.strip():
            raise ValueError(f"file_name must render a plain file name, got {name!r}")
        return name

    def _base_identity(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "split": self.split,
            "file_name": self.file_name,
        }

    @property
    def file_names(self) -> list[str]:
        """The files the pull writes, in plan order."""
        return list(self._names)

    def _handler(self, handler: HttpHandler) -> OnsHttpHandler:
        if not isinstance(handler, OnsHttpHandler):
            raise TypeError(
                f"an ONS {self.target} pull needs an OnsHttpHandler, got {type(handler).__name__}"
            )
        if handler.props.login_target != self.target:
            raise ValueError(
                f"an ONS {self.target} pull needs a handler with login_target='{self.target}', "
                f"got {handler.props.login_target!r}"
            )
        return handler

    async def plan(self, handler: HttpHandler) -> Plan:
        self._handler(handler)
        chunks = [
            Chunk(
                index=i,
                key=f"{begin.isoformat()}/{finish.isoformat()}",
                params={
                    "first": begin.isoformat(),
                    "last": (finish - timedelta(days=1)).isoformat(),
                    "name": name,
                },
            )
            for i, ((begin, finish), name) in enumerate(zip(self._parts, self._names, strict=True))
        ]
        return Plan(chunks, (), [self.endpoint])

    def describe(self) -> str:
        return f"ONS {self.target} {self.start}..{self.end}"

    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> FilePart:
        ons = self._handler(handler)
        first = date.fromisoformat(chunk.params["first"])
        last = date.fromisoformat(chunk.params["last"])
        name = str(chunk.params["name"])
        response = await ons.async_post(
            self.endpoint, json=self._body(first, last), idempotent=True
        )
        what = f"the {self.what} of {first}..{last} ({name})"
        if is_html(response):
            # ONS maintenance pages arrive as HTML with 200 (docs/services/ons.md, "Failures seen").
            raise UnexpectedContentError.from_response(response, f"HTML page instead of {what}")
        content = response.content
        # Off the event loop: the zip's CRC check reads every member of the workbook.
        problem = await offload(self._problem, content)
        if problem is not None:
            reason, api = problem
            raise _content_error(response, f"{what}: {reason}", api)
        return FilePart(name, content)

    #: What the export is called in errors.
    what = ""

    @staticmethod
    @abc.abstractmethod
    def _problem(content: bytes) -> tuple[str, bool] | None:
        """Why ``content`` is not this export's file (``(reason, is_api_error)``), or None."""

    @abc.abstractmethod
    def _body(self, first: date, last: date) -> dict[str, Any]:
        """One part's request body: ``first`` to ``last``, both days included."""


@register_source
class OnsSagerReportSource(_OnsExportSource):
    """SAGER renewables reports (.xlsx), one file per calendar month of ``[start, end)``.

    Args:
        start: the first day (a date, a datetime at midnight UTC, or ISO-8601 text).
        end: the day after the last, excluded: the days ``[start, end)``; as ``start``.
        tipo_relatorio: 1 (general report) or 2 (reference generation).
        ids_conjuntos: only these conjuntos (empty: no filter).
        ids_usinas: only these usinas (empty: no filter).
        ids_agentes: only these agents (empty: no filter).
        ids_fontes: only these sources (empty: no filter).
        apenas_agentes_favoritos: only the user's favourite agents.
        periodo_base: sent as ``periodoBase``.
        split: ``"month"`` (one export per calendar month) or ``"none"`` (one export; at most
            366 days).
        file_name: the files' names, a :meth:`str.format` template of ``start`` and ``end`` (the
            part's first day and the day after its last, as datetimes), ``last`` (its last day)
            and ``index``.

    A period without data gets an empty file (SAGER answers an empty body). Any other answer
    must be an .xlsx (:func:`xlsx_problem`): a JSON error raises :class:`ApiError`, anything
    else :class:`UnexpectedContentError`, and no file is written for that part.
    """

    name = "ons_sager_report"
    target = "SAGER"
    endpoint = SAGER_REPORT_ENDPOINT

    def __init__(
        self,
        *,
        start: date | datetime | str,
        end: date | datetime | str,
        tipo_relatorio: int = 1,
        ids_conjuntos: Sequence[int] = (),
        ids_usinas: Sequence[int] = (),
        ids_agentes: Sequence[int] = (),
        ids_fontes: Sequence[int] = (),
        apenas_agentes_favoritos: bool = False,
        periodo_base: str | None = None,
        split: str = "month",
        file_name: str = "sager_{start:%Y%m%d}_{end:%Y%m%d}.xlsx",
    ) -> None:
        if isinstance(tipo_relatorio, bool) or tipo_relatorio not in (1, 2):
            raise ValueError(
                "tipo_relatorio must be 1 (geral) or 2 (geração de referência), "
                f"got {tipo_relatorio!r}"
            )
        self.tipo_relatorio = tipo_relatorio
        self.ids_conjuntos = _ids("ids_conjuntos", ids_conjuntos)
        self.ids_usinas = _ids("ids_usinas", ids_usinas)
        self.ids_agentes = _ids("ids_agentes", ids_agentes)
        self.ids_fontes = _ids("ids_fontes", ids_fontes)
        if not isinstance(apenas_agentes_favoritos, bool):
            raise ValueError(
                f"apenas_agentes_favoritos must be True or False, got {apenas_agentes_favoritos!r}"
            )
        self.apenas_agentes_favoritos = apenas_agentes_favoritos
        self.periodo_base = _optional_text("periodo_base", periodo_base)
        super().__init__(start=start, end=end, split=split, file_name=file_name)

    def identity(self) -> dict[str, Any]:
        return {
            **self._base_identity(),
            "tipo_relatorio": self.tipo_relatorio,
            "ids_conjuntos": self.ids_conjuntos,
            "ids_usinas": self.ids_usinas,
            "ids_agentes": self.ids_agentes,
            "ids_fontes": self.ids_fontes,
            "apenas_agentes_favoritos": self.apenas_agentes_favoritos,
            "periodo_base": self.periodo_base,
        }

    what = "SAGER report"
    _problem = staticmethod(xlsx_problem)

    def _body(self, first: date, last: date) -> dict[str, Any]:
        return sager_report_body(
            first,
            last,
            tipo_relatorio=self.tipo_relatorio,
            ids_conjuntos=self.ids_conjuntos,
            ids_usinas=self.ids_usinas,
            ids_agentes=self.ids_agentes,
            ids_fontes=self.ids_fontes,
            apenas_agentes_favoritos=self.apenas_agentes_favoritos,
            periodo_base=self.periodo_base,
        )


@register_source
class OnsSinapseExportSource(_OnsExportSource):
    """SINAPSE search exports (``;``-separated CSV), one file per calendar month.

    Args:
        start: the first day (a date, a datetime at midnight UTC, or ISO-8601 text).
        end: the day after the last, excluded: the days ``[start, end)``; as ``start``.
        analitico: the analytic export (``solicitacao/pesquisa/exportar-analitico``).
        origem: only requests from this origin (``None``: not sent).
        destino: only requests to this destination (``None``: not sent).
        status: only requests in this status (``None``: not sent).
        mensagem: only requests whose subject or message holds this text (``None``: not sent).
        split: as in :class:`OnsSagerReportSource`.
        file_name: as in :class:`OnsSagerReportSource`, ending in ``.csv`` by default.

    Each answer must be ``;``-separated UTF-8 text with a header line
    (:func:`sinapse_csv_problem`); a period without requests gives a header-only file. A JSON
    error raises :class:`ApiError`; an empty body or anything else
    :class:`UnexpectedContentError`, and no file is written for that part.
    """

    name = "ons_sinapse_export"
    target = "SINAPSE"
    endpoint = SINAPSE_EXPORT_ENDPOINT

    def __init__(
        self,
        *,
        start: date | datetime | str,
        end: date | datetime | str,
        analitico: bool = False,
        origem: str | None = None,
        destino: str | None = None,
        status: str | None = None,
        mensagem: str | None = None,
        split: str = "month",
        file_name: str = "sinapse_{start:%Y%m%d}_{end:%Y%m%d}.csv",
    ) -> None:
        if not isinstance(analitico, bool):
            raise ValueError(f"analitico must be True or False, got {analitico!r}")
        self.analitico = analitico
        if analitico:
            self.endpoint = SINAPSE_EXPORT_ENDPOINT + "-analitico"
        self.origem = _optional_text("origem", origem)
        self.destino = _optional_text("destino", destino)
        self.status = _optional_text("status", status)
        self.mensagem = _optional_text("mensagem", mensagem)
        super().__init__(start=start, end=end, split=split, file_name=file_name)

    def identity(self) -> dict[str, Any]:
        return {
            **self._base_identity(),
            "analitico": self.analitico,
            "origem": self.origem,
            "destino": self.destino,
            "status": self.status,
            "mensagem": self.mensagem,
        }

    what = "SINAPSE export"
    _problem = staticmethod(sinapse_csv_problem)

    def _body(self, first: date, last: date) -> dict[str, Any]:
        return sinapse_export_body(
            first,
            last,
            origem=self.origem,
            destino=self.destino,
            status=self.status,
            mensagem=self.mensagem,
        )
