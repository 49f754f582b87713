"""What HttpHandler costs on top of bare httpx, against one loopback server.

Two measurements, each against the same server and with the same client settings (base URL,
timeouts, default connection limits):

* sync: N sequential ``handler.get`` vs ``httpx.Client.get``;
* async: C concurrent ``handler.async_get`` (``asyncio.gather``) on one handler vs the same on one
  ``httpx.AsyncClient``, B such batches per round (one batch of 200 lasts ~0.25 s: too short
  to time alone), each side on a fresh, warmed-up client every round.

Several rounds, the order of handler and bare client alternating between rounds; per-round
timings, medians, requests per second and the handler/bare ratios are printed. No asserts: this
reports figures only.

The server answers every request with a small JSON body. By default it is a minimal asyncio
HTTP/1.1 server in a child process, so that it neither shares the GIL with the clients nor
becomes the bottleneck; ``--server uvicorn`` uses starlette + uvicorn (also in a child process).

    python benchmarks/overhead.py [-n 2000] [-c 200] [--batches 5] [--rounds 5]
                                  [--server raw|uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from echo_connhandler import HttpConnProperties, HttpHandler

BODY = b'{"id": 1, "name": "wind farm", "values": [1.5, 2.5, 3.5], "ok": true}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
THRESHOLD = 1.10


# -- servers (run in a child process) -------------------------------------------------------------
async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    await reader.readexactly(int(line[15:]))
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _run_raw(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, sock=sock, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _run_uvicorn(sock: socket.socket) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def items(request: Request) -> Response:
        return Response(BODY, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", items)])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def start_server(kind: str) -> tuple[str, multiprocessing.Process]:
    """Bind a loopback port here (so it is known at once) and serve it from a child process."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    target = _run_raw if kind == "raw" else _run_uvicorn
    process = multiprocessing.get_context("fork").Process(target=target, args=(sock,), daemon=True)
    process.start()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    for _ in range(500):  # wait until it answers
        try:
            httpx.get(url + "/ready", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.01)
    return url, process


# -- measurements ---------------------------------------------------------------------------------
def bare_settings(props: HttpConnProperties) -> dict[str, Any]:
    """What the handler gives its clients, minus the handler: same base URL and timeouts."""
    return {
        "base_url": props.host + "/",
        "timeout": httpx.Timeout(props.request_timeout, connect=props.conn_timeout),
    }


def time_sync(get: Callable[[str], httpx.Response], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        get("api/items").raise_for_status()
    return time.perf_counter() - started


async def time_async(get: Callable[[str], Any], c: int, batches: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        responses = await asyncio.gather(*(get("api/items") for _ in range(c)))
        if any(r.status_code != 200 for r in responses):
            raise RuntimeError("a request failed")
    return time.perf_counter() - started


def run_sync(props: HttpConnProperties, n: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"handler": [], "bare": []}
    with HttpHandler(props) as handler, httpx.Client(**bare_settings(props)) as client:
        sides = {"handler": handler.get, "bare": client.get}
        for get in sides.values():  # warm-up: open the connections
            time_sync(get, 50)
        for r in range(rounds):
            order = ["handler", "bare"] if r % 2 == 0 else ["bare", "handler"]
            for side in order:
                times[side].append(time_sync(sides[side], n))
    return times


async def _time_async_side(side: str, props: HttpConnProperties, c: int, batches: int) -> float:
    """A fresh client for the side, one untimed warm-up batch, then ``batches`` timed ones.

    Fresh per round because httpcore's pool gets slower with every open connection (its request
    assignment scans all of them, httpx issue #3215) and how many a pool keeps open after a burst
    varies from run to run: a client kept across rounds would carry its own luck along.
    """
    if side == "handler":
        async with HttpHandler(props, skip_connect=True) as handler:
            await time_async(handler.async_get, c)
            return await time_async(handler.async_get, c, batches)
    async with httpx.AsyncClient(**bare_settings(props)) as client:
        await time_async(client.get, c)
        return await time_async(client.get, c, batches)


async def run_async(
    props: HttpConnProperties, c: int, batches: int, rounds: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"handler": [], "bare": []}
    for r in range(rounds):
        order = ["handler", "bare"] if r % 2 == 0 else ["bare", "handler"]
        for side in order:
            times[side].append(await _time_async_side(side, props, c, batches))
    return times


def report(title: str, requests: int, times: dict[str, list[float]]) -> None:
    print(f"\n{title} ({requests} requests per round)")
    for r, (h, b) in enumerate(zip(times["handler"], times["bare"], strict=True), 1):
        print(
            f"  round {r}: handler {h * 1000:8.1f} ms   bare {b * 1000:8.1f} ms   ratio {h / b:.3f}"
        )
    med_h, med_b = statistics.median(times["handler"]), statistics.median(times["bare"])
    ratio = med_h / med_b
    print(f"  median : handler {med_h * 1000:8.1f} ms   bare {med_b * 1000:8.1f} ms")
    print(f"  req/s  : handler {requests / med_h:8.0f}      bare {requests / med_b:8.0f}")
    verdict = "yes" if ratio <= THRESHOLD else "NO"
    print(f"  ratio handler/bare (medians): {ratio:.3f}   <= {THRESHOLD:.2f}: {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="sequential sync requests per round")
    parser.add_argument("-c", type=int, default=200, help="concurrent async requests per round")
    parser.add_argument(
        "--batches", type=int, default=5, help="async gathers of C requests per round (steadier)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (order alternates)")
    parser.add_argument("--server", choices=["raw", "uvicorn"], default="raw")
    args = parser.parse_args(argv)

    url, process = start_server(args.server)
    try:
        props = HttpConnProperties(host=url)
        python = sys.version.split()[0]
        print(f"server: {args.server} at {url}; python {python}, httpx {httpx.__version__}")
        report("sync: sequential get", args.n, run_sync(props, args.n, args.rounds))
        report(
            f"async: {args.batches} x asyncio.gather of {args.c} concurrent async_get",
            args.c * args.batches,
            asyncio.run(run_async(props, args.c, args.batches, args.rounds)),
        )
    finally:
        process.terminate()
        process.join(5)


if __name__ == "__main__":
    main()
