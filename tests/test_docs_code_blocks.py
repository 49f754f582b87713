"""Every ```python block of README.md and docs/**/*.md runs as written, or says why it does not.

Each block is one of:

- **runnable** (no marker): the test runs it. The blocks of one page run in order, in one
  namespace, as a reader pasting them one after the other into one Python session would; each
  page runs in its own empty folder (files the blocks write land there).
- **an outline**: its first line is ``# outline: <why>`` (for instance "needs the real
  service"). It is not run; the reason must be given.
- **run by another test**: its first line is ``# example: <name>`` on a page of
  ``RUN_ELSEWHERE``; that test runs it (as a DAG file, with Airflow), so this one does not run it
  twice. The marker on any other page is an error.

Connections are defined the way the page shows a user: every ``export AIRFLOW_CONN_<ID>='...'``
line of the page's ```bash blocks is set in the environment before its Python blocks run.

The documented hosts are the real services', or a sandbox started with ``--port-base 8700``. The
test runs against one sandbox (``echo_connhandler.sandbox.Sandbox``, started once for the
module), so the block's text and the connection values go through one explicit mapping first,
``documented_to_sandbox``: each real service URL, and each URL of the ``--port-base 8700``
sandbox, becomes this sandbox's URL of that service, and each placeholder credential the docs
show (``my-api-key``, ``my.user``, ``my-password``) becomes the sandbox's made-up one. Nothing
else in a block is changed. Every connection a page with code defines is also tested on its own
(``test_documented_connection_works``): its hook's ``test_connection()`` passes, and an
``echo_http`` connection's health endpoint answers JSON (so the headers it needs are shown).

Any name resolution of a host other than loopback fails the block (a block that escaped the
mapping never reaches a real service).
"""

from __future__ import annotations

import gc
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig, SandboxUrls

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
CONN_EXPORT = re.compile(r"^export (AIRFLOW_CONN_[A-Z0-9_]+)='([^']*)'", re.MULTILINE)
OUTLINE = re.compile(r"# outline: (\S.*)")
EXAMPLE = re.compile(r"# example: ([\w-]+)")

#: Pages whose ``# example: <name>`` blocks another test runs, and that test.
RUN_ELSEWHERE = {
    "docs/airflow/operators.md": "tests/echo_connhandler_provider/operators/test_docs_examples.py",
    "docs/airflow/sensors.md": "tests/echo_connhandler_provider/sensors/test_docs_examples.py",
}

#: Pages whose unmarked blocks do not run yet and are being fixed (their owners are editing
#: them): page -> why. Their blocks are skipped, visibly; remove the entry once the page passes.
PENDING: dict[str, str] = {}


def documented_to_sandbox(urls: SandboxUrls) -> dict[str, str]:
    """The one mapping from what the docs show to the sandbox: real hosts -> sandbox URLs,
    placeholder credentials -> the sandbox's made-up ones (applied longest text first)."""
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]
    assert baze["user"] == ons["user"]
    assert baze["password"] == ons["password"]
    return {
        "https://bazefield.echoenergia.com.br": urls.bazefield,
        "https://dadosabertos.ccee.org.br": urls.ccee,
        "https://pops.ons.org.br/ons.pop.federation": urls.ons_auth_url,
        "https://integra.ons.org.br/api/sager/renovaveis/api": urls.ons_sager,
        "https://api.sinapse.ons.org.br/api/usuario/perfis": urls.ons_profile_url,
        "https://api.sinapse.ons.org.br/api": urls.ons_sinapse,
        # The sandbox as the docs start it for Airflow: python -m echo_connhandler.sandbox
        # --port-base 8700 (Bazefield on 8700, CCEE on 8701, ONS on 8702).
        "http://127.0.0.1:8700": urls.bazefield,
        "http://127.0.0.1:8701": urls.ccee,
        "http://127.0.0.1:8702": urls.ons,
        "my-api-key": baze["api_key"],
        "my.user": baze["user"],
        "my-password": baze["password"],
    }


def substitute(text: str, mapping: dict[str, str]) -> str:
    """``text`` with every key of ``mapping`` replaced, longest keys first (one pass)."""
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda match: mapping[match.group(0)], text)


@dataclass(frozen=True)
class Block:
    """One ```python block: its page (relative to the repository), line and code."""

    page: str
    line: int
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.split("\n", 1)[0].strip()


def pages() -> list[str]:
    """README.md and every docs page (the generated API reference has no code blocks)."""
    found = ["README.md"]
    found += sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "docs").rglob("*.md")
        if "reference" not in path.relative_to(ROOT / "docs").parts
    )
    return found


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in BLOCK.finditer(text)
    ]


def connection_exports(page: str) -> dict[str, str]:
    """The ``AIRFLOW_CONN_*`` variables the page's bash blocks export."""
    text = (ROOT / page).read_text(encoding="utf-8")
    exports: dict[str, str] = {}
    for block in BASH_BLOCK.findall(text):
        exports.update(CONN_EXPORT.findall(block))
    return exports


def kind(block: Block) -> str:
    """``outline``, ``elsewhere`` or ``run``; a marker in the wrong place fails."""
    if OUTLINE.fullmatch(block.first_line):
        return "outline"
    assert not block.first_line.startswith("# outline"), (
        f"{block.where}: write the outline marker as '# outline: <why>'"
    )
    if EXAMPLE.fullmatch(block.first_line):
        assert block.page in RUN_ELSEWHERE, (
            f"{block.where}: '# example:' blocks are run only on {sorted(RUN_ELSEWHERE)}"
        )
        return "elsewhere"
    return "run"


def documented_connections() -> list[tuple[str, str]]:
    """``(page, variable)`` of every ``export AIRFLOW_CONN_*`` of a page whose code runs (a page
    without code, such as the connections reference, shows the shape of real definitions)."""
    return [
        (page, name)
        for page in pages()
        if any(kind(block) != "outline" for block in blocks(page))
        for name in connection_exports(page)
    ]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=42)) as running:
        yield running


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving any host but loopback fails: a block never reaches a real service."""
    original = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "localhost", "127.0.0.1", "::1"):
            raise OSError(f"docs test: {name} is not the sandbox (missing from the mapping?)")
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def test_markers_and_pending_are_well_formed() -> None:
    """Every block has a valid kind; the pending list and the other tests' pages exist."""
    for page in pages():
        for block in blocks(page):
            kind(block)
    for page in [*PENDING, *RUN_ELSEWHERE]:
        assert (ROOT / page).is_file(), page
    for test in RUN_ELSEWHERE.values():
        assert (ROOT / test).is_file(), test


@pytest.mark.parametrize("page", sorted(RUN_ELSEWHERE))
def test_examples_run_elsewhere_are_found_by_their_test(page: str) -> None:
    """The other test reads this page and the same marker, so its blocks are really run."""
    test_source = (ROOT / RUN_ELSEWHERE[page]).read_text(encoding="utf-8")
    assert f'"{Path(page).name}"' in test_source
    assert "# example: ([\\w-]+)" in test_source
    assert any(kind(block) == "elsewhere" for block in blocks(page))


@pytest.mark.parametrize("page", [p for p in pages() if blocks(p)])
def test_page_blocks_run(
    page: str,
    sandbox: Sandbox,
    loopback_only: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's runnable blocks run in order, in one namespace, against the sandbox."""
    runnable = [block for block in blocks(page) if kind(block) == "run"]
    if not runnable:
        pytest.skip("every block of the page is an outline or run by another test")
    if page in PENDING:
        pytest.skip(f"pending: {PENDING[page]}")
    mapping = documented_to_sandbox(sandbox.urls)
    for name, value in connection_exports(page).items():
        monkeypatch.setenv(name, substitute(value, mapping))
    monkeypatch.chdir(tmp_path)
    sandbox.reset()
    namespace: dict[str, Any] = {"__name__": "__main__"}
    # A page reads like one Python session: a block may build a handler and leave it open, or
    # rebind its name (the reader's interpreter exits in the end). Its sockets are released
    # when it is collected, not reported as leaks; leaks of the library are other tests' job.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            for block in runnable:
                code = compile(substitute(block.code, mapping), block.where, "exec")
                try:
                    exec(code, namespace)  # noqa: S102 - the documentation's own code
                except Exception as exc:
                    raise AssertionError(f"{block.where} does not run as written: {exc!r}") from exc
        finally:
            sandbox.reset()
            for value in namespace.values():  # a page that starts its own sandbox, left up
                if isinstance(value, Sandbox) and value is not sandbox:
                    value.stop()
            namespace.clear()
            gc.collect()


@pytest.mark.parametrize(("page", "variable"), documented_connections())
def test_documented_connection_works(
    page: str, variable: str, sandbox: Sandbox, loopback_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection as the page defines it reaches the sandbox: its hook's test passes; an
    ``echo_http`` one answers JSON on its health endpoint (Bazefield answers an HTML page to a
    client that does not ask for JSON: docs/services/bazefield.md, "Quirks handled")."""
    from airflow.sdk import BaseHook

    from echo_connhandler import expect_json
    from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook

    value = substitute(connection_exports(page)[variable], documented_to_sandbox(sandbox.urls))
    monkeypatch.setenv(variable, value)
    conn_id = variable.removeprefix("AIRFLOW_CONN_").lower()
    hooks = {
        "echo_http": EchoHttpHook,
        "bazefield": BazefieldHook,
        "ccee": CceeHook,
        "ons": OnsHook,
    }
    hook_cls = hooks[BaseHook.get_connection(conn_id).conn_type]
    hook = hook_cls(conn_id)
    ok, message = hook.test_connection()
    assert ok, f"{page}: {variable}: {message}"
    if hook_cls is EchoHttpHook:
        try:
            endpoint = str(hook.options.get("health_endpoint") or "")
            assert expect_json(hook.get_conn().get(endpoint)) is not None
        finally:
            hook.close()
