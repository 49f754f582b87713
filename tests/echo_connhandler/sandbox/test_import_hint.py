"""Without the ``sandbox`` extra, importing the sandbox says which extra to install.

Each case runs a fresh interpreter whose ``sys.meta_path`` starts with a finder that reports one
module as not installed (as a venv without the extra would), then imports the sandbox.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HINT = "pip install 'echo-connhandler-provider[sandbox]'"

PROBE = """
import importlib.abc, json, sys

BLOCKED = sys.argv[1]


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == BLOCKED or fullname.startswith(BLOCKED + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, NotInstalled())
try:
    import echo_connhandler.sandbox
except ImportError as exc:
    cause = exc.__cause__
    print(json.dumps({
        "type": type(exc).__name__,
        "message": str(exc),
        "name": exc.name,
        "cause": None if cause is None else [type(cause).__name__, cause.name],
    }))
else:
    print(json.dumps(None))
"""


def _import_sandbox_without(module: str) -> dict[str, object] | None:
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, object] | None = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


@pytest.mark.parametrize("module", ["starlette", "uvicorn", "openpyxl"])
def test_missing_extra_names_the_extra(module: str) -> None:
    """The error names the missing module and the install command; the original is chained."""
    outcome = _import_sandbox_without(module)
    assert outcome is not None, "the sandbox imported although its dependency is missing"
    assert outcome["type"] == "ModuleNotFoundError"  # an ImportError, as callers expect
    assert HINT in str(outcome["message"])
    assert f"({module} is not installed)" in str(outcome["message"])
    assert str(outcome["name"]).partition(".")[0] == module
    cause = outcome["cause"]
    assert isinstance(cause, list), "the original ImportError is not chained"
    cause_type, cause_name = cause
    assert cause_type == "ModuleNotFoundError"
    assert str(cause_name).partition(".")[0] == module


def test_other_missing_modules_are_not_blamed_on_the_extra() -> None:
    """A module outside the extra keeps its own error, without the hint."""
    outcome = _import_sandbox_without("echo_connhandler.sandbox._ons")
    assert outcome is not None
    assert HINT not in str(outcome["message"])
    assert outcome["name"] == "echo_connhandler.sandbox._ons"


def test_with_the_extra_the_sandbox_imports() -> None:
    """The probe itself: blocking an unrelated module leaves the import working."""
    assert _import_sandbox_without("no_such_module_at_all") is None
