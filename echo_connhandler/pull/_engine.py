"""The pull engine: a plan of chunks, fetched with bounded concurrency, written in plan order,
resumable, atomic. Framework-free: the Airflow operators and triggers, scripts and notebooks all
call :func:`run_pull`.

How a pull runs
    1. Its *identity* (the source's parameters, the format, the output) gives a fingerprint; the
       checkpoint lives next to the output in ``<output>.parts-<fingerprint>/``: a
       ``manifest.json`` (identity, plan, finished chunks) and one part file per finished chunk.
       A different pull has another fingerprint, so it never reuses another's checkpoint.
    2. The plan comes from the manifest when one exists (a rerun after a crash, a task retry or
       a triggerer restart), else from the source, and is saved at once.
    3. The chunks not yet finished are fetched on the handler's async path, ``concurrency`` at a
       time (:func:`echo_connhandler._window.ordered_window`). Decoding, encoding and writing
       run in threads: the event loop (a triggerer's) is never blocked by them. Each part is
       written atomically, then recorded in the manifest, in plan order.
    4. The parts are joined, in plan order, under a temporary name next to the output, which is
       then moved into place; the checkpoint is removed. The output's name never holds a
       partial or duplicated file.

Memory holds at most ``concurrency`` chunks, whatever the size of the pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from echo_connhandler._exceptions import DataConsistencyError
from echo_connhandler._handler import HttpHandler
from echo_connhandler._window import ordered_window
from echo_connhandler.pull._checkpoint import (
    FLUSH_EVERY_S,
    Checkpoint,
    ChunkRecord,
    checkpoint_folder,
    sha256_hex,
)
from echo_connhandler.pull._formats import (
    OutputFormat,
    encode_part,
    format_for,
    header_part,
    normalise_rows,
)
from echo_connhandler.pull._offload import offload, offload_to_process, pull_worker
from echo_connhandler.pull._plan import (
    Chunk,
    Column,
    DecodedPage,
    FilePart,
    PageContentError,
    Plan,
    RawPage,
    Rows,
    Source,
)
from echo_connhandler.pull._raw import raw_description, raw_page
from echo_connhandler.pull._storage import Storage, storage_for

__all__ = ["DECODE_MODES", "STAGES", "Progress", "PullSummary", "run_pull"]

#: Where a :class:`RawPage` is decoded and encoded: ``"thread"`` (the pull's worker thread,
#: default) or ``"process"`` (the process pool, outside this process's GIL).
DECODE_MODES = ("process", "thread")
#: How far a run goes: ``"all"`` (the output) or ``"fetch"`` (every chunk into the checkpoint,
#: pages kept as delivered: no decoding, no encoding, no assembly; a later ``"all"`` run of the
#: same pull finishes it, elsewhere).
STAGES = ("all", "fetch")

logger = logging.getLogger("echo_connhandler.pull")

#: Default seconds between progress log lines.
PROGRESS_EVERY_S = 5.0


class PullLog(Protocol):
    """Where a pull says what it does: a :class:`logging.Logger`, or an Airflow task's or
    trigger's ``self.log``."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


class PullSummary(TypedDict):
    """What a pull did, JSON-able (what an Airflow task pushes to XCom)."""

    output: str
    format: str
    rows: int
    chunks: int
    bytes: int
    seconds: float
    retries: int
    chunks_resumed: int
    source_ids: list[str]
    #: Each source id's version where the service gives one (CCEE: the resource's
    #: ``last_modified``, pinned when the pull was planned); ``{}`` otherwise.
    source_versions: dict[str, str]
    #: The output's columns in order, as ``[name, logical type]`` (the plan's); ``[]`` for files.
    columns: list[list[str]]
    files: list[str]
    #: Irregularities accepted knowingly (a source's tolerance, such as Bazefield's
    #: ``max_missing_steps``), summed over the chunks: ``{"missing_steps": 6}``.
    tolerated: dict[str, int]
    #: ``"done"`` (the output is in place), or ``"fetched"`` for ``stage="fetch"`` (every
    #: chunk is in the checkpoint, some as delivered; the output is not written yet).
    stage: str
    #: Where each phase ran and how long it took, in order: ``{"phase": "fetch" |
    #: "decode" | "assemble", "where": ..., "seconds": ..., "chunks": ...}``.
    phases: list[dict[str, Any]]


@dataclass
class Progress:
    """A snapshot of a pull under way, given to the progress callback."""

    chunks_done: int
    chunks_planned: int
    rows: int
    bytes: int
    seconds: float
    chunks_resumed: int
    #: Chunks fetched as delivered (``stage="fetch"``): bytes, no rows yet.
    kept: bool = False

    @property
    def bytes_per_second(self) -> str:
        return human_bytes(int(self.bytes / self.seconds)) if self.seconds > 0 else "0 B"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        fetched = self.chunks_done - self.chunks_resumed
        left = self.chunks_planned - self.chunks_done
        if fetched <= 0 or self.seconds <= 0:
            return None
        return left * self.seconds / fetched

    def line(self) -> str:
        eta = self.eta_seconds
        finished = self.chunks_done >= self.chunks_planned
        if self.kept:  # fetched as delivered: no rows counted yet
            done = f"{human_bytes(self.bytes)} as delivered, {self.bytes_per_second}/s"
        else:
            done = (
                f"{plural(self.rows, 'row')}, {human_bytes(self.bytes)}, "
                f"{self.rows_per_second:.0f} rows/s"
            )
        return f"{self.chunks_done}/{plural(self.chunks_planned, 'chunk')}, {done}" + (
            f", ETA {eta:.0f} s" if eta is not None and not finished else ""
        )


def plural(count: int, noun: str) -> str:
    """``1 chunk``, ``2 chunks``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def human_bytes(count: int) -> str:
    """A size for people: ``820 B``, ``20.3 KB``, ``41.3 MB``, ``1.2 GB`` (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _identity(source: Source, fmt: str, output: str, host: str) -> dict[str, Any]:
    """What makes a pull this pull: the service's host (another tenant is another pull), the
    source's parameters, the format and the output."""
    params = json.loads(json.dumps(source.identity(), sort_keys=True, default=str))
    return {
        "host": host,
        "source": source.describe(),
        "params": params,
        "format": fmt,
        "output": output,
    }


def _fingerprint(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


async def run_pull(
    handler: HttpHandler,
    source: Source,
    output: Any,
    *,
    format: str | None = None,
    concurrency: int = 4,
    on_progress: Callable[[Progress], object] | None = None,
    progress_every: float = PROGRESS_EVERY_S,
    decode: str = "thread",
    log: PullLog | None = None,
    started: float | None = None,
    stage: str = "all",
    where: str = "here",
) -> PullSummary:
    """Pull ``source`` through ``handler`` into ``output`` and return a summary.

    Args:
        handler: the service's handler; its async path is used (one client, one login).
        source: what to pull (a :class:`~echo_connhandler.pull.Source`).
        output: a local path, an fsspec URL (``s3://bucket/key.parquet``) or an object with
            ``fs`` and ``path`` (Airflow's ``ObjectStoragePath``). For a source of files
            (ONS exports), the folder the files go to.
        format: ``jsonl``, ``jsonl.gz``, ``csv``, ``csv.gz`` or ``parquet``; default from the
            output's name. Ignored for sources of files.
        concurrency: chunks in flight at once.
        on_progress: called with a :class:`Progress` after every chunk.
        progress_every: seconds between progress log lines (the first chunk's line is written
            at once; ``math.inf``: none).
        log: where the pull says what it does (planning, resuming, progress, the summary, what
            it fetches again): the ``echo_connhandler.pull`` logger by default; an Airflow task
            or trigger passes its own ``self.log`` so the lines reach the task's log, once.
        started: a ``time.monotonic()`` reading from which the summary's ``seconds`` count
            (default: now), so a caller that looked up a connection or logged in first can
            count the whole pull.
        decode: where pages are decoded and encoded: ``"thread"`` (the pull's worker thread,
            the default) or ``"process"`` (worker processes shared by every pull of this
            process: the work leaves this process's GIL; measured in docs/performance.md,
            "Decoding in a worker process").
        stage: ``"all"`` (default): the whole pull; ``"fetch"``: fetch every chunk into the
            checkpoint, each page kept as delivered (no decoding, encoding or assembly: what
            an Airflow trigger does, so that it only waits), and return a summary with
            ``stage="fetched"``; a later ``"all"`` run of the same pull decodes the kept pages
            (no request for them) and writes the output. Every check still holds: pages are
            checked when they are decoded, versions before the output is written.
        where: a name for the place this run happens (``"triggerer"``, ``"worker"``), kept
            in the summary's ``phases``.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    needs = getattr(source, "handler_class", None)
    if needs is not None and not isinstance(handler, needs):
        raise TypeError(
            f"{source.describe()} reads through a {needs.__name__}, got {type(handler).__name__}"
        )
    with pull_worker():  # the pull's blocking work, one call at a time, off the event loop
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        storage, path = storage_for(output)
        files = source.kind == "files"
        fmt: OutputFormat | None = None if files else format_for(path, format)
        if fmt == "parquet" and stage == "all":  # a fetch stage keeps pages as delivered
            from echo_connhandler.pull._parquet import require_pyarrow

            # Importing pyarrow takes about 0.4 s: never on the event loop (a triggerer's).
            await offload(require_pyarrow)
        # A bad output fails here, before any request (not after the whole pull).
        await offload(storage.check_output, path, folder=files)
        identity = _identity(source, fmt or "files", storage.url(path), handler.props.host)
        folder = checkpoint_folder(storage, path, _fingerprint(identity))
        say = log if log is not None else logger
        name = source.describe()
        checkpoint = Checkpoint(storage, folder, identity, say)
        extension = "part" if fmt is None else fmt
        if started is None:
            started = time.monotonic()
        retries_before = handler.retry_count

        resumed = await offload(checkpoint.load)
        if resumed:
            assert checkpoint.plan is not None
            try:
                # What the plan read must still be what the service has: never a mix of two
                # versions of a resource (docs/pulls.md, "What a pull checks").
                await source.check_versions(handler, checkpoint.plan)
            except DataConsistencyError as exc:
                say.warning("%s: %s; starting this pull afresh", name, exc)
                await offload(checkpoint.discard)
                resumed = False
        if resumed:
            assert checkpoint.plan is not None
            await offload(checkpoint.verify, extension, checkpoint.plan.chunks)
        else:
            # Planning can take a while (a login, one request per resource): say so first.
            say.info("%s: planning the pull into %s", name, storage.url(path))
            new_plan = await source.plan(handler)
            await offload(checkpoint.start, new_plan)
        plan = checkpoint.plan
        assert plan is not None
        done = checkpoint.done
        kept = {i for i, record in done.items() if record.raw is not None}
        # Pages kept as delivered count as resumed only for a run that does not decode them.
        chunks_resumed = len(done) - (len(kept) if stage == "all" else 0)
        if resumed:
            say.info(
                "%s: resuming from the checkpoint, %d of %s already done%s",
                name,
                chunks_resumed,
                plural(len(plan.chunks), "chunk"),
                f", {len(kept)} fetched as delivered to decode here"
                if kept and stage == "all"
                else "",
            )
        else:
            say.info(
                "%s: %s planned, %d at a time (%.1f s so far)",
                name,
                plural(len(plan.chunks), "chunk"),
                concurrency,
                time.monotonic() - started,
            )
        # Pages kept as delivered are decoded here (no request), unless this run only fetches.
        todo = [
            c for c in plan.chunks if c.index not in done or (c.index in kept and stage == "all")
        ]
        neighbours = _Neighbours(source, plan, done)
        try:
            for chunk in plan.chunks:
                if chunk.index in done:
                    neighbours.check(chunk)
        except DataConsistencyError:
            await offload(checkpoint.discard)  # recorded chunks that do not follow each other
            raise

        async def kept_page(chunk: Chunk) -> RawPage | None:
            """A page an earlier run kept as delivered, rebuilt from its verified part."""
            record = checkpoint.done.get(chunk.index)
            if record is None or record.raw is None:
                return None
            content = await offload(
                checkpoint.recorded_bytes, checkpoint.part(chunk, "raw"), record
            )
            try:
                if content is None:
                    raise DataConsistencyError("its part changed after it was verified")
                return raw_page(record.raw, content, source)
            except DataConsistencyError as exc:
                say.warning(
                    "chunk %s (%s) kept as delivered: %s; fetching it again",
                    chunk.index,
                    chunk.key,
                    exc,
                )
                return None

        worked = {"fetch": 0, "decode": 0}  # chunks asked of the service / decoded from kept

        async def fetch(chunk: Chunk) -> ChunkRecord:
            result: RawPage | DecodedPage | Rows | FilePart | None = await kept_page(chunk)
            if result is None:
                result = await source.fetch(handler, chunk, plan)
                worked["fetch"] += 1
            else:
                worked["decode"] += 1
            if isinstance(result, RawPage) and stage == "fetch":
                # Moved, not computed: the body is kept as it came, decoded by a later run.
                description = raw_description(result, source)
                content = result.response.content
                await offload(storage.write_atomic, checkpoint.part(chunk, "raw"), content)
                return ChunkRecord(
                    chunk.index,
                    chunk.key,
                    rows=0,
                    bytes=len(content),
                    sha256=await offload(sha256_hex, content),
                    raw=description,
                )
            if isinstance(result, FilePart):
                target = storage.join(path, result.name)
                await offload(storage.makedirs, path)
                await offload(storage.write_atomic, target, result.content)
                return ChunkRecord(
                    chunk.index,
                    chunk.key,
                    rows=0,
                    bytes=len(result.content),
                    sha256=sha256_hex(result.content),
                    file_path=target,
                    file=storage.url(target),
                )
            assert fmt is not None
            if isinstance(result, RawPage):
                job = functools.partial(
                    _decode_and_encode,
                    result.decode,
                    result.response.content,
                    result.args,
                    plan.columns,
                    fmt,
                    chunk.key,
                )
                try:
                    if decode == "process":
                        encoded = await offload_to_process(job)
                    else:
                        encoded = await offload(job)
                except PageContentError as exc:
                    raise exc.for_response(result.response) from None
            else:
                encoded = await offload(_encode, result, plan.columns, fmt, chunk.key)
            await offload(storage.write_atomic, checkpoint.part(chunk, extension), encoded.data)
            return ChunkRecord(
                chunk.index,
                chunk.key,
                rows=encoded.rows,
                bytes=len(encoded.data),
                sha256=encoded.sha256,
                first_key=encoded.first_key,
                last_key=encoded.last_key,
                counts=encoded.counts,
            )

        progress = _ProgressLog(len(plan.chunks), chunks_resumed, started, stage == "fetch")
        for index, record in done.items():
            if index not in kept or stage == "fetch":
                progress.add(record)
        window_started = time.monotonic()
        last_log = -math.inf  # the first chunk's line at once, then every progress_every

        async def flush_when_due() -> None:
            # A batch of records is written once due, even while the next chunk takes long.
            while True:
                await asyncio.sleep(FLUSH_EVERY_S / 2)
                if checkpoint.due():
                    await offload(checkpoint.flush)

        flusher = asyncio.ensure_future(flush_when_due())
        try:
            # Closed on any exit: a failure cancels the fetches in flight before run_pull raises.
            async with contextlib.aclosing(ordered_window(todo, fetch, concurrency)) as results:
                async for record in results:
                    checkpoint.done[record.index] = record
                    try:
                        neighbours.check(plan.chunks[record.index])
                    except DataConsistencyError:
                        # Which of the two chunks is wrong cannot be told: the next run starts
                        # afresh rather than fail on the same recorded chunk every time.
                        await offload(checkpoint.discard)
                        raise
                    await offload(checkpoint.record, record)
                    snapshot = progress.add(record)
                    if on_progress is not None:
                        on_progress(snapshot)
                    if time.monotonic() - last_log >= progress_every:
                        last_log = time.monotonic()
                        say.info("%s: %s", name, snapshot.line())
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            # What finished is kept for the next run, whatever ended this one.
            with contextlib.suppress(Exception):
                await offload(checkpoint.flush)

        phases: list[dict[str, Any]] = []
        fetched, decoded = worked["fetch"], worked["decode"]
        window_seconds = round(time.monotonic() - window_started, 3)
        if fetched or stage == "fetch":
            phases.append(
                {"phase": "fetch", "where": where, "seconds": window_seconds, "chunks": fetched}
            )
        if decoded:
            phases.append(
                {"phase": "decode", "where": where, "seconds": window_seconds, "chunks": decoded}
            )
        ordered = [done[c.index] for c in plan.chunks]
        tolerated: dict[str, int] = {}
        for record in ordered:
            for kind, count in record.counts.items():
                tolerated[kind] = tolerated.get(kind, 0) + int(count)

        def summarise(stage_reached: str, size: int) -> PullSummary:
            return PullSummary(
                output=storage.url(path),
                format=fmt or "files",
                rows=sum(r.rows for r in ordered),
                chunks=len(plan.chunks),
                bytes=size,
                seconds=round(time.monotonic() - started, 3),
                retries=handler.retry_count - retries_before,
                chunks_resumed=chunks_resumed,
                source_ids=list(plan.source_ids),
                source_versions=_source_versions(plan),
                columns=[[c.name, c.type] for c in plan.columns],
                files=[r.file for r in ordered if r.file is not None],
                tolerated=tolerated,
                stage=stage_reached,
                phases=phases,
            )

        if stage == "fetch":
            summary = summarise("fetched", sum(r.bytes for r in ordered))
            say.info(
                "%s: every chunk fetched (%s kept as delivered, %s): the output is written "
                "when the pull is finished",
                name,
                plural(sum(1 for r in ordered if r.raw is not None), "page"),
                human_bytes(summary["bytes"]),
            )
            return summary

        # Nothing reaches the output's name unless the service still has what was planned.
        assembling = time.monotonic()
        await source.check_versions(handler, plan)
        if fmt is not None:
            await offload(_assemble, storage, path, checkpoint, plan, fmt, extension)
            # The output's own size (a Parquet file is not the sum of its parts).
            size = await offload(storage.size, path)
        else:
            await offload(_verify_files, checkpoint, plan)
            size = sum(record.bytes for record in checkpoint.done.values())
        await offload(checkpoint.discard)
        phases.append(
            {
                "phase": "assemble",
                "where": where,
                "seconds": round(time.monotonic() - assembling, 3),
                "chunks": len(plan.chunks),
            }
        )
        summary = summarise("done", size)
        say.info("%s: done, %s", name, summary_line(summary))
        return summary


def _source_versions(plan: Plan) -> dict[str, str]:
    """The versions a source pinned in its plan (``facts["versions"]``: source id -> version)."""
    versions = plan.facts.get("versions") or {}
    return {str(k): str(v) for k, v in versions.items() if v}


class _Neighbours:
    """Checks every pair of neighbouring finished chunks once (:meth:`Source.check_next`)."""

    def __init__(self, source: Source, plan: Plan, done: Mapping[int, ChunkRecord]) -> None:
        self.source, self.chunks, self.done = source, plan.chunks, done
        self.checked: set[int] = set()  # index i: the pair (i - 1, i) was checked

    def check(self, chunk: Chunk) -> None:
        for later in (chunk.index, chunk.index + 1):
            if later in self.checked or not 0 < later < len(self.chunks):
                continue
            before, after = self.done.get(later - 1), self.done.get(later)
            if before is None or after is None or before.raw is not None or after.raw is not None:
                continue  # a page kept as delivered is checked once it is decoded
            self.source.check_next(
                before.done(self.chunks[later - 1]), after.done(self.chunks[later])
            )
            self.checked.add(later)


class _ProgressLog:
    def __init__(self, planned: int, resumed: int, started: float, kept: bool = False) -> None:
        self.planned, self.resumed, self.started, self.kept = planned, resumed, started, kept
        self.chunks = self.rows = self.bytes = 0

    def add(self, record: ChunkRecord | None) -> Progress:
        if record is not None:
            self.chunks += 1
            self.rows += record.rows
            self.bytes += record.bytes
        return Progress(
            self.chunks,
            self.planned,
            self.rows,
            self.bytes,
            time.monotonic() - self.started,
            self.resumed,
            self.kept,
        )


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A chunk's part and what its record keeps (only this travels back from a worker)."""

    data: bytes
    rows: int
    sha256: str
    first_key: Any = None
    last_key: Any = None
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)


def _encode(
    result: Rows | DecodedPage, columns: Sequence[Column], fmt: OutputFormat, chunk_key: str
) -> _Encoded:
    """One chunk's part (off the event loop): check the rows against the columns, encode."""
    page = result if isinstance(result, DecodedPage) else DecodedPage(result)
    rows = normalise_rows(page.rows, columns, f"chunk {chunk_key}")
    if fmt == "parquet":
        from echo_connhandler.pull._parquet import parquet_part

        data = parquet_part(rows, columns)
    else:
        data = encode_part(rows, columns, fmt)
    return _Encoded(
        data,
        len(rows),
        sha256_hex(data),
        page.first_key,
        page.last_key,
        dict(page.counts),
    )


def _decode_and_encode(
    decode: Callable[..., Rows | DecodedPage],
    content: bytes,
    args: tuple[Any, ...],
    columns: Sequence[Column],
    fmt: OutputFormat,
    chunk_key: str,
) -> _Encoded:
    """A :class:`RawPage`'s rows, encoded (in a worker thread or process): only the part and
    its record travel back, never the rows."""
    return _encode(decode(content, *args), columns, fmt, chunk_key)


def _verify_files(checkpoint: Checkpoint, plan: Plan) -> None:
    """Every delivered file is still what was recorded (a pull of files has no assembly)."""
    for chunk in plan.chunks:
        record = checkpoint.done[chunk.index]
        assert record.file_path is not None
        if checkpoint.recorded_bytes(record.file_path, record) is None:
            raise DataConsistencyError(
                f"delivered file {record.file} changed after it was written (another run "
                "writes to the same folder?): run the pull again"
            )


def _assemble(
    storage: Storage,
    path: str,
    checkpoint: Checkpoint,
    plan: Plan,
    fmt: OutputFormat,
    extension: str,
) -> None:
    """Join the parts in plan order under a temporary name, each checked against its record
    (size and SHA-256) as it is read, then move the whole into place."""
    parent = storage.parent(path)
    if parent:
        storage.makedirs(parent)
    temporary = storage.sibling(path, f".tmp-{checkpoint.owner}")

    def verified(chunk: Chunk) -> bytes:
        part = checkpoint.part(chunk, extension)
        data = checkpoint.recorded_bytes(part, checkpoint.done[chunk.index])
        if data is None:
            raise DataConsistencyError(
                f"part {part} of chunk {chunk.key} changed after it was written (another run "
                "writes to the same checkpoint?): nothing was written to the output; run the "
                "pull again (the part is fetched again)"
            )
        return data

    try:
        with storage.open_write(temporary) as out:
            if fmt == "parquet":
                from echo_connhandler.pull._parquet import assemble_parquet

                assemble_parquet(
                    (io.BytesIO(verified(c)) for c in plan.chunks),
                    plan.columns,
                    out,
                    [checkpoint.done[c.index].rows for c in plan.chunks],
                )
            else:
                out.write(header_part(plan.columns, fmt))
                for chunk in plan.chunks:
                    out.write(verified(chunk))
        storage.move(temporary, path)
    except BaseException:
        with contextlib.suppress(Exception):
            storage.remove(temporary)
        raise


def summary_line(summary: PullSummary | Mapping[str, Any]) -> str:
    """One line for logs: rows (or files), chunks, size, time, resumed chunks, retries and what
    was accepted knowingly."""
    what = (
        plural(len(summary["files"]), "file")
        if summary.get("format") == "files"
        else plural(int(summary["rows"]), "row")
    )
    retries = int(summary["retries"])
    tolerated = summary.get("tolerated") or {}
    accepted = "".join(
        f", {count} {name.replace('_', ' ')} accepted" for name, count in tolerated.items()
    )
    return (
        f"{what} in {plural(int(summary['chunks']), 'chunk')}, "
        f"{human_bytes(int(summary['bytes']))}, {summary['seconds']} s "
        f"({summary['chunks_resumed']} resumed, {retries} {'retry' if retries == 1 else 'retries'}"
        f"{accepted}) -> {summary['output']}"
    )
