"""The pull operators take exactly their source's arguments (none lost, none invented).

An operator names the source arguments it treats itself (templated lists, ``start``/``end``
from the run's data interval) in its own signature; every other argument of its source passes
through ``**kwargs`` to the source as given (``PullOperator.source_options``). This test fails
when they drift: an operator argument the source does not take, a default that differs (an
operator's None stands for the source's default), or a source argument that does not reach it.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from echo_connhandler_provider.operators.pull import (
    BazefieldTimeseriesOperator,
    CceeDatastoreOperator,
    OnsSagerReportOperator,
    OnsSinapseExportOperator,
    PullOperator,
)

OPERATORS = [
    CceeDatastoreOperator,
    BazefieldTimeseriesOperator,
    OnsSagerReportOperator,
    OnsSinapseExportOperator,
]

#: Arguments of an operator that are its own, not its source's (``start``/``end`` default to
#: the run's data interval there, so their defaults differ on purpose).
OPERATOR_ONLY = set(inspect.signature(PullOperator.__init__).parameters) - {"self", "kwargs"}
DEFAULTS_DIFFER_ON_PURPOSE = {"start", "end", "file_name"}


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of ``cls.__init__`` and of the bases its ``**kwargs`` reach."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is PullOperator.__mro__[1]:
            continue
        parameters = inspect.signature(init).parameters
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind is parameter.KEYWORD_ONLY:
                found.setdefault(name, parameter)
        if klass is PullOperator or not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return found


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda c: c.__name__)
def test_operator_arguments_are_the_source_arguments(operator: Any) -> None:
    source = {
        name: p
        for name, p in inspect.signature(operator.source_class.__init__).parameters.items()
        if name != "self"
    }
    offered = {name: p for name, p in _parameters(operator).items() if name not in OPERATOR_ONLY}
    assert sorted(set(offered) - set(source)) == [], "operator arguments the source lacks"
    for name, parameter in source.items():
        if name not in offered:  # passed through as given: the source's own default applies
            continue
        if name in DEFAULTS_DIFFER_ON_PURPOSE or parameter.default is inspect.Parameter.empty:
            continue
        # None in an operator means "the source's default" (it is left out, or read as no
        # filter): any other default must be the source's own.
        if offered[name].default is not None:
            assert offered[name].default == parameter.default, f"default of {name!r}"


def test_source_arguments_the_operator_does_not_name_pass_through() -> None:
    """Bazefield's tuning arguments reach the source as given, and bad values fail there."""
    op = BazefieldTimeseriesOperator(
        task_id="t",
        objects=["1"],
        points=["P"],
        aggregates=["Average"],
        output="x.jsonl",
        window=3600,
        points_per_request=5,
    )
    assert op.source_options == {"window": 3600, "points_per_request": 5}
    context = {"data_interval_start": "2024-01-01", "data_interval_end": "2024-01-02"}
    source = op.source_class(**op.source_options, **op.source_kwargs(context))  # type: ignore[arg-type]
    assert source.identity()["window_s"] == 3600
    assert source.identity()["points_per_request"] == 5
    with pytest.raises(TypeError, match="colour"):
        BazefieldTimeseriesOperator(
            task_id="u", objects=["1"], points=["P"], aggregates=["A"], output="x", colour=1
        )
