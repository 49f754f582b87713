"""The deployment's REST API (``/api/v2``): the client the runner uses, logged in as the admin
user; readiness by the components' heartbeats; the UI's Test button replayed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from deploy.airflow_home import ADMIN_USER

__all__ = [
    "HEARTBEATING_COMPONENTS",
    "UI_TEST_BODY_KEYS",
    "Api",
    "components_not_ready",
    "ui_test_body",
]

#: The components ``GET /api/v2/monitor/health`` reports with a heartbeat (Airflow 3.3,
#: ``airflow.api.common.airflow_health``): each one's ``status`` is ``healthy`` while its latest
#: job runs and heartbeated within its health-check threshold, and ``latest_<name>_heartbeat``
#: is that job's latest heartbeat (ISO 8601, UTC). ``airflow standalone`` waits for the same three
#: (``StandaloneCommand.is_ready``: scheduler, dag-processor and triggerer jobs alive).
HEARTBEATING_COMPONENTS = ("scheduler", "dag_processor", "triggerer")


def components_not_ready(
    health: Mapping[str, Any],
    since: datetime,
    components: Sequence[str] = HEARTBEATING_COMPONENTS,
) -> list[str]:
    """The components of a ``/monitor/health`` answer that are not healthy with a heartbeat at
    or after ``since`` (an aware datetime). The heartbeat matters on a reused AIRFLOW_HOME: a
    process of an earlier run, stopped less than a threshold ago, still counts as healthy."""
    waiting = []
    for name in components:
        part = health.get(name) or {}
        beat = part.get(f"latest_{name}_heartbeat")
        if part.get("status") != "healthy" or not beat or datetime.fromisoformat(str(beat)) < since:
            waiting.append(name)
    return waiting


class Api:
    """The deployment's REST API (``/api/v2``), logged in as the admin user."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self._password = password
        self.client = httpx.Client(base_url=base, timeout=30.0)

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no login needed)."""
        reply = self.client.get("/api/v2/monitor/health")
        reply.raise_for_status()
        return dict(reply.json())

    def wait_until_ready(
        self,
        check_alive: Callable[[], None],
        since: datetime,
        components: Sequence[str] = HEARTBEATING_COMPONENTS,
        timeout: float = 180.0,
    ) -> None:
        """Wait until the API server answers and ``components`` heartbeated since ``since``
        (``check_alive`` raises when a process of the deployment ended), then log in."""
        deadline = time.monotonic() + timeout
        waiting: list[str] = ["api-server", *components]
        while True:
            check_alive()
            with contextlib.suppress(httpx.TransportError, httpx.HTTPStatusError):
                waiting = components_not_ready(self.health(), since, components)
                if not waiting:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not ready after {timeout:.0f} s (no heartbeat since the start): "
                    f"{', '.join(waiting)}"
                )
            time.sleep(0.5)
        if "Authorization" not in self.client.headers:
            self.log_in()

    def log_in(self) -> None:
        reply = self.client.post(
            "/auth/token", json={"username": ADMIN_USER, "password": self._password}
        )
        reply.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, *, attempts: int = 6, **kwargs: Any) -> Any:
        """One REST call. Every call the runner makes is safe to repeat (reads, pause/unpause,
        clear, connections overwritten): a 5xx is tried again, because SQLite lets one writer
        at a time and the API server answers 500 "Database error" after waiting about 5 s
        behind the scheduler on a loaded machine."""
        for attempt in range(1, attempts + 1):
            reply = self.client.request(method, f"/api/v2/{path}", **kwargs)
            if reply.status_code < 500 or attempt == attempts:
                break
            time.sleep(attempt)
        if reply.status_code >= 400:
            raise RuntimeError(f"{method} /api/v2/{path}: {reply.status_code} {reply.text[:500]}")
        return reply.json() if reply.content else None

    def put_connections(self, connections: Sequence[Mapping[str, Any]]) -> None:
        body = {
            "actions": [
                {
                    "action": "create",
                    "entities": list(connections),
                    "action_on_existence": "overwrite",
                }
            ]
        }
        result = self.call("PATCH", "connections", json=body)
        errors = (result or {}).get("create", {}).get("errors")
        if errors:
            raise RuntimeError(f"could not write the connections: {errors}")

    def test_as_the_ui_does(self) -> dict[str, dict[str, Any]]:
        """Press the Connections list's Test button on every connection: per id, the request
        body sent (``password`` as listed: masked) and the reply (``status_code``, ``body``)."""
        listed = self.call("GET", "connections", params={"limit": 100}).get("connections", [])
        results = {}
        for connection in listed:
            body = ui_test_body(connection)
            reply = self.client.post("/api/v2/connections/test", json=body)
            results[str(connection["connection_id"])] = {
                "request": body,
                "status_code": reply.status_code,
                "body": reply.json() if reply.content else None,
            }
        return results

    def close(self) -> None:
        self.client.close()


#: The body of the Test button of Airflow 3.3.2's Connections list (``TestConnectionButton`` of
#: the UI; in ``airflow/ui/dist/assets/index-*.js``), from the listed connection ``n``:
#: ``{conn_type, connection_id, description: n.description ?? "", extra: n.extra || "{}",
#: host: n.host ?? "", login: n.login ?? "", password: n.password ?? "",
#: port: Number(n.port), schema: n.schema ?? ""}``.
UI_TEST_BODY_KEYS = (
    "conn_type",
    "connection_id",
    "description",
    "extra",
    "host",
    "login",
    "password",
    "port",
    "schema",
)


def _js_number(value: Any) -> int | float:
    """JavaScript's ``Number(value)`` for what a JSON reply holds (null is 0)."""
    if value is None or value == "":
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return int(number) if number.is_integer() else number


def ui_test_body(connection: Mapping[str, Any]) -> dict[str, Any]:
    """What the UI's Test button posts to ``/api/v2/connections/test`` for a connection as the
    list (``GET /api/v2/connections``) gives it."""
    extra = connection.get("extra")
    return {
        "conn_type": connection["conn_type"],
        "connection_id": connection["connection_id"],
        "description": connection.get("description") or "",
        "extra": "{}" if extra in ("", None) else extra,
        "host": connection.get("host") or "",
        "login": connection.get("login") or "",
        "password": connection.get("password") or "",
        "port": _js_number(connection.get("port")),
        "schema": connection.get("schema") or "",
    }
