"""Sandbox lifecycle, the public API and ``python -m echo_connhandler.sandbox``."""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

import echo_connhandler.sandbox as sandbox_pkg
from echo_connhandler.sandbox import (
    DEMO_CREDENTIALS,
    FaultInjector,
    Sandbox,
    SandboxConfig,
    SandboxUrls,
)

URL_KEYS = ("bazefield", "ccee", "ons_auth_url", "ons_sager", "ons_sinapse", "ons_profile_url")


def test_public_api() -> None:
    assert sandbox_pkg.__all__ == sorted(sandbox_pkg.__all__)
    assert {
        "DEMO_CREDENTIALS",
        "FaultInjector",
        "Sandbox",
        "SandboxConfig",
        "SandboxUrls",
        "bazefield_app",
        "ccee_app",
        "ons_app",
    } <= set(sandbox_pkg.__all__)
    assert DEMO_CREDENTIALS["bazefield"]["api_key"] == "sandbox-baze-api-key"
    assert DEMO_CREDENTIALS["ons"]["multi_profile_user"] == "multi.user"
    assert dict(DEMO_CREDENTIALS["ccee"]) == {}
    assert [field.name for field in dataclasses.fields(SandboxUrls)] == list(URL_KEYS)


def test_config_defaults_and_validation() -> None:
    config = SandboxConfig()
    assert (config.host, config.seed, config.ccee_rows_per_resource) == ("127.0.0.1", 42, None)
    assert config.ccee_years == (2021, 2022, 2023, 2024, 2025)
    assert (config.ccee_max_limit, config.ons_expires_in, config.latency_ms) == (32000, 1199, 0.0)
    assert config.baze_issue_bearer_token
    assert config.ons_require_origin
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        SandboxConfig(ccee_max_limit=0)


def test_urls_and_lifecycle() -> None:
    sandbox = Sandbox(SandboxConfig(seed=3))
    assert not sandbox.running
    with pytest.raises(RuntimeError):
        _ = sandbox.urls
    assert isinstance(sandbox.faults("ccee"), FaultInjector)
    with pytest.raises(ValueError):
        sandbox.faults("nope")
    sandbox.start()
    try:
        urls = sandbox.urls
        assert sandbox.config.seed == 3
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", urls.bazefield)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", urls.ccee)
        ons = urls.ons
        assert urls.ons_auth_url == f"{ons}/ons.pop.federation"
        assert urls.ons_sager == f"{ons}/api/sager/renovaveis/api"
        assert urls.ons_sinapse == f"{ons}/sinapse/api"
        assert urls.ons_profile_url == f"{ons}/sinapse/api/usuario/perfis"
        assert len({urls.bazefield, urls.ccee, ons}) == 3
        with pytest.raises(RuntimeError):
            sandbox.start()
        for base in (urls.bazefield, urls.ccee, ons):
            assert httpx.get(f"{base}/_sandbox/stats").status_code == 200
    finally:
        sandbox.stop()
    assert not sandbox.running
    sandbox.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{urls.bazefield}/_sandbox/stats")
    with sandbox as again:  # restartable, as a context manager too
        assert httpx.get(f"{again.urls.ccee}/_sandbox/stats").status_code == 200


def test_stop_while_a_client_keeps_a_connection_open() -> None:
    with Sandbox() as sandbox, httpx.Client(base_url=sandbox.urls.ons) as client:
        assert client.get("/_sandbox/stats").status_code == 200
        started = time.perf_counter()
        sandbox.stop()
        assert time.perf_counter() - started < 5


def test_command_line_prints_urls_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "echo_connhandler.sandbox", "--seed", "7", "--ccee-rows", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stdout = process.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    found: dict[str, str] = {}
    output: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while len(found) < len(URL_KEYS) and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            output.append(line)
            match = re.match(r"\s+(\w+):\s+(http://\S+)", line)
            if match and match.group(1) in URL_KEYS:
                found[match.group(1)] = match.group(2)
        assert set(found) == set(URL_KEYS), "".join(output)
        assert httpx.get(f"{found['ccee']}/_sandbox/stats").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        stdout.close()
        assert process.stderr is not None
        errors = process.stderr.read()
        process.stderr.close()
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert "MADE-UP SANDBOX CREDENTIALS" in text, errors
    assert "demo-password" in text
    assert "sandbox stopped" in text


def test_reset_clears_faults_and_counters_of_every_emulator() -> None:
    """Sandbox.reset() leaves every emulator without faults and with zeroed counters."""
    with Sandbox(SandboxConfig(seed=7)) as sandbox:
        for name in ("bazefield", "ccee", "ons"):
            sandbox.faults(name).script("anything", status=503, times=5)
        httpx.get(f"{sandbox.urls.ccee}/", headers={"User-Agent": "Mozilla/5.0"})
        assert sandbox.faults("ccee").stats["requests"]
        sandbox.reset()
        for name in ("bazefield", "ccee", "ons"):
            assert sandbox.faults(name).stats["requests"] == {}
        page = httpx.get(f"{sandbox.urls.ccee}/anything", headers={"User-Agent": "Mozilla/5.0"})
        assert page.status_code != 503
