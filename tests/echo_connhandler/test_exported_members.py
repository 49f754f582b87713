"""The public surface: ``echo_connhandler.__all__`` is pinned, sorted and importable."""

from __future__ import annotations

import importlib
import inspect

import pytest

import echo_connhandler

EXPECTED = [
    "FUTURE_TOLERANCE",
    "ApiError",
    "AttemptDeadlineExceeded",
    "AuthenticationError",
    "BazeHttpHandler",
    "BazefieldLoginAuth",
    "BearerAuth",
    "CceeHttpHandler",
    "CceeWafAuth",
    "CkanResource",
    "DataConsistencyError",
    "DatastorePage",
    "EchoHttpError",
    "HttpConnProperties",
    "HttpHandler",
    "HttpResponseError",
    "HttpStatusError",
    "HttpTransportError",
    "OnsHttpConnProperties",
    "OnsHttpHandler",
    "OnsOAuth2",
    "ProfileSelectionError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "SecretScope",
    "SessionAuth",
    "UnexpectedContentError",
    "UnsafeRedirectError",
    "WafBlockedError",
    "add_secret_hook",
    "bazefield_api_root",
    "dated_resources",
    "endpoint_url",
    "expect_json",
    "find_publication",
    "is_sensitive_name",
    "iso_utc",
    "parse_duration",
    "parse_moment",
    "profile_header_value",
    "publication_after",
    "redact",
    "register_secret",
    "remove_secret_hook",
    "usable_moment",
    "utc_moment",
]

PRIVATE_MODULES = [
    "echo_connhandler._auth",
    "echo_connhandler._bazefield",
    "echo_connhandler._ccee",
    "echo_connhandler._exceptions",
    "echo_connhandler._handler",
    "echo_connhandler._ons",
    "echo_connhandler._properties",
    "echo_connhandler._publications",
    "echo_connhandler._retry",
    "echo_connhandler._secrets",
    "echo_connhandler._time",
]


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert echo_connhandler.__all__ == EXPECTED


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted as ruff's RUF022 wants it (constants, then classes, then functions;
    each case-sensitively) without duplicates."""

    def isort_style(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert echo_connhandler.__all__ == sorted(set(echo_connhandler.__all__), key=isort_style)


@pytest.mark.parametrize("name", EXPECTED)
def test_every_public_name_is_importable(name: str) -> None:
    """Each name resolves; a class or function is defined in a private module of the package."""
    member = getattr(echo_connhandler, name)
    if not (inspect.isclass(member) or inspect.isfunction(member)):
        return  # a constant (FUTURE_TOLERANCE): it has no module of its own
    module = inspect.getmodule(member)
    assert module is not None
    assert module.__name__.startswith("echo_connhandler._")


def test_star_import_gives_exactly_all() -> None:
    """`from echo_connhandler import *` exports __all__ and nothing else."""
    namespace: dict[str, object] = {}
    exec("from echo_connhandler import *", namespace)  # noqa: S102 - fixed string
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(EXPECTED)


def test_guide_import_line() -> None:
    """The import line of the four handlers and their properties works (docs/handlers.md)."""
    from echo_connhandler import (  # noqa: F401
        BazeHttpHandler,
        CceeHttpHandler,
        HttpConnProperties,
        HttpHandler,
        OnsHttpConnProperties,
        OnsHttpHandler,
    )


@pytest.mark.parametrize(
    "name", ["HttpHandler", "BazeHttpHandler", "CceeHttpHandler", "OnsHttpHandler"]
)
def test_handlers_share_the_base(name: str) -> None:
    """Every service handler is an HttpHandler."""
    assert issubclass(getattr(echo_connhandler, name), echo_connhandler.HttpHandler)


def test_version() -> None:
    """The package has a version string."""
    assert echo_connhandler.__version__ == "0.1.0"


@pytest.mark.parametrize("module_name", PRIVATE_MODULES)
def test_private_modules_have_a_true_all(module_name: str) -> None:
    """Each private module's __all__ names only what it defines or imports."""
    module = importlib.import_module(module_name)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name}"


def test_typed_marker_is_shipped() -> None:
    """py.typed is in the package."""
    from importlib.resources import files

    assert files("echo_connhandler").joinpath("py.typed").is_file()


def test_the_provider_uses_only_the_public_surface() -> None:
    """The provider imports nothing from a private module of the library (``echo_connhandler._*``),
    and every name it imports from the library is in ``__all__``."""
    import ast
    from pathlib import Path

    import echo_connhandler_provider

    root = Path(echo_connhandler_provider.__file__).parent
    private, unexported = [], []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("echo_connhandler._"):
                    private.append(f"{path.name}: {node.module}")
                elif node.module == "echo_connhandler":
                    unexported += [a.name for a in node.names if a.name not in EXPECTED]
            if isinstance(node, ast.Import):
                private += [a.name for a in node.names if a.name.startswith("echo_connhandler._")]
    assert private == []
    assert unexported == []
