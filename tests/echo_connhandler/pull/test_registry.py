"""Pull sources by name: registration, plain-JSON arguments, and building a source back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from echo_connhandler import CceeHttpHandler, HttpHandler
from echo_connhandler.pull import (
    BazefieldTimeseriesSource,
    CceeDatastoreSource,
    Chunk,
    OnsSagerReportSource,
    OnsSinapseExportSource,
    Plan,
    Rows,
    Source,
    _registry,
    build_source,
    json_arguments,
    register_source,
    registered_sources,
    source_class,
)


@pytest.fixture(autouse=True)
def _registry_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test leaves the registry as it found it."""
    monkeypatch.setattr(_registry, "_SOURCES", dict(_registry._SOURCES))


class _Echo(Source):
    handler_class = HttpHandler

    def __init__(self, *, pages: int = 1) -> None:
        self.pages = pages

    def identity(self) -> dict[str, Any]:
        return {"pages": self.pages}

    async def plan(self, handler: HttpHandler) -> Plan:
        return Plan([Chunk(i, {}) for i in range(self.pages)], ())

    async def fetch(self, handler: HttpHandler, chunk: Chunk, plan: Plan) -> Rows:
        return [{"i": chunk.index}]


def test_the_package_sources_are_registered_by_name() -> None:
    assert registered_sources() == {
        "bazefield_timeseries": BazefieldTimeseriesSource,
        "ccee_datastore": CceeDatastoreSource,
        "ons_sager_report": OnsSagerReportSource,
        "ons_sinapse_export": OnsSinapseExportSource,
    }
    assert source_class("ccee_datastore").handler_class is CceeHttpHandler


def test_a_user_source_is_registered_and_built_from_json() -> None:
    @register_source
    class Mine(_Echo):
        name = "my_pages"

    assert register_source(Mine) is Mine  # again: nothing changes
    built = build_source("my_pages", {"pages": 3})
    assert isinstance(built, Mine)
    assert built.arguments() == {"pages": 3}


@pytest.mark.parametrize(
    ("name", "match"),
    [
        (None, "must be set on the class itself"),
        ("", "must be set on the class itself"),
        ("My Pages", "lower-case words"),
        ("pages-1", "lower-case words"),
    ],
)
def test_bad_names_are_refused(name: Any, match: str) -> None:
    attributes: dict[str, Any] = {} if name is None else {"name": name}
    cls = type("Bad", (_Echo,), attributes)
    with pytest.raises(ValueError, match=match):
        register_source(cls)


def test_an_inherited_name_or_a_taken_name_is_refused() -> None:
    class Child(CceeDatastoreSource):
        pass

    with pytest.raises(ValueError, match="must be set on the class itself"):
        register_source(Child)

    class Other(_Echo):
        name = "ccee_datastore"

    with pytest.raises(ValueError, match=r"'ccee_datastore' is taken by .*CceeDatastoreSource"):
        register_source(Other)


def test_abstract_classes_and_bad_handlers_are_refused() -> None:
    class Half(Source):
        name = "half"
        handler_class = HttpHandler

    with pytest.raises(TypeError, match="does not implement fetch, identity, plan"):
        register_source(Half)

    class NoHandler(_Echo):
        name = "no_handler"
        handler_class = dict  # type: ignore[assignment]

    with pytest.raises(TypeError, match="handler_class must be an HttpHandler subclass"):
        register_source(NoHandler)
    with pytest.raises(TypeError, match="takes a Source subclass"):
        register_source(dict)  # type: ignore[type-var]


def test_unknown_names_and_arguments_are_named() -> None:
    with pytest.raises(
        ValueError, match=r"unknown pull source 'nope'; registered: .*ccee_datastore"
    ):
        build_source("nope", {})
    with pytest.raises(TypeError, match=r"'ccee_datastore' .* takes no argument colour"):
        build_source("ccee_datastore", {"dataset": "x", "colour": "red"})


@pytest.mark.parametrize(
    "source",
    [
        CceeDatastoreSource(dataset="pld_horario", years=[2024], filters={"a": 1}, sort="x desc"),
        BazefieldTimeseriesSource(
            objects=["1"],
            points=["P"],
            aggregates=["Average"],
            start=datetime(2024, 1, 1, tzinfo=UTC),
            end="2024-01-03T00:00:00Z",
            window=timedelta(hours=6),
        ),
        OnsSagerReportSource(start=date(2024, 1, 1), end=date(2024, 3, 1), split="month"),
        OnsSinapseExportSource(start="2024-01-01", end="2024-02-01", analitico=True),
    ],
    ids=lambda s: type(s).__name__,
)
def test_every_source_round_trips_through_plain_json(source: Source) -> None:
    """arguments() is plain JSON, and the source built from it is the same pull."""
    arguments = source.arguments()
    assert json.loads(json.dumps(arguments)) == arguments
    rebuilt = build_source(source.name, json.loads(json.dumps(arguments)))
    assert type(rebuilt) is type(source)
    assert rebuilt.identity() == source.identity()


def test_json_arguments_refuse_what_json_cannot_hold() -> None:
    assert json_arguments({"d": date(2024, 1, 2), "w": timedelta(minutes=1), "s": {2, 1}}) == {
        "d": "2024-01-02",
        "w": 60.0,
        "s": [1, 2],
    }
    with pytest.raises(TypeError, match="argument 'x': object is no plain JSON value"):
        json_arguments({"x": object()})
    with pytest.raises(ValueError, match=r"argument 'n'\[0\]: nan is not a finite number"):
        json_arguments({"n": [float("nan")]})


def test_a_source_given_positional_arguments_cannot_describe_itself() -> None:
    class Positional(_Echo):
        def __init__(self, pages: int = 1) -> None:
            super().__init__(pages=pages)

    with pytest.raises(TypeError, match="positional arguments"):
        Positional(2).arguments()
