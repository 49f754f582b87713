"""What recording a finished chunk costs: the journal (this release) against rewriting the whole
manifest after every chunk (the layout before it), side by side, on a local disk.

The plan is the one of a 10-year, 300-object Bazefield pull (18 300 chunks: windows of 30 days x
groups of objects and points). Both ways record every chunk the way the engine does, off any
event loop; the old way is timed over its first ``--old-chunks`` chunks (it grows with the chunks
done, so it is extrapolated to the whole pull from a fit of its per-chunk cost, and the bytes it
would write are computed exactly). Prints the figures and writes
``benchmarks/results/checkpoint.json``.

    python benchmarks/checkpoint.py                 # 18 300 chunks
    python benchmarks/checkpoint.py --chunks 2000   # a smaller plan
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from echo_connhandler.pull import Chunk, LocalStorage, Plan
from echo_connhandler.pull._checkpoint import Checkpoint, ChunkRecord

HERE = Path(__file__).resolve().parent


def bazefield_like_plan(chunks: int) -> Plan:
    """A plan shaped like a long Bazefield pull's (the chunk params are what bloats it)."""
    objects = [f"WTG{n:03d}" for n in range(300)]
    made = []
    for index in range(chunks):
        group = objects[(index * 10) % 300 : (index * 10) % 300 + 10]
        made.append(
            Chunk(
                index,
                f"2016-01-01T00:00:00Z+{index}/{group[0]}",
                {
                    "from": "2016-01-01T00:00:00Z",
                    "to": "2016-01-31T00:00:00Z",
                    "objects": group,
                    "points": ["ActivePower", "WindSpeed", "NacelleDirection"],
                },
            )
        )
    return Plan(made, [], objects)


def record_for(index: int) -> ChunkRecord:
    return ChunkRecord(index, f"k{index}", rows=4320, bytes=310_000, sha256="ab" * 32)


def journal(folder: Path, plan: Plan) -> dict[str, Any]:
    checkpoint = Checkpoint(LocalStorage(), str(folder / "journal"), {"bench": 1})
    checkpoint.start(plan)
    written_before = _size(folder / "journal")
    started = time.perf_counter()
    worst = 0.0
    for chunk in plan.chunks:
        one = time.perf_counter()
        checkpoint.record(record_for(chunk.index))
        worst = max(worst, time.perf_counter() - one)
    checkpoint.flush()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "per_chunk_ms": 1000 * seconds / len(plan.chunks),
        "worst_chunk_ms": 1000 * worst,
        "bytes_written": _size(folder / "journal") - written_before,
    }


def whole_manifest(folder: Path, plan: Plan, timed: int) -> dict[str, Any]:
    """The old layout: after every chunk, the plan and every record so far, rewritten."""
    storage = LocalStorage()
    path = str(folder / "manifest.json")
    plan_json = plan.to_json()
    done: dict[str, Any] = {}
    started = time.perf_counter()
    sizes = []
    for chunk in plan.chunks[:timed]:
        done[str(chunk.index)] = {"rows": 4320, "bytes": 310_000}
        document = json.dumps({"identity": {"bench": 1}, "plan": plan_json, "done": done})
        storage.write_atomic(path, document.encode("utf-8"))
        sizes.append(len(document))
    seconds = time.perf_counter() - started
    plan_bytes = len(json.dumps(plan_json))
    record_bytes = len(json.dumps({"0": {"rows": 4320, "bytes": 310_000}})) - 2
    total = sum(plan_bytes + 80 + n * record_bytes for n in range(1, len(plan.chunks) + 1))
    per_chunk = seconds / timed
    # Its cost per chunk is about proportional to the manifest's size: scale by the mean size.
    mean_size_all = total / len(plan.chunks)
    mean_size_timed = sum(sizes) / len(sizes)
    return {
        "timed_chunks": timed,
        "per_chunk_ms_timed": 1000 * per_chunk,
        "last_manifest_bytes": plan_bytes + 80 + len(plan.chunks) * record_bytes,
        "bytes_written": total,
        "seconds_extrapolated": per_chunk * len(plan.chunks) * mean_size_all / mean_size_timed,
    }


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=18_300)
    parser.add_argument("--old-chunks", type=int, default=300)
    args = parser.parse_args()
    plan = bazefield_like_plan(args.chunks)
    with tempfile.TemporaryDirectory() as tmp:
        new = journal(Path(tmp), plan)
        old = whole_manifest(Path(tmp), plan, min(args.old_chunks, args.chunks))
    print(f"plan: {args.chunks} chunks")
    print(
        f"journal:        {new['seconds']:.2f} s in all, {new['per_chunk_ms']:.3f} ms per chunk "
        f"(worst {new['worst_chunk_ms']:.1f} ms), {new['bytes_written'] / 1e6:.1f} MB written"
    )
    print(
        f"whole manifest: {old['seconds_extrapolated']:.0f} s in all (extrapolated from "
        f"{old['timed_chunks']} chunks at {old['per_chunk_ms_timed']:.1f} ms), "
        f"{old['bytes_written'] / 1e9:.1f} GB written, the last manifest "
        f"{old['last_manifest_bytes'] / 1e6:.1f} MB"
    )
    ratio = old["seconds_extrapolated"] / new["seconds"] if new["seconds"] else float("inf")
    print(f"journal / whole manifest: {ratio:.0f}x less time")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    per_chunk_bytes = new["bytes_written"] / args.chunks
    targets = [
        {
            "target": f"recording a chunk, {args.chunks} chunks: time per chunk",
            "shown": f"{new['per_chunk_ms']:.3f} ms (whole manifest: "
            f"{1000 * old['seconds_extrapolated'] / args.chunks:.1f} ms)",
            "goal": "< 1 ms",
            "verdict": "met" if new["per_chunk_ms"] < 1.0 else "not met",
        },
        {
            "target": f"recording a chunk, {args.chunks} chunks: bytes written per chunk",
            "shown": f"{per_chunk_bytes:.0f} B (whole manifest: "
            f"{old['bytes_written'] / args.chunks / 1e6:.1f} MB)",
            "goal": "< 1 KB, whatever the chunks done",
            "verdict": "met" if per_chunk_bytes < 1000 else "not met",
        },
    ]
    (results / "checkpoint.json").write_text(
        json.dumps(
            {"chunks": args.chunks, "journal": new, "whole_manifest": old, "targets": targets},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
