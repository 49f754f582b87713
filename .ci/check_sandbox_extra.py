"""Run inside a fresh venv holding only ``echo-connhandler-provider[sandbox]``.

Proves that the ``sandbox`` extra declares everything ``python -m echo_connhandler.sandbox``
needs (and nothing from the ``airflow``/``dev`` extras): starts the command, waits for the
base URLs, makes one real request to each emulator, stops it with SIGINT, checks exit code 0.
It also checks the installed wheel itself: both packages ship ``py.typed``, and Airflow's
providers manager would find the provider (the ``apache_airflow_provider`` entry point loads
and answers the distribution's name without Airflow installed).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TIMEOUT_S = 30


def check_wheel() -> int:
    """``py.typed`` in both packages; the provider's entry point loads and names itself."""
    for package in ("echo_connhandler", "echo_connhandler_provider"):
        spec = importlib.util.find_spec(package)
        assert spec is not None
        assert spec.origin is not None
        if not (Path(spec.origin).parent / "py.typed").is_file():
            print(f"{package} was installed without py.typed")
            return 1
    found = [
        entry
        for entry in importlib.metadata.entry_points(group="apache_airflow_provider")
        if entry.dist is not None and entry.dist.name == "echo-connhandler-provider"
    ]
    if len(found) != 1:
        print(f"expected one apache_airflow_provider entry point, found {found}")
        return 1
    info = found[0].load()()
    if info.get("package-name") != "echo-connhandler-provider" or not info.get("connection-types"):
        print(f"the provider's entry point answered {sorted(info)}")
        return 1
    print(f"wheel: py.typed in both packages; provider entry point {found[0].value} found")
    return 0


def main() -> int:
    for absent in ("airflow", "pytest"):
        if importlib.util.find_spec(absent) is not None:
            print(f"expected a venv without {absent}: this check must run on the bare extra")
            return 1
    if check_wheel():
        return 1
    process = subprocess.Popen(
        [sys.executable, "-m", "echo_connhandler.sandbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + TIMEOUT_S
    assert process.stdout is not None
    while len(urls) < 3 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        found = re.match(r"\s+(bazefield|ccee|ons_auth_url):\s+(\S+)", line)
        if found:
            urls[found.group(1)] = found.group(2)
    if len(urls) < 3:
        process.kill()
        print(f"the sandbox did not print its URLs in {TIMEOUT_S} s: {urls}")
        return 1
    checks = {
        "bazefield": urls["bazefield"] + "/_sandbox/stats",
        "ccee": urls["ccee"] + "/",
        "ons": urls["ons_auth_url"] + "/",
    }
    for name, url in checks.items():
        request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            print(f"{name}: GET {url} -> HTTP {response.status}")
            if response.status != 200:
                process.kill()
                return 1
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=TIMEOUT_S)
    print(f"sandbox stopped with exit code {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
