"""Airflow plugin of the local deployment: the project's documentation on the API server.

There is no public documentation site: the local deployment serves the built docs (``make
docs`` writes them to ``site/``) at ``DOCS_PATH`` of its own API server (same origin as the UI,
loopback only), which is where ``get_provider_info()``'s ``documentation-url`` points by default.
When ``site/`` was not built yet, the page says how to build it and where the Markdown is.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from echo_connhandler_provider import DOCS_PATH

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site"

app = FastAPI(title="echo-connhandler-provider documentation")
if (SITE / "index.html").is_file():
    app.mount("/", StaticFiles(directory=SITE, html=True), name="docs")
else:

    @app.get("/", response_class=HTMLResponse)
    def not_built() -> str:
        """The docs are Markdown under docs/ until ``make docs`` builds them."""
        return (
            "<h1>echo-connhandler-provider documentation</h1>"
            f"<p>Not built yet: run <code>make docs</code> in {ROOT} (it writes site/), then "
            f"reload. The Markdown sources are in {ROOT / 'docs'}.</p>"
        )


class EchoDocsPlugin(AirflowPlugin):
    """Mounts the documentation under ``DOCS_PATH`` (without its trailing slash)."""

    name = "echo_connhandler_docs"
    fastapi_apps = [
        {"app": app, "url_prefix": DOCS_PATH.rstrip("/"), "name": "Echo connhandler docs"}
    ]
