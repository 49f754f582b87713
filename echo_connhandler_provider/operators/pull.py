"""Operators that pull from CCEE, Bazefield and ONS into files, in the worker or the triggerer.

Each operator names a source of :mod:`echo_connhandler.pull` and its arguments; the shared
:class:`PullOperator` runs the pull:

* ``deferrable=True``: the task defers once to a :class:`~echo_connhandler_provider.triggers.
  pull.PullTrigger` that fetches the **whole** pull in the triggerer (one login, every chunk
  into the checkpoint as delivered: the triggerer only waits on the network), then resumes in
  ``execute_complete``, which decodes, checks, encodes and assembles those pages in the worker
  (decoding in worker processes for a large pull) and returns the pull's summary (the task's
  XCom; ``phases`` says where each phase ran and how long it took), or raises the library's error
  again, with its type and message. The output must be a path or URL both the triggerer and
  the workers reach.
* ``deferrable=False`` (default: ``[operators] default_deferrable``): the same engine runs in
  the worker (``asyncio.run`` of connect, pull, close).

Both ways build the source from the same JSON arguments, so they share the checkpoint and
write the same file. A task retry, or a triggerer restart, resumes from the checkpoint.

Both ways end in the worker, which keeps the summary for lineage (``get_openlineage_facets_on_
complete``, reported by Airflow's OpenLineage provider: :mod:`echo_connhandler_provider.
_lineage`) and gives it to the events of the task's ``outlets`` assets (:func:`asset_extra`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset, BaseOperator, Context

from echo_connhandler import parse_moment
from echo_connhandler.pull import (
    BazefieldTimeseriesSource,
    CceeDatastoreSource,
    OnsSagerReportSource,
    OnsSinapseExportSource,
    PullSummary,
    Source,
)
from echo_connhandler_provider._checks import (
    check_path_text,
    has_text,
    id_filter,
    int_list,
    str_list,
)
from echo_connhandler_provider._defaults import default_deferrable
from echo_connhandler_provider._jobs import (
    PROGRESS_EVERY_S,
    hook_for_source,
    rebuild_error,
    run_job,
    run_pull_job,
)
from echo_connhandler_provider._lineage import (
    InputKind,
    LineageOnSuccess,
    connection_base_url,
    lineage_enabled,
    pull_lineage,
)
from echo_connhandler_provider.triggers.pull import PullTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

#: A deferred pull of at least this many chunks is decoded in worker processes when the task
#: resumes (fewer: in a thread of the task's process; starting the pool is not worth it).
PROCESS_DECODE_CHUNKS = 16

__all__ = [
    "BazefieldTimeseriesOperator",
    "CceeDatastoreOperator",
    "OnsSagerReportOperator",
    "OnsSinapseExportOperator",
    "PullOperator",
    "asset_extra",
]


def asset_extra(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a pull tells the events of its ``outlets`` assets (their ``extra``): plain JSON
    from its summary, nothing secret.

    ``output`` (the absolute path or URL written), ``format``, ``rows``, ``bytes`` (the
    output's size, or the files' total), ``chunks``, ``files`` (a pull of files), ``source_ids``
    and ``source_versions`` (what was read, and its version where the service has one).
    """
    return {
        "output": str(summary["output"]),
        "format": str(summary["format"]),
        "rows": int(summary["rows"]),
        "bytes": int(summary["bytes"]),
        "chunks": int(summary["chunks"]),
        "files": [str(f) for f in summary.get("files") or []],
        "source_ids": [str(s) for s in summary.get("source_ids") or []],
        "source_versions": {
            str(k): str(v) for k, v in (summary.get("source_versions") or {}).items()
        },
    }


class PullOperator(LineageOnSuccess, BaseOperator):
    """Base of the pull operators: a source of :mod:`echo_connhandler.pull` into ``output``.

    Args:
        conn_id: the Airflow connection (of the source's connection type).
        output: a file (rows) or a folder (files: ONS exports): a local path, or an fsspec URL
            (``s3://...``). Deferred, it must be a path or URL the triggerer reaches too. An
            ``ObjectStoragePath`` works with ``deferrable=False``.
        format: ``jsonl``, ``jsonl.gz``, ``csv``, ``csv.gz`` or ``parquet``; default from the
            output's name. Ignored for sources of files.
        concurrency: requests in flight; None takes the connection's ``concurrency`` option.
        deferrable: run the whole pull in the triggerer (one deferral).
        progress_every: seconds between progress lines in the task log.
        **kwargs: the arguments of ``BaseOperator`` (``task_id``, ``retries``, ...).

    Returns (XCom): the pull's summary (:class:`echo_connhandler.pull.PullSummary`): output,
    format, rows, chunks, bytes, seconds, retries, chunks_resumed, source_ids,
    source_versions, columns, files, tolerated, stage, phases.

    Each :class:`~airflow.sdk.Asset` of ``outlets`` gets :func:`asset_extra` of the summary in
    its asset event's ``extra``; with Airflow's OpenLineage provider configured, the task
    reports what it read and wrote (docs/airflow/lineage-and-assets.md).
    """

    #: The pull source (:mod:`echo_connhandler.pull`) whose arguments this operator gives.
    source_class: ClassVar[type[Source]]
    #: How the summary's ``source_ids`` name the inputs in lineage: ids of the service, or
    #: endpoints under the connection's base URL (:func:`~echo_connhandler_provider._lineage.
    #: pull_lineage`).
    lineage_inputs: ClassVar[InputKind] = "ids"
    template_fields: Sequence[str] = ("conn_id", "output_path", "format")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        output: Any,
        format: str | None = None,
        concurrency: int | None = None,
        deferrable: bool = default_deferrable(),
        progress_every: float = PROGRESS_EVERY_S,
        **kwargs: Any,
    ) -> None:
        # The source's own tuning arguments (Bazefield's window, ...) pass through as given:
        # the source checks them, and its signature stays their one definition.
        source_parameters = inspect.signature(self.source_class).parameters
        self.source_options = {k: kwargs.pop(k) for k in list(kwargs) if k in source_parameters}
        super().__init__(**kwargs)
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an integer >= 1 or None, got {concurrency!r}")
        check_path_text(output, "output")  # a bad value fails when the DAG is parsed
        self.conn_id = conn_id
        # ``output`` is BaseOperator's XComArg property: the value lives in output_path.
        self.output_path = output
        self.format = format
        self.concurrency = concurrency
        self.deferrable = deferrable
        self.progress_every = progress_every
        # Set in the worker when the pull is done (execute or execute_complete): what lineage
        # reports once the task has succeeded. No secret: the summary, and the connection's
        # base URL reduced to scheme, host, port and path.
        self._pull_summary: dict[str, Any] | None = None
        self._lineage_base_url: str | None = None

    @property
    def conn_type(self) -> str:
        """The connection type of the hook the source reads through."""
        return hook_for_source(self.source_class).conn_type

    def source_kwargs(self, context: Context) -> dict[str, Any]:
        """The source's keyword arguments for this run (rendered templates, dates resolved)."""
        raise NotImplementedError

    def _interval(self, context: Context, start: Any, end: Any) -> tuple[Any, Any]:
        """``start``/``end``, each defaulting to the run's data interval start/end."""
        if start is None:
            start = context.get("data_interval_start")
        if end is None:
            end = context.get("data_interval_end")
        if start is None or end is None:
            raise ValueError(
                f"{type(self).__name__}: give start and end (this run has no data interval "
                "to take them from)"
            )
        return parse_moment(start, "start"), parse_moment(end, "end")

    def _output_text(self) -> str:
        output = self.output_path
        check_path_text(output, "output")  # as rendered
        if isinstance(output, str) and output:
            return output
        if isinstance(output, os.PathLike):
            return str(os.fspath(output))
        raise TypeError(
            f"output must be a path or URL string (a deferred pull stores only plain values), "
            f"or with deferrable=False an ObjectStoragePath; got {type(output).__name__}"
        )

    def execute(self, context: Context) -> dict[str, Any]:
        # Built here, in the worker: bad arguments fail before anything is deferred or sent.
        source = self.source_class(**self.source_options, **self.source_kwargs(context))
        arguments = source.arguments()
        if self.deferrable:
            output = self._output_text()
            self.log.info(
                "Deferring: %s into %s is fetched by the triggerer, then finished here",
                source.describe(),
                output,
            )
            self.defer(
                trigger=PullTrigger(
                    conn_id=self.conn_id,
                    source=source.name,
                    arguments=arguments,
                    output=output,
                    format=self.format,
                    concurrency=self.concurrency,
                    progress_every=self.progress_every,
                ),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        output = self.output_path if hasattr(self.output_path, "fs") else self._output_text()
        # The pull says what it does (planning, progress, its summary) on this task's log.
        summary: PullSummary = run_job(
            run_pull_job(
                conn_id=self.conn_id,
                source=source.name,
                arguments=arguments,
                output=output,
                format=self.format,
                concurrency=self.concurrency,
                log=self.log,
                progress_every=self.progress_every,
            )
        )
        return self._done(context, dict(summary))

    def execute_complete(
        self, context: Context, event: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger: finish the pull here (decode, check, encode and assemble
        the pages the triggerer kept as delivered), or raise the library's error again."""
        if event is None:
            raise RuntimeError(f"{type(self).__name__} resumed without a trigger event")
        if event.get("status") != "success":
            raise rebuild_error(event)
        fetched = dict(event["summary"])
        if fetched.get("stage") != "fetched":
            # A trigger that did the whole pull (an earlier provider version).
            return self._done(context, fetched)
        self.log.info(
            "The triggerer fetched %d chunks (%d bytes as delivered) in %s s: decoding and "
            "writing them here",
            fetched["chunks"],
            fetched["bytes"],
            fetched["seconds"],
        )
        summary: PullSummary = run_job(
            run_pull_job(
                conn_id=self.conn_id,
                source=str(event["source"]),
                arguments=dict(event["arguments"]),
                output=self._output_text(),
                format=self.format,
                concurrency=self.concurrency,
                log=self.log,
                progress_every=self.progress_every,
                where="worker",
                # Many pages: decoded in worker processes, on the worker's cores.
                decode="process" if fetched["chunks"] >= PROCESS_DECODE_CHUNKS else "thread",
            )
        )
        result = dict(summary)
        result["phases"] = [*fetched.get("phases", []), *summary["phases"]]
        result["seconds"] = round(float(fetched["seconds"]) + summary["seconds"], 3)
        result["retries"] = int(fetched["retries"]) + summary["retries"]
        # Resumed: what the triggerer found done by an earlier attempt (the chunks it kept for
        # this task are not resumed), unless this task had to pull afresh.
        if not any(p["phase"] == "fetch" for p in summary["phases"]):
            result["chunks_resumed"] = int(fetched["chunks_resumed"])
        return self._done(context, result)

    def _done(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        """The pull is done, in the worker: keep its summary for lineage and give it to the
        events of the ``outlets`` assets. Returns the summary (the task's XCom)."""
        self._pull_summary = summary
        if lineage_enabled():
            # Read now, in the task's process: the OpenLineage listener may extract lineage in
            # a forked process, which must not ask the supervisor for a connection.
            self._lineage_base_url = connection_base_url(self.conn_type, self.conn_id)
        outlets = [o for o in self.outlets if isinstance(o, Asset)]
        if outlets:
            # An AssetAlias names no asset by itself: its events are the DAG author's to add.
            extra = asset_extra(summary)
            outlet_events = context["outlet_events"]
            for asset in outlets:
                outlet_events[asset].extra.update(extra)
        return summary

    def get_openlineage_facets_on_complete(
        self, task_instance: Any
    ) -> OperatorLineage[Any, Any] | None:
        """What the pull read and wrote (Airflow's OpenLineage provider calls this in the
        worker once the task has succeeded, after ``execute`` or ``execute_complete``)."""
        if self._pull_summary is None:
            return None
        return pull_lineage(
            self._pull_summary, base_url=self._lineage_base_url, inputs=self.lineage_inputs
        )


class CceeDatastoreOperator(PullOperator):
    """Rows of CCEE Dados Abertos datastore resources into one file.

    ``output``, ``format``, ``concurrency``, ``deferrable`` and ``progress_every`` are those of
    :class:`PullOperator`.

    Args:
        conn_id: a ``ccee`` connection (default ``ccee_default``).
        dataset: the CKAN dataset (``pld_horario``); with ``years``, only those years'
            resources (a year without a resource fails the task).
        years: years as a list, an int, or text (``"2024"``, ``"2023,2024"``: templates). Each
            must be a whole number: a bool, a float with a fraction (``2024.9``) or text that
            is not an integer is a ``ValueError``, never truncated.
        resource_ids: resources by id, instead of ``dataset``/``years``.
        filters: equality filters, as in CKAN's ``datastore_search``.
        q: full-text search, as in CKAN's ``datastore_search``.
        fields: the columns to read (default: all).
        sort: ``"COL asc|desc, ..."``; ``_id`` is added last so that pages never overlap.
        page_size: rows per request (default 10 000; CKAN caps it, the applied value is used).
        **kwargs: the arguments of :class:`PullOperator` and ``BaseOperator``.
    """

    source_class = CceeDatastoreSource
    template_fields: Sequence[str] = (
        *PullOperator.template_fields,
        "dataset",
        "years",
        "resource_ids",
        "filters",
        "q",
        "sort",
        "fields",
    )
    template_fields_renderers = {"filters": "json"}

    def __init__(
        self,
        *,
        conn_id: str | None = "ccee_default",
        dataset: str | None = None,
        years: Sequence[int] | int | str | None = None,
        resource_ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        q: str | None = None,
        fields: Sequence[str] | None = None,
        sort: str | None = None,
        page_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id=conn_id, **kwargs)
        if not has_text(years):
            int_list(years, "years")  # a bad value fails when the DAG is parsed
        self.dataset = dataset
        self.years = years
        self.resource_ids = resource_ids
        self.filters = filters
        self.q = q
        self.fields = fields
        self.sort = sort
        self.page_size = page_size

    def source_kwargs(self, context: Context) -> dict[str, Any]:
        years = int_list(self.years, "years")
        if years == []:  # e.g. a template that rendered empty: never a silent empty pull
            raise ValueError(f"years is empty ({self.years!r}); give None for every year")
        kwargs: dict[str, Any] = {
            "dataset": self.dataset or None,
            "years": years,
            "resource_ids": str_list(self.resource_ids, "resource_ids"),
            "filters": self.filters or None,
            "q": self.q or None,
            "sort": self.sort or None,
            "fields": str_list(self.fields, "fields"),
            "page_size": self.page_size,
        }
        return {k: v for k, v in kwargs.items() if v is not None}


class BazefieldTimeseriesOperator(PullOperator):
    """Aggregated Bazefield time series of objects and points into one file (rows).

    ``output``, ``format``, ``concurrency``, ``deferrable`` and ``progress_every`` are those of
    :class:`PullOperator`.

    Args:
        conn_id: a ``bazefield`` connection (default ``bazefield_default``).
        objects: object ids (a list; text is split on commas).
        points: point names (a list; text is split on commas).
        aggregates: aggregate names (a list; text is split on commas).
        start: the first instant; default: the run's data interval start. A date, a datetime
            or ISO text (templates).
        end: the end of ``[start, end)``, excluded; default: the run's data interval end.
        interval: the aggregation interval (``"1h"``, ``"10m"``, ``"1d"``).
        time_zone: the zone of the series (Bazefield's ``TimeZone``).
        max_missing_steps: the gaps accepted knowingly, per object, point and aggregate in each
            request window (an object or point absent from an answer lacks all its steps).
            ``0`` (default): any missing time step fails the pull with
            :class:`~echo_connhandler.DataConsistencyError` and writes nothing; ``N``: up to N
            are accepted; ``None``: any number. The steps accepted are counted in the summary
            (``tolerated["missing_steps"]``), never silent.
        **kwargs: the source's tuning arguments, passed to
            :class:`~echo_connhandler.pull.BazefieldTimeseriesSource` as given (``window``: the
            longest span of one request, a timedelta or seconds, default 30 days;
            ``points_per_request``; ``max_values_per_request``), and the arguments of
            :class:`PullOperator` and ``BaseOperator``.
    """

    source_class = BazefieldTimeseriesSource
    template_fields: Sequence[str] = (
        *PullOperator.template_fields,
        "objects",
        "points",
        "aggregates",
        "start",
        "end",
        "interval",
        "time_zone",
    )

    def __init__(
        self,
        *,
        conn_id: str | None = "bazefield_default",
        objects: Sequence[str] | str,
        points: Sequence[str] | str,
        aggregates: Sequence[str] | str,
        start: datetime | date | str | None = None,
        end: datetime | date | str | None = None,
        interval: str = "1h",
        time_zone: str | None = None,
        max_missing_steps: int | None = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id=conn_id, **kwargs)
        self.objects = objects
        self.points = points
        self.aggregates = aggregates
        self.start = start
        self.end = end
        self.interval = interval
        self.time_zone = time_zone
        self.max_missing_steps = max_missing_steps

    def source_kwargs(self, context: Context) -> dict[str, Any]:
        start, end = self._interval(context, self.start, self.end)
        kwargs: dict[str, Any] = {
            "objects": str_list(self.objects, "objects"),
            "points": str_list(self.points, "points"),
            "aggregates": str_list(self.aggregates, "aggregates"),
            "start": start,
            "end": end,
            "interval": self.interval,
            "time_zone": self.time_zone or None,
        }
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        # None means "accept any gap" here, not "the default" (0): passed as is. The source
        # checks the value (an integer >= 0 or None) before anything is sent.
        kwargs["max_missing_steps"] = self.max_missing_steps
        return kwargs


class _OnsFilesOperator(PullOperator):
    """ONS exports: one file per period (``split``) into the ``output`` folder.

    ``output``, ``concurrency``, ``deferrable`` and ``progress_every`` are those of
    :class:`PullOperator` (``format`` does not apply: the files are written as delivered).

    Args:
        conn_id: an ``ons`` connection whose ``login_target`` is the export's system (default
            ``ons_default``).
        start: the first day; default: the run's data interval start (whole days at midnight
            UTC, or local midnights of the DAG's timezone: a daily run exports its one day).
        end: the day after the last (``[start, end)``); default: the run's data interval end.
        split: ``"month"`` (one file per calendar month) or ``"none"`` (one file).
        file_name: the files' name template (default: the source's, e.g.
            ``sager_{start:%Y%m%d}_{end:%Y%m%d}.xlsx``).
        **kwargs: the arguments of :class:`PullOperator` and ``BaseOperator``.
    """

    template_fields: Sequence[str] = (*PullOperator.template_fields, "start", "end")
    # Inputs are the export's endpoint (its URL's path), not ids.
    lineage_inputs: ClassVar[InputKind] = "endpoint"

    def __init__(
        self,
        *,
        conn_id: str | None = "ons_default",
        start: datetime | date | str | None = None,
        end: datetime | date | str | None = None,
        split: str = "month",
        file_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("format") is not None:
            raise ValueError(
                f"format={kwargs['format']!r}: ONS exports are written as delivered (.xlsx, "
                "CSV), one file per period; leave format unset"
            )
        super().__init__(conn_id=conn_id, **kwargs)
        self.start = start
        self.end = end
        self.split = split
        self.file_name = file_name

    def _day(self, moment: date | datetime) -> date | datetime:
        """A datetime at midnight in the DAG's timezone as that local date (else unchanged).

        The exports work in whole days at midnight UTC: a daily DAG scheduled in
        ``America/Sao_Paulo`` has data intervals at 03:00 UTC, which mean local days.
        """
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            return moment
        zone = getattr(self.dag, "timezone", None) if self.has_dag() else None  # type: ignore[no-untyped-call]
        if not isinstance(zone, tzinfo):
            return moment
        local = moment.astimezone(zone)
        if local.time() == datetime.min.time():
            return local.date()
        return moment

    def _common(self, context: Context) -> dict[str, Any]:
        start, end = self._interval(context, self.start, self.end)
        start, end = self._day(start), self._day(end)
        kwargs: dict[str, Any] = {"start": start, "end": end, "split": self.split}
        if self.file_name is not None:
            kwargs["file_name"] = self.file_name
        return kwargs


class OnsSagerReportOperator(_OnsFilesOperator):
    """SAGER reports (.xlsx), one per period, into the ``output`` folder (see
    ``_OnsFilesOperator`` for the arguments all ONS exports share).

    Args:
        tipo_relatorio: 1 (general report) or 2 (reference generation).
        ids_conjuntos: only these conjuntos: a list of ids, one id, or text (``"501, 502"``:
            templates); None (default): no filter. An empty value (``""``, ``[]``, a template
            that renders empty) is a ``ValueError``: it would drop the filter.
        ids_usinas: only these usinas (as ``ids_conjuntos``).
        ids_agentes: only these agents (as ``ids_conjuntos``).
        ids_fontes: only these sources (as ``ids_conjuntos``).
        apenas_agentes_favoritos: only the user's favourite agents.
        periodo_base: sent as ``periodoBase`` (text).
        **kwargs: ``conn_id`` (``login_target`` SAGER), ``start``, ``end``, ``split`` and
            ``file_name`` (default ``sager_{start:%Y%m%d}_{end:%Y%m%d}.xlsx``) as in
            ``_OnsFilesOperator``, and the arguments of :class:`PullOperator` and
            ``BaseOperator``.
    """

    source_class = OnsSagerReportSource
    template_fields: Sequence[str] = (
        *_OnsFilesOperator.template_fields,
        "ids_conjuntos",
        "ids_usinas",
        "ids_agentes",
        "ids_fontes",
        "periodo_base",
    )

    def __init__(
        self,
        *,
        tipo_relatorio: int = 1,
        ids_conjuntos: Sequence[int] | int | str | None = None,
        ids_usinas: Sequence[int] | int | str | None = None,
        ids_agentes: Sequence[int] | int | str | None = None,
        ids_fontes: Sequence[int] | int | str | None = None,
        apenas_agentes_favoritos: bool = False,
        periodo_base: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        ids = {
            "ids_conjuntos": ids_conjuntos,
            "ids_usinas": ids_usinas,
            "ids_agentes": ids_agentes,
            "ids_fontes": ids_fontes,
        }
        for what, value in ids.items():
            if not has_text(value):
                id_filter(value, what)  # a bad value fails when the DAG is parsed
        self.tipo_relatorio = tipo_relatorio
        self.ids_conjuntos = ids_conjuntos
        self.ids_usinas = ids_usinas
        self.ids_agentes = ids_agentes
        self.ids_fontes = ids_fontes
        self.apenas_agentes_favoritos = apenas_agentes_favoritos
        self.periodo_base = periodo_base

    def source_kwargs(self, context: Context) -> dict[str, Any]:
        kwargs = self._common(context)
        kwargs.update(
            tipo_relatorio=self.tipo_relatorio,
            ids_conjuntos=id_filter(self.ids_conjuntos, "ids_conjuntos"),
            ids_usinas=id_filter(self.ids_usinas, "ids_usinas"),
            ids_agentes=id_filter(self.ids_agentes, "ids_agentes"),
            ids_fontes=id_filter(self.ids_fontes, "ids_fontes"),
            apenas_agentes_favoritos=self.apenas_agentes_favoritos,
        )
        if self.periodo_base is not None:
            kwargs["periodo_base"] = self.periodo_base
        return kwargs


class OnsSinapseExportOperator(_OnsFilesOperator):
    """SINAPSE exports (CSV), one per period, into the ``output`` folder (see
    ``_OnsFilesOperator`` for the arguments all ONS exports share).

    Args:
        analitico: the analytic export (``solicitacao/pesquisa/exportar-analitico``).
        origem: only requests from this origin (None: not sent).
        destino: only requests to this destination (None: not sent).
        status: only requests in this status (None: not sent).
        mensagem: only requests whose subject or message holds this text (None: not sent).
        **kwargs: ``conn_id`` (``login_target`` SINAPSE), ``start``, ``end``, ``split`` and
            ``file_name`` (default ``sinapse_{start:%Y%m%d}_{end:%Y%m%d}.csv``) as in
            ``_OnsFilesOperator``, and the arguments of :class:`PullOperator` and
            ``BaseOperator``.
    """

    source_class = OnsSinapseExportSource
    template_fields: Sequence[str] = (
        *_OnsFilesOperator.template_fields,
        "origem",
        "destino",
        "status",
        "mensagem",
    )

    def __init__(
        self,
        *,
        analitico: bool = False,
        origem: str | None = None,
        destino: str | None = None,
        status: str | None = None,
        mensagem: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.analitico = analitico
        self.origem = origem
        self.destino = destino
        self.status = status
        self.mensagem = mensagem

    def source_kwargs(self, context: Context) -> dict[str, Any]:
        kwargs = self._common(context)
        kwargs["analitico"] = self.analitico
        for name in ("origem", "destino", "status", "mensagem"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs
