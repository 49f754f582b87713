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

import contextlib
import functools
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from echo_connhandler._handler import HttpHandler
from echo_connhandler._window import ordered_window
from echo_connhandler.pull._formats import (
    OutputFormat,
    check_rows,
    encode_part,
    format_for,
    header_part,
)
from echo_connhandler.pull._offload import offload, offload_to_process, pull_worker
from echo_connhandler.pull._plan import (
    Chunk,
    Column,
    FilePart,
    PageContentError,
    Plan,
    RawPage,
    Rows,
    Source,
)
from echo_connhandler.pull._storage import Storage, storage_for

__all__ = ["DECODE_MODES", "Progress", "PullSummary", "run_pull"]

#: Where a :class:`RawPage` is decoded and encoded: ``"thread"`` (the pull's worker thread,
#: default) or ``"process"`` (the process pool, outside this process's GIL).
DECODE_MODES = ("process", "thread")

logger = logging.getLogger("echo_connhandler.pull")

MANIFEST = "manifest.json"
#: Default seconds between progress log lines.
PROGRESS_EVERY_S = 5.0


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
    files: list[str]


@dataclass
class Progress:
    """A snapshot of a pull under way, given to the progress callback."""

    chunks_done: int
    chunks_planned: int
    rows: int
    bytes: int
    seconds: float
    chunks_resumed: int

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
        return (
            f"{self.chunks_done}/{self.chunks_planned} chunks, {self.rows} rows, "
            f"{self.bytes / 1e6:.1f} MB, {self.rows_per_second:.0f} rows/s"
            + (f", ETA {eta:.0f} s" if eta is not None else "")
        )


class _Checkpoint:
    """The manifest of one pull: its identity, its plan, and the chunks finished so far."""

    def __init__(self, storage: Storage, folder: str, identity: dict[str, Any]) -> None:
        self.storage = storage
        self.folder = folder
        self.identity = identity
        self.plan: Plan | None = None
        self.done: dict[str, dict[str, Any]] = {}

    @property
    def manifest(self) -> str:
        return self.storage.join(self.folder, MANIFEST)

    def part(self, chunk: Chunk, extension: str) -> str:
        return self.storage.join(self.folder, f"part-{chunk.index:06d}.{extension}")

    def load(self) -> bool:
        """Read an earlier run's manifest of this same pull; False when there is none."""
        if not self.storage.exists(self.manifest):
            return False
        raw = json.loads(self.storage.read_bytes(self.manifest))
        if raw.get("identity") != self.identity:  # same folder name, other pull: start afresh
            return False
        self.plan = Plan.from_json(raw["plan"])
        self.done = {str(k): dict(v) for k, v in (raw.get("done") or {}).items()}
        return True

    def forget_missing_files(self) -> None:
        """Chunks of a source of files whose file is gone are no longer done."""
        for index, stats in list(self.done.items()):
            if "file_path" in stats and not self.storage.exists(str(stats["file_path"])):
                del self.done[index]

    def save(self) -> None:
        assert self.plan is not None
        document = {"identity": self.identity, "plan": self.plan.to_json(), "done": self.done}
        self.storage.makedirs(self.folder)
        self.storage.write_atomic(self.manifest, json.dumps(document).encode("utf-8"))


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
        progress_every: seconds between progress log lines (``echo_connhandler.pull``, INFO).
        decode: where pages are decoded and encoded: ``"thread"`` (the pull's worker thread,
            the default) or ``"process"`` (worker processes shared by every pull of this
            process: the work leaves this process's GIL; measured in docs/performance.md,
            "Decoding in a worker process").
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    with pull_worker():  # the pull's blocking work, one call at a time, off the event loop
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        storage, path = storage_for(output)
        files = source.kind == "files"
        fmt: OutputFormat | None = None if files else format_for(path, format)
        if fmt == "parquet":
            from echo_connhandler.pull._parquet import require_pyarrow

            # Importing pyarrow takes about 0.4 s: never on the event loop (a triggerer's).
            await offload(require_pyarrow)
        # A bad output fails here, before any request (not after the whole pull).
        await offload(storage.check_output, path, folder=files)
        identity = _identity(source, fmt or "files", storage.url(path), handler.props.host)
        fingerprint = _fingerprint(identity)
        folder = f"{path.rstrip('/')}.parts-{fingerprint}"
        checkpoint = _Checkpoint(storage, folder, identity)
        started = time.monotonic()
        retries_before = handler.retry_count

        resumed = await offload(checkpoint.load)
        if resumed and files:
            # A delivered file removed since the crash is fetched again (not trusted).
            await offload(checkpoint.forget_missing_files)
        if not resumed:
            checkpoint.plan = await source.plan(handler)
            await offload(checkpoint.save)
        plan = checkpoint.plan
        assert plan is not None
        done = checkpoint.done
        chunks_resumed = len(done)
        if resumed:
            logger.info(
                "%s: resuming, %d of %d chunks already done",
                source.describe(),
                chunks_resumed,
                len(plan.chunks),
            )
        extension = "part" if fmt is None else fmt
        todo = [c for c in plan.chunks if str(c.index) not in done]

        async def fetch(chunk: Chunk) -> tuple[Chunk, dict[str, Any]]:
            result = await source.fetch(handler, chunk, plan)
            if isinstance(result, FilePart):
                target = storage.join(path, result.name)
                await offload(storage.makedirs, path)
                await offload(storage.write_atomic, target, result.content)
                stats = {"rows": 0, "bytes": len(result.content), "file": storage.url(target)}
                return chunk, {**stats, "file_path": target}
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
                        count, encoded = await offload_to_process(job)
                    else:
                        count, encoded = await offload(job)
                except PageContentError as exc:
                    raise exc.for_response(result.response) from None
            else:
                encoded = await offload(_encode, result, plan.columns, fmt, chunk.key)
                count = len(result)
            await offload(storage.write_atomic, checkpoint.part(chunk, extension), encoded)
            return chunk, {"rows": count, "bytes": len(encoded)}

        progress = _ProgressLog(source.describe(), len(plan.chunks), chunks_resumed, started)
        for stats in done.values():
            progress.add(stats)
        last_log = time.monotonic()
        # Closed on any exit: a failure here cancels the fetches in flight before run_pull raises.
        async with contextlib.aclosing(ordered_window(todo, fetch, concurrency)) as results:
            async for chunk, stats in results:
                done[str(chunk.index)] = stats
                await offload(checkpoint.save)
                snapshot = progress.add(stats)
                if on_progress is not None:
                    on_progress(snapshot)
                if time.monotonic() - last_log >= progress_every:
                    last_log = time.monotonic()
                    logger.info("%s: %s", source.describe(), snapshot.line())

        if fmt is not None:
            await offload(_assemble, storage, path, checkpoint, plan, fmt, extension)
        await offload(storage.remove_tree, folder)
        final = progress.add(None)
        logger.info("%s: done, %s -> %s", source.describe(), final.line(), storage.url(path))
        ordered = [done[str(c.index)] for c in plan.chunks]
        header = len(header_part(plan.columns, fmt)) if fmt is not None else 0
        return PullSummary(
            output=storage.url(path),
            format=fmt or "files",
            rows=sum(int(s.get("rows", 0)) for s in ordered),
            chunks=len(plan.chunks),
            bytes=header + sum(int(s.get("bytes", 0)) for s in ordered),
            seconds=round(time.monotonic() - started, 3),
            retries=handler.retry_count - retries_before,
            chunks_resumed=chunks_resumed,
            source_ids=list(plan.source_ids),
            files=[str(s["file"]) for s in ordered if "file" in s],
        )


class _ProgressLog:
    def __init__(self, name: str, planned: int, resumed: int, started: float) -> None:
        self.name, self.planned, self.resumed, self.started = name, planned, resumed, started
        self.chunks = self.rows = self.bytes = 0

    def add(self, stats: dict[str, Any] | None) -> Progress:
        if stats is not None:
            self.chunks += 1
            self.rows += int(stats.get("rows", 0))
            self.bytes += int(stats.get("bytes", 0))
        return Progress(
            self.chunks,
            self.planned,
            self.rows,
            self.bytes,
            time.monotonic() - self.started,
            self.resumed,
        )


def _encode(rows: Any, columns: Sequence[Column], fmt: OutputFormat, chunk_key: str) -> bytes:
    """One chunk's part (off the event loop): check the fields, then encode."""
    check_rows(rows, columns, f"chunk {chunk_key}")
    if fmt == "parquet":
        from echo_connhandler.pull._parquet import parquet_part

        return parquet_part(rows, columns)
    return encode_part(rows, columns, fmt)


def _decode_and_encode(
    decode: Callable[..., Rows],
    content: bytes,
    args: tuple[Any, ...],
    columns: Sequence[Column],
    fmt: OutputFormat,
    chunk_key: str,
) -> tuple[int, bytes]:
    """A :class:`RawPage`'s rows, encoded (in a worker process): only the count and the part's
    bytes travel back, never the rows."""
    rows = decode(content, *args)
    return len(rows), _encode(rows, columns, fmt, chunk_key)


def _assemble(
    storage: Storage,
    path: str,
    checkpoint: _Checkpoint,
    plan: Plan,
    fmt: OutputFormat,
    extension: str,
) -> None:
    """Join the parts in plan order under a temporary name, then move it into place."""
    parent = storage.parent(path)
    if parent:
        storage.makedirs(parent)
    temporary = f"{path}.tmp-{checkpoint.folder.rsplit('-', 1)[-1]}"
    parts: Sequence[str] = [checkpoint.part(c, extension) for c in plan.chunks]
    try:
        with storage.open_write(temporary) as out:
            if fmt == "parquet":
                from echo_connhandler.pull._parquet import assemble_parquet

                assemble_parquet(
                    (io.BytesIO(storage.read_bytes(p)) for p in parts), plan.columns, out
                )
            else:
                out.write(header_part(plan.columns, fmt))
                for part in parts:
                    with storage.open_read(part) as source:
                        shutil.copyfileobj(source, out, 1 << 20)
        storage.move(temporary, path)
    except BaseException:
        with contextlib.suppress(Exception):
            storage.remove(temporary)
        raise


def summary_line(summary: PullSummary) -> str:
    """One line for logs: rows, chunks, size, time, resumed chunks and retries."""
    return (
        f"{summary['rows']} rows in {summary['chunks']} chunks, {summary['bytes']} bytes, "
        f"{summary['seconds']} s ({summary['chunks_resumed']} resumed, {summary['retries']} "
        f"retries) -> {summary['output']}"
    )
