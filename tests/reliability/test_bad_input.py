"""The bad input table (docs/bad-input.md): every row drives the real object (properties, a hook
on an ``AIRFLOW_CONN_*`` connection, an operator, a pull against the sandbox) and expects an
error of a given type whose message names the field, shows no secret, and, for pulls, leaves
nothing at the output's name.

Rows already covered in depth elsewhere are linked from the docs page; the last test checks
that the page lists every row of this table and that every test it links to exists.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException

from echo_connhandler import (
    ApiError,
    BazeHttpHandler,
    CceeHttpHandler,
    HttpConnProperties,
    HttpHandler,
    HttpTransportError,
    OnsHttpConnProperties,
    OnsHttpHandler,
    ResponseTooLargeError,
    UnexpectedContentError,
    WafBlockedError,
)
from echo_connhandler.pull import (
    BazefieldTimeseriesSource,
    CceeDatastoreSource,
    OnsSinapseExportSource,
    Progress,
    Source,
    run_pull,
)
from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.hooks import BazefieldHook, CceeHook, EchoHttpHook, OnsHook
from echo_connhandler_provider.operators import (
    BazefieldTimeseriesOperator,
    CceeDatastoreOperator,
    OnsSagerReportOperator,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bad-input.md"
SECRET = "bad-input-secret-7f3a"
NOWHERE = "http://127.0.0.1:9"  # nothing is ever sent: every row fails before a request
BAZE = DEMO_CREDENTIALS["bazefield"]
FAST: dict[str, Any] = {"retry_wait_time": 0, "exponential_min_retry_wait_time": 0}


@dataclass
class Env:
    sb: Sandbox
    tmp: Path
    define: Callable[[str, dict[str, Any]], str]
    conns: dict[str, str]


@dataclass(frozen=True)
class Row:
    """One row of the table: ``run(env)`` must raise ``error`` with a message matching
    ``match``, never containing ``SECRET``."""

    id: str
    run: Callable[[Env], Any]
    error: type[BaseException]
    match: str


# -- handler properties --------------------------------------------------------------------------
def _props(**kwargs: Any) -> Callable[[Env], Any]:
    return lambda env: HttpConnProperties(**{"host": NOWHERE, **kwargs})


def _ons_props(**kwargs: Any) -> Callable[[Env], Any]:
    base = {"host": NOWHERE, "user": "u", "password": SECRET, "login_target": "SAGER"}
    return lambda env: OnsHttpConnProperties(**{**base, **kwargs})


def _handler(**kwargs: Any) -> Callable[[Env], Any]:
    props = HttpConnProperties(host=NOWHERE)
    return lambda env: HttpHandler(props, skip_connect=True, **kwargs)


PROPERTIES = [
    Row(
        "host-not-a-url",
        _props(host="example.com/api"),
        ValueError,
        r"^host must be an absolute http\(s\) URL",
    ),
    Row(
        "host-user-info",
        _props(host=f"https://me:{SECRET}@example.com"),
        ValueError,
        r"^host must not carry user info",
    ),
    Row(
        "host-query",
        _props(host="https://example.com/api?x=1"),
        ValueError,
        r"^host must not carry a query",
    ),
    Row(
        "user-without-password",
        _props(user="me"),
        ValueError,
        r"^password is required when user is set",
    ),
    Row(
        "api-key-and-user",
        _props(api_key=SECRET, user="me", password=SECRET),
        ValueError,
        r"api_key and user/password",
    ),
    Row(
        "api-key-newline",
        _props(api_key=SECRET + "\n"),
        ValueError,
        r"^api_key contains a control character .* trailing newline",
    ),
    Row(
        "api-key-non-ascii",
        _props(api_key=SECRET + "é"),
        ValueError,
        r"^api_key contains a non-ASCII character",
    ),
    Row(
        "password-control-char",
        _props(user="me", password=SECRET + "\x00"),
        ValueError,
        r"^password contains a control character",
    ),
    Row(
        "conn-timeout-zero",
        _props(conn_timeout=0),
        ValueError,
        r"^conn_timeout must be a positive number",
    ),
    Row(
        "request-timeout-text",
        _props(request_timeout="30"),
        ValueError,
        r"^request_timeout must be a number of seconds",
    ),
    Row(
        "verify-ssl-text",
        _props(verify_ssl="yes"),
        ValueError,
        r"^verify_ssl must be True or False",
    ),
    Row(
        "header-name",
        _props(headers={"X Bad": "1"}),
        ValueError,
        r"^headers has an invalid header name 'X Bad'",
    ),
    Row(
        "header-value-crlf",
        _props(headers={"X-Api-Token": SECRET + "\r\nX: y"}),
        ValueError,
        r"^headers\['X-Api-Token'\] contains a control character",
    ),
    Row(
        "payload-kwargs-not-mapping",
        _props(payload_kwargs=[SECRET]),
        ValueError,
        r"^payload_kwargs must be a mapping, got list",
    ),
    Row(
        "payload-kwargs-key",
        _props(payload_kwargs_key="body"),
        ValueError,
        r"^payload_kwargs_key must be one of json, data, params",
    ),
    Row(
        "ons-login-target",
        _ons_props(login_target="sager"),
        ValueError,
        r"^login_target must be 'SAGER' or 'SINAPSE'",
    ),
    Row(
        "ons-auth-url",
        _ons_props(auth_url="pops.ons.org.br"),
        ValueError,
        r"^auth_url must be an absolute http\(s\) URL",
    ),
    Row(
        "ons-api-key",
        _ons_props(user=None, password=None, api_key=SECRET),
        ValueError,
        r"^api_key is not used by ONS",
    ),
    Row(
        "ons-selected-profile",
        _ons_props(selected_profile="  "),
        ValueError,
        r"^selected_profile must not be empty",
    ),
    Row(
        "ons-legacy-tls",
        _ons_props(legacy_tls_renegotiation="yes"),
        ValueError,
        r"^legacy_tls_renegotiation must be True or False",
    ),
    Row("max-retries-negative", _handler(max_retries=-1), ValueError, r"max_retries"),
    Row(
        "retry-wait-nan",
        _handler(retry_wait_time=float("nan")),
        ValueError,
        r"retry_wait_time must be a finite number >= 0, got nan",
    ),
    Row(
        "max-response-bytes-zero", _handler(max_response_bytes=0), ValueError, r"max_response_bytes"
    ),
]


# -- connection fields (Airflow connection -> hook) -------------------------------------------
def _conn(hook: type[Any], fields: dict[str, Any]) -> Callable[[Env], Any]:
    def run(env: Env) -> Any:
        conn_id = env.define("bad_conn", fields)
        instance = hook(conn_id)
        try:
            return instance.get_conn()
        finally:
            instance.close()

    return run


def _baze_conn(**extra: Any) -> Callable[[Env], Any]:
    return _conn(BazefieldHook, {"conn_type": "bazefield", "host": NOWHERE, "extra": extra})


CONNECTIONS = [
    Row(
        "conn-unknown-extra",
        _baze_conn(api_token=SECRET),
        ValueError,
        r"connection 'bad_conn' \(bazefield\): unknown extra field\(s\) api_token; known: "
        r".*HTTP headers go in the 'headers' field",
    ),
    Row(
        "conn-number-text",
        _baze_conn(conn_timeout="ten"),
        ValueError,
        r"connection 'bad_conn', extra field 'conn_timeout': expected a number, got 'ten'",
    ),
    Row(
        "conn-boolean-text",
        _baze_conn(verify_ssl="maybe"),
        ValueError,
        r"extra field 'verify_ssl': expected true or false, got 'maybe'",
    ),
    Row(
        "conn-integer-fraction",
        _baze_conn(max_retries="1.5"),
        ValueError,
        r"extra field 'max_retries': expected a whole number, got '1.5'",
    ),
    Row(
        "conn-below-minimum",
        _baze_conn(concurrency=0),
        ValueError,
        r"extra field 'concurrency': must be >= 1, got 0",
    ),
    Row(
        "conn-headers-invalid-json",
        _baze_conn(headers="{not json"),
        ValueError,
        r"extra field 'headers': expected a JSON object, got invalid JSON",
    ),
    Row(
        "conn-header-nested",
        _baze_conn(headers={"X-Tenant": {"a": 1}}),
        ValueError,
        r"extra field 'headers', key 'X-Tenant': expected text, got dict",
    ),
    Row(
        "conn-payload-location",
        _conn(
            EchoHttpHook,
            {"conn_type": "echo_http", "host": NOWHERE, "extra": {"payload_kwargs_key": "body"}},
        ),
        ValueError,
        r"extra field 'payload_kwargs_key': must be one of json, data, params, got 'body'",
    ),
    Row(
        "conn-ons-no-target",
        _conn(OnsHook, {"conn_type": "ons", "host": NOWHERE, "login": "u", "password": SECRET}),
        ValueError,
        r"required extra field\(s\) missing: 'login_target'",
    ),
    Row(
        "conn-empty-host",
        _conn(BazefieldHook, {"conn_type": "bazefield", "host": "", "extra": {"api_key": SECRET}}),
        ValueError,
        r"connection 'bad_conn': host \(Base URL\) is empty",
    ),
    Row(
        "conn-schema",
        _conn(BazefieldHook, {"conn_type": "bazefield", "host": "example.com", "schema": "ftp"}),
        ValueError,
        r"field 'schema': got 'ftp'; schema is used as the URL scheme",
    ),
    Row(
        "conn-password-newline",
        _conn(
            BazefieldHook,
            {"conn_type": "bazefield", "host": NOWHERE, "login": "me", "password": SECRET + "\n"},
        ),
        ValueError,
        r"^password contains a control character",
    ),
    Row(
        "conn-api-key-newline",
        _baze_conn(api_key=SECRET + "\n"),
        ValueError,
        r"^api_key contains a control character",
    ),
    Row(
        "conn-unknown-id",
        lambda env: CceeHook("no_such_conn").get_conn(),
        AirflowNotFoundException,
        r"no_such_conn",
    ),
]


# -- operator arguments and templates ------------------------------------------------------------
def _rendered(op: Any, params: dict[str, Any]) -> Any:
    """Render ``op``'s templates with ``params`` then execute it in the worker."""
    context: dict[str, Any] = {"params": params}
    op.render_template_fields(context)
    return op.execute(context)


def _baze_op(**kwargs: Any) -> Any:
    base: dict[str, Any] = {
        "task_id": "t",
        "conn_id": "nowhere",
        "objects": ["1001"],
        "points": ["ActivePower"],
        "aggregates": ["Average"],
        "start": "2024-01-01",
        "end": "2024-01-02",
        "output": "/tmp/never-written.jsonl",
        "deferrable": False,
    }
    return BazefieldTimeseriesOperator(**{**base, **kwargs})


def _ccee_op(env: Env, output: Path | None = None, **kwargs: Any) -> Any:
    base: dict[str, Any] = {
        "task_id": "t",
        "conn_id": env.conns["ccee"],
        "dataset": "pld_media_diaria",
        "years": [2024],
        "page_size": 200,
        "output": str(output or env.tmp / "out" / "pld.jsonl"),
        "deferrable": False,
    }
    return CceeDatastoreOperator(**{**base, **kwargs})


def _absent(path: Path) -> None:
    assert not path.exists(), f"{path} exists after a failed pull"


def _ccee_missing_year(env: Env) -> Any:
    output = env.tmp / "out" / "pld.jsonl"
    try:
        return _ccee_op(env, output, years=[2024, 1999]).execute({})
    finally:
        _absent(output)


def _templated_ccee(env: Env, year: str) -> Any:
    return _rendered(_ccee_op(env, years="{{ params.year }}"), {"year": year})


def _output_under_a_file(env: Env) -> Any:
    (env.tmp / "a-file").write_text("x")
    return _ccee_op(env, env.tmp / "a-file" / "pld.jsonl").execute({})


def _output_is_a_folder(env: Env) -> Any:
    (env.tmp / "a-folder").mkdir()
    return _ccee_op(env, env.tmp / "a-folder", format="jsonl").execute({})


def _ons_output_is_a_file(env: Env) -> Any:
    (env.tmp / "exports").write_text("x")
    op = OnsSagerReportOperator(
        task_id="t",
        conn_id=env.conns["ons_sager"],
        start="2024-01-01",
        end="2024-02-01",
        output=str(env.tmp / "exports"),
        deferrable=False,
    )
    return op.execute({})


def _sager_on_sinapse(env: Env) -> Any:
    op = OnsSagerReportOperator(
        task_id="t",
        conn_id=env.conns["ons_sinapse"],
        start="2024-01-01",
        end="2024-02-01",
        output=str(env.tmp / "sager"),
        deferrable=False,
    )
    try:
        return op.execute({})
    finally:
        _absent(env.tmp / "sager")


OPERATORS = [
    Row(
        "op-concurrency",
        lambda env: _baze_op(concurrency=0),
        ValueError,
        r"^concurrency must be an integer >= 1 or None, got 0",
    ),
    Row(
        "op-ons-format",
        lambda env: OnsSagerReportOperator(task_id="t", output="x", format="csv"),
        ValueError,
        r"^format='csv': ONS exports are written as delivered",
    ),
    Row(
        "op-start-not-a-date",
        lambda env: _rendered(_baze_op(start="{{ params.start }}"), {"start": "not a date"}),
        ValueError,
        r"^start: expected a date, a datetime or an ISO-8601 string, got 'not a date'",
    ),
    Row(
        "op-end-impossible-date",
        lambda env: _rendered(
            OnsSagerReportOperator(
                task_id="t",
                conn_id="nowhere",
                start="2024-01-01",
                end="{{ params.end }}",
                output="x",
            ),
            {"end": "2024-13-01"},
        ),
        ValueError,
        r"^end: expected a date, a datetime or an ISO-8601 string, got '2024-13-01'",
    ),
    Row(
        "op-start-after-end",
        lambda env: _baze_op(start="2024-02-01", end="2024-01-01").execute({}),
        ValueError,
        r"^start must be before end",
    ),
    Row(
        "op-interval",
        lambda env: _baze_op(interval="10 minutes").execute({}),
        ValueError,
        r"^interval must be <n>s, <n>m, <n>h, <n>d or HH:MM:SS .* got '10 minutes'",
    ),
    Row(
        "op-years-empty",
        lambda env: _templated_ccee(env, ""),
        ValueError,
        r"^years is empty \(''\); give None for every year",
    ),
    Row(
        "op-years-not-numbers",
        lambda env: _templated_ccee(env, "twenty"),
        ValueError,
        r"^years must be whole numbers, got 'twenty'",
    ),
    Row(
        "op-year-missing",
        _ccee_missing_year,
        ValueError,
        r"dataset 'pld_media_diaria' has no datastore resource for 1999 "
        r"\(years available: \[2021, 2022, 2023, 2024, 2025\]\)",
    ),
    Row(
        "op-format-unknown",
        lambda env: _ccee_op(env, env.tmp / "pld.xml").execute({}),
        ValueError,
        r"^cannot tell the format from the output name '.*pld\.xml'",
    ),
    Row(
        "op-output-under-a-file",
        _output_under_a_file,
        NotADirectoryError,
        r"^output '.*pld\.jsonl' cannot be written: '.*a-file' is a file, not a folder",
    ),
    Row(
        "op-output-is-a-folder",
        _output_is_a_folder,
        IsADirectoryError,
        r"^output '.*a-folder' is a folder: a pull of rows writes one file",
    ),
    Row(
        "op-ons-output-is-a-file",
        _ons_output_is_a_file,
        NotADirectoryError,
        r"^output '.*exports' is a file: a pull of files writes them into a folder",
    ),
    Row(
        "op-ons-wrong-target",
        _sager_on_sinapse,
        ValueError,
        r"an ONS SAGER pull needs a handler with login_target='SAGER'",
    ),
]


# -- responses -----------------------------------------------------------------------------------
def _pull_with_fault(
    service: str,
    source: Source,
    path: str,
    script: dict[str, Any],
    *,
    handler_kwargs: dict[str, Any] | None = None,
    output_name: str = "out.jsonl",
) -> Callable[[Env], Any]:
    """A pull whose chunks after the first get ``script`` (6 times: more than the retries), so
    the checkpoint holds a finished part when the pull fails; the output must not exist."""

    def run(env: Env) -> Any:
        output = env.tmp / output_name
        faults = env.sb.faults(service)

        def after_first(progress: Progress) -> None:
            if progress.chunks_done == 1:
                faults.script(path, times=6, **script)

        async def pull() -> Any:
            kwargs = {**FAST, "max_retries": 2, **(handler_kwargs or {})}
            async with _service_handler(env.sb, service, kwargs) as handler:
                return await run_pull(
                    handler, source, output, concurrency=1, on_progress=after_first
                )

        try:
            return asyncio.run(pull())
        finally:
            if source.kind == "files":  # only files delivered whole, before the failure
                delivered = sorted(p.name for p in output.iterdir())
                assert delivered[:1] == ["sinapse_20240101_20240201.csv"]
                assert "sinapse_20240601_20240701.csv" not in delivered
            else:
                _absent(output)
            assert not list(env.tmp.rglob("*.tmp-*"))

    return run


def _service_handler(sb: Sandbox, service: str, kwargs: dict[str, Any]) -> Any:
    if service == "ccee":
        return CceeHttpHandler(HttpConnProperties(host=sb.urls.ccee), skip_connect=True, **kwargs)
    if service == "bazefield":
        props = HttpConnProperties(host=sb.urls.bazefield, api_key=BAZE["api_key"])
        return BazeHttpHandler(props, skip_connect=True, **kwargs)
    ons = DEMO_CREDENTIALS["ons"]
    props = OnsHttpConnProperties(
        host=sb.urls.ons_sinapse,
        user=ons["user"],
        password=ons["password"],
        login_target="SINAPSE",
        auth_url=sb.urls.ons_auth_url,
        profile_url=sb.urls.ons_profile_url,
    )
    return OnsHttpHandler(props, skip_connect=True, **kwargs)


def _ccee_source() -> CceeDatastoreSource:
    return CceeDatastoreSource(dataset="pld_media_diaria", years=[2024], page_size=200)


def _baze_source() -> BazefieldTimeseriesSource:
    return BazefieldTimeseriesSource(
        objects=["1001"],
        points=["ActivePower"],
        aggregates=["Average"],
        start="2024-01-01T00:00:00Z",
        end="2024-01-06T00:00:00Z",
        interval="1h",
        window=timedelta(days=1),
    )


SEARCH = "datastore_search"
SERIES = "timeseries/aggregated"
EXPORT = "pesquisa/exportar"
CKAN_FAILURE = {"success": False, "error": {"__type": "Validation Error", "message": "bad sort"}}
BAZE_ERROR = {"responseStatus": {"errorCode": "InvalidTimeSeries", "message": "no such point"}}

RESPONSES = [
    Row(
        "resp-html-ccee",
        _pull_with_fault("ccee", _ccee_source(), SEARCH, {"html": True}),
        WafBlockedError,
        r"-> HTTP 200: blocked by the CCEE WAF",
    ),
    Row(
        "resp-html-bazefield",
        _pull_with_fault("bazefield", _baze_source(), SERIES, {"html": True}),
        UnexpectedContentError,
        r"-> HTTP 200: .*HTML",
    ),
    Row(
        "resp-html-ons",
        _pull_with_fault(
            "ons",
            OnsSinapseExportSource(start="2024-01-01", end="2024-07-01"),
            EXPORT,
            {"html": True},
            output_name="exports",
        ),
        UnexpectedContentError,
        r"-> HTTP 200: .*HTML",
    ),
    Row(
        "resp-truncated",
        _pull_with_fault("ccee", _ccee_source(), SEARCH, {"truncate": True}),
        HttpTransportError,
        r"RemoteProtocolError: peer closed connection without sending complete message body "
        r"\(received \d+ bytes, expected \d+\)",
    ),
    Row(
        "resp-invalid-json-ccee",
        _pull_with_fault("ccee", _ccee_source(), SEARCH, {"body": '{"success": true, "result": {'}),
        UnexpectedContentError,
        r"-> HTTP 200: expected a JSON page, got undecodable content",
    ),
    Row(
        "resp-invalid-json-bazefield",
        _pull_with_fault("bazefield", _baze_source(), SERIES, {"body": "{not json"}),
        UnexpectedContentError,
        r"-> HTTP 200: .*JSON",
    ),
    Row(
        "resp-too-large",
        _pull_with_fault(
            "ccee",
            _ccee_source(),
            SEARCH,
            {"body": json.dumps({"pad": "x" * 200_000})},
            handler_kwargs={"max_response_bytes": 100_000},
        ),
        ResponseTooLargeError,
        r"-> HTTP 200: the body is larger than max_response_bytes=100000",
    ),
    Row(
        "resp-ckan-success-false",
        _pull_with_fault("ccee", _ccee_source(), SEARCH, {"body": json.dumps(CKAN_FAILURE)}),
        ApiError,
        r"-> HTTP 200: CKAN Validation Error: bad sort",
    ),
    Row(
        "resp-ckan-409",
        _pull_with_fault(
            "ccee", _ccee_source(), SEARCH, {"status": 409, "body": json.dumps(CKAN_FAILURE)}
        ),
        ApiError,
        r"-> HTTP 409: CKAN Validation Error: bad sort",
    ),
    Row(
        "resp-bazefield-error-200",
        _pull_with_fault("bazefield", _baze_source(), SERIES, {"body": json.dumps(BAZE_ERROR)}),
        ApiError,
        r"-> HTTP 200: .*InvalidTimeSeries",
    ),
]

TABLE = PROPERTIES + CONNECTIONS + OPERATORS + RESPONSES


@pytest.fixture
def env(
    sb: Sandbox,
    tmp_path: Path,
    define_conn: Callable[[str, dict[str, Any]], str],
    drill_conns: dict[str, str],
) -> Env:
    define_conn(
        "nowhere", {"conn_type": "bazefield", "host": NOWHERE, "extra": {"api_key": SECRET}}
    )
    return Env(sb, tmp_path, define_conn, drill_conns)


@pytest.mark.parametrize("row", TABLE, ids=[row.id for row in TABLE])
def test_bad_input(row: Row, env: Env) -> None:
    with pytest.raises(row.error) as info:
        row.run(env)
    message = str(info.value)
    assert re.search(row.match, message), message
    assert SECRET not in message
    for secret in (BAZE["api_key"], BAZE["password"], DEMO_CREDENTIALS["ons"]["password"]):
        assert secret not in message


def test_the_docs_table_lists_every_row_and_links_real_tests() -> None:
    """docs/bad-input.md has one row per case of this table (its id in the last column), and
    every other test it names exists."""
    text = DOC.read_text("utf-8")
    listed = set(re.findall(r"`#([a-z0-9-]+)`", text))
    assert listed == {row.id for row in TABLE}
    linked = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(linked) >= 10
    for path, name in linked:
        source = (ROOT / path).read_text("utf-8")
        assert re.search(rf"def {name}\b", source), f"{path}::{name} does not exist"
