"""The host name the local deployment's Airflow processes give themselves (``[core]
hostname_callable``): every service of the runner listens on loopback only, so the API server
must fetch a running task's log from 127.0.0.1, not from the machine's name."""

from __future__ import annotations


def hostname() -> str:
    """Loopback, where the deployment's log server listens."""
    return "127.0.0.1"
