"""``_lineage``'s naming and facets, and what the operators keep for lineage and assets.

The real run (the OpenLineage provider's listener and file transport) is in test_lineage.py;
here the functions are called directly, and a deferred pull resumes on a fresh operator (as a
worker that did not defer it: a new process), against the sandbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pendulum
import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.sdk.serde import deserialize, serialize
from openlineage.client.serde import Serde

from echo_connhandler.sandbox import Sandbox
from echo_connhandler_provider import _lineage
from echo_connhandler_provider.operators import (
    CceeDatastoreOperator,
    EchoHttpOperator,
    OnsSagerReportOperator,
)
from echo_connhandler_provider.operators.pull import asset_extra

SUMMARY: dict[str, Any] = {
    "output": "/lake/ccee/pld.parquet",
    "format": "parquet",
    "rows": 1464,
    "chunks": 3,
    "bytes": 14142,
    "seconds": 0.9,
    "retries": 1,
    "chunks_resumed": 0,
    "source_ids": ["9c1a51f8"],
    "source_versions": {"9c1a51f8": "2025-01-15T03:03:00"},
    "columns": [["_id", "int"], ["DIA", "date"], ["PLD_MEDIA_DIA", "float"]],
    "files": [],
    "tolerated": {},
    "stage": "done",
    "phases": [{"phase": "fetch", "where": "triggerer", "seconds": 0.5, "chunks": 3}],
}
FILES: dict[str, Any] = {
    **SUMMARY,
    "output": "s3://lake/ons/sager",
    "format": "files",
    "rows": 0,
    "bytes": 300,
    "source_ids": ["relatorio/exportar"],
    "source_versions": {},
    "columns": [],
    "files": ["s3://lake/ons/sager/a.xlsx", "s3://lake/ons/sager/b.xlsx"],
}


def _json(dataset: Any) -> dict[str, Any]:
    """A dataset as the transport writes it."""
    value: dict[str, Any] = json.loads(Serde.to_json(dataset))
    return value


# -- naming -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "namespace"),
    [
        ("https://dadosabertos.ccee.org.br", "https://dadosabertos.ccee.org.br"),
        ("https://user:secret@Host.Example:8443/base/api?key=k#x", "https://host.example:8443"),
        ("HTTP://127.0.0.1:5000/x", "http://127.0.0.1:5000"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
        ("dadosabertos.ccee.org.br", None),
        ("", None),
    ],
)
def test_service_namespace_is_scheme_host_and_port_only(url: str, namespace: str | None) -> None:
    assert _lineage.service_namespace(url) == namespace


def test_url_path_drops_the_query() -> None:
    assert _lineage.url_path("https://h/api/x?api_key=k&y=1") == "/api/x"
    assert _lineage.url_path("https://h") == "/"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/lake/x.parquet", ("file", "/lake/x.parquet")),
        ("file:///lake/x.parquet", ("file", "/lake/x.parquet")),
        ("s3://bucket/ccee/x.parquet", ("s3://bucket", "ccee/x.parquet")),
        ("gs://bucket/a/b.csv", ("gs://bucket", "a/b.csv")),
        ("memory://folder/x.jsonl", ("memory://folder", "x.jsonl")),
    ],
)
def test_storage_dataset_follows_openlineage_naming(
    location: str, expected: tuple[str, str]
) -> None:
    assert _lineage.storage_dataset(location) == expected


def test_a_relative_local_path_is_named_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _lineage.storage_dataset("out/x.csv") == ("file", str(tmp_path / "out" / "x.csv"))


# -- facets -----------------------------------------------------------------------------------
def test_pull_lineage_of_rows() -> None:
    lineage = _lineage.pull_lineage(SUMMARY, base_url="https://ccee.example/base")
    (inp,) = (_json(d) for d in lineage.inputs)
    assert (inp["namespace"], inp["name"]) == ("https://ccee.example", "9c1a51f8")
    assert inp["facets"]["version"]["datasetVersion"] == "2025-01-15T03:03:00"
    assert inp["inputFacets"]["inputStatistics"]["rowCount"] == 1464
    (out,) = (_json(d) for d in lineage.outputs)
    assert (out["namespace"], out["name"]) == ("file", "/lake/ccee/pld.parquet")
    fields = out["facets"]["schema"]["fields"]
    assert [(f["name"], f["type"], f["ordinal_position"]) for f in fields] == [
        ("_id", "int", 1),
        ("DIA", "date", 2),
        ("PLD_MEDIA_DIA", "float", 3),
    ]
    stats = out["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"]) == (1464, 14142)
    assert "fileCount" not in stats
    assert lineage.run_facets == {}
    assert lineage.job_facets == {}


def test_pull_lineage_of_several_inputs_counts_rows_on_the_output_only() -> None:
    summary = {**SUMMARY, "source_ids": ["a", "b"], "source_versions": {"b": "v2"}}
    lineage = _lineage.pull_lineage(summary, base_url="https://ccee.example")
    inputs = [_json(d) for d in lineage.inputs]
    assert [i["name"] for i in inputs] == ["a", "b"]
    assert [i.get("inputFacets") for i in inputs] == [{}, {}]
    assert "version" not in inputs[0]["facets"]
    assert inputs[1]["facets"]["version"]["datasetVersion"] == "v2"


def test_pull_lineage_of_files_names_the_endpoint_and_the_folder() -> None:
    lineage = _lineage.pull_lineage(
        FILES, base_url="https://ons.example:8443/sager/api", inputs="endpoint"
    )
    (inp,) = (_json(d) for d in lineage.inputs)
    assert (inp["namespace"], inp["name"]) == (
        "https://ons.example:8443",
        "/sager/api/relatorio/exportar",
    )
    assert inp["inputFacets"]["inputStatistics"] == {
        **inp["inputFacets"]["inputStatistics"],
        "size": 300,
        "fileCount": 2,
    }
    (out,) = (_json(d) for d in lineage.outputs)
    assert (out["namespace"], out["name"]) == ("s3://lake", "ons/sager")
    assert "schema" not in out["facets"]
    stats = out["outputFacets"]["outputStatistics"]
    assert (stats["size"], stats["fileCount"]) == (300, 2)
    assert "rowCount" not in stats


def test_pull_lineage_without_a_base_url_names_no_input() -> None:
    lineage = _lineage.pull_lineage(SUMMARY, base_url=None)
    assert lineage.inputs == []
    assert len(lineage.outputs) == 1


def test_request_lineage() -> None:
    lineage = _lineage.request_lineage(
        {"url": "https://u:p@api.example/v1/items?token=***", "bytes": 42, "output": None}
    )
    (inp,) = (_json(d) for d in lineage.inputs)
    assert (inp["namespace"], inp["name"]) == ("https://api.example", "/v1/items")
    assert inp["inputFacets"]["inputStatistics"]["size"] == 42
    assert lineage.outputs == []
    written = _lineage.request_lineage(
        {"url": "https://api.example/v1/items", "bytes": 42, "output": "s3://b/items.json"}
    )
    (out,) = (_json(d) for d in written.outputs)
    assert (out["namespace"], out["name"]) == ("s3://b", "items.json")
    assert out["outputFacets"]["outputStatistics"]["size"] == 42


def test_asset_extra_is_plain_json_of_the_summary() -> None:
    extra = asset_extra(SUMMARY)
    assert extra == {
        "output": "/lake/ccee/pld.parquet",
        "format": "parquet",
        "rows": 1464,
        "bytes": 14142,
        "chunks": 3,
        "files": [],
        "source_ids": ["9c1a51f8"],
        "source_versions": {"9c1a51f8": "2025-01-15T03:03:00"},
    }
    assert json.loads(json.dumps(extra)) == extra
    assert asset_extra(FILES)["files"] == FILES["files"]


# -- the operators ------------------------------------------------------------------------------
def test_nothing_to_report_before_the_task_ran() -> None:
    pull = CceeDatastoreOperator(task_id="p", dataset="d", output="/x.csv")
    request = EchoHttpOperator(task_id="r", endpoint="x")
    assert pull.get_openlineage_facets_on_complete(None) is None
    assert request.get_openlineage_facets_on_complete(None) is None
    assert OnsSagerReportOperator.lineage_inputs == "endpoint"
    assert CceeDatastoreOperator.lineage_inputs == "ids"


def test_a_failed_task_reports_none_of_its_datasets(tmp_path: Path) -> None:
    """A request whose ``response_check`` failed had its answer and would name its output:
    Airflow's extractor, asked on the failure, gets nothing of the operator's own."""
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    request = EchoHttpOperator(task_id="r", endpoint="x", response_check=lambda response: False)
    payload = {
        "method": "GET",
        "url": "https://api.example/x",
        "status_code": 200,
        "bytes": 2,
        "output": str(tmp_path / "x.json"),
    }
    with pytest.raises(AirflowException, match="Response check"):
        request._finish(payload, httpx.Response(200, content=b"{}"))
    assert request.get_openlineage_facets_on_complete(None) is not None  # what it would say
    assert DefaultExtractor(request).extract_on_failure(None) is None
    pull = CceeDatastoreOperator(task_id="p", dataset="d", output="/x.csv")
    pull._pull_summary = SUMMARY
    assert DefaultExtractor(pull).extract_on_failure(None) is None


async def _first_event(trigger: Any) -> Any:
    events = trigger.run()
    try:
        return await anext(events)
    finally:
        await events.aclose()


def test_a_deferred_pull_reports_from_the_worker_that_resumed_it(
    conns: Any,
    sb: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    assert_no_secret: Callable[[Any], None],
) -> None:
    """The task that resumes is a fresh operator (a new worker process): what lineage and the
    outlets' asset events need comes from ``execute_complete`` alone."""
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "console"}))
    asset = Asset("file://" + str(tmp_path / "pld.jsonl"))

    def operator() -> CceeDatastoreOperator:
        return CceeDatastoreOperator(
            task_id="pull",
            conn_id="ccee_json",
            dataset="pld_media_diaria",
            years=[2024],
            page_size=500,
            output=str(tmp_path / "pld.jsonl"),
            deferrable=True,
            outlets=[asset, AssetAlias("pulls")],
        )

    context: dict[str, Any] = {
        "data_interval_start": pendulum.datetime(2024, 1, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2025, 1, 1, tz="UTC"),
    }
    with pytest.raises(TaskDeferred) as info:
        operator().execute(context)  # type: ignore[arg-type]
    event = asyncio.run(_first_event(info.value.trigger))
    resumed = operator()
    outlet_events = OutletEventAccessors()
    summary = resumed.execute_complete(
        {**context, "outlet_events": outlet_events},  # type: ignore[arg-type]
        event=deserialize(serialize(event.payload)),
    )
    assert summary["rows"] == 366 * 4
    assert summary["columns"][0] == ["_id", "int"]
    assert set(summary["source_versions"]) == set(summary["source_ids"])

    lineage = resumed.get_openlineage_facets_on_complete(None)
    assert lineage is not None
    (inp,) = (_json(d) for d in lineage.inputs)
    assert inp["namespace"] == sb.urls.ccee
    assert inp["name"] == summary["source_ids"][0]
    (out,) = (_json(d) for d in lineage.outputs)
    path = tmp_path / "pld.jsonl"
    assert (out["namespace"], out["name"]) == ("file", str(path))
    stats = out["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"]) == (366 * 4, path.stat().st_size)

    # The asset's event carries the summary; the alias names no asset: nothing added for it.
    assert outlet_events[asset].extra == asset_extra(summary)
    assert outlet_events[AssetAlias("pulls")].asset_alias_events == []
    assert_no_secret([*(_json(d) for d in (*lineage.inputs, *lineage.outputs))])
    assert_no_secret(outlet_events[asset].extra)
