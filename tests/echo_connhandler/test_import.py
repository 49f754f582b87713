"""Importing echo_connhandler stays framework-free: no Airflow, no sandbox dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import echo_connhandler
from echo_connhandler import HttpHandler, HttpConnProperties
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def imported_modules() -> list[str]:
    """The modules loaded by a fresh interpreter that imports echo_connhandler."""
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "forbidden", ["airflow", "echo_connhandler_provider", "starlette", "uvicorn", "openpyxl"]
)
def test_import_does_not_load(imported_modules: list[str], forbidden: str) -> None:
    """Neither Airflow, the provider, nor the sandbox's dependencies are imported."""
    loaded = [m for m in imported_modules if m == forbidden or m.startswith(forbidden + ".")]
    assert loaded == []


def test_import_loads_the_package(imported_modules: list[str]) -> None:
    """The probe really imported the package (so the test above can fail)."""
    assert "echo_connhandler" in imported_modules
    assert "httpx" in imported_modules


def test_airflow_is_installed_here() -> None:
    """Airflow is importable in this environment, so its absence above means something."""
    import importlib.util

    if importlib.util.find_spec("airflow") is None:
        pytest.skip("apache-airflow not installed")
    assert importlib.util.find_spec("airflow") is not None
