"""Operator arguments that render to bad values are refused with a message naming them.

Each case was accepted before (issue 15, "Requests, triggers, secrets"): an ``output`` that
renders blank wrote a file named with spaces in the current folder, ``years=[2024.9]`` became
2024, a SAGER ``ids_*`` that rendered empty dropped the filter (every plant), and
``method=" POST"`` slipped past the deferred POST idempotency check. The templates are rendered
for real (``render_template_fields``, as the task runner does; with a DAG's
``render_template_as_native_obj=True`` where a value keeps its Python type), then the task is
executed: the refusal comes before any request and nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider.operators import (
    CceeDatastoreOperator,
    EchoHttpOperator,
    OnsSagerReportOperator,
)
from echo_connhandler_provider.sensors import EchoHttpSensor


def _context(**params: Any) -> dict[str, Any]:
    return {
        "params": params,
        "data_interval_start": pendulum.datetime(2024, 1, 1),
        "data_interval_end": pendulum.datetime(2024, 2, 1),
    }


def _rendered(op: Any, **params: Any) -> dict[str, Any]:
    """Render ``op``'s templates with ``params``; the context to execute it with."""
    context = _context(**params)
    op.render_template_fields(context)
    return context


def _native_dag() -> DAG:
    """A DAG whose templates render to Python values (a list stays a list)."""
    return DAG(
        "native",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1),
        render_template_as_native_obj=True,
    )


def _requests(sb: Sandbox, name: str) -> int:
    return sum(sb.faults(name).stats["requests"].values())


def _ccee(**kwargs: Any) -> CceeDatastoreOperator:
    base: dict[str, Any] = {
        "task_id": "pull",
        "conn_id": "ccee_json",
        "dataset": "pld_media_diaria",
        "years": [2024],
        "output": "/tmp/never-written.jsonl",
        "deferrable": False,
    }
    return CceeDatastoreOperator(**{**base, **kwargs})


# -- output ----------------------------------------------------------------------------------
@pytest.mark.parametrize("deferrable", [False, True])
@pytest.mark.parametrize(
    ("rendered", "problem"),
    [("  ", "is blank"), ("", "is blank"), (" out.jsonl", "has leading or trailing whitespace")],
)
def test_pull_output_rendering_blank_is_refused(
    sb: Sandbox,
    conns: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    deferrable: bool,
    rendered: str,
    problem: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # where a blank output would have been written
    op = _ccee(output="{{ params.out }}", deferrable=deferrable)
    context = _rendered(op, out=rendered)
    assert op.output_path == rendered
    with pytest.raises(ValueError, match=rf"^output {problem} \({rendered!r}\)"):
        op.execute(context)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert _requests(sb, "ccee") == 0


def test_pull_output_blank_fails_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match=r"^output is blank \('  '\)"):
        _ccee(output="  ")
    with pytest.raises(ValueError, match=r"^output has leading or trailing whitespace"):
        _ccee(output="/lake/x.csv\n")


@pytest.mark.parametrize("deferrable", [False, True])
@pytest.mark.parametrize("rendered", ["  ", ""])
def test_http_output_rendering_blank_is_refused(
    sb: Sandbox,
    conns: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    deferrable: bool,
    rendered: str,
) -> None:
    """Blank, the body went to a file named with spaces; empty, it silently went to the XCom
    instead of the file asked for."""
    monkeypatch.chdir(tmp_path)
    op = EchoHttpOperator(
        task_id="get",
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        output="{{ params.out }}",
        deferrable=deferrable,
    )
    context = _rendered(op, out=rendered)
    with pytest.raises(ValueError, match=rf"^output is blank \({rendered!r}\)"):
        op.execute(context)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert _requests(sb, "bazefield") == 0
    with pytest.raises(ValueError, match=r"^output is blank"):
        EchoHttpOperator(task_id="parse", endpoint="x", output=" ")


# -- years -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("years", "message"),
    [
        ([2024.9], r"^years must be whole numbers, got \[2024\.9\] \(2024\.9 has a fraction\)"),
        (2024.5, r"^years must be whole numbers, got 2024\.5"),
        ([True], r"^years must be whole numbers, got \[True\] \(a bool\)"),
        (["2024.9"], r"^years must be whole numbers, got \['2024\.9'\]"),
        (["twenty"], r"^years must be whole numbers, got \['twenty'\]"),
    ],
)
def test_years_rendering_to_a_non_integer_is_refused(
    sb: Sandbox, conns: Any, years: Any, message: str
) -> None:
    """Natively rendered (a DAG with render_template_as_native_obj), [2024.9] used to become
    2024: a pull of the wrong year, reported as a success."""
    with _native_dag():
        op = _ccee(years="{{ params.years }}")
    context = _rendered(op, years=years)
    assert op.years == years
    with pytest.raises(ValueError, match=message):
        op.execute(context)  # type: ignore[arg-type]
    assert _requests(sb, "ccee") == 0
    if "'" not in message:
        # Given as is, a value without text (no template in it) fails when the DAG is parsed.
        with pytest.raises(ValueError, match=message):
            _ccee(years=years)


def test_years_as_text_of_whole_numbers_are_accepted() -> None:
    """A template renders text: "2024" and "[2023, 2024]" are whole numbers; 2024.0 too."""
    for rendered, expected in (("2024", [2024]), ("[2023, 2024]", [2023, 2024])):
        op = _ccee(years="{{ params.years }}")
        context = _rendered(op, years=rendered)
        assert op.source_kwargs(context)["years"] == expected  # type: ignore[arg-type]
    assert _ccee(years=[2024.0]).source_kwargs({})["years"] == [2024]  # type: ignore[arg-type]
    op = _ccee(years="{{ params.years }}")
    with pytest.raises(ValueError, match=r"^years must be whole numbers, got '\[2024\.9\]'"):
        op.source_kwargs(_rendered(op, years=[2024.9]))  # type: ignore[arg-type]


# -- SAGER ids -------------------------------------------------------------------------------
def _sager(**kwargs: Any) -> OnsSagerReportOperator:
    base: dict[str, Any] = {
        "task_id": "sager",
        "conn_id": "ons_sager_json",
        "output": "/tmp/never-written-sager",
        "deferrable": False,
    }
    return OnsSagerReportOperator(**{**base, **kwargs})


IDS = ["ids_conjuntos", "ids_usinas", "ids_agentes", "ids_fontes"]


@pytest.mark.parametrize("argument", IDS)
@pytest.mark.parametrize(
    ("param", "native"),
    [("", False), ("  ", False), ([], False), ([""], False), ([], True), ([""], True)],
)
def test_sager_ids_rendering_empty_are_refused(
    sb: Sandbox, conns: Any, argument: str, param: Any, native: bool
) -> None:
    """An ids_* that renders empty used to drop the filter: every plant, agent or source.
    Rendered as text, [] is "[]" and [""] is "['']"; natively, they stay lists."""
    if native:
        with _native_dag():
            op = _sager(**{argument: "{{ params.ids }}"})
    else:
        op = _sager(**{argument: "{{ params.ids }}"})
    context = _rendered(op, ids=param)
    assert getattr(op, argument) == (param if native else str(param))
    message = (
        rf"^{argument} must be whole numbers, got \[''\]"
        if native and param == [""]
        else rf"^{argument} is empty \(.*\): that would drop the filter"
    )
    with pytest.raises(ValueError, match=message):
        op.execute(context)  # type: ignore[arg-type]
    assert _requests(sb, "ons") == 0


@pytest.mark.parametrize("argument", IDS)
def test_sager_ids_empty_fail_when_the_dag_is_parsed(argument: str) -> None:
    for empty in ([], ()):
        with pytest.raises(ValueError, match=rf"^{argument} is empty"):
            _sager(**{argument: empty})


def test_sager_ids_none_is_no_filter_and_text_is_split() -> None:
    """None (the default) is no filter; text from a template is a list of ids."""
    op = _sager(ids_usinas="{{ params.ids }}")
    kwargs = op.source_kwargs(_rendered(op, ids="1001, 1002"))  # type: ignore[arg-type]
    assert kwargs["ids_usinas"] == [1001, 1002]
    assert kwargs["ids_conjuntos"] == kwargs["ids_agentes"] == kwargs["ids_fontes"] == []


# -- method ----------------------------------------------------------------------------------
METHODS = [" POST", "POST ", "PO ST", "", "POST\n", "GET;"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("deferrable", [True, False])
def test_http_method_rendering_to_a_non_token_is_refused(
    sb: Sandbox, conns: Any, method: str, deferrable: bool
) -> None:
    """ " POST" used to defer without idempotent=True (the check compared " POST" with POST):
    a triggerer restart could send the POST again."""
    op = EchoHttpOperator(
        task_id="post",
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        method="{{ params.method }}",
        deferrable=deferrable,
    )
    context = _rendered(op, method=method)
    assert op.method == method
    with pytest.raises(
        ValueError, match=rf"^method must be an HTTP method token .* got {re.escape(repr(method))}$"
    ):
        op.execute(context)  # type: ignore[arg-type]
    assert _requests(sb, "bazefield") == 0
    with pytest.raises(ValueError, match=r"^method must be an HTTP method token"):
        EchoHttpOperator(task_id="parse", endpoint="x", method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("deferrable", [True, False])
def test_http_sensor_method_rendering_to_a_non_token_is_refused(
    sb: Sandbox, conns: Any, method: str, deferrable: bool
) -> None:
    sensor = EchoHttpSensor(
        task_id="wait",
        conn_id="echo_http_json",
        endpoint="allocationTypes",
        method="{{ params.method }}",
        poke_interval=0.05,
        timeout=60,
        deferrable=deferrable,
    )
    context = _rendered(sensor, method=method)
    with pytest.raises(
        ValueError, match=rf"^method must be an HTTP method token .* got {re.escape(repr(method))}$"
    ):
        sensor.execute(context)  # type: ignore[arg-type]
    assert _requests(sb, "bazefield") == 0
    with pytest.raises(ValueError, match=r"^method must be an HTTP method token"):
        EchoHttpSensor(task_id="parse", endpoint="x", method=method)


def test_a_rendered_lowercase_post_still_needs_idempotent(conns: Any) -> None:
    """Any case is accepted and upper-cased before the deferred POST check."""
    op = EchoHttpOperator(
        task_id="post",
        conn_id="echo_http_json",
        endpoint="x",
        method="{{ params.method }}",
        deferrable=True,
    )
    with pytest.raises(ValueError, match="a deferred POST needs idempotent=True"):
        op.execute(_rendered(op, method="post"))  # type: ignore[arg-type]
