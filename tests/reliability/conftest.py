"""Fixtures of the reliability suites: one sandbox per module, and ``AIRFLOW_CONN_*``
connections to it whose retries are quick (no backoff, a small ``Retry-After`` cap) but as many
as by default. The session's private AIRFLOW_HOME is set by tests/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig

#: Handler settings of the drills: every retry of the defaults (8 per request, 3 per login),
#: but no backoff wait and a Retry-After honoured for at most 50 ms.
DRILL_RETRY: dict[str, Any] = {
    "retry_wait_time": 0,
    "exponential_min_retry_wait_time": 0,
    "retry_after_cap": 0.05,
}
#: The sandbox of the reliability modules: small CCEE tables (1 200 rows per resource).
DRILL_CONFIG = SandboxConfig(seed=2025, ccee_rows_per_resource=1200)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The three emulators, one run per test module."""
    with Sandbox(DRILL_CONFIG) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox, with faults and counters reset before and after each test."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


Define = Callable[[str, dict[str, Any]], str]


@pytest.fixture
def define_conn(monkeypatch: pytest.MonkeyPatch) -> Define:
    """``define_conn(conn_id, fields)``: an ``AIRFLOW_CONN_<ID>`` JSON connection."""

    def define(conn_id: str, fields: dict[str, Any]) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
        return conn_id

    return define


@pytest.fixture
def drill_conns(sb: Sandbox, define_conn: Define) -> dict[str, str]:
    """One connection per service on the sandbox, with :data:`DRILL_RETRY`; by service name:
    ``ccee``, ``bazefield`` (user/password: a session that can expire), ``ons_sager``,
    ``ons_sinapse``."""
    urls = sb.urls
    baze, ons = DEMO_CREDENTIALS["bazefield"], DEMO_CREDENTIALS["ons"]
    return {
        "ccee": define_conn(
            "drill_ccee", {"conn_type": "ccee", "host": urls.ccee, "extra": DRILL_RETRY}
        ),
        "bazefield": define_conn(
            "drill_bazefield",
            {
                "conn_type": "bazefield",
                "host": urls.bazefield,
                "login": baze["user"],
                "password": baze["password"],
                "extra": DRILL_RETRY,
            },
        ),
        "ons_sager": define_conn(
            "drill_ons_sager",
            {
                "conn_type": "ons",
                "host": urls.ons_sager,
                "login": ons["user"],
                "password": ons["password"],
                "extra": {"login_target": "SAGER", "auth_url": urls.ons_auth_url, **DRILL_RETRY},
            },
        ),
        "ons_sinapse": define_conn(
            "drill_ons_sinapse",
            {
                "conn_type": "ons",
                "host": urls.ons_sinapse,
                "login": ons["user"],
                "password": ons["password"],
                "extra": {
                    "login_target": "SINAPSE",
                    "auth_url": urls.ons_auth_url,
                    "profile_url": urls.ons_profile_url,
                    **DRILL_RETRY,
                },
            },
        ),
    }
