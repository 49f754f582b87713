"""Local emulators of Bazefield, CCEE Dados Abertos and ONS, for tests, demos and benchmarks.

Each service is emulated by a starlette ASGI app that reproduces the behaviours and quirks
documented in docs/services/bazefield.md, ccee.md and ons.md (Bazefield's HTML preview page
and errors inside HTTP 200, the CCEE WAF and CKAN's 32 000-row cap, ONS's POP token flow,
xlsx and CSV exports); see the docstrings of ``_bazefield``, ``_ccee`` and ``_ons`` for the
details. :class:`Sandbox` serves the three on loopback ports from a background thread::

    from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(seed=42)) as sb:
        sb.urls.bazefield              # http://127.0.0.1:PORT, API under /BazeField.Services/api/
        sb.faults("ccee").block_waf()  # the FaultInjector of one emulator

``python -m echo_connhandler.sandbox`` runs them from the command line. Everything (data and the
random fault sequences) is deterministic for a given seed. The credentials in
:data:`DEMO_CREDENTIALS` are made up and only work here.

Needs the ``sandbox`` extra (starlette, uvicorn, openpyxl).
"""

#: Distributions of the ``sandbox`` extra (by their top-level module) and how to install them.
_EXTRA_MODULES = frozenset({"starlette", "uvicorn", "openpyxl"})
_INSTALL_HINT = "pip install 'echo-connhandler-provider[sandbox]'"

try:
    from ._bazefield import bazefield_app
    from ._ccee import ccee_app
    from ._config import DEMO_CREDENTIALS, SandboxConfig, SandboxUrls
    from ._faults import FaultInjector, SandboxStats
    from ._ons import ons_app
    from ._server import Sandbox
except ModuleNotFoundError as exc:
    missing = (exc.name or "").partition(".")[0]
    if missing not in _EXTRA_MODULES:
        raise
    raise ModuleNotFoundError(
        f"echo_connhandler.sandbox needs the 'sandbox' extra ({missing} is not installed): "
        f"{_INSTALL_HINT}",
        name=exc.name,
    ) from exc

__all__ = [
    "DEMO_CREDENTIALS",
    "FaultInjector",
    "Sandbox",
    "SandboxConfig",
    "SandboxStats",
    "SandboxUrls",
    "bazefield_app",
    "ccee_app",
    "ons_app",
]
