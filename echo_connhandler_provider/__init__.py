"""echo_connhandler_provider: the Apache Airflow 3 provider of echo-connhandler-provider.

``get_provider_info()`` is read by Airflow's providers manager through the
``apache_airflow_provider`` entry point. It imports only the field table
(:mod:`echo_connhandler_provider._fields`), never the hooks or the handlers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["get_provider_info"]

DISTRIBUTION = "echo-connhandler-provider"

#: Where the documentation is. There is no public site: the built docs (``make docs``, MkDocs,
#: into ``site/``) are served by the local deployment's API server at this path
#: (``deploy/airflow_plugins/echo_docs.py``), so the link works from the UI that shows it (a
#: path on the UI's own origin). Airflow 3.3 takes the Providers page's link from the
#: distribution's ``Project-URL: Documentation`` (pyproject.toml), which says the same; a
#: deployment that hosts the docs elsewhere changes both.
DOCS_PATH = "/echo-connhandler-docs/"

#: The operators of each connection type (pulls into files; one HTTP request for echo_http).
_OPERATOR_MODULES = {
    "echo_http": "echo_connhandler_provider.operators.http",
    "bazefield": "echo_connhandler_provider.operators.pull",
    "ccee": "echo_connhandler_provider.operators.pull",
    "ons": "echo_connhandler_provider.operators.pull",
}
_TRIGGERS_MODULE = "echo_connhandler_provider.triggers.pull"
#: The sensors and the extra triggers of each connection type (an HTTP endpoint through any
#: type; CCEE dataset updates and publications).
_SENSOR_MODULES = {
    "echo_http": ["echo_connhandler_provider.sensors.http"],
    "bazefield": ["echo_connhandler_provider.sensors.http"],
    "ccee": ["echo_connhandler_provider.sensors.http", "echo_connhandler_provider.sensors.ccee"],
    "ons": ["echo_connhandler_provider.sensors.http"],
}
_EXTRA_TRIGGER_MODULES = {
    "echo_http": ["echo_connhandler_provider.triggers.http"],
    "bazefield": ["echo_connhandler_provider.triggers.http"],
    "ccee": ["echo_connhandler_provider.triggers.http", "echo_connhandler_provider.triggers.ccee"],
    "ons": ["echo_connhandler_provider.triggers.http"],
}


def get_provider_info() -> dict[str, Any]:
    """Provider metadata: hooks, operators, sensors, triggers, connection types and forms."""
    from echo_connhandler_provider._fields import CONNECTION_TYPES

    types = list(CONNECTION_TYPES.values())
    return {
        "package-name": DISTRIBUTION,
        "name": "Echo connection handlers",
        # No underscore, backtick or angle bracket: the API strips them as reST markup.
        "description": (
            "Bazefield, CCEE Dados Abertos (CKAN behind a WAF), ONS SAGER/SINAPSE (OAuth2) and "
            "any REST API in Airflow: operators that pull a dataset or a time range into "
            "Parquet, CSV or JSON Lines files (or ONS export files), local or s3, deferrable "
            "so the pages are fetched in the triggerer with checkpoints; sensors (an HTTP "
            "endpoint, a CCEE dataset update); an asset-watcher trigger that starts a DAG "
            "on each CCEE publication; hooks with retries, backoff and typed errors."
        ),
        "documentation-url": DOCS_PATH,
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": t.hook_name,
                "external-doc-url": t.placeholders["host"],
                "tags": ["service"],
            }
            for t in types
        ],
        "hooks": [{"integration-name": t.hook_name, "python-modules": [t.module]} for t in types],
        "operators": [
            {"integration-name": t.hook_name, "python-modules": [_OPERATOR_MODULES[t.conn_type]]}
            for t in types
        ],
        "sensors": [
            {"integration-name": t.hook_name, "python-modules": _SENSOR_MODULES[t.conn_type]}
            for t in types
        ],
        "triggers": [
            {
                "integration-name": t.hook_name,
                "python-modules": [_TRIGGERS_MODULE, *_EXTRA_TRIGGER_MODULES[t.conn_type]],
            }
            for t in types
        ],
        "connection-types": [t.provider_entry() for t in types],
    }
