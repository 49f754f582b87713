"""The main job, for now: every hook against the local sandbox, on both paths.

``python -m echo_connhandler_provider.demo`` (or ``make demo``):

1. starts the sandbox (local emulators of Bazefield, CCEE and ONS) on loopback ports;
2. defines one Airflow connection per type as ``AIRFLOW_CONN_*`` environment variables pointing
   at it (JSON and URI forms), with the sandbox's made-up credentials;
3. through the hooks, runs each handler on the sync path (``get_conn()``) and on the async
   path (``await aget_conn()``): Bazefield allocation types and a time-series query, one CCEE
   ``pld_horario`` page and a full ordered pull of one resource, an ONS SAGER report saved as
   .xlsx, a SINAPSE CSV export, and a generic ``echo_http`` call;
4. prints a table of what it did, and stops the sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["main"]


@dataclass
class Row:
    """One line of the demo's table."""

    connection: str
    path: str
    action: str
    result: str
    seconds: float


def _connections(urls: Any, creds: Any) -> dict[str, str]:
    baze, ons = creds["bazefield"], creds["ons"]
    sandbox_api = urlsplit(urls.bazefield)
    return {
        "demo_bazefield": json.dumps(
            {
                "conn_type": "bazefield",
                "host": urls.bazefield,
                "login": baze["user"],
                "password": baze["password"],
                "extra": {"request_timeout": 60, "max_retries": 3},
            }
        ),
        "demo_ccee": json.dumps(
            {"conn_type": "ccee", "host": urls.ccee, "extra": {"concurrency": 4}}
        ),
        "demo_ons_sager": json.dumps(
            {
                "conn_type": "ons",
                "host": urls.ons_sager,
                "login": ons["user"],
                "password": ons["password"],
                "extra": {"login_target": "SAGER", "auth_url": urls.ons_auth_url},
            }
        ),
        "demo_ons_sinapse": json.dumps(
            {
                "conn_type": "ons",
                "host": urls.ons_sinapse,
                "login": ons["user"],
                "password": ons["password"],
                "extra": {
                    "login_target": "SINAPSE",
                    "auth_url": urls.ons_auth_url,
                    "profile_url": urls.ons_profile_url,
                },
            }
        ),
        # URI form: every extra arrives as a string and is coerced by the hook.
        "demo_http": (
            f"echo-http://{sandbox_api.hostname}:{sandbox_api.port}/http"
            f"?api_key={quote(baze['api_key'])}&max_retries=2&verify_ssl=true"
            f"&headers={quote(json.dumps({'Accept': 'application/json'}))}"
        ),
    }


async def _timed_async(
    rows: list[Row], connection: str, action: str, work: Callable[[], Awaitable[str]]
) -> None:
    start = time.perf_counter()
    result = await work()
    rows.append(Row(connection, "async", action, result, time.perf_counter() - start))


def _timed(rows: list[Row], connection: str, action: str, work: Callable[[], str]) -> None:
    start = time.perf_counter()
    result = work()
    rows.append(Row(connection, "sync", action, result, time.perf_counter() - start))


def _run_sync(rows: list[Row], output: Path) -> None:
    from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook

    baze = BazefieldHook("demo_bazefield")
    handler = baze.get_conn()

    def allocation_types() -> str:
        payload = handler.get("BazeField.Services/api/allocationTypes").json()
        return f"{len(payload['allocationTypes'])} allocation types"

    _timed(rows, "demo_bazefield", "GET allocationTypes (login on connect)", allocation_types)

    def series() -> str:
        objects = handler.get("BazeField.Services/api/objects/structure", params={"type": 2})
        ids = [o["objectId"] for o in objects.json()["objects"][:3]]
        body = {
            "ObjectIds": ids,
            "Points": ["ActivePower"],
            "Aggregates": ["Average"],
            "From": "2024-01-01T00:00:00Z",
            "To": "2024-01-02T00:00:00Z",
            "Interval": "1h",
        }
        data = handler.post("BazeField.Services/api/objects/timeseries/aggregated", json=body)
        values = sum(
            len(agg["timeSeries"])
            for obj in data.json()["objects"].values()
            for aggs in obj["points"].values()
            for agg in aggs
        )
        return f"{values} hourly values for {len(ids)} turbines"

    _timed(rows, "demo_bazefield", "POST objects/timeseries/aggregated", series)
    baze.close()

    ccee = CceeHook("demo_ccee")
    ccee_handler = ccee.get_conn()

    def ccee_page() -> str:
        resources = ccee_handler.resources("pld_horario")
        page = ccee_handler.datastore_search(resources[-1].id, limit=1000)
        return f"{len(page['records'])} of {page['total']} records of {resources[-1].name}"

    _timed(rows, "demo_ccee", "WAF warm-up + one pld_horario page", ccee_page)
    ccee.close()

    sager = OnsHook("demo_ons_sager")
    sager_handler = sager.get_conn()

    def report() -> str:
        content = sager_handler.export_sager_report("2024-01-01", "2024-01-31")
        target = output / "sager_report_sync.xlsx"
        target.write_bytes(content)
        return f"{len(content)} bytes -> {target}"

    _timed(rows, "demo_ons_sager", "OAuth2 login + SAGER report", report)
    sager.close()

    http = EchoHttpHook("demo_http")
    http_handler = http.get_conn()
    _timed(
        rows,
        "demo_http",
        "URI connection, API key, GET",
        lambda: f"HTTP {http_handler.get('BazeField.Services/api/allocationTypes').status_code}",
    )
    http.close()


async def _run_async(rows: list[Row], output: Path) -> None:
    from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook

    baze = BazefieldHook("demo_bazefield")
    handler = await baze.aget_conn()

    async def allocation_types() -> str:
        calls = [handler.async_get("BazeField.Services/api/allocationTypes") for _ in range(20)]
        responses = await asyncio.gather(*calls)
        return f"{len(responses)} answers to 20 concurrent calls"

    await _timed_async(rows, "demo_bazefield", "20 x GET allocationTypes", allocation_types)
    await baze.aclose()

    ccee = CceeHook("demo_ccee")
    ccee_handler = await ccee.aget_conn()

    async def full_pull() -> str:
        resources = await ccee_handler.async_resources("pld_horario")
        resource = resources[0]
        count, last_id = 0, 0
        concurrency = int(ccee.options.get("concurrency", 4))
        async for record in ccee_handler.aiter_datastore_records(
            resource.id, concurrency=concurrency
        ):
            if record["_id"] != last_id + 1:
                raise RuntimeError(f"out of order: {record['_id']} after {last_id}")
            count, last_id = count + 1, record["_id"]
        return f"{count} records of {resource.name}, in order, {concurrency} pages in flight"

    await _timed_async(rows, "demo_ccee", "full datastore pull", full_pull)
    await ccee.aclose()

    sager = OnsHook("demo_ons_sager")
    sager_handler = await sager.aget_conn()

    async def report() -> str:
        content = await sager_handler.async_export_sager_report("2024-02-01", "2024-02-29")
        target = output / "sager_report_async.xlsx"
        await asyncio.to_thread(target.write_bytes, content)
        return f"{len(content)} bytes -> {target}"

    await _timed_async(rows, "demo_ons_sager", "OAuth2 login + SAGER report", report)
    await sager.aclose()

    sinapse = OnsHook("demo_ons_sinapse")
    sinapse_handler = await sinapse.aget_conn()

    async def export() -> str:
        content = await sinapse_handler.async_export_sinapse("2024-01-01", "2024-01-07")
        target = output / "sinapse_export.csv"
        await asyncio.to_thread(target.write_bytes, content)
        lines = content.decode("utf-8").count("\n")
        return f"{lines} CSV lines -> {target}"

    await _timed_async(rows, "demo_ons_sinapse", "login + profile + SINAPSE CSV", export)
    await sinapse.aclose()

    http = EchoHttpHook("demo_http")
    http_handler = await http.aget_conn()

    async def http_get() -> str:
        response = await http_handler.async_get("BazeField.Services/api/allocationTypes")
        return f"HTTP {response.status_code}"

    await _timed_async(rows, "demo_http", "URI connection, API key, async GET", http_get)
    await http.aclose()


def _print_table(rows: list[Row]) -> None:
    headers = ("connection", "path", "action", "result", "s")
    table = [(r.connection, r.path, r.action, r.result, f"{r.seconds:.2f}") for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    home = tempfile.mkdtemp(prefix="echo-demo-airflow-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

    rows: list[Row] = []
    with Sandbox(SandboxConfig(seed=42)) as sandbox:
        print(
            f"sandbox: bazefield {sandbox.urls.bazefield}, ccee {sandbox.urls.ccee}, "
            f"ons {sandbox.urls.ons_auth_url.rsplit('/', 1)[0]}"
        )
        for conn_id, value in _connections(sandbox.urls, DEMO_CREDENTIALS).items():
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = value
        _run_sync(rows, args.output)
        asyncio.run(_run_async(rows, args.output))
        # What the emulators saw: logins happen once per hook, not once per request.
        seen = {name: sandbox.faults(name).stats for name in ("bazefield", "ccee", "ons")}
    print()
    _print_table(rows)
    print()
    print(
        f"server side: Bazefield logins {sum(seen['bazefield']['logins'].values())}, "
        f"CCEE warm-ups {seen['ccee']['warmups']}, "
        f"ONS token grants {seen['ons']['logins']}, "
        f"requests {sum(sum(s['requests'].values()) for s in seen.values())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
