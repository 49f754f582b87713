"""Fixtures of the tests of the local Airflow deployment (``deploy/``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deployment: starts a real local Airflow (api-server, scheduler, dag-processor, "
        "triggerer); about a minute or more each",
    )
