"""Every benchmark, one after the other, and ONE table of their figures against their targets.

Runs each benchmark as a subprocess of this interpreter (its output streams through), then reads
what it reported: ``benchmarks/results/<name>.json`` for those that write one (``throughput``,
``pull``, ``triggerer_load``, ``checkpoint``, ``masker``), the printed ratios for ``overhead`` (it
writes no file). Writes
``benchmarks/results/summary.md`` (a markdown table: benchmark, figure, measured, target,
met / not met) and ``benchmarks/results/summary.json``, and prints the table. A benchmark that
is missing (``throughput.py`` on an older checkout), fails or reports nothing gets a row saying
so. Exit status 1 when a benchmark failed (a target not met is a figure, not a failure).

    python benchmarks/run_all.py                       # all of them (about 15 minutes)
    python benchmarks/run_all.py --only overhead,triggerer_load
    python benchmarks/run_all.py --quick               # smaller runs, a smoke test
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: name -> (script, full-run arguments, quick-run arguments).
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "overhead": ("overhead.py", [], ["-n", "500", "--batches", "2", "--rounds", "3"]),
    "throughput": ("throughput.py", [], ["-n", "1000", "--rounds", "2"]),
    "pull": ("pull.py", [], ["--quick"]),
    "triggerer_load": ("triggerer_load.py", [], ["--triggers", "40", "--modes", "cold,warm"]),
    "checkpoint": ("checkpoint.py", [], ["--chunks", "2000", "--old-chunks", "100"]),
    "masker": ("masker.py", [], ["--known", "0", "1000", "--repeat", "3", "--logins", "50"]),
}
TIMEOUT_S = 3 * 3600


def run(name: str, quick: bool) -> tuple[int | None, str, float]:
    """Run one benchmark; its output is shown as it comes and kept."""
    script, full, fast = BENCHMARKS[name]
    command = [sys.executable, str(HERE / script), *(fast if quick else full)]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parent
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        try:
            code = process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = None
    return code, "".join(lines), time.perf_counter() - started


def row(
    bench: str, figure: str, measured: str, target: str, verdict: str, note: str = ""
) -> dict[str, str]:
    return {
        "benchmark": bench,
        "figure": figure,
        "measured": measured,
        "target": target,
        "verdict": verdict,
        "note": note,
    }


def from_overhead(output: str) -> list[dict[str, str]]:
    """overhead.py prints ``ratio handler/bare (medians): 1.034   <= 1.10: yes`` per section."""
    found = []
    section = ""
    for line in output.splitlines():
        if line.startswith(("sync:", "async:")):
            section = line.split(" (")[0]
        match = re.search(r"ratio handler/bare \(medians\): ([0-9.]+)\s+<= ([0-9.]+): (\w+)", line)
        if match:
            value, goal, answer = match.groups()
            found.append(
                row(
                    "overhead",
                    f"handler / bare httpx time, {section}",
                    f"{float(value):.3f}x",
                    f"<= {goal}x",
                    "met" if answer == "yes" else "not met",
                )
            )
    return found


def from_targets(bench: str, document: dict[str, Any]) -> list[dict[str, str]]:
    """The ``targets`` list of a results JSON: pull.py's and triggerer_load.py's shape (target,
    shown, goal, verdict, reason) or throughput.py's (target, share, met, reason when a
    contender did not run)."""
    found = []
    for t in document.get("targets") or []:
        if "verdict" in t:
            found.append(
                row(
                    bench,
                    str(t["target"]),
                    str(t.get("shown", t.get("value"))),
                    str(t.get("goal", "")),
                    str(t["verdict"]),
                    str(t.get("reason") or ""),
                )
            )
        else:
            share = t.get("share")
            name = str(t["target"])
            goal = name.split(">=", 1)[1].strip() if ">=" in name else ""
            found.append(
                row(
                    bench,
                    name.split(" >=")[0] + " throughput" + (f" ({goal})" if goal else ""),
                    f"{share:.2f}x" if isinstance(share, int | float) else "n/a",
                    f">= {goal.split(' x ')[0]}x" if goal else "",
                    "met" if t.get("met") else "not met",
                    # A contender that did not run (Airflow's HTTP provider not installed).
                    str(t.get("reason") or ""),
                )
            )
    return found


def extra_figures(bench: str, document: dict[str, Any]) -> list[dict[str, str]]:
    """Figures without a target worth having in the summary: the load's time and peak RSS."""
    found = []
    if bench == "triggerer_load":
        for mode, r in (document.get("results") or {}).items():
            if "error" in r:
                continue
            found.append(row(bench, f"{mode}: total time", f"{r['seconds']:.1f} s", "-", "-"))
            found.append(row(bench, f"{mode}: peak RSS", f"{r['rss_peak_mb']:.0f} MB", "-", "-"))
    return found


def collect(name: str, code: int | None, output: str, started: float) -> list[dict[str, str]]:
    if code is None:
        return [row(name, "run", "timed out", "completes", "failed")]
    if name == "overhead":
        rows = from_overhead(output)
    else:
        path = RESULTS / f"{name}.json"
        if not path.exists() or path.stat().st_mtime < started:
            rows = []
        else:
            document = json.loads(path.read_text())
            rows = from_targets(name, document) + extra_figures(name, document)
    if code != 0:
        tail = output.strip().splitlines()[-1:] or [""]
        rows.append(row(name, "run", f"exit {code}", "exit 0", "failed", tail[0][:200]))
    elif not rows:
        rows.append(row(name, "run", "no figures found", "figures", "failed"))
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    lines = [
        "| benchmark | figure | measured | target | verdict |",
        "|---|---|---:|---|---|",
    ]
    for r in rows:
        verdict = r["verdict"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(
            f"| {r['benchmark']} | {r['figure']} | {r['measured']} | {r['target']} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated, among {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    rows: list[dict[str, str]] = []
    runs: dict[str, dict[str, Any]] = {}
    for name in names:
        script = HERE / BENCHMARKS[name][0]
        if not script.exists():
            rows.append(row(name, "run", "not present", "-", "skipped", f"no {script.name}"))
            runs[name] = {"skipped": True}
            continue
        started = time.time()
        code, output, seconds = run(name, args.quick)
        rows += collect(name, code, output, started)
        runs[name] = {"exit": code, "seconds": round(seconds, 1)}
    table = markdown(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    heading = f"# Benchmarks, {time.strftime('%Y-%m-%d %H:%M')}" + (
        " (quick)" if args.quick else ""
    )
    (RESULTS / "summary.md").write_text(f"{heading}\n\n{table}\n")
    summary = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "runs": runs,
        "figures": rows,
    }
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\n{heading}\n\n{table}\n\nwritten: {RESULTS / 'summary.md'}, {RESULTS / 'summary.json'}"
    )
    failed = any(r["verdict"] == "failed" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
