"""Fault drill: every pull operator and source under a seeded fault mix, on the real sandbox over
sockets, must write exactly what a fault-free pull of the same source writes.

The mix (:data:`MIX`, on every request of the service, logins and warm-ups included): 10 % of
requests answer 503, 5 % answer 429 with ``Retry-After: 1`` (honoured, capped at 50 ms by the
connections' ``retry_after_cap``), 3 % have their connection dropped mid-response. On top of
it, one credential fault in the middle of each pull: the Bazefield session and the ONS access
token expire, the CCEE WAF blocks the client. The outputs are compared with a fault-free pull
(same bytes; for .xlsx, same cells), the rows are counted and checked for duplicates, and the
summary's ``retries`` must equal the faults the sandbox injected while the pull ran: each
injected fault costs exactly one retry, no more (no replay storm), no less (no fault swallowed).

Operators run as the provider runs them: ``execute`` in the worker with ``AIRFLOW_CONN_*``
connections, or deferred (the ``PullTrigger`` rebuilt from ``serialize()`` and run to its
event, then ``execute_complete``). Results are written up in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from echo_connhandler import CceeHttpHandler, HttpConnProperties
from echo_connhandler.pull import CceeDatastoreSource, Progress, PullSummary, run_pull
from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider import _jobs as jobs_module
from echo_connhandler_provider.operators import (
    BazefieldTimeseriesOperator,
    CceeDatastoreOperator,
    OnsSagerReportOperator,
    OnsSinapseExportOperator,
    PullOperator,
)
from echo_connhandler_provider.triggers import PullTrigger

#: The fault mix of every drill (seeded: the sandbox seed and the emulator's name).
MIX: dict[str, Any] = {
    "error_rate": 0.10,
    "error_statuses": (503,),
    "rate_limit_rate": 0.05,
    "retry_after": 1,
    "drop_rate": 0.03,
}
DRILL_HANDLER: dict[str, Any] = {
    "retry_wait_time": 0,
    "exponential_min_retry_wait_time": 0,
    "retry_after_cap": 0.05,
}
CONTEXT: dict[str, Any] = {}
SEARCH = "datastore_search"
#: What every drill observed, printed at the end of the module (docs/reliability.md).
REPORT: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print("\nfault drill:\n  " + "\n  ".join(REPORT))


@dataclass
class Drill:
    """A fault mix on one emulator, a credential fault at one chunk, and the faults counted
    while the pull ran (from the start of ``run_pull`` to its end), per path.

    ``data_path``: the path of the pull's chunks. A fault there costs exactly one retry. A fault
    on a login step costs one retry too, except where the login has a fallback (ONS: a failed
    federation page is skipped, a failed token refresh is replaced by a password login), so
    ``exact`` is False for ONS: the retries then lie between the data faults and all faults.
    """

    sb: Sandbox
    service: str
    at_chunk: int
    credential_fault: Callable[[], None]
    data_path: str
    exact: bool = True
    fired: list[int] = field(default_factory=list)
    at_start: dict[str, int] | None = None
    #: Faults per path counted inside the runs of run_pull so far (a deferred pull runs twice:
    #: the triggerer fetches, the task decodes; what happens between them is not the pull's).
    during: dict[str, int] = field(default_factory=dict)

    def arm(self) -> None:
        """Configure the mix (re-seeding its generator) and zero the counters."""
        faults = self.sb.faults(self.service)
        faults.configure(**MIX)
        faults.reset_stats()

    def start(self) -> None:
        self.at_start = self.sb.faults(self.service).faulted

    def stop(self) -> None:
        assert self.at_start is not None, "run_pull never started"
        for path, count in self.sb.faults(self.service).faulted.items():
            self.during[path] = self.during.get(path, 0) + count - self.at_start.get(path, 0)

    def on_progress(self, progress: Progress) -> None:
        if progress.chunks_done == self.at_chunk and not self.fired:
            self.fired.append(progress.chunks_done)
            self.credential_fault()

    @property
    def stats(self) -> Any:
        return self.sb.faults(self.service).stats

    def faulted_during_pull(self) -> tuple[int, int]:
        """Requests faulted while the pull ran: (on the data path, on other paths)."""
        assert self.at_start is not None, "run_pull never started"
        if not self.during:  # started by hand (a source drill): counted until now
            self.stop()
        data = other = 0
        for path, during in self.during.items():
            if self.data_path in path:
                data += during
            else:
                other += during
        return data, other

    def check(self, summary: PullSummary | dict[str, Any], what: str, rows: int) -> None:
        """The credential fault fired, and the retries match the faults injected."""
        stats = self.stats
        assert self.fired == [self.at_chunk], "the mid-pull credential fault did not fire"
        data, other = self.faulted_during_pull()
        assert data >= 3, f"the mix injected too little to mean anything: {stats}"
        retries = summary["retries"]
        if self.exact:
            assert retries == data + other, (retries, data, other, stats)
        else:
            assert data <= retries <= data + other, (retries, data, other, stats)
        REPORT.append(
            f"{what}: {summary['chunks']} chunks, {rows} rows, {retries} retries for "
            f"{data} faulted chunk requests + {other} faulted login requests; "
            f"faults {dict(sorted(stats['faults'].items()))}, logins {stats['logins']}, "
            f"warmups {stats['warmups']}, waf_blocks {stats['waf_blocks']}"
        )


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[Drill], None]:
    """``spy(drill)``: the provider's ``run_pull`` (worker and trigger alike) calls the drill at
    its start and after every chunk, besides the operator's own progress logger."""

    def install(drill: Drill) -> None:
        real = jobs_module.run_pull

        async def wrapped(handler: Any, source: Any, output: Any, **kwargs: Any) -> PullSummary:
            drill.start()
            logger = kwargs.get("on_progress")

            def on_progress(progress: Progress) -> None:
                drill.on_progress(progress)
                if logger is not None:
                    logger(progress)

            kwargs["on_progress"] = on_progress
            try:
                return await real(handler, source, output, **kwargs)
            finally:
                drill.stop()

        monkeypatch.setattr(jobs_module, "run_pull", wrapped)

    return install


async def _first_event(trigger: PullTrigger) -> Any:
    events = trigger.run()
    try:
        return await anext(events)
    finally:
        await events.aclose()


def run_operator(op: PullOperator, *, deferred: bool) -> dict[str, Any]:
    """As the provider runs it: ``execute`` in the worker, or deferred (the trigger rebuilt from
    its serialisation, run to its event, the event through serde, then ``execute_complete``)."""
    if not deferred:
        return op.execute(CONTEXT)  # type: ignore[arg-type]
    with pytest.raises(TaskDeferred) as info:
        op.execute(CONTEXT)  # type: ignore[arg-type]
    classpath, kwargs = info.value.trigger.serialize()
    trigger = import_string(classpath)(**deserialize(serialize(kwargs)))
    event = asyncio.run(_first_event(trigger))
    payload = deserialize(serialize(event.payload))
    assert payload["status"] == "success", payload
    return op.execute_complete(CONTEXT, event=payload)  # type: ignore[arg-type]


def _lines(path: Path) -> list[str]:
    return path.read_text("utf-8").splitlines()


def _no_duplicate(lines: list[str]) -> None:
    assert len(set(lines)) == len(lines), "a row was written twice"


def _same_files(clean: Path, drill: Path, *, cells: bool = False) -> list[str]:
    names = sorted(p.name for p in clean.iterdir())
    assert sorted(p.name for p in drill.iterdir()) == names  # no temporary, no checkpoint
    for name in names:
        if cells:  # an .xlsx carries its creation time: compare the cells
            assert _xlsx_cells(drill / name) == _xlsx_cells(clean / name), name
        else:
            assert (drill / name).read_bytes() == (clean / name).read_bytes(), name
    return names


def _xlsx_cells(path: Path) -> list[tuple[Any, ...]]:
    workbook = openpyxl.load_workbook(io.BytesIO(path.read_bytes()), read_only=True)
    try:
        return [
            tuple(row) for sheet in workbook.worksheets for row in sheet.iter_rows(values_only=True)
        ]
    finally:
        workbook.close()


# -- CCEE, the source directly -------------------------------------------------------------------
def _ccee_source() -> CceeDatastoreSource:
    return CceeDatastoreSource(dataset="pld_horario", years=[2023, 2024], page_size=50)


async def _ccee_pull(
    sb: Sandbox, output: Path, *, concurrency: int, drill: Drill | None = None
) -> PullSummary:
    props = HttpConnProperties(host=sb.urls.ccee)
    async with CceeHttpHandler(props, skip_connect=True, **DRILL_HANDLER) as ccee:
        if drill is not None:
            drill.start()
        return await run_pull(
            ccee,
            _ccee_source(),
            output,
            concurrency=concurrency,
            on_progress=None if drill is None else drill.on_progress,
        )


async def test_ccee_source_under_the_mix_and_a_waf_block(sb: Sandbox, tmp_path: Path) -> None:
    clean = await _ccee_pull(sb, tmp_path / "clean.jsonl", concurrency=4)
    drill = Drill(sb, "ccee", 7, sb.faults("ccee").block_waf, SEARCH)
    drill.arm()
    summary = await _ccee_pull(sb, tmp_path / "drill.jsonl", concurrency=4, drill=drill)

    lines = _lines(tmp_path / "drill.jsonl")
    assert (tmp_path / "drill.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    assert summary["rows"] == clean["rows"] == len(lines) == 2 * 1200
    assert summary["chunks"] == 48
    _no_duplicate(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.jsonl", "drill.jsonl"]
    stats = drill.stats
    assert stats["waf_blocks"] >= 1
    assert stats["warmups"] >= 2  # the first warm-up, and one more after the block
    drill.check(summary, "CCEE source (2 years, pages of 50, concurrency 4)", len(lines))


async def test_ccee_drill_is_reproducible(sb: Sandbox, tmp_path: Path) -> None:
    """One request at a time, the seeded mix meets the same requests: same faults, same
    retries, same file, run after run."""
    runs = []
    for name in ("first", "second"):
        drill = Drill(sb, "ccee", 5, sb.faults("ccee").block_waf, SEARCH)
        drill.arm()
        summary = await _ccee_pull(sb, tmp_path / f"{name}.jsonl", concurrency=1, drill=drill)
        drill.check(summary, f"CCEE source, concurrency 1, {name} run", summary["rows"])
        stats = drill.stats
        faulted = sb.faults("ccee").faulted
        runs.append((summary["retries"], stats["faults"], faulted, stats["waf_blocks"]))
    assert runs[0] == runs[1]
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()


# -- the operators -------------------------------------------------------------------------------
@pytest.mark.parametrize("deferred", [False, True], ids=["worker", "deferred"])
def test_ccee_operator_under_the_mix_and_a_waf_block(
    sb: Sandbox,
    drill_conns: dict[str, str],
    spy: Callable[[Drill], None],
    tmp_path: Path,
    deferred: bool,
) -> None:
    def op(task_id: str, output: Path) -> CceeDatastoreOperator:
        return CceeDatastoreOperator(
            task_id=task_id,
            conn_id=drill_conns["ccee"],
            dataset="pld_media_diaria",
            years="2023, 2024",
            page_size=50,
            output=str(output),
            concurrency=3,
            deferrable=deferred,
        )

    clean = run_operator(op("clean", tmp_path / "clean.csv"), deferred=deferred)
    drill = Drill(sb, "ccee", 10, sb.faults("ccee").block_waf, SEARCH)
    drill.arm()
    spy(drill)
    summary = run_operator(op("drill", tmp_path / "drill.csv"), deferred=deferred)

    lines = _lines(tmp_path / "drill.csv")
    assert (tmp_path / "drill.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert summary["rows"] == clean["rows"] == len(lines) - 1 == 2 * 1200
    _no_duplicate(lines)
    assert drill.stats["waf_blocks"] >= 1
    way = "deferred" if deferred else "worker"
    drill.check(summary, f"CceeDatastoreOperator ({way}, csv, concurrency 3)", len(lines) - 1)


def test_bazefield_operator_under_the_mix_and_a_session_expiry(
    sb: Sandbox, drill_conns: dict[str, str], spy: Callable[[Drill], None], tmp_path: Path
) -> None:
    def op(task_id: str, output: Path) -> BazefieldTimeseriesOperator:
        return BazefieldTimeseriesOperator(
            task_id=task_id,
            conn_id=drill_conns["bazefield"],
            objects="1001,1002,2001",
            points=["ActivePower", "WindSpeed"],
            aggregates=["Average"],
            start="2024-03-01T00:00:00+00:00",
            end="2024-03-05T00:00:00+00:00",
            interval="10m",
            window=2 * 3600.0,
            output=str(output),
            concurrency=3,
            deferrable=False,
        )

    clean = run_operator(op("clean", tmp_path / "clean.jsonl"), deferred=False)
    drill = Drill(sb, "bazefield", 5, sb.faults("bazefield").expire_tokens, "timeseries/aggregated")
    drill.arm()
    spy(drill)
    summary = run_operator(op("drill", tmp_path / "drill.jsonl"), deferred=False)

    lines = _lines(tmp_path / "drill.jsonl")
    assert (tmp_path / "drill.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    assert summary["rows"] == clean["rows"] == len(lines) == 3 * 2 * 4 * 144
    assert summary["chunks"] == 48
    keys = [
        tuple(json.loads(line)[k] for k in ("object", "point", "timestamp_utc")) for line in lines
    ]
    assert len(set(keys)) == len(keys)
    # logged in at connect, and again after the expiry (login faults retried, not re-logged)
    assert drill.stats["logins"].get("password", 0) >= 2
    drill.check(
        summary, "BazefieldTimeseriesOperator (worker, 4 days x 6 series at 10 min)", len(lines)
    )


def test_ons_sager_operator_under_the_mix_and_a_token_expiry(
    sb: Sandbox, drill_conns: dict[str, str], spy: Callable[[Drill], None], tmp_path: Path
) -> None:
    def op(task_id: str, output: Path) -> OnsSagerReportOperator:
        return OnsSagerReportOperator(
            task_id=task_id,
            conn_id=drill_conns["ons_sager"],
            start=date(2022, 1, 1),
            end="2024-01-01",
            output=str(output),
            concurrency=3,
            deferrable=False,
        )

    clean = run_operator(op("clean", tmp_path / "clean"), deferred=False)
    drill = Drill(sb, "ons", 4, sb.faults("ons").expire_tokens, "exportarrelatorio", exact=False)
    drill.arm()
    spy(drill)
    summary = run_operator(op("drill", tmp_path / "drill"), deferred=False)

    names = _same_files(tmp_path / "clean", tmp_path / "drill", cells=True)
    assert len(names) == summary["chunks"] == clean["chunks"] == 24
    assert [Path(f).name for f in summary["files"]] == names
    # the expired token was replaced: by a refresh, or by a new login when a fault hit it
    assert sum(drill.stats["logins"].values()) >= 2
    drill.check(summary, "OnsSagerReportOperator (worker, 24 monthly .xlsx)", 0)


def test_ons_sinapse_operator_deferred_under_the_mix_and_a_token_expiry(
    sb: Sandbox, drill_conns: dict[str, str], spy: Callable[[Drill], None], tmp_path: Path
) -> None:
    def op(task_id: str, output: Path) -> OnsSinapseExportOperator:
        return OnsSinapseExportOperator(
            task_id=task_id,
            conn_id=drill_conns["ons_sinapse"],
            start="2022-01-01",
            end="2024-01-01",
            output=str(output),
            concurrency=3,
            deferrable=True,
        )

    clean = run_operator(op("clean", tmp_path / "clean"), deferred=True)
    drill = Drill(sb, "ons", 6, sb.faults("ons").expire_tokens, "pesquisa/exportar", exact=False)
    drill.arm()
    spy(drill)
    summary = run_operator(op("drill", tmp_path / "drill"), deferred=True)

    names = _same_files(tmp_path / "clean", tmp_path / "drill")
    assert len(names) == summary["chunks"] == clean["chunks"] == 24
    rows = [
        line
        for name in names
        for line in (tmp_path / "drill" / name).read_text("utf-8").splitlines()[1:]
    ]
    _no_duplicate(rows)
    # the expired token was replaced: by a refresh, or by a new login when a fault hit it
    assert sum(drill.stats["logins"].values()) >= 2
    drill.check(
        summary, f"OnsSinapseExportOperator (deferred, 24 monthly CSV, {len(rows)} rows)", len(rows)
    )
