"""Every use of Airflow's private API, pinned to the Airflow versions the provider allows.

The provider uses one private thing: ``AssetStateStoreAccessors._by_name``/``_by_uri`` (the
accessors of every asset a publication watcher watches; its public ``aget``/``aset`` serve a
single asset only). This test fails when the installed Airflow is outside the range that
pyproject.toml declares, or when that attribute no longer behaves as the provider reads it.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from airflow.sdk import Asset
from airflow.sdk.execution_time.context import AssetStateStoreAccessors

from echo_connhandler_provider.triggers.ccee import watched_state_stores

ROOT = Path(__file__).resolve().parents[3]


def _declared_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    spec = next(
        s
        for s in pyproject["project"]["optional-dependencies"]["airflow"]
        if s.startswith("apache-airflow")
    )
    low = re.search(r">=\s*([0-9.]+)", spec)
    high = re.search(r"<\s*([0-9.]+)", spec)
    assert low, f"the airflow extra must give a lower bound (>=X), got {spec!r}"
    assert high, f"the airflow extra must give an upper bound (<Y), got {spec!r}"
    return tuple(map(int, low[1].split("."))), tuple(map(int, high[1].split(".")))


def _installed() -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version("apache-airflow"))[:3])


def test_installed_airflow_is_one_the_provider_declares() -> None:
    low, high = _declared_range()
    assert low <= _installed() < high


def test_accessors_of_every_watched_asset_are_found() -> None:
    """The triggerer gives a watcher ``AssetStateStoreAccessors(inlets=[Asset, ...])``."""
    store = AssetStateStoreAccessors(
        inlets=[Asset(name="a", uri="ccee://a"), Asset(name="b", uri="ccee://b")]
    )
    accessors = watched_state_stores(store)
    assert len(accessors) == 2
    assert accessors == [
        store[Asset(name="a", uri="ccee://a")],
        store[Asset(name="b", uri="ccee://b")],
    ]
    assert all(callable(getattr(a, "aget", None)) for a in accessors)
    assert all(callable(getattr(a, "aset", None)) for a in accessors)
    assert watched_state_stores(None) == []
