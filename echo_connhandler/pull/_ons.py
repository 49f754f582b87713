"""ONS exports as files: the SAGER renewables report (.xlsx) and the SINAPSE search (CSV).

A range of days ``[start, end)`` is cut into calendar months (``split="month"``) or kept whole
(``split="none"``); each part is one export, written as is to a file named by the source's
template (docs/services/ons.md, "Pulling exports"). Both services take the *last day* of a
period, included (``2024-01-01`` to ``2024-01-31`` is January), so a part ``[a, b)`` is asked as
``a`` to ``b - 1 day``: consecutive parts never share a day. An empty SAGER answer (no data for
the period) is written as an empty file, so that every part of the plan has its file.
"""

from __future__ import annotations

import abc
import re
import string
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from echo_connhandler._handler import HttpHandler
from echo_connhandler._ons import SAGER_REPORT_ENDPOINT, SINAPSE_EXPORT_ENDPOINT, OnsHttpHandler
from echo_connhandler.pull._plan import Chunk, FilePart, Plan, Source

__all__ = ["MAX_PERIOD_DAYS", "OnsSagerReportSource", "OnsSinapseExportSource"]

#: The longest period of one export the sandbox accepts (an ASSUMPTION about ONS).
MAX_PERIOD_DAYS = 366
SPLITS = ("month", "none")
_TEMPLATE_FIELDS = frozenset({"start", "end", "last", "index"})


def _day(name: str, value: object) -> date:
    """A date, a datetime at midnight (naive = UTC) or ISO-8601 text of either."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                date.fromisoformat(text)
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)
                else datetime.fromisoformat(text)
            )
        except ValueError:
            raise ValueError(
                f"{name} must be a date, a datetime or ISO-8601 text (e.g. '2024-01-01'), "
                f"got {value!r}"
            ) from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        if moment.time() != datetime.min.time():
            raise ValueError(
                f"{name} must be a whole day (midnight UTC): the exports work in days, "
                f"got {value!r}"
            )
        return moment.date()
    if isinstance(value, date):
        return value
    raise ValueError(f"{name} must be a date, a datetime or ISO-8601 text, got {value!r}")


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


class _OnsExportSource(Source):
    """Parts of ``[start, end)``, one export and one file each."""

    kind = "files"
    #: What ``login_target`` the handler must have.
    target = ""
    name = ""

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
        return Plan(chunks, (), [self.name])

    def describe(self) -> str:
        return f"ONS {self.target} {self.start}..{self.end}"

    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> FilePart:
        ons = self._handler(handler)
        first = date.fromisoformat(chunk.params["first"])
        last = date.fromisoformat(chunk.params["last"])
        return FilePart(str(chunk.params["name"]), await self._export(ons, first, last))

    @abc.abstractmethod
    async def _export(self, handler: OnsHttpHandler, first: date, last: date) -> bytes:
        """One part's export: ``first`` to ``last``, both days included."""


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

    A period without data gets an empty file (SAGER answers an empty body).
    """

    target = "SAGER"
    name = SAGER_REPORT_ENDPOINT

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

    async def _export(self, handler: OnsHttpHandler, first: date, last: date) -> bytes:
        return await handler.async_export_sager_report(
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
    """

    target = "SINAPSE"
    name = SINAPSE_EXPORT_ENDPOINT

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
            self.name = SINAPSE_EXPORT_ENDPOINT + "-analitico"
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

    async def _export(self, handler: OnsHttpHandler, first: date, last: date) -> bytes:
        return await handler.async_export_sinapse(
            first,
            last,
            analitico=self.analitico,
            origem=self.origem,
            destino=self.destino,
            status=self.status,
            mensagem=self.mensagem,
        )
