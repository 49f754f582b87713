"""Async throughput: requests per second at 1, 20 and 100 concurrent requests, against loopback.

Contenders, each on ONE client object, every request a ``GET`` of a small JSON body, read whole:

``handler``
    ``HttpHandler.async_get``, the default install (httpx's transport over the handler's own
    connection pool, ``echo_connhandler._pool``);
``handler_aiohttp``
    the same handler with ``HttpConnProperties(async_transport="aiohttp")``;
``httpx``
    a bare ``httpx.AsyncClient`` with the handler's base URL and timeouts on httpx's stock
    transport (httpcore's pool: 100 connections, 20 kept alive);
``httpx_aiohttp``
    the same bare ``httpx.AsyncClient`` over the aiohttp transport (what httpx's client layer
    costs on its own);
``aiohttp``
    a bare ``aiohttp.ClientSession`` (what Airflow's http provider's async hook uses), default
    connector (100 connections);
``hook_session``
    ``HttpAsyncHook`` of apache-airflow-providers-http (the Airflow peer) with one
    ``hook.session()`` for every request: one aiohttp session, its pool shared;
``hook_run``
    the same hook as its triggers use it (``HttpTrigger``): a new ``aiohttp.ClientSession`` per
    request, passed to ``hook.run(session=...)``, so a new connection per request.

The hook's contenders need ``apache-airflow-providers-http`` (not a dependency of the project);
without it they are skipped with a line saying so. Their connection comes from an
``AIRFLOW_CONN_*`` variable set in the child process (no metadata database is touched).

C coroutines each send requests one after the other until N have been sent (so C requests are
in flight all the time). Each contender runs in its own child process: one warm-up pass
(N/5 requests), then the timed pass of N, for every C. ``--rounds`` rounds, the contenders'
order rotating between rounds; the median of the rounds is reported.

The server must not be the bottleneck: it is a minimal HTTP/1.1 server (an ``asyncio.Protocol``
on uvloop when installed: no parsing beyond finding the end of each request head, one canned
answer) in its own process; it does far less per request than any client. Its CPU use during
every timed pass is read from ``/proc/<pid>/stat`` and reported: a server busy well below 100 %
of a core is not what sets the pace. ``--pin`` also pins the server to the last CPU and the
clients to the first (``os.sched_setaffinity``); off by default, as on a shared machine a pinned
client waits for whatever else runs on its CPU.

``--profile`` then runs ``httpx``, ``handler``, ``handler_aiohttp`` and ``aiohttp`` once more at
the highest concurrency under ``py-spy record`` (Python frames, idle samples left out; imports
and client set-up left out of the shares) and prints where the time goes: by the library of the
innermost frame, the inclusive share of a few functions, and the busiest innermost frames.

Results: a markdown table on stdout and ``benchmarks/results/throughput.json`` (not versioned).

    python benchmarks/throughput.py [-n 5000] [--concurrency 1,20,100] [--rounds 5]
                                    [--contenders handler,httpx,aiohttp] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput.json"
CONTENDERS = (
    "handler",
    "handler_aiohttp",
    "httpx",
    "httpx_aiohttp",
    "aiohttp",
    "hook_session",
    "hook_run",
)
#: Contenders that need apache-airflow-providers-http.
HOOK_CONTENDERS = ("hook_session", "hook_run")
#: The Airflow connection id of the hook's contenders (from an ``AIRFLOW_CONN_*`` variable).
HOOK_CONN_ID = "throughput_bench"
BODY = b'{"id": 1, "name": "wind farm", "values": [1.5, 2.5, 3.5], "ok": true}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
#: The targets at the highest concurrency (issue 18: against Airflow's own HTTP hook).
TARGET_HOOK_RUN_SHARE = 1.0  # handler (default install) >= HttpAsyncHook.run(), as its triggers
TARGET_HOOK_SESSION_SHARE = 1.0  # handler_aiohttp >= HttpAsyncHook with one session()
TARGET_AIOHTTP_SHARE = 0.5  # handler_aiohttp >= half of bare aiohttp (an earlier target)
TARGET_HANDLER_SHARE = 1.0  # handler (default transport) never below bare httpx


# -- the server (its own process) -----------------------------------------------------------------
class _Answer(asyncio.Protocol):
    """Answers every request head (``\\r\\n\\r\\n``) with the canned response; GETs only."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        if heads:
            self.transport.write(RESPONSE * heads)
            data = data[data.rfind(b"\r\n\r\n") + 4 :]
        self.pending = data


def serve(port_file: str, cpu: int | None) -> None:
    """Serve on a loopback port, written to ``port_file`` once listening."""
    if cpu is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Answer, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 - once, before serving
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_server(cpu: int | None) -> tuple[str, subprocess.Popen[bytes]]:
    port_file = Path(tempfile.mkdtemp(prefix="throughput-")) / "port"
    pin = ["--cpu", str(cpu)] if cpu is not None else []
    process = subprocess.Popen(  # noqa: S603 - this interpreter, this file
        [sys.executable, __file__, "--serve", str(port_file), *pin]
    )
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port_file.read_text()}", process


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the clients (a child process per contender and round) ----------------------------------------
async def drive(get: Callable[[], Awaitable[None]], n: int, c: int) -> float:
    """Send ``n`` requests from ``c`` coroutines (each one after the other); seconds taken."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await get()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return time.perf_counter() - started


async def open_contender(
    name: str, url: str, stack: contextlib.AsyncExitStack
) -> Callable[[], Awaitable[None]]:
    """The contender's client, closed by ``stack``, and its "send one request" function."""
    import httpx

    from echo_connhandler import HttpConnProperties, HttpHandler
    from echo_connhandler._handler import POOL_SIZE, ssl_context

    if name.startswith("handler"):
        transport = "aiohttp" if name == "handler_aiohttp" else "httpx"
        props = HttpConnProperties(host=url, async_transport=transport)
        handler = HttpHandler(props, skip_connect=True)
        stack.push_async_callback(handler.async_close)

        async def handler_get() -> None:
            await handler.async_get("api/items")

        return handler_get
    if name.startswith("httpx"):
        settings: dict[str, Any] = {
            "base_url": url + "/",
            "timeout": httpx.Timeout(300, connect=30),
            "limits": httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=20),
        }
        if name == "httpx_aiohttp":
            from echo_connhandler._transports import AiohttpTransport

            settings["transport"] = AiohttpTransport(ssl_context(True), max_connections=POOL_SIZE)
        client = await stack.enter_async_context(httpx.AsyncClient(**settings))

        async def httpx_get() -> None:
            response = await client.get("api/items")
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")

        return httpx_get
    import aiohttp

    if name in HOOK_CONTENDERS:
        return await open_hook(name, url, stack)
    session = await stack.enter_async_context(aiohttp.ClientSession())
    target = url + "/api/items"

    async def aiohttp_get() -> None:
        async with session.get(target) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

    return aiohttp_get


async def open_hook(
    name: str, url: str, stack: contextlib.AsyncExitStack
) -> Callable[[], Awaitable[None]]:
    """Airflow's ``HttpAsyncHook``: one ``session()`` or, as ``HttpTrigger`` does, a session per
    request. Its connection is resolved once (``hook.config()`` caches it), before the passes."""
    import aiohttp

    os.environ[f"AIRFLOW_CONN_{HOOK_CONN_ID.upper()}"] = url
    from airflow.providers.http.hooks.http import HttpAsyncHook

    hook = HttpAsyncHook(method="GET", http_conn_id=HOOK_CONN_ID)
    await hook.config()
    if name == "hook_session":
        http = await stack.enter_async_context(hook.session())

        async def hook_session_get() -> None:
            response = await http.run(endpoint="api/items")  # raises for an error status
            await response.read()

        return hook_session_get

    async def hook_run_get() -> None:
        # airflow/providers/http/triggers/http.py, HttpTrigger._get_response.
        async with aiohttp.ClientSession() as session:
            response = await hook.run(session=session, endpoint="api/items")
            await response.read()

    return hook_run_get


def hook_available() -> bool:
    """Whether apache-airflow-providers-http is installed (the hook's contenders need it)."""
    try:
        version("apache-airflow-providers-http")
    except PackageNotFoundError:
        return False
    return True


async def run_contender(
    name: str, url: str, n: int, concurrencies: list[int], server_pid: int | None
) -> dict[str, Any]:
    """For each concurrency, on a fresh client: a warm-up pass, then the timed pass of ``n``."""
    results: dict[str, Any] = {}
    for c in concurrencies:
        async with contextlib.AsyncExitStack() as stack:
            get = await open_contender(name, url, stack)
            await drive(get, max(n // 5, c), c)  # warm-up: connections open, code paths hot
            server_before = cpu_seconds(server_pid) if server_pid else 0.0
            cpu_before = time.process_time()
            seconds = await drive(get, n, c)
            client_cpu = time.process_time() - cpu_before
            server_cpu = cpu_seconds(server_pid) - server_before if server_pid else None
            results[str(c)] = {
                "seconds": seconds,
                "rps": n / seconds,
                "client_cpu": client_cpu / seconds,
                # CPU per request: unlike req/s, not inflated when other jobs share the CPU.
                "cpu_us_per_request": client_cpu / n * 1e6,
                "server_cpu": server_cpu / seconds if server_cpu is not None else None,
            }
    return results


def worker_main(args: argparse.Namespace) -> None:
    if args.pin:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {0})
    results = asyncio.run(
        run_contender(args.worker, args.url, args.n, args.concurrency, args.server_pid)
    )
    print(json.dumps(results))


def run_in_child(
    name: str,
    url: str,
    n: int,
    concurrencies: list[int],
    server_pid: int,
    wrap: list[str],
    pin: bool = False,
) -> dict[str, Any]:
    command = [
        *wrap,
        sys.executable,
        __file__,
        "--worker",
        name,
        "--url",
        url,
        "-n",
        str(n),
        "--concurrency",
        ",".join(map(str, concurrencies)),
        "--server-pid",
        str(server_pid),
        *(["--pin"] if pin else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    # The worker's JSON is its last line of its own; py-spy prints to the same stdout.
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
    return json.loads(line)  # type: ignore[no-any-return]


# -- profile --------------------------------------------------------------------------------------
#: Who a sample is charged to: the innermost frame in one of these (first match wins), else the
#: standard library (the event loop, sockets).
OWNERS = (
    ("httpcore/_async/connection_pool.py", "httpcore: connection pool"),
    ("httpcore/", "httpcore: connection, HTTP/1.1"),
    ("h11/", "h11: HTTP/1.1 parser"),
    ("anyio/", "anyio: httpcore's network backend"),
    ("httpx/", "httpx: client (request, auth, hooks, cookies, response)"),
    ("aiohttp/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("echo_connhandler/", "echo_connhandler: handler, transport"),
    ("tenacity/", "tenacity: retry loop"),
)
#: Functions whose inclusive share (the samples with them anywhere on the stack) is reported.
INCLUSIVE = (
    "_assign_requests_to_connections",
    "has_expired",
    "connect_tcp",
    "handle_async_request (httpx/_transports/default.py",
    "_send_single_request",
    "auth_flow",
    "_request (aiohttp/client.py",
)


def summarise_profile(path: Path) -> dict[str, Any]:
    """Shares of py-spy's raw collapsed stacks, by owner and for :data:`INCLUSIVE` functions."""
    owners: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # Start-up is not throughput: imports, and building the client outside the timed loops
        # (aiohttp's connector builds SSL contexts, ~26 ms each).
        if "_find_and_load" in stack or ("run_contender (" in stack and "drive" not in stack):
            continue
        samples = int(count)
        total += samples
        parts = stack.split(";")
        owner = "standard library: event loop, sockets"
        for frame in reversed(parts):
            found = next((label for needle, label in OWNERS if needle in frame), None)
            if found:
                owner = found
                break
        owners[owner] += samples
        frames[parts[-1]] += samples
        for name in INCLUSIVE:
            if name in stack:
                inclusive[name] += samples
    total = max(total, 1)
    return {
        "samples": total,
        "owners": {k: v / total for k, v in owners.most_common()},
        "inclusive": {k: inclusive[k] / total for k in INCLUSIVE if inclusive[k]},
        "top_frames": {k: v / total for k, v in frames.most_common(10)},
    }


def profile(url: str, server_pid: int, n: int, c: int, names: list[str]) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("--profile needs py-spy (pip install py-spy): skipped")
        return {"error": "py-spy not found"}
    found: dict[str, Any] = {}
    for name in names:
        out = HERE / "results" / f"throughput-profile-{name}-{c}.txt"
        wrap = [spy, "record", "--format", "raw", "--rate", "500", "-o", str(out), "--"]
        run = run_in_child(name, url, n, [c], server_pid, wrap)
        summary = summarise_profile(out)
        found[name] = {
            "rps_under_profiler": run[str(c)]["rps"],
            **summary,
            "collapsed_stacks": str(out.relative_to(HERE.parent)),
        }
        print(f"\nprofile of {name} at {c} concurrent (py-spy, {summary['samples']} samples):")
        print("  by owner of the innermost frame:")
        for owner, share in summary["owners"].items():
            print(f"  {share:6.1%}  {owner}")
        print("  inclusive (anywhere on the stack):")
        for function, share in summary["inclusive"].items():
            print(f"  {share:6.1%}  {function}")
        print("  top innermost frames:")
        for frame, share in summary["top_frames"].items():
            print(f"  {share:6.1%}  {frame}")
    return found


# -- report ---------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in (
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "aiohttp",
        "uvloop",
        "apache-airflow-providers-http",
    ):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - read-only
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }


def table(medians: dict[str, dict[str, dict[str, float]]], concurrencies: list[int]) -> str:
    head = "| contender | " + " | ".join(f"req/s at {c}" for c in concurrencies) + " |"
    lines = [head, "|---|" + "---:|" * len(concurrencies)]
    for name, by_c in medians.items():
        cells = [f"{by_c[str(c)]['rps']:,.0f}" for c in concurrencies]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "| contender | " + " | ".join(f"client CPU µs/request at {c}" for c in concurrencies) + " |"
    )
    lines.append("|---|" + "---:|" * len(concurrencies))
    for name, by_c in medians.items():
        cells = [f"{by_c[str(c)]['cpu_us_per_request']:,.0f}" for c in concurrencies]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| contender | " + " | ".join(f"server CPU at {c}" for c in concurrencies) + " |")
    lines.append("|---|" + "---:|" * len(concurrencies))
    for name, by_c in medians.items():
        cells = [f"{by_c[str(c)]['server_cpu']:.0%}" for c in concurrencies]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(
    medians: dict[str, dict[str, dict[str, float]]], concurrencies: list[int]
) -> list[dict[str, Any]]:
    """The targets: against Airflow's hook and bare aiohttp at the highest concurrency, the
    default transport against bare httpx at every concurrency ("never below bare httpx").
    A hook target whose contender did not run (the provider not installed) is reported
    unmet, with the reason."""
    top = max(concurrencies)
    checks = [
        ("handler", "hook_run", TARGET_HOOK_RUN_SHARE, top),
        ("handler_aiohttp", "hook_session", TARGET_HOOK_SESSION_SHARE, top),
        ("handler_aiohttp", "aiohttp", TARGET_AIOHTTP_SHARE, top),
    ]
    checks += [("handler", "httpx", TARGET_HANDLER_SHARE, c) for c in concurrencies]
    found: list[dict[str, Any]] = []
    for name, base, goal, c in checks:
        if name in medians and base in HOOK_CONTENDERS and not hook_available():
            found.append(
                {
                    "target": f"{name} >= {goal:g} x {base} at {c} concurrent",
                    "share": None,
                    "met": False,
                    "reason": "apache-airflow-providers-http not installed",
                }
            )
            continue
        if name not in medians or base not in medians:
            continue
        share = medians[name][str(c)]["rps"] / medians[base][str(c)]["rps"]
        found.append(
            {
                "target": f"{name} >= {goal:g} x {base} at {c} concurrent",
                "share": share,
                # Within 3 %: the run-to-run noise of these medians on a shared 2-core VM.
                "met": share >= goal * 0.97,
            }
        )
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="timed requests per concurrency")
    parser.add_argument("--concurrency", default="1,20,100")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument(
        "--profile",
        nargs="?",
        const="httpx,handler,handler_aiohttp,aiohttp",
        help="then run these contenders under py-spy at the highest concurrency",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument(
        "--pin", action="store_true", help="pin the server to the last CPU, the clients to CPU 0"
    )
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.serve:
        serve(args.serve, args.cpu)
        return
    if args.worker:
        worker_main(args)
        return

    names = [c for c in args.contenders.split(",") if c]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    if not hook_available() and set(names) & set(HOOK_CONTENDERS):
        print(
            "apache-airflow-providers-http is not installed: "
            f"{', '.join(HOOK_CONTENDERS)} skipped (pip install apache-airflow-providers-http)"
        )
        names = [name for name in names if name not in HOOK_CONTENDERS]
    cores = os.cpu_count() or 1
    url, server = start_server(cpu=cores - 1 if args.pin else None)
    info = machine()
    where = f"server on CPU {cores - 1}, clients on CPU 0" if args.pin else "not pinned"
    print(
        f"server at {url} (pid {server.pid}, {where}); "
        f"python {info['python']}, {info['cpu']}, {cores} cores; {info['versions']}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                result = run_in_child(name, url, args.n, args.concurrency, server.pid, [], args.pin)
                runs[name].append(result)
                shown = "  ".join(
                    f"c={c}: {result[str(c)]['rps']:7,.0f} req/s" for c in args.concurrency
                )
                print(f"round {r + 1} {name:16} {shown}", flush=True)
        medians = {
            name: {
                str(c): {
                    key: statistics.median(run[str(c)][key] for run in runs[name])
                    for key in ("rps", "seconds", "client_cpu", "cpu_us_per_request", "server_cpu")
                }
                for c in args.concurrency
            }
            for name in names
        }
        print(f"\nmedian of {args.rounds} rounds, {args.n} requests each\n")
        print(table(medians, args.concurrency))
        top = max(args.concurrency)
        found = verdicts(medians, args.concurrency)
        for v in found:
            share = "n/a" if v["share"] is None else f"{v['share']:.2f}x"
            why = f" ({v['reason']})" if v.get("reason") else ""
            print(f"{v['target']}: {share}, {'met' if v['met'] else 'NOT met'}{why}")
        profiled = (
            profile(url, server.pid, args.n * 2, top, args.profile.split(","))
            if args.profile
            else None
        )
    finally:
        server.terminate()
        server.wait(5)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": info,
                "n": args.n,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                "runs": runs,
                "medians": medians,
                "targets": found,
                "profile": profiled,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
