"""What the two kinds of kill drills share: the pulls they interrupt, their DAGs, what the
sandbox counts of them, and the reference each output is compared with.

The restart drills (``tests/deploy/conftest.py``: SQLite, LocalExecutor, one triggerer) and the
scale-out drills (``deploy/scale_drills.py``: PostgreSQL, Celery, two triggerers, S3) kill a
triggerer or a worker in the middle of a CCEE pull of the daily dataset (``pld_media_diaria``:
4 submarkets x 365 or 366 days a year), 50 rows a page, 2 pages in flight, with 500 ms added
to every CCEE request, so that a pull of two years (60 pages) lasts about 15 s. The kill moment
is read from the pull's checkpoint manifest (:func:`partial`), never from a sleep.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "CONCURRENCY",
    "DATASET",
    "KILL_AT",
    "LATENCY_MS",
    "PAGE_SIZE",
    "TRIGGERER_OUTPUT",
    "TRIGGERER_YEARS",
    "WORKER_OUTPUT",
    "WORKER_YEARS",
    "CountingMiddleware",
    "DatastorePages",
    "chunk_plan",
    "chunks_done",
    "expected_chunks",
    "partial",
    "pull_drill_dags",
    "reference_pull",
    "resource_rows",
]

DATASET = "pld_media_diaria"
SUBMARKETS = 4
PAGE_SIZE = 50
CONCURRENCY = 2
#: Added to every CCEE request during the drills: with 2 pages in flight a pull lasts ~15 s.
LATENCY_MS = 500
#: Kill once at least this many chunks are recorded in the manifest (and not all of them).
KILL_AT = 12
#: One year pair per pull, so that the request counts of the two pulls never mix.
TRIGGERER_YEARS = (2022, 2023)
WORKER_YEARS = (2024, 2025)
#: Each pull's output, relative to the data lake (a folder each: nothing else may be left there).
TRIGGERER_OUTPUT = "drills/triggerer/pull.jsonl"
WORKER_OUTPUT = "drills/worker/pull.jsonl"

_DAGS = '''
"""DAGs of the %(origin)s."""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from echo_connhandler_provider.operators import %(operators)s


LAKE = "{{ var.value.echo_data_lake }}"
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def pull(task_id, years, output, **kwargs):
    return CceeDatastoreOperator(
        task_id=task_id,
        conn_id="ccee_default",
        dataset=%(dataset)r,
        years=years,
        page_size=%(page_size)d,
        concurrency=%(concurrency)d,
        output=LAKE + "/" + output,
        progress_every=2.0,
        **kwargs,
    )


with DAG(%(triggerer_dag)r, schedule="@daily", start_date=START, catchup=False):
    pull("pull", %(triggerer_years)r, %(triggerer_output)r, deferrable=True, retries=0)

with DAG(%(worker_dag)r, schedule="@daily", start_date=START, catchup=False):
    pull(
        "pull",
        %(worker_years)r,
        %(worker_output)r,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
'''


def pull_drill_dags(
    origin: str,
    *,
    triggerer_dag: str,
    worker_dag: str,
    more: str = "",
    operators: tuple[str, ...] = (),
) -> str:
    """The text of a DAG file: a deferred pull (``triggerer_dag``) and a pull in the worker
    with one retry (``worker_dag``), each task ``pull``; then ``more`` (more DAGs, which may
    call ``pull(task_id, years, output, **kwargs)`` and use ``operators``, imported besides
    ``CceeDatastoreOperator``). ``origin`` names the drills in the file's docstring."""
    return (
        _DAGS
        % {
            "origin": origin,
            "operators": ", ".join(("CceeDatastoreOperator", *operators)),
            "dataset": DATASET,
            "page_size": PAGE_SIZE,
            "concurrency": CONCURRENCY,
            "triggerer_dag": triggerer_dag,
            "triggerer_years": list(TRIGGERER_YEARS),
            "triggerer_output": TRIGGERER_OUTPUT,
            "worker_dag": worker_dag,
            "worker_years": list(WORKER_YEARS),
            "worker_output": WORKER_OUTPUT,
        }
        + more
    )


def resource_rows(year: int) -> int:
    """Rows of a year's resource of the daily dataset (the sandbox's natural size)."""
    return (date(year + 1, 1, 1) - date(year, 1, 1)).days * SUBMARKETS


def expected_chunks(years: tuple[int, ...]) -> int:
    """One chunk per page of each year's resource."""
    return sum(math.ceil(resource_rows(y) / PAGE_SIZE) for y in years)


# -- the checkpoint's manifest --------------------------------------------------------------------
def chunks_done(manifest: dict[str, Any] | None) -> int:
    return len((manifest or {}).get("done") or {})


def chunk_plan(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """The plan's chunks in index order, as ``(resource_id, offset)``."""
    chunks = sorted(manifest["plan"]["chunks"], key=lambda c: int(c["index"]))
    return [(str(c["params"]["resource_id"]), int(c["params"]["offset"])) for c in chunks]


def partial(manifest: dict[str, Any] | None) -> bool:
    """Whether the pull is at its kill moment: ``KILL_AT`` chunks recorded or more, not all."""
    return manifest is not None and KILL_AT <= chunks_done(manifest) < len(
        manifest["plan"]["chunks"]
    )


# -- what the service saw ------------------------------------------------------------------------
@dataclass
class DatastorePages:
    """``datastore_search`` page requests the sandbox's CCEE app received (faulted ones
    included), by ``(resource_id, offset)``, while ``counting`` (planning probes, ``limit=0``
    or ``fields=_id``, apart)."""

    pages: Counter[tuple[str, int]] = field(default_factory=Counter)
    probes: Counter[str] = field(default_factory=Counter)
    counting: bool = False

    def count(self, path: str, query_string: bytes) -> None:
        if not (self.counting and path.endswith("/datastore_search")):
            return
        query = parse_qs(query_string.decode("latin-1"))
        resource = query.get("resource_id", [""])[0]
        if int(query.get("limit", ["0"])[0]) > 0 and "fields" not in query:
            self.pages[(resource, int(query.get("offset", ["0"])[0]))] += 1
        else:
            self.probes[resource] += 1


class CountingMiddleware:
    """``app.add_middleware(CountingMiddleware, counter=...)`` (Starlette builds it; add it
    before the sandbox starts: Starlette takes no middleware once its app runs)."""

    def __init__(self, app: Any, counter: DatastorePages) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.counter.count(scope["path"], scope.get("query_string", b""))
        await self.app(scope, receive, send)


# -- the reference ---------------------------------------------------------------------------------
async def reference_pull(url: str, years: tuple[int, ...], output: Path) -> bytes:
    """An uninterrupted pull of the same source to a local file (another output, so another
    checkpoint); its bytes."""
    from echo_connhandler import CceeHttpHandler, HttpConnProperties
    from echo_connhandler.pull import CceeDatastoreSource, run_pull

    async with CceeHttpHandler(HttpConnProperties(host=url), skip_connect=True) as ccee:
        source = CceeDatastoreSource(dataset=DATASET, years=list(years), page_size=PAGE_SIZE)
        await run_pull(ccee, source, str(output), concurrency=16)
    return await asyncio.to_thread(output.read_bytes)
