"""The connections the example DAGs use (``ccee_default``, ``bazefield_default``, ``ons_sager``,
``ons_sinapse``, ``echo_http_default``), pointing at a running sandbox, as REST API bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider._fields import CONNECTION_TYPES

__all__ = ["connections_for", "stored_extra"]

BAZE_API = "BazeField.Services/api"


def stored_extra(conn_type: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with every field of the type's form: the given values, the others at their
    default (``None`` where the form has none, which the hooks read as unset).

    Airflow 3.3's edit form shows only the extra fields a connection stores, so a connection
    written with a few extras hides the others (API key, timeouts, TLS, concurrency...); stored
    in full, each shows with its value. Unknown names are refused here, as the hooks would.
    """
    fields = {f.name: f.default for f in CONNECTION_TYPES[conn_type].fields}
    unknown = sorted(set(extra) - set(fields))
    if unknown:
        raise ValueError(f"extra: no field {', '.join(unknown)} in a {conn_type!r} connection")
    return {name: extra.get(name, default) for name, default in fields.items()}


def connections_for(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The connections the example DAGs use, pointing at the sandbox (REST API bodies).

    Each stores every extra field of its type's form (``stored_extra``), a description, and the
    Base URL's port also in ``port``: Airflow 3.3.2's Test button sends the stored ``port`` as a
    number (``0`` when empty) and the API refuses a port that differs from the stored one
    (apache/airflow#73298); the hooks take the port of the Base URL when it has one.
    """
    urls = sandbox.urls
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]

    def conn(
        conn_id: str,
        conn_type: str,
        host: str,
        description: str,
        extra: Mapping[str, Any],
        **fields: str,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "connection_id": conn_id,
            "conn_type": conn_type,
            "description": description,
            "host": host,
            "extra": json.dumps(stored_extra(conn_type, extra)),
            **fields,
        }
        port = urlsplit(host).port
        if port is not None:
            body["port"] = port
        return body

    ons_extra = {"auth_url": urls.ons_auth_url, "max_retries": 3}
    return [
        conn(
            "ccee_default",
            "ccee",
            urls.ccee,
            "CCEE Dados Abertos (CKAN) of the local sandbox: no credentials",
            {"concurrency": 4, "max_retries": 3},
        ),
        conn(
            "bazefield_default",
            "bazefield",
            urls.bazefield,
            "Bazefield of the local sandbox: user and password (made-up demo account)",
            {"max_retries": 3},
            login=baze["user"],
            password=baze["password"],
        ),
        conn(
            "ons_sager",
            "ons",
            urls.ons_sager,
            "ONS SAGER renováveis of the local sandbox: OAuth2 password login (demo account)",
            {"login_target": "SAGER", **ons_extra},
            login=ons["user"],
            password=ons["password"],
        ),
        conn(
            "ons_sinapse",
            "ons",
            urls.ons_sinapse,
            "ONS SINAPSE of the local sandbox: OAuth2 login, then the user's profile",
            {"login_target": "SINAPSE", "profile_url": urls.ons_profile_url, **ons_extra},
            login=ons["user"],
            password=ons["password"],
        ),
        conn(
            "echo_http_default",
            "echo_http",
            f"{urls.bazefield}/{BAZE_API}",
            "Any REST API, here Bazefield's of the local sandbox: API key (Bearer)",
            {"api_key": baze["api_key"], "health_endpoint": "allocationTypes", "max_retries": 3},
        ),
    ]
