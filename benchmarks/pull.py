"""A long CCEE pull, four ways, against the sandbox with 50 ms added latency per request.

One ``pld_horario`` resource (2024) of 100 000 and 1 000 000 rows (the sandbox's
``ccee_rows_per_resource``), read through CKAN ``datastore_search`` pages of 32 000 rows and
written as JSON Lines by each contender:

``echo``
    our deferred path: :class:`~echo_connhandler_provider.triggers.pull.PullTrigger` driven
    directly (``await anext(trigger.run())``, an ``AIRFLOW_CONN_*`` connection of type ``ccee``),
    concurrency 4, the engine's default page size (``--echo-page-size`` to change it). When the
    provider's trigger module is missing, :func:`run_pull` on a :class:`CceeHttpHandler` instead;
    the report says which one ran. While it pulls, a coroutine sleeping 10 ms in a loop records
    the event loop's longest stall. ``echo_stdlib`` is the same with orjson hidden (the engine
    without the ``fast`` extra).
``http_operator``
    ``apache-airflow-providers-http``'s ``HttpOperator`` with a ``pagination_function``, run the
    non-deferrable way (``execute(context)``; its deferred pagination needs a running
    triggerer), the records written to JSON Lines at the end. The provider is not a dependency
    of this project: when it is missing, it is installed at run time, with the exact versions
    pip resolves against this venv, into a private folder under ``~/.cache`` that only this
    contender's process puts on ``sys.path`` (the venv is left as it is).
``httpx_loop``
    a plain sequential loop over ``httpx.Client``: browser headers, warm-up ``GET /``, pages by
    offset, ``json.loads``, lines written as they come.
``floor``
    no network: the same 32 000-row pages, fetched once beforehand and kept as bytes, decoded
    and encoded (JSON Lines) in one thread with the engine's codec (orjson when installed):
    the time the rows themselves cost. ``floor_stdlib``: the same with the standard library.

Each contender runs in its own child process (so its peak RSS, ``ru_maxrss``, is its own); the
sandbox runs in another process, so its CPU is not the client's. All outputs must be the same
bytes (their SHA-256 is compared). Targets (from the issue): ``echo`` at least 3x faster than
``http_operator``, within 2x of ``floor``, its peak RSS at 1 000 000 rows within 1.5x of that at
100 000, and its event loop never stalled 0.1 s or more (also evaluated for ``echo_stdlib``
against ``floor_stdlib``). ``--profile`` then runs ``echo`` once more under ``py-spy record
--gil`` and prints where its time goes.

The sandbox generates every row on the fly with BLAKE2b (0.6 to 1 s per 32 000-row page on
one core): that would be the bottleneck of every contender and hide the clients' differences. By
default (``--sandbox cached``) the sandbox runs in a small child process that answers repeated
``datastore_search`` queries from memory, behind its own WAF and latency middlewares: every
query is requested once beforehand (the 32 000-row pages are the floor's input), so the
contenders time the client, not the emulator; a request that missed the cache is reported.
``--sandbox cli`` runs ``python -m echo_connhandler.sandbox --ccee-rows N --latency-ms 50``
unchanged instead.

Results: a markdown table on stdout, and ``benchmarks/results/pull.json`` (kept out of git).
Run::

    python benchmarks/pull.py                      # 100 000 and 1 000 000 rows (a few minutes)
    python benchmarks/pull.py --quick              # 20 000 rows, a smoke run
    python benchmarks/pull.py --sizes 100000 --contenders echo,floor
    python benchmarks/pull.py --sandbox cli        # the sandbox as is (server-bound)
    python benchmarks/pull.py --profile            # and where the echo path's time goes (py-spy)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "pull.json"

LATENCY_MS = 50.0
CONCURRENCY = 4
PAGE_ROWS = 32_000
SIZES = (100_000, 1_000_000)
QUICK_SIZES = (20_000,)
DATASET, YEAR = "pld_horario", 2024
CONTENDERS = ("floor", "echo", "httpx_loop", "http_operator", "floor_stdlib", "echo_stdlib")
#: Contenders run with orjson hidden (``import orjson`` fails): the engine without the fast extra.
STDLIB_ONLY = ("floor_stdlib", "echo_stdlib")
LABELS = {
    "floor": "floor (decode + encode, no network)",
    "floor_stdlib": "floor (decode + encode, no network)",
    "echo_stdlib": "echo deferred path",
    "echo": "echo deferred path",
    "httpx_loop": "plain httpx loop (sequential)",
    "http_operator": "HttpOperator + pagination_function",
}

# Targets of the issue.
MIN_SPEEDUP_VS_OPERATOR = 3.0
MAX_RATIO_TO_FLOOR = 2.0
MAX_RSS_GROWTH = 1.5
MAX_LOOP_STALL_S = 0.1
STALL_PERIOD_S = 0.010

#: What a browser sends: the CCEE WAF (and the sandbox's) blocks bot-like User-Agents.
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
    "Accept": "application/json, text/plain, */*",
    "Accept-Language": "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7",
}
ACTION = "api/3/action"
WAF_COOKIE = "ak_bmsc"
CACHE_ADMIN = "/_sandbox/bench-cache"
HTTP_PROVIDER = "apache-airflow-providers-http"
CHILD_TIMEOUT_S = 3600


def page_params(resource_id: str, offset: int, limit: int = PAGE_ROWS) -> dict[str, Any]:
    """The query of one page, as the engine sends it (``sort=_id``: pages never overlap)."""
    return {"resource_id": resource_id, "limit": limit, "offset": offset, "sort": "_id"}


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    ``VmHWM`` of ``/proc/self/status`` where there is one: ``ru_maxrss`` would do, but on Linux
    it survives ``execve`` and a child started by ``subprocess`` (vfork + exec) inherits the
    parent's peak: a child of a 300 MB parent reports 300 MB before doing anything.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def encoder() -> Callable[[Any], str]:
    """The JSON Lines encoder every contender uses (the engine's settings): same bytes."""
    return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def encode_lines(records: list[dict[str, Any]], dumps: Callable[[Any], str]) -> bytes:
    return ("\n".join(map(dumps, records)) + "\n").encode("utf-8") if records else b""


def digest(path: Path) -> tuple[str, int]:
    """SHA-256 and line count of an output."""
    sha, lines = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            lines += block.count(b"\n")
    return sha.hexdigest(), lines


# -- the sandbox, in its own process ---------------------------------------------------------------
def serve_sandbox(rows: int, latency_ms: float, seed: int) -> None:
    """Child process: the sandbox with a response cache on ``datastore_search``; prints its URLs.

    The cache sits on the CKAN action route, inside the sandbox's fault (latency) and WAF
    middlewares: a cached answer still waits the latency and still needs the WAF cookie. Its
    counters are at ``GET /_sandbox/bench-cache`` (``POST`` zeroes them). Runs until stdin closes.
    """
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from echo_connhandler.sandbox import Sandbox, SandboxConfig

    sandbox = Sandbox(SandboxConfig(seed=seed, latency_ms=latency_ms, ccee_rows_per_resource=rows))
    app = sandbox.app("ccee")
    counters = {"hits": 0, "misses": 0, "entries": 0}
    store: dict[tuple[Any, ...], list[Message]] = {}

    def cached(inner: ASGIApp) -> ASGIApp:
        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            name = scope.get("path_params", {}).get("name")
            if scope["method"] != "GET" or name != "datastore_search":
                await inner(scope, receive, send)
                return
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            key = (scope["path"], tuple(sorted(query)))
            messages = store.get(key)
            if messages is not None:
                counters["hits"] += 1
                for message in messages:
                    await send(message)
                return
            counters["misses"] += 1
            recorded: list[Message] = []

            async def record(message: Message) -> None:
                recorded.append(message)
                await send(message)

            await inner(scope, receive, record)
            if recorded and recorded[0].get("status") == 200:
                store[key] = recorded
                counters["entries"] = len(store)

        return endpoint

    for route in app.router.routes:
        if getattr(route, "path", None) in ("/api/3/action/{name}", "/api/action/{name}"):
            route.app = cached(route.app)  # type: ignore[attr-defined]

    async def cache_admin(request: Request) -> JSONResponse:
        if request.method == "POST":
            counters["hits"] = counters["misses"] = 0
        return JSONResponse(counters)

    app.router.routes.insert(0, Route(CACHE_ADMIN, cache_admin, methods=["GET", "POST"]))
    sandbox.start()
    try:
        print(json.dumps({"ccee": sandbox.urls.ccee}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        sandbox.stop()


class SandboxProcess:
    """The sandbox in a child process: ``cached`` (above) or ``cli`` (the command line, as is)."""

    def __init__(self, rows: int, mode: str, seed: int = 42) -> None:
        self.rows, self.mode, self.seed = rows, mode, seed
        self.process: subprocess.Popen[str] | None = None
        self.ccee = ""

    def __enter__(self) -> SandboxProcess:
        if self.mode == "cached":
            command = [sys.executable, __file__, "--serve-sandbox", str(self.rows)]
            command += ["--latency-ms", str(LATENCY_MS), "--seed", str(self.seed)]
        else:
            command = [sys.executable, "-m", "echo_connhandler.sandbox"]
            command += ["--ccee-rows", str(self.rows), "--latency-ms", str(LATENCY_MS)]
            command += ["--seed", str(self.seed)]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if self.mode == "cached":
                self.ccee = json.loads(line)["ccee"]
                break
            match = re.match(r"\s*ccee:\s+(\S+)", line)
            if match:
                self.ccee = match.group(1)
                break
        if not self.ccee:
            self.__exit__(None, None, None)
            raise RuntimeError("the sandbox did not start (see its output above)")
        return self

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        if self.mode == "cli":
            process.terminate()  # the command line stops cleanly on SIGTERM
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def cache(self, reset: bool = False) -> dict[str, int] | None:
        if self.mode != "cached":
            return None
        method = "POST" if reset else "GET"
        response = httpx.request(method, self.ccee + CACHE_ADMIN, headers=BROWSER_HEADERS)
        response.raise_for_status()
        return dict(response.json())


@contextlib.contextmanager
def browser_client(base: str) -> Iterator[httpx.Client]:
    """An httpx client that passes the WAF: browser headers, then the warm-up ``GET /``."""
    with httpx.Client(base_url=base, headers=BROWSER_HEADERS, timeout=120) as client:
        client.get("/").raise_for_status()
        yield client


def find_resource(base: str) -> str:
    """The id of the ``pld_horario`` resource of 2024 (``package_show``)."""
    with browser_client(base) as client:
        response = client.get(f"/{ACTION}/package_show", params={"id": DATASET})
        response.raise_for_status()
        for raw in response.json()["result"]["resources"]:
            if str(raw.get("name", "")).endswith(str(YEAR)):
                return str(raw["id"])
    raise RuntimeError(f"no {DATASET} resource of {YEAR} in the sandbox")


def waf_checks(base: str, resource_id: str) -> dict[str, int]:
    """Status of a page request with a bot User-Agent, and with browser headers but no cookie."""
    query = page_params(resource_id, 0, 1)
    url = f"{base}/{ACTION}/datastore_search"
    bot = httpx.get(url, params=query, headers={"User-Agent": "python-requests/2"})
    no_cookie = httpx.get(url, params=query, headers=BROWSER_HEADERS)
    return {"bot_user_agent": bot.status_code, "browser_headers_no_cookie": no_cookie.status_code}


def engine_page_size(override: int | None) -> int:
    """The rows per request of the echo contender: ``--echo-page-size``, else the engine's
    default (``CceeDatastoreSource().page_size``; CKAN caps it at 32 000)."""
    if override:
        return override
    from echo_connhandler.pull import CceeDatastoreSource

    return min(int(CceeDatastoreSource(resource_ids=["-"]).page_size), PAGE_ROWS)


def prime(
    base: str, resource_id: str, rows: int, pages_dir: Path, echo_page: int
) -> dict[str, Any]:
    """Request every query the contenders make once (the engine's plan probes and pages, the
    32 000-row pages of the others) and keep the 32 000-row pages' bytes for the floor. With the
    cached sandbox this fills its cache; the time per 32 000-row page here is the sandbox's own
    cost of generating one."""
    pages_dir.mkdir(parents=True, exist_ok=True)
    timings: list[float] = []
    url = f"/{ACTION}/datastore_search"
    with browser_client(base) as client:
        client.get(url, params=page_params(resource_id, 0, 0)).raise_for_status()
        probe = {**page_params(resource_id, 0, echo_page), "fields": "_id"}
        client.get(url, params=probe).raise_for_status()
        for index, offset in enumerate(range(0, rows, PAGE_ROWS)):
            started = time.perf_counter()
            response = client.get(url, params=page_params(resource_id, offset))
            response.raise_for_status()
            timings.append(time.perf_counter() - started)
            (pages_dir / f"page-{index:05d}.json").write_bytes(response.content)
        if echo_page != PAGE_ROWS:
            for offset in range(0, rows, echo_page):
                params = page_params(resource_id, offset, echo_page)
                client.get(url, params=params).raise_for_status()
    return {
        "pages": len(timings),
        "echo_page_rows": echo_page,
        "first_fetch_s_per_page": round(statistics.median(timings), 3) if timings else 0.0,
    }


# -- contenders (each in its own child process) ----------------------------------------------------
class StallWatch:
    """Records the longest lateness of a coroutine that sleeps ``period`` in a loop."""

    def __init__(self, period: float = STALL_PERIOD_S) -> None:
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, loop.time() - before - self.period)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.worst


class Stopwatch:
    """The timed part of a contender: wall time, CPU time (all threads), peak RSS before it."""

    def __init__(self) -> None:
        self.rss_base_mb = peak_rss_mb()  # after the imports: what the process needs idle
        self.cpu = cpu_seconds()
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def result(self, **detail: Any) -> dict[str, Any]:
        return {
            "seconds": time.perf_counter() - self.started,
            "cpu_s": round(cpu_seconds() - self.cpu, 3),
            "rss_base_mb": round(self.rss_base_mb, 1),
            "detail": detail,
        }


def _floor(args: argparse.Namespace, out: Path, loads: Any, dump_lines: Any) -> dict[str, Any]:
    pages = [p.read_bytes() for p in sorted(Path(args.pages_dir).glob("page-*.json"))]
    decode_s = encode_s = 0.0
    watch = Stopwatch()
    with out.open("wb") as f:
        for raw in pages:
            t0 = time.perf_counter()
            records = loads(raw)["result"]["records"]
            t1 = time.perf_counter()
            f.write(dump_lines(records))
            encode_s += time.perf_counter() - t1
            decode_s += t1 - t0
            del records
    return watch.result(decode_s=round(decode_s, 3), encode_write_s=round(encode_s, 3))


def contender_floor(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The engine's own codec (orjson with the ``fast`` extra, else the stdlib), no network."""
    from echo_connhandler._json import FAST_JSON, dumps_compact, loads

    def dump_lines(records: list[dict[str, Any]]) -> bytes:
        # Streamed into one buffer: a list of 32 000 orjson results before a join costs ~4 KiB
        # of heap per line (each result keeps orjson's first buffer) and page faults.
        buffer = io.BytesIO()
        write = buffer.write
        for record in records:
            write(dumps_compact(record))
            write(b"\n")
        return buffer.getvalue()

    result = _floor(args, out, loads, dump_lines)
    result["detail"]["codec"] = "orjson" if FAST_JSON else "json"
    return result


def contender_httpx_loop(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    dumps = encoder()
    watch = Stopwatch()
    with browser_client(args.ccee) as client, out.open("wb") as f:
        offset, total = 0, None
        while total is None or offset < total:
            response = client.get(
                f"/{ACTION}/datastore_search", params=page_params(args.resource_id, offset)
            )
            response.raise_for_status()
            result = json.loads(response.content)["result"]
            total = int(result["total"])
            f.write(encode_lines(result["records"], dumps))
            offset += PAGE_ROWS
    return watch.result()


async def _echo(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from echo_connhandler import CceeHttpHandler, HttpConnProperties
    from echo_connhandler.pull import CceeDatastoreSource, run_pull

    trigger_cls: Any = None
    fallback = ""
    if args.echo_path in ("auto", "trigger"):
        try:
            from echo_connhandler_provider.triggers.pull import PullTrigger
        except ImportError as exc:  # the provider's trigger module is not there (yet)
            if args.echo_path == "trigger":
                raise
            fallback = f" (PullTrigger not importable: {type(exc).__name__}: {exc})"
        else:
            trigger_cls = PullTrigger

    source_kwargs: dict[str, Any] = {"resource_ids": [args.resource_id]}
    if args.echo_page_size:
        source_kwargs["page_size"] = args.echo_page_size
    stalls: StallWatch | None = StallWatch()
    assert stalls is not None
    watch = Stopwatch()
    stalls.start()
    stall = 0.0
    try:
        if trigger_cls is not None:
            trigger = trigger_cls(
                conn_id="bench_ccee",
                source="ccee_datastore",
                arguments=source_kwargs,
                output=str(out),
                format="jsonl",
                concurrency=CONCURRENCY,
            )
            events = trigger.run()
            event = await anext(events)
            await events.aclose()
            payload = dict(event.payload)
            if payload.get("status") != "success":
                raise RuntimeError(f"the trigger failed: {payload}")
            fetched = payload["summary"]
            trigger_s = watch.elapsed()
            stall = await stalls.stop()
            stalls = None
            # The resumed task's part, as the operator's execute_complete runs it: the kept
            # pages decoded, checked and encoded on the worker's cores, then joined.
            props = HttpConnProperties(host=args.ccee)
            async with CceeHttpHandler(props, skip_connect=True) as ccee:
                source = CceeDatastoreSource(**payload["arguments"])
                # What the operator's execute_complete uses (PROCESS_DECODE_CHUNKS).
                decode = "process" if fetched["chunks"] >= 16 else "thread"
                summary = dict(
                    await run_pull(ccee, source, str(out), concurrency=CONCURRENCY, decode=decode)
                )
            summary["retries"] = int(fetched["retries"]) + int(summary["retries"])
            path = (
                f"PullTrigger.run() (fetch, {trigger_s:.2f} s) + finish in the worker "
                f"({decode}, {watch.elapsed() - trigger_s:.2f} s)"
            )
        else:
            props = HttpConnProperties(host=args.ccee)
            async with CceeHttpHandler(props, skip_connect=True) as ccee:
                source = CceeDatastoreSource(**source_kwargs)
                summary = dict(await run_pull(ccee, source, str(out), concurrency=CONCURRENCY))
            path = "run_pull()" + fallback
    finally:
        if stalls is not None:
            stall = await stalls.stop()
    from echo_connhandler._json import FAST_JSON

    return watch.result(
        codec="orjson" if FAST_JSON else "json",
        path=path,
        concurrency=CONCURRENCY,
        loop_stall_max_s=round(stall, 4),
        chunks=summary.get("chunks"),
        page_rows=-(-int(summary.get("rows") or 0) // max(1, int(summary.get("chunks") or 1))),
        retries=summary.get("retries"),
    )


def contender_echo(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return asyncio.run(_echo(args, out))


def contender_http_operator(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import requests
    from airflow.providers.http.operators.http import HttpOperator

    def next_page(response: requests.Response) -> dict[str, Any] | None:
        # Decoded once here and kept on the response for the filter: the operator's best case
        # (a first-time user would call response.json() again in the filter).
        result = json.loads(response.content)["result"]
        response.ckan_result = result  # type: ignore[attr-defined]
        offset = int(result["offset"]) + int(result["limit"])
        return {"data": {"offset": offset}} if offset < int(result["total"]) else None

    def records(responses: list[requests.Response]) -> list[dict[str, Any]]:
        return [row for r in responses for row in r.ckan_result["records"]]  # type: ignore[attr-defined]

    dumps = encoder()
    watch = Stopwatch()
    # The WAF wants its cookie on every API request, and the hook opens a new requests.Session
    # (no cookie jar carried over) per page: warm up once, send the cookie as a header.
    warmup = requests.get(args.ccee + "/", headers=BROWSER_HEADERS, timeout=60)
    warmup.raise_for_status()
    operator = HttpOperator(
        task_id="ccee_pull",
        http_conn_id="bench_http",
        endpoint=f"{ACTION}/datastore_search",
        method="GET",
        data=page_params(args.resource_id, 0),
        headers={"Cookie": f"{WAF_COOKIE}={warmup.cookies[WAF_COOKIE]}"},
        pagination_function=next_page,
        response_filter=records,
    )
    rows = operator.execute(context={})  # type: ignore[arg-type]
    with out.open("wb") as f:
        for start in range(0, len(rows), PAGE_ROWS):
            f.write(encode_lines(rows[start : start + PAGE_ROWS], dumps))
    return watch.result(
        waf="browser User-Agent and Accept in the connection's extra; the ak_bmsc cookie of a "
        "warm-up GET / in the operator's headers"
    )


CHILDREN: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "floor": contender_floor,
    "floor_stdlib": contender_floor,
    "echo": contender_echo,
    "echo_stdlib": contender_echo,
    "httpx_loop": contender_httpx_loop,
    "http_operator": contender_http_operator,
}


def run_child(args: argparse.Namespace) -> None:
    """Child process: one contender, one JSON line ``RESULT {...}`` on stdout."""
    if args.contender in STDLIB_ONLY:
        sys.modules["orjson"] = None  # type: ignore[assignment]  # `import orjson` now fails
    out = Path(args.workdir) / f"{args.contender}.jsonl"
    result = CHILDREN[args.contender](args, out)
    result["rss_peak_mb"] = round(peak_rss_mb(), 1)
    result["sha256"], result["rows"] = digest(out)
    out.unlink()
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------------------
def http_provider_path(cache_root: Path) -> tuple[str | None, str]:
    """Where ``apache-airflow-providers-http`` is importable from: None when the venv has it,
    else a private folder, where it is installed once with exactly what pip would add to this
    venv (``--dry-run --report``), pinned, ``--no-deps``: the venv itself is never changed."""
    with contextlib.suppress(PackageNotFoundError):
        return None, f"{HTTP_PROVIDER} {version(HTTP_PROVIDER)}, installed in the environment"
    target = cache_root / f"providers-http-py{sys.version_info.major}.{sys.version_info.minor}"
    if not (target / "airflow" / "providers" / "http" / "operators" / "http.py").exists():
        print(f"installing {HTTP_PROVIDER} into {target} (for this benchmark only)", flush=True)
        cache_root.mkdir(parents=True, exist_ok=True)
        report = cache_root / "http-provider-report.json"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
        subprocess.run(  # noqa: S603 - the pip of this interpreter
            [*pip, "--dry-run", "--report", str(report), HTTP_PROVIDER],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        missing = json.loads(report.read_text())["install"]
        pins = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in missing]
        subprocess.run([*pip, "--no-deps", "--target", str(target), *pins], check=True)  # noqa: S603
    found = next(
        (d.version for d in distributions(path=[str(target)]) if d.name == HTTP_PROVIDER), "?"
    )
    return str(target), f"{HTTP_PROVIDER} {found}, private folder {target}"


def child_env(sandbox: SandboxProcess, airflow_home: str, extra_path: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": airflow_home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_BENCH_CCEE": json.dumps(
                {"conn_type": "ccee", "host": sandbox.ccee, "extra": {"concurrency": CONCURRENCY}}
            ),
            "AIRFLOW_CONN_BENCH_HTTP": json.dumps(
                {"conn_type": "http", "host": sandbox.ccee, "extra": dict(BROWSER_HEADERS)}
            ),
        }
    )
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def run_contender(
    name: str,
    args: argparse.Namespace,
    sandbox: SandboxProcess,
    resource_id: str,
    workdir: Path,
    env: dict[str, str],
    prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one contender in a child process (under ``prefix``, e.g. a profiler) and parse its
    result line; the sandbox's cache counters of the run are added."""
    command = [*prefix, sys.executable, __file__, "--contender", name, "--ccee", sandbox.ccee]
    command += ["--resource-id", resource_id, "--workdir", str(workdir)]
    command += ["--pages-dir", str(workdir / "pages"), "--echo-path", args.echo_path]
    if args.echo_page_size:
        command += ["--echo-page-size", str(args.echo_page_size)]
    sandbox.cache(reset=True)
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return {"error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    cache = sandbox.cache()
    if cache is not None:
        result["sandbox_cache"] = {"hits": cache["hits"], "misses": cache["misses"]}
        if cache["misses"]:  # a query the priming did not make: timed against the generator
            result["warning"] = f"{cache['misses']} requests missed the sandbox's cache"
    return result


#: Where the echo contender's time goes: the first rule whose markers appear in a sampled stack
#: names it (py-spy's collapsed stacks, ``--gil``: only the thread holding the GIL is sampled).
PROFILE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("imports (almost all outside the timer)", ("_find_and_load",)),
    ("output digest (outside the timer)", ("digest (pull.py",)),
    ("check_rows (field check)", ("check_rows",)),
    (
        "encode: rebuild of each row {n: row.get(n)}",
        ("<dictcomp> (echo_connhandler/pull/_formats",),
    ),
    ("encode: dumps_compact(), one call per row", ("_jsonl", "encode_part")),
    ("decode: loads() of the pages", ("_page_rows",)),
    ("plan (limit=0 and fields=_id probes)", ("CceeDatastoreSource.plan",)),
    (
        "part files, manifest, join, clean-up",
        ("write_atomic", "_assemble", "_Checkpoint", "rmtree"),
    ),
    ("HTTP (httpx, httpcore, h11)", ("httpx", "httpcore", "h11")),
    ("Airflow connection lookup", ("airflow",)),
    ("event loop, thread pool hand-offs", ("asyncio", "selectors", "concurrent/futures")),
)
PROFILE_RATE = 200


def profile_echo(
    args: argparse.Namespace,
    sandbox: SandboxProcess,
    resource_id: str,
    workdir: Path,
    env: dict[str, str],
    size: int,
) -> dict[str, Any]:
    """One more run of the echo contender under ``py-spy record --gil``; where its time goes."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("  --profile needs py-spy on PATH (pip install py-spy): skipped", flush=True)
        return {"error": "py-spy not found"}
    raw = Path(args.json).with_name(f"echo-profile-{size}.txt")
    raw.parent.mkdir(parents=True, exist_ok=True)
    prefix = (spy, "record", "--gil", "--threads", "--format", "raw")
    prefix += ("--rate", str(PROFILE_RATE), "--output", str(raw), "--")
    run = run_contender("echo", args, sandbox, resource_id, workdir, env, prefix)
    if "error" in run:
        return run
    seconds: dict[str, float] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        name = next((n for n, keys in PROFILE_RULES if any(k in stack for k in keys)), "other")
        if ";" not in stack:  # the thread's name only: interpreter start-up or shut-down
            name = "no Python frame: start-up, shut-down (outside the timer)"
        seconds[name] = seconds.get(name, 0.0) + int(count) / PROFILE_RATE
    timed = sum(v for k, v in seconds.items() if not k.endswith("timer)"))
    print(f"  profile of echo, {size:,} rows ({run['seconds']:.1f} s under py-spy; GIL held):")
    for name, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        share = "" if name.endswith("timer)") else f"{value / timed:6.1%}"
        print(f"    {value:6.2f} s {share:>7}  {name}")
    print(f"    stacks: {raw}", flush=True)
    return {"run": run, "gil_seconds": seconds, "timed_gil_seconds": timed, "stacks": str(raw)}


def measure(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one contender: the median time, the worst peak RSS and loop stall."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    detail = dict(middle.get("detail") or {})
    stalls = [r["detail"]["loop_stall_max_s"] for r in runs if "loop_stall_max_s" in r["detail"]]
    if stalls:
        detail["loop_stall_max_s"] = max(stalls)
    return {
        **middle,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "rss_peak_mb": max(r["rss_peak_mb"] for r in runs),
        "detail": detail,
        "runs": [round(r["seconds"], 3) for r in runs],
    }


def describe(run: dict[str, Any]) -> str:
    """One progress line of a run."""
    if "error" in run:
        return f"FAILED {run['error']}"
    text = f"{run['seconds']:.2f} s, {run['cpu_s']:.1f} s CPU, {run['rss_peak_mb']:.0f} MB peak"
    if run.get("detail"):
        text += f", {run['detail']}"
    if run.get("sandbox_cache"):
        text += f", sandbox cache {run['sandbox_cache']}"
    if run.get("warning"):
        text += f" WARNING: {run['warning']}"
    return text


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate(
    results: dict[int, dict[str, dict[str, Any]]], sizes: list[int]
) -> list[dict[str, Any]]:
    """The issue's four targets at the largest size (RSS: largest vs smallest size), for the
    engine as installed (``echo`` vs ``floor``) and, when measured, without orjson."""
    targets = _evaluate(results, sizes, "echo", "floor")
    if any("echo_stdlib" in by for by in results.values()):
        targets += _evaluate(results, sizes, "echo_stdlib", "floor_stdlib")
    return targets


def _evaluate(
    results: dict[int, dict[str, dict[str, Any]]], sizes: list[int], echo_name: str, floor_name: str
) -> list[dict[str, Any]]:
    def run(size: int, name: str) -> dict[str, Any]:
        found = results.get(size, {}).get(name) or {}
        return {} if "error" in found else found

    big, small = max(sizes), min(sizes)
    echo, op, floor = (run(big, n).get("seconds") for n in (echo_name, "http_operator", floor_name))
    codec = (run(big, echo_name).get("detail") or {}).get("codec", "?")
    tag = f" [{codec}]"
    pages = -(-big // PAGE_ROWS)
    targets: list[dict[str, Any]] = []

    speedup = ratio(op, echo)
    reason = ""
    op_cpu = run(big, "http_operator").get("cpu_s") or 0.0
    if speedup is not None and speedup < MIN_SPEEDUP_VS_OPERATOR and floor and op:
        if op_cpu >= 0.6 * op:
            reason = (
                f"latency is only {pages} x {LATENCY_MS:g} ms = {pages * LATENCY_MS / 1000:.1f} s "
                f"of the operator's {op:.1f} s; the rest is decoding and encoding, and the echo "
                f"path cannot beat its own floor ({floor:.1f} s): at most {op / floor:.1f}x is "
                "possible"
            )
        else:
            reason = (
                f"the operator waits {op - op_cpu:.1f} s of its {op:.1f} s: the server, not the "
                "client, sets the pace of every contender"
            )
    name = f"speedup vs HttpOperator, {big:,} rows{tag}"
    targets.append(_target(name, speedup, ">=", MIN_SPEEDUP_VS_OPERATOR, reason))

    to_floor = ratio(echo, floor)
    reason = ""
    if to_floor is not None and to_floor > MAX_RATIO_TO_FLOOR and echo and floor:
        cpu = run(big, echo_name).get("cpu_s") or 0.0
        floor_cpu = run(big, floor_name).get("cpu_s") or 0.0
        reason = (
            f"{echo - floor:.1f} s above the floor; {cpu:.1f} s of CPU against the floor's "
            f"{floor_cpu:.1f} s (profile: --profile, docs/performance.md)"
        )
    name = f"echo / floor, {big:,} rows{tag}"
    targets.append(_target(name, to_floor, "<=", MAX_RATIO_TO_FLOOR, reason))

    growth, reason = None, "needs two sizes"
    peak_big = run(big, echo_name).get("rss_peak_mb")
    peak_small = run(small, echo_name).get("rss_peak_mb")
    if big != small and peak_big and peak_small:
        growth, reason = peak_big / peak_small, ""
        if growth > MAX_RSS_GROWTH:
            reason = (
                f"{peak_big:.0f} MB vs {peak_small:.0f} MB: the peak grows with the rows pulled "
                "(docs/performance.md, Memory)"
            )
    name = f"echo peak RSS {big:,} / {small:,} rows{tag}"
    targets.append(_target(name, growth, "<=", MAX_RSS_GROWTH, reason))

    stall = (run(big, echo_name).get("detail") or {}).get("loop_stall_max_s")
    reason = ""
    if stall is not None and stall >= MAX_LOOP_STALL_S:
        reason = (
            "the loop waits for the GIL: full garbage-collector passes, decoding a page (one C "
            "call), httpx's parsing (docs/performance.md)"
        )
    name = f"echo event loop stall, {big:,} rows{tag}"
    targets.append(_target(name, stall, "<", MAX_LOOP_STALL_S, reason, unit=" s"))
    return targets


def _target(
    name: str, value: float | None, op: str, goal: float, reason: str, unit: str = "x"
) -> dict[str, Any]:
    if value is None:
        verdict = "not measured"
    else:
        met = {"<=": value <= goal, ">=": value >= goal, "<": value < goal}[op]
        verdict = "met" if met else "not met"
    shown = "n/a" if value is None else (f"{value:.2f}x" if unit == "x" else f"{value:.3f} s")
    return {
        "target": name,
        "value": value,
        "shown": shown,
        "goal": f"{op} {goal:g}{unit}",
        "verdict": verdict,
        "reason": "" if verdict == "met" else reason,
    }


def label(name: str, result: dict[str, Any]) -> str:
    """A contender's name in the table, with the JSON codec it used."""
    codec = (result.get("detail") or {}).get("codec")
    if codec is None and name in ("httpx_loop", "http_operator"):
        codec = "json"
    return LABELS[name] + (f", {codec}" if codec else "")


def markdown(results: dict[int, dict[str, dict[str, Any]]], targets: list[dict[str, Any]]) -> str:
    lines = [
        "| contender | rows | wall s | rows/s | CPU s | peak RSS MB | same output |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for size, by_name in results.items():
        digests = {r.get("sha256") for r in by_name.values() if "sha256" in r}
        for name, r in by_name.items():
            if "error" in r:
                lines.append(f"| {label(name, r)} | {size:,} | failed | | | | |")
                continue
            same = "yes" if len(digests) == 1 and r["rows"] == size else "NO"
            lines.append(
                f"| {label(name, r)} | {r['rows']:,} | {r['seconds']:.2f} | "
                f"{r['rows'] / r['seconds']:,.0f} | {r['cpu_s']:.1f} | {r['rss_peak_mb']:.0f} | "
                f"{same} |"
            )
    lines += ["", "| target | measured | goal | verdict |", "|---|---:|---|---|"]
    for t in targets:
        verdict = t["verdict"] + (f": {t['reason']}" if t["reason"] else "")
        lines.append(f"| {t['target']} | {t['shown']} | {t['goal']} | {verdict} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("httpx", "orjson", "apache-airflow", "requests", "starlette", "uvicorn"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)

    def git(*command: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(  # noqa: S603
                ["git", *command],  # noqa: S607 - git from PATH, read-only
                cwd=HERE.parent,
                capture_output=True,
                text=True,
                timeout=10,
            )
            return done.stdout.strip()
        return ""

    code = ("echo_connhandler", "echo_connhandler_provider")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "code_changed_since_commit": bool(git("status", "--porcelain", "--", *code)),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }


@contextlib.contextmanager
def temporary_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main_parent(args: argparse.Namespace) -> int:
    sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else SIZES)))
    asked = args.contenders.split(",") if args.contenders else list(CONTENDERS)
    if not args.contenders and not _installed("orjson"):  # the engine uses the stdlib anyway
        asked = [name for name in asked if name not in STDLIB_ONLY]
    names = [n for n in CONTENDERS if n in asked]
    unknown = set(asked) - set(CONTENDERS)
    if unknown:
        print(f"unknown contenders: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    provider_path, provider_note = None, "not run"
    if "http_operator" in names:
        cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        provider_path, provider_note = http_provider_path(
            cache_root / "echo-connhandler-benchmarks"
        )
    info = machine()
    print(
        f"# pull benchmark: {info['cpu']}, {info['cores']} cores, python {info['python']}; "
        f"sandbox {args.sandbox}, latency {LATENCY_MS:g} ms, concurrency {CONCURRENCY}, "
        f"pages of {PAGE_ROWS:,} rows; HttpOperator from {provider_note}",
        flush=True,
    )
    results: dict[int, dict[str, dict[str, Any]]] = {}
    profile: dict[str, Any] | None = None
    sandboxes: dict[int, dict[str, Any]] = {}
    with temporary_dir("echo-bench-airflow-home-") as airflow_home:
        for size in sizes:
            with (
                SandboxProcess(size, args.sandbox) as sandbox,
                temporary_dir("echo-bench-pull-") as work,
            ):
                resource_id = find_resource(sandbox.ccee)
                echo_page = engine_page_size(args.echo_page_size)
                primed = prime(sandbox.ccee, resource_id, size, work / "pages", echo_page)
                sandboxes[size] = {
                    "resource_id": resource_id,
                    **primed,
                    "waf": waf_checks(sandbox.ccee, resource_id),
                }
                print(
                    f"{size:,} rows: {primed['pages']} pages; the sandbox took "
                    f"{primed['first_fetch_s_per_page']:.2f} s per page on first fetch",
                    flush=True,
                )
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
                for round_ in range(1, args.repeat + 1):  # interleaved: noise hits all alike
                    for name in names:
                        if runs[name] and "error" in runs[name][-1]:
                            continue
                        provider = provider_path if name == "http_operator" else None
                        env = child_env(sandbox, str(airflow_home), provider)
                        run = run_contender(name, args, sandbox, resource_id, work, env)
                        runs[name].append(run)
                        print(f"  [{round_}/{args.repeat}] {name}: {describe(run)}", flush=True)
                results[size] = {name: measure(runs[name]) for name in names}
                if args.profile and size == max(sizes):
                    env = child_env(sandbox, str(airflow_home), None)
                    profile = profile_echo(args, sandbox, resource_id, work, env, size)
    targets = evaluate(results, sizes)
    print()
    print(markdown(results, targets))
    document = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "config": {
            "latency_ms": LATENCY_MS,
            "concurrency": CONCURRENCY,
            "page_rows": PAGE_ROWS,
            "sizes": sizes,
            "sandbox": args.sandbox,
            "repeat": args.repeat,
            "http_provider": provider_note,
        },
        "sandbox": {str(k): v for k, v in sandboxes.items()},
        "results": {str(k): v for k, v in results.items()},
        "targets": targets,
        "profile": profile,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 1 if any("error" in r for by in results.values() for r in by.values()) else 0


def _installed(distribution: str) -> bool:
    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def parse_sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, help="rows, comma-separated (100000,1000000)")
    parser.add_argument("--quick", action="store_true", help="20 000 rows: a smoke run")
    parser.add_argument(
        "--contenders", help=f"comma-separated, among {','.join(CONTENDERS)} (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender (median time)")
    parser.add_argument("--sandbox", choices=["cached", "cli"], default="cached")
    parser.add_argument("--echo-path", choices=["auto", "trigger", "engine"], default="auto")
    parser.add_argument(
        "--echo-page-size",
        type=int,
        help="rows per request of the echo path (default: the engine's own default)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then run echo once more under py-spy (--gil) at the largest size: where time goes",
    )
    parser.add_argument("--json", default=str(RESULTS), help="where the results are written")
    # internal: the child processes
    parser.add_argument("--serve-sandbox", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--ccee", help=argparse.SUPPRESS)
    parser.add_argument("--resource-id", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--pages-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sandbox is not None:
        serve_sandbox(args.serve_sandbox, args.latency_ms, args.seed)
        return 0
    if args.contender:
        run_child(args)
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
