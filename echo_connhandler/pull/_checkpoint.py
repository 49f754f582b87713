"""A pull's checkpoint: its plan, written once, and a journal of the chunks finished so far.

Layout, in ``<output>.parts-<fingerprint>/`` next to the output (docs/pulls.md, "Resuming"):

``manifest.json``
    The pull's identity and its plan, written once (atomically) when the pull is planned.
``journal-<plan>-<owner>-<n>.jsonl``
    Records of finished chunks, one JSON line each: the chunk's index and key, its rows, the
    size and SHA-256 of its part (or delivered file), its first and last keys and its counts.
    Each segment is written whole, under a new name, so recording a chunk costs the same at
    the first chunk and at the 18 000th, on a local disk and on an object store (which has no
    append): records are batched for up to :data:`FLUSH_EVERY_S` seconds (or
    :data:`FLUSH_EVERY_RECORDS` records). A crash loses at most that batch: those chunks are
    fetched again.
``part-<index>.<format>``
    One part per finished chunk, written atomically before its record.
``part-<index>.raw``
    A chunk fetched *as delivered* (``run_pull(stage="fetch")``: an Airflow trigger moves the
    bytes, the task decodes them): the answer's body, and in its record what decodes it (the
    source's decode function by name, its arguments, the answer's status and content type).
    A later run decodes it into ``part-<index>.<format>`` instead of fetching it again
    (docs/airflow/deferrable-pulls.md, "What runs where").

Nothing in the folder is trusted as it is. On resume every recorded part is checked against
its record (size, then SHA-256) and a part that is missing, truncated or altered is fetched
again; a manifest that cannot be read, or that belongs to another pull or to an older layout,
means the pull starts afresh. Two attempts of one pull may share the folder (a task retried
while its old attempt still runs): each writes its own journal segments (``owner`` is random
per run), a part is always whole (atomic moves), and a record counts only while its part
matches it, so a stale record from the other attempt is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from echo_connhandler.pull._plan import Chunk, ChunkDone, Plan
from echo_connhandler.pull._storage import Storage

if TYPE_CHECKING:
    from echo_connhandler.pull._engine import PullLog

__all__ = [
    "FLUSH_EVERY_RECORDS",
    "FLUSH_EVERY_S",
    "Checkpoint",
    "ChunkRecord",
    "checkpoint_folder",
    "read_checkpoint",
]

logger = logging.getLogger("echo_connhandler.pull")

MANIFEST = "manifest.json"
#: The checkpoint layout; a manifest of another layout is not resumed (the pull starts afresh).
LAYOUT = 2
#: A batch of chunk records is written at most this many seconds after its first record...
FLUSH_EVERY_S = 1.0
#: ... or once it holds this many records.
FLUSH_EVERY_RECORDS = 500
#: Longest output name kept whole in the checkpoint folder's name: with the fingerprint the
#: folder's name stays within the 255 bytes most file systems allow (NAME_MAX).
NAME_KEEP = 120


def checkpoint_folder(storage: Storage, path: str, fingerprint: str) -> str:
    """The checkpoint folder of the output ``path``: next to it, its name bounded."""
    return storage.sibling(path, f".parts-{fingerprint}", keep=NAME_KEEP)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """What the journal says of one finished chunk."""

    index: int
    key: str
    rows: int
    bytes: int
    sha256: str
    first_key: Any = None
    last_key: Any = None
    counts: Mapping[str, int] = field(default_factory=dict)
    #: For a source of files: where the delivered file is (storage path) and its URL.
    file_path: str | None = None
    file: str | None = None
    #: For a chunk fetched as delivered (``part-<index>.raw``): how to decode it
    #: (:func:`raw_description`); None for a decoded part.
    raw: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "index": self.index,
            "key": self.key,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }
        if self.first_key is not None or self.last_key is not None:
            document["first_key"], document["last_key"] = self.first_key, self.last_key
        if self.counts:
            document["counts"] = dict(self.counts)
        if self.file_path is not None:
            document["file_path"], document["file"] = self.file_path, self.file
        if self.raw is not None:
            document["raw"] = dict(self.raw)
        return document

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ChunkRecord:
        counts = raw.get("counts") or {}
        return cls(
            index=int(raw["index"]),
            key=str(raw["key"]),
            rows=int(raw["rows"]),
            bytes=int(raw["bytes"]),
            sha256=str(raw["sha256"]),
            first_key=raw.get("first_key"),
            last_key=raw.get("last_key"),
            counts={str(k): int(v) for k, v in dict(counts).items()},
            file_path=None if raw.get("file_path") is None else str(raw["file_path"]),
            file=None if raw.get("file") is None else str(raw["file"]),
            raw=None if raw.get("raw") is None else dict(raw["raw"]),
        )

    def done(self, chunk: Chunk) -> ChunkDone:
        return ChunkDone(chunk, self.rows, self.first_key, self.last_key)


class Checkpoint:
    """The checkpoint of one run of one pull (see the module's docstring)."""

    def __init__(
        self,
        storage: Storage,
        folder: str,
        identity: dict[str, Any],
        log: PullLog | None = None,
    ) -> None:
        self.log = log if log is not None else logger
        self.storage = storage
        self.folder = folder
        self.identity = identity
        self.owner = uuid.uuid4().hex[:12]
        self.plan: Plan | None = None
        #: Finished chunks by index (verified ones from the journal, then this run's).
        self.done: dict[int, ChunkRecord] = {}
        self._candidates: dict[int, list[ChunkRecord]] = {}
        self.plan_id = ""
        self._pending: list[ChunkRecord] = []
        self._first_pending = 0.0
        self._segments = 0

    @property
    def manifest(self) -> str:
        return self.storage.join(self.folder, MANIFEST)

    def part(self, chunk: Chunk, extension: str) -> str:
        return self.storage.join(self.folder, f"part-{chunk.index:06d}.{extension}")

    # ------------------------------------------------------------------ resume

    def load(self) -> bool:
        """Read an earlier run's plan and journal of this same pull; False (and a clean
        folder) when there is nothing usable to resume."""
        if not self.storage.exists(self.manifest):
            return False
        try:
            raw = json.loads(self.storage.read_bytes(self.manifest))
            if not isinstance(raw, dict) or raw.get("layout") != LAYOUT:
                raise ValueError(f"not a checkpoint manifest of layout {LAYOUT}")
            if raw.get("identity") != self.identity:
                self.log.warning(
                    "checkpoint manifest %s belongs to another pull: starting this pull afresh",
                    self.manifest,
                )
                self.discard()
                return False
            plan = Plan.from_json(raw["plan"])
            plan_id = str(raw["plan_id"])
        except (ValueError, KeyError, TypeError) as exc:
            # A damaged manifest must not keep every retry failing: name it, start afresh.
            self.log.warning(
                "checkpoint manifest %s cannot be read (%s: %s): starting this pull afresh",
                self.manifest,
                type(exc).__name__,
                str(exc)[:200],
            )
            self.discard()
            return False
        self.plan = plan
        self.plan_id = plan_id
        records = self._read_journal()
        keys = {c.index: c.key for c in plan.chunks}
        # Every record of a chunk of this plan, newest first: verify() keeps the first whose
        # part matches (another attempt may have recorded the same chunk).
        self._candidates = {
            index: [r for r in candidates if r.key == keys[index]]
            for index, candidates in records.items()
            if index in keys
        }
        self.done = {index: c[0] for index, c in self._candidates.items() if c}
        return True

    def _read_journal(self) -> dict[int, list[ChunkRecord]]:
        """Every record of every journal segment (of every owner), newest segment first."""
        records: dict[int, list[ChunkRecord]] = {}
        # Only this plan's segments: records made under an earlier plan of the same pull (a
        # zombie attempt still writing after the pull started afresh) are never used.
        prefix = f"journal-{self.plan_id}-"
        segments = sorted(
            (
                name
                for name in self.storage.list_names(self.folder)
                if name.startswith(prefix) and name.endswith(".jsonl")
            ),
            reverse=True,
        )
        for name in segments:
            path = self.storage.join(self.folder, name)
            try:
                text = self.storage.read_bytes(path).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.log.warning("checkpoint journal %s unreadable (%s): ignored", path, exc)
                continue
            for line in text.splitlines():
                try:
                    record = ChunkRecord.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    self.log.warning("checkpoint journal %s: a damaged record ignored", path)
                    continue
                records.setdefault(record.index, []).append(record)
        return records

    def verify(self, extension: str, chunks: Iterable[Chunk]) -> list[Chunk]:
        """Check every recorded part (or delivered file) against its records; keep the first
        record it matches, forget the chunk when it matches none. Returns the chunks
        forgotten (fetched again)."""
        forgotten: list[Chunk] = []
        for chunk in chunks:
            candidates = self._candidates.get(chunk.index) or []
            if not candidates:
                continue
            problems: list[str] = []
            for record in candidates:
                path = record.file_path or self.part(
                    chunk, "raw" if record.raw is not None else extension
                )
                problem = self._problem(path, record)
                if problem is None:
                    self.done[chunk.index] = record
                    break
                problems.append(problem)
            else:
                self.log.warning(
                    "checkpoint part of chunk %s (%s) %s: fetching it again",
                    chunk.index,
                    chunk.key,
                    problems[0],
                )
                del self.done[chunk.index]
                forgotten.append(chunk)
        return forgotten

    def _problem(self, path: str, record: ChunkRecord) -> str | None:
        if not self.storage.exists(path):
            return "is missing"
        size = self.storage.size(path)
        if size != record.bytes:
            return f"has {size} bytes, {record.bytes} recorded"
        if sha256_hex(self.storage.read_bytes(path)) != record.sha256:
            return "does not match its recorded SHA-256"
        return None

    def recorded_bytes(self, path: str, record: ChunkRecord) -> bytes | None:
        """The content of ``path`` when it is still what ``record`` says (size and SHA-256),
        else None (missing or changed)."""
        try:
            data = self.storage.read_bytes(path)
        except FileNotFoundError:
            return None
        if len(data) != record.bytes or sha256_hex(data) != record.sha256:
            return None
        return data

    # ------------------------------------------------------------------ recording

    def start(self, plan: Plan) -> None:
        """Save a new plan (an empty journal, a new plan id) for this pull."""
        self.plan = plan
        self.plan_id = uuid.uuid4().hex[:12]
        self.done = {}
        document = {
            "layout": LAYOUT,
            "identity": self.identity,
            "plan_id": self.plan_id,
            "plan": plan.to_json(),
        }
        self.storage.makedirs(self.folder)
        self.storage.write_atomic(self.manifest, json.dumps(document).encode("utf-8"))

    def record(self, record: ChunkRecord) -> None:
        """Note a finished chunk (its part already written); flushed in batches."""
        self.done[record.index] = record
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append(record)
        if len(self._pending) >= FLUSH_EVERY_RECORDS or self.due():
            self.flush()

    def due(self) -> bool:
        """Whether the batch in progress is due (its first record is FLUSH_EVERY_S old); the
        engine also asks between chunks, so a batch never waits for the next chunk."""
        return bool(self._pending) and time.monotonic() - self._first_pending >= FLUSH_EVERY_S

    def flush(self) -> None:
        """Write the records noted since the last flush as a new journal segment."""
        if not self._pending:
            return
        lines = "".join(json.dumps(r.to_json()) + "\n" for r in self._pending)
        self._segments += 1
        name = f"journal-{self.plan_id}-{self.owner}-{self._segments:06d}.jsonl"
        self.storage.write_atomic(self.storage.join(self.folder, name), lines.encode("utf-8"))
        self._pending.clear()

    def discard(self) -> None:
        """Remove the whole folder (a finished pull, or one that starts afresh)."""
        self._pending.clear()
        self.done = {}
        self.storage.remove_tree(self.folder)


def read_checkpoint(storage: Storage, folder: str) -> dict[str, Any] | None:
    """The plan and the recorded chunks of a checkpoint folder, for tools and tests:
    ``{"plan": {...}, "done": {index: record}}``; None when it has no readable manifest.
    Records are as written (not verified against the parts)."""
    manifest = storage.join(folder, MANIFEST)
    try:
        raw = json.loads(storage.read_bytes(manifest))
    except (OSError, ValueError):
        return None
    checkpoint = Checkpoint(storage, folder, raw.get("identity") or {})
    checkpoint.plan_id = str(raw.get("plan_id") or "")
    done = {
        index: candidates[0].to_json() for index, candidates in checkpoint._read_journal().items()
    }
    return {"plan": raw.get("plan"), "done": done}
