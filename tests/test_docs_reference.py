"""The API reference (docs/reference/, mkdocstrings) renders every public name of both packages.

Two checks: the reference pages render whole packages (``::: package``) with the members of their
``__all__`` (``filters: public``), so names added to ``__all__`` later appear without editing the
pages; and the site, built in strict mode (a few seconds), has an anchor for every name of the
``__all__`` of each package of :data:`PAGES` (``echo_connhandler``, ``echo_connhandler.pull``,
and ``echo_connhandler_provider`` with its ``hooks``, ``operators``, ``sensors`` and
``triggers``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Reference page (under docs/) -> the package it renders.
PAGES = {
    "reference/echo_connhandler.md": "echo_connhandler",
    "reference/echo_connhandler.pull.md": "echo_connhandler.pull",
    "reference/echo_connhandler_provider.hooks.md": "echo_connhandler_provider.hooks",
    "reference/echo_connhandler_provider.operators.md": "echo_connhandler_provider.operators",
    "reference/echo_connhandler_provider.triggers.md": "echo_connhandler_provider.triggers",
    "reference/echo_connhandler_provider.sensors.md": "echo_connhandler_provider.sensors",
    "reference/echo_connhandler_provider.md": "echo_connhandler_provider",
}
MKDOCS_MISSING = any(
    importlib.util.find_spec(name) is None for name in ("mkdocs", "mkdocstrings", "yaml")
)
needs_mkdocs = pytest.mark.skipif(MKDOCS_MISSING, reason="needs the dev extra (mkdocstrings)")


def _public_names(package: str) -> list[str]:
    names = importlib.import_module(package).__all__
    assert names, f"{package}.__all__ is empty"
    return list(names)


def _mkdocs_config() -> dict[str, Any]:
    import yaml

    # mkdocs.yml may hold !!python/name tags one day: a loader that ignores unknown tags.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda _loader, _suffix, _node: None)
    with open(ROOT / "mkdocs.yml", encoding="utf-8") as f:
        config: dict[str, Any] = yaml.load(f, Loader=Loader)  # noqa: S506 - SafeLoader subclass
    return config


def _python_options(config: dict[str, Any]) -> dict[str, Any]:
    for plugin in config.get("plugins", []):
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            options: dict[str, Any] = plugin["mkdocstrings"]["handlers"]["python"]["options"]
            return options
    raise AssertionError("mkdocs.yml does not configure the mkdocstrings plugin")


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


@pytest.mark.parametrize(("page", "package"), PAGES.items())
def test_page_renders_the_whole_package(page: str, package: str) -> None:
    """One package-level directive per page, with no hand-written member list."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    directives = re.findall(r"^:::\s*(\S+)(.*(?:\n[ \t]+.*)*)", text, flags=re.MULTILINE)
    assert [name for name, _ in directives] == [package]
    assert "members" not in directives[0][1], "members come from __all__, not from the page"


@needs_mkdocs
def test_plugin_renders_members_of_all_and_the_pages_are_in_the_nav() -> None:
    """``filters: public`` keeps exactly the names of ``__all__``; submodules are not inlined."""
    config = _mkdocs_config()
    options = _python_options(config)
    assert options["filters"] == "public"
    assert options.get("members") is None
    assert options["show_submodules"] is False
    assert options["docstring_style"] == "google"
    assert options["show_signature"] is True
    assert set(PAGES) <= set(_nav_pages(config["nav"]))


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation built in strict mode (no ``-q``: it hides the warnings strict counts)."""
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return site


@needs_mkdocs
@pytest.mark.parametrize(("page", "package"), PAGES.items())
# One worker under pytest-xdist (make unit): built_site, the whole strict docs build, runs once.
@pytest.mark.xdist_group("docs-site")
def test_every_public_name_is_rendered(built_site: Path, page: str, package: str) -> None:
    """Each name of ``__all__`` has its heading (anchor ``package.Name``) on its page."""
    html_file = built_site / page.removesuffix(".md") / "index.html"
    anchors = set(re.findall(r'\bid="([^"]+)"', html_file.read_text(encoding="utf-8")))
    missing = [name for name in _public_names(package) if f"{package}.{name}" not in anchors]
    assert not missing, f"not rendered in {page}: {missing}"
