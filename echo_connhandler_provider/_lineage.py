"""OpenLineage datasets of the provider's operators: what a pull or a request read and wrote.

The pull operators and ``EchoHttpOperator`` call :func:`pull_lineage` and
:func:`request_lineage` from ``get_openlineage_facets_on_complete``. Airflow's OpenLineage
provider (the ``openlineage`` extra) calls that method in the worker, once the task has
succeeded: after ``execute``, or after ``execute_complete`` when the task deferred (lineage is
collected only on workers, apache/airflow#61157; the triggerer reports nothing). The OpenLineage
classes are imported inside the functions: without the extra, the provider never imports them.

Naming (docs/airflow/lineage-and-assets.md). OpenLineage names datasets by a namespace and a
name, but has no convention for HTTP APIs, so the services are named thus:

* an input's namespace is the service: ``scheme://host[:port]`` of the connection's base URL
  (``https://dadosabertos.ccee.org.br``): never its credentials, path or query;
* an input's name is what the service calls the thing read: the CKAN resource id (CCEE), the
  object id (Bazefield), or the path of the endpoint's URL (ONS exports, ``EchoHttpOperator``:
  ``/api/...``, without the query, which may carry a key);
* outputs follow OpenLineage's naming: a local path is namespace ``file`` and the absolute path,
  an fsspec URL is ``scheme://netloc`` and the path (``s3://bucket`` and the key).

Facets, from the pull's summary: the output's ``schema`` (the plan's columns and their logical
types) and ``outputStatistics`` (rows, bytes, files); an input's ``version`` (CCEE's
``last_modified``, when the service has one) and, for a pull of one input, its
``inputStatistics`` (rows read). Nothing secret is kept for them: the summary and the base URL
reduced to its scheme, host, port and path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from echo_connhandler import endpoint_url
from echo_connhandler_provider._jobs import hook_for

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = [
    "LineageOnSuccess",
    "connection_base_url",
    "lineage_enabled",
    "pull_lineage",
    "request_lineage",
    "service_namespace",
    "storage_dataset",
    "url_path",
]

#: How a pull's ``source_ids`` name its inputs: ids of the service (CKAN resources, Bazefield
#: objects), or endpoints under the connection's base URL (ONS exports).
InputKind = Literal["ids", "endpoint"]


class LineageOnSuccess:
    """Mixin of the operators that report lineage: datasets only for a task that succeeded."""

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> None:
        """Nothing of the operator's own for a failed task. Without this method Airflow's
        extractor calls ``get_openlineage_facets_on_complete`` on a failure too, which would
        name an output the task did not write (a request whose ``response_check`` failed, a
        pull whose output failed its checks); None makes Airflow fall back to the task's
        ``inlets`` and ``outlets``, as for any operator."""
        return None


def lineage_enabled() -> bool:
    """Whether Airflow's OpenLineage provider is installed and configured (a transport, a config
    file or connection), so that the worker will ask for lineage when the task ends."""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return False
    try:
        return not conf.is_disabled()
    except Exception:  # a broken [openlineage] section must not fail the task
        return False


def _netloc(url: str) -> tuple[str, str] | None:
    """``(scheme, host[:port])`` of a URL, without credentials; None for no URL."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return None
    host = parts.hostname  # lower-cased, without user:password@
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), f"{host}:{port}" if port is not None else host


def service_namespace(url: str) -> str | None:
    """The namespace of a service: ``scheme://host[:port]`` of ``url`` (no credentials, path
    or query), or None when ``url`` is not an absolute URL."""
    found = _netloc(url)
    return None if found is None else f"{found[0]}://{found[1]}"


def url_path(url: str) -> str:
    """The path of ``url`` (``/`` when empty), without its query or fragment."""
    return urlsplit(url).path or "/"


def connection_base_url(conn_type: str, conn_id: str | None) -> str | None:
    """The base URL of a connection, reduced to ``scheme://host[:port]/path``; None when it
    cannot be read (lineage then names no input, the task goes on).

    Read in the worker's task process when the task ends, not when lineage is extracted
    (the OpenLineage listener may extract in a forked process).
    """
    try:
        hook = hook_for(conn_type, conn_id)
        host = str(hook._load_settings().properties["host"])
    except Exception:
        return None
    found = _netloc(host)
    if found is None:
        return None
    path = urlsplit(host).path.rstrip("/")
    return f"{found[0]}://{found[1]}{path}"


def storage_dataset(location: str) -> tuple[str, str]:
    """OpenLineage's ``(namespace, name)`` of an output: ``("file", "/abs/path")`` for a local
    path or a ``file://`` URL, ``("s3://bucket", "key")`` (``scheme://netloc``, path) for
    another URL."""
    if "://" not in location:
        return "file", os.path.abspath(location)
    parts = urlsplit(location)
    if parts.scheme == "file":
        return "file", parts.path or "/"
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def pull_lineage(
    summary: Mapping[str, Any], *, base_url: str | None, inputs: InputKind = "ids"
) -> OperatorLineage[Any, Any]:
    """What a finished pull read and wrote, from its summary (a ``PullSummary``).

    ``base_url`` is the connection's (:func:`connection_base_url`): None names no input.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        input_statistics_input_dataset,
    )

    files = list(summary.get("files") or [])
    is_files = summary.get("format") == "files"
    rows = None if is_files else int(summary["rows"])

    input_datasets: list[Any] = []
    namespace = service_namespace(base_url) if base_url else None
    source_ids = [str(s) for s in summary.get("source_ids") or []]
    versions: Mapping[str, str] = summary.get("source_versions") or {}
    if base_url and namespace:
        for source_id in source_ids:
            if inputs == "endpoint":
                url = endpoint_url(base_url, source_id)
                ns, name = service_namespace(url) or namespace, url_path(url)
            else:
                ns, name = namespace, source_id
            facets: dict[str, Any] = {}
            if versions.get(source_id):
                facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                    datasetVersion=str(versions[source_id])
                )
            input_facets: dict[str, Any] = {}
            if len(source_ids) == 1:  # the summary's counts are of all inputs together
                input_facets["inputStatistics"] = (
                    input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                        rowCount=rows,
                        size=None if rows is not None else int(summary["bytes"]),
                        fileCount=len(files) if is_files else None,
                    )
                )
            input_datasets.append(
                InputDataset(namespace=ns, name=name, facets=facets, inputFacets=input_facets)
            )

    out_namespace, out_name = storage_dataset(str(summary["output"]))
    out_facets: dict[str, Any] = {}
    columns = summary.get("columns") or []
    if columns:
        out_facets["schema"] = SchemaDatasetFacet(
            fields=[
                SchemaDatasetFacetFields(name=str(name), type=str(kind), ordinal_position=i)
                for i, (name, kind) in enumerate(columns, start=1)
            ]
        )
    statistics = OutputStatisticsOutputDatasetFacet(
        rowCount=rows,
        size=int(summary["bytes"]),
        fileCount=len(files) if is_files else None,
    )
    output = OutputDataset(
        namespace=out_namespace,
        name=out_name,
        facets=out_facets,
        outputFacets={"outputStatistics": statistics},
    )
    return OperatorLineage(inputs=input_datasets, outputs=[output])


def request_lineage(request: Mapping[str, Any]) -> OperatorLineage[Any, Any]:
    """What one request read (its endpoint) and wrote (its ``output``, if any).

    ``request`` holds the request's ``url`` (as sent, secrets already masked), ``bytes`` (the
    body's size) and ``output`` (where the body was written, or None).
    """
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.facet_v2 import input_statistics_input_dataset

    size = int(request["bytes"])
    url = str(request.get("url") or "")
    namespace = service_namespace(url)
    inputs: list[Any] = []
    if namespace is not None:
        read = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(size=size)
        inputs.append(
            InputDataset(
                namespace=namespace, name=url_path(url), inputFacets={"inputStatistics": read}
            )
        )
    outputs: list[Any] = []
    if request.get("output"):
        out_namespace, out_name = storage_dataset(str(request["output"]))
        written = OutputStatisticsOutputDatasetFacet(size=size, fileCount=1)
        outputs.append(
            OutputDataset(
                namespace=out_namespace, name=out_name, outputFacets={"outputStatistics": written}
            )
        )
    return OperatorLineage(inputs=inputs, outputs=outputs)
