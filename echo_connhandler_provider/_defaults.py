"""Defaults the provider's operators and sensors share, read from Airflow's configuration."""

from __future__ import annotations

from airflow.sdk import conf

__all__ = ["default_deferrable"]


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset): the ``deferrable`` default of
    every operator and sensor of the provider, as Airflow's own deferrable operators use."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)
