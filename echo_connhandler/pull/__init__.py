"""The pull engine: long pulls from the services into files, resumable, framework-free.

A pull is a :class:`Source` (what to read, from which service) run by :func:`run_pull` on one
handler's async path: a plan of chunks fetched ``concurrency`` at a time, written in plan order
as JSON Lines, CSV (gzip or not) or Parquet, to a local path or any fsspec URL, atomically, with
a checkpoint next to the output that lets a rerun fetch only what is missing::

    import asyncio
    from echo_connhandler import CceeHttpHandler, HttpConnProperties
    from echo_connhandler.pull import CceeDatastoreSource, run_pull

    async def main():
        props = HttpConnProperties(host="https://dadosabertos.ccee.org.br")
        async with CceeHttpHandler(props, skip_connect=True) as ccee:
            source = CceeDatastoreSource(dataset="pld_horario", years=[2024, 2025])
            summary = await run_pull(ccee, source, "pld_horario.parquet", concurrency=4)
            print(summary["rows"], summary["output"])

    asyncio.run(main())

Importing it never imports Airflow; Parquet needs the ``parquet`` extra (pyarrow), URLs other
than local paths the ``storage`` extra (fsspec).
"""

from echo_connhandler.pull._bazefield import BazefieldTimeseriesSource
from echo_connhandler.pull._ccee import CceeDatastoreSource, ckan_column_type
from echo_connhandler.pull._checkpoint import read_checkpoint
from echo_connhandler.pull._engine import (
    Progress,
    PullLog,
    PullSummary,
    run_pull,
    summary_line,
)
from echo_connhandler.pull._formats import (
    FORMATS,
    ColumnTypeError,
    OutputFormat,
    UnknownFieldError,
    format_for,
)
from echo_connhandler.pull._ons import OnsSagerReportSource, OnsSinapseExportSource
from echo_connhandler.pull._plan import (
    Chunk,
    ChunkDone,
    Column,
    ColumnType,
    DecodedPage,
    FilePart,
    PageContentError,
    Plan,
    RawPage,
    Rows,
    Source,
)
from echo_connhandler.pull._registry import (
    build_source,
    json_arguments,
    register_source,
    registered_sources,
    source_class,
)
from echo_connhandler.pull._storage import FsspecStorage, LocalStorage, Storage, storage_for

__all__ = [
    "FORMATS",
    "BazefieldTimeseriesSource",
    "CceeDatastoreSource",
    "Chunk",
    "ChunkDone",
    "Column",
    "ColumnType",
    "ColumnTypeError",
    "DecodedPage",
    "FilePart",
    "FsspecStorage",
    "LocalStorage",
    "OnsSagerReportSource",
    "OnsSinapseExportSource",
    "OutputFormat",
    "PageContentError",
    "Plan",
    "Progress",
    "PullLog",
    "PullSummary",
    "RawPage",
    "Rows",
    "Source",
    "Storage",
    "UnknownFieldError",
    "build_source",
    "ckan_column_type",
    "format_for",
    "json_arguments",
    "read_checkpoint",
    "register_source",
    "registered_sources",
    "run_pull",
    "source_class",
    "storage_for",
    "summary_line",
]
