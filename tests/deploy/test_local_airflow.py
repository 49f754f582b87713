"""The main job end to end: the example DAGs on a real local Airflow, then the secret scan.

The session's shared deployment (``conftest.py``) runs ``deploy.demo.run_demo``, the code of
``make demo``: api-server, scheduler, dag-processor and triggerer as separate processes on
SQLite, every example DAG started, the outputs checked, every process stopped, and what the
deployment left scanned for every credential, token and session id. This is what ``dag.test()``
cannot show: defer kwargs through the database, the real triggerer loop, cleanup, connections
read through the Execution API. (The restart drills run on the same deployment before its stop,
so the scan covers them too.)

The scanner itself is tested on planted secrets (it must be able to find a leak).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet

from deploy.airflow_home import DAGS_FOLDER
from deploy.demo import TABLE_WIDTH, TaskRow, dag_file_count, format_table
from deploy.deployment import Deployment
from deploy.rest_api import UI_TEST_BODY_KEYS, ui_test_body
from deploy.secret_scan import scan_for_secrets
from echo_connhandler.sandbox import DEMO_CREDENTIALS
from echo_connhandler_provider import DOCS_PATH
from echo_connhandler_provider._fields import CONNECTION_TYPES


@pytest.fixture(scope="module")
def demo_run(shared_deployment: Any) -> dict[str, Any]:
    """The demo's exit code, output and report, on the session's deployment."""
    return dict(shared_deployment.demo)


def _explain(run: dict[str, Any]) -> str:
    return f"exit {run['returncode']}\n{run['stdout'][-4000:]}\n{run['stderr'][-4000:]}"


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_every_example_dag_succeeds(demo_run: dict[str, Any]) -> None:
    assert demo_run["returncode"] == 0, _explain(demo_run)
    assert demo_run["ok"] is True
    tasks = demo_run["tasks"]
    assert {t["dag_id"] for t in tasks} == {
        "bazefield_site_timeseries",
        "ccee_on_publication",
        "ccee_pld_horario_check",
        "ccee_pld_horario_yearly",
        "ccee_wait_then_pull",
        "echo_http_request",
        "ons_sager_monthly_report",
        "ons_sinapse_export",
    }
    assert len({t["dag_id"] for t in tasks}) == dag_file_count(DAGS_FOLDER)
    assert all(t["state"] == "success" for t in tasks), tasks


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_deferrable_tasks_really_deferred(demo_run: dict[str, Any]) -> None:
    """The audit log (``deferred`` events, through the REST API) says which tasks went to the
    triggerer."""
    deferred = {(t["dag_id"], t["task_id"]) for t in demo_run["tasks"] if t["deferred"]}
    assert {
        ("ccee_pld_horario_yearly", "pull_pld_horario"),
        ("bazefield_site_timeseries", "pull_site_10min"),
        ("ons_sinapse_export", "export_sinapse_requests"),
        ("ccee_wait_then_pull", "wait_for_publication"),
        ("ccee_wait_then_pull", "pull_published"),
        ("ccee_on_publication", "pull_published"),
        ("echo_http_request", "get_allocation_types"),
    } <= deferred
    not_deferred = {(t["dag_id"], t["task_id"]) for t in demo_run["tasks"] if not t["deferred"]}
    assert ("ons_sager_monthly_report", "export_sager_report") in not_deferred


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_outputs_hold_what_the_summaries_say(demo_run: dict[str, Any]) -> None:
    by_task = {(t["dag_id"], t["task_id"]): t for t in demo_run["tasks"]}
    yearly = by_task[("ccee_pld_horario_yearly", "pull_pld_horario")]
    assert yearly["output"].endswith("/ccee/pld_horario/2025.parquet")
    assert pq.read_metadata(yearly["output"]).num_rows == yearly["rows"] > 0
    # The two publication-driven DAGs pulled the republished resource in full.
    published = by_task[("ccee_on_publication", "pull_published")]
    waited = by_task[("ccee_wait_then_pull", "pull_published")]
    assert published["rows"] == waited["rows"] == yearly["rows"]
    # The asset-scheduled check ran because the yearly pull produced: it read the file that
    # the pull's asset event named and found the rows the pull wrote.
    checked = by_task[("ccee_pld_horario_check", "check_pulled_files")]
    assert (checked["output"], checked["rows"]) == (yearly["output"], yearly["rows"])
    # The Assets view shows the pull's event with its summary, and the run it started.
    events = [
        e for e in demo_run["ui"]["asset_events"] if e["name"] == "ccee_pld_horario_yearly_parquet"
    ]
    assert events, demo_run["ui"]["asset_events"]
    assert events[-1]["source_task_id"] == "pull_pld_horario"
    assert (events[-1]["extra"]["output"], events[-1]["extra"]["rows"]) == (
        yearly["output"],
        yearly["rows"],
    )
    assert "ccee_pld_horario_check" in events[-1]["created_dagruns"]
    for key in (
        ("ons_sager_monthly_report", "export_sager_report"),
        ("ons_sinapse_export", "export_sinapse_requests"),
    ):
        assert by_task[key]["files"] >= 1
        assert any(Path(by_task[key]["output"]).iterdir())
    # Nothing left over: no checkpoint folder, no temporary file.
    lake = Path(demo_run["data_lake"])
    leftovers = [p for p in lake.rglob("*") if ".parts-" in p.name or p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_no_secret_anywhere_the_deployment_wrote(demo_run: dict[str, Any]) -> None:
    scan = demo_run["scan"]
    assert scan["leaks"] == []
    # It looked at real things: task and trigger logs, the database, trigger rows in flight,
    # and more secrets than the fixed credentials (the tokens and session ids issued).
    assert scan["files"] >= 10
    assert scan["tables"] >= 30
    assert scan["db_rows"] >= 50
    # Every deferral's trigger row was read while it lived (and the asset watcher's).
    deferrals = sum(1 for t in demo_run["tasks"] if t["deferred"])
    assert scan["triggers"] > deferrals >= 7
    assert scan["secrets"] > 6
    for service in DEMO_CREDENTIALS.values():
        for key, value in service.items():
            if "password" in key or "api_key" in key:
                assert value not in demo_run["stdout"] + demo_run["stderr"]


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_every_process_was_stopped(demo_run: dict[str, Any]) -> None:
    """No process of the deployment outlives the demo (their command lines or environment
    name its AIRFLOW_HOME; ``ps e`` shows the environment; looked at right after the demo)."""
    assert demo_run["returncode"] is not None, _explain(demo_run)
    assert demo_run["processes_left"] == []


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_the_test_button_works_for_every_connection(demo_run: dict[str, Any]) -> None:
    """The body the UI's Test button sends (replayed on the real API server while the demo
    ran) passes for the five connections: Airflow 3.3.2 answered 400 "The host or port to test
    differs from the stored connection" while the port was not stored (apache/airflow#73298)."""
    tests = demo_run["ui"]["connection_tests"]
    assert set(tests) == {
        "ccee_default",
        "bazefield_default",
        "ons_sager",
        "ons_sinapse",
        "echo_http_default",
    }
    for conn_id, test in tests.items():
        assert tuple(test["request"]) == UI_TEST_BODY_KEYS, conn_id
        assert test["request"]["port"] > 0, conn_id
        assert test["status_code"] == 200, (conn_id, test["body"])
        assert test["body"]["status"] is True, (conn_id, test["body"])
    assert "Test button of the connections (the UI's request): 5 of 5 ok" in demo_run["stdout"]


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_stored_connections_show_every_form_field(demo_run: dict[str, Any]) -> None:
    """Each connection stores every extra field of its type's form (the edit form shows only
    stored extras), a description, and its Base URL's port in ``port``."""
    connections = demo_run["ui"]["connections"]
    assert len(connections) == 5
    for conn_id, connection in connections.items():
        fields = {f.name for f in CONNECTION_TYPES[connection["conn_type"]].fields}
        assert set(json.loads(connection["extra"])) == fields, conn_id
        assert connection["description"], conn_id
        assert f":{connection['port']}" in connection["host"], conn_id
    # The secrets stay masked in what the API gives (and so in the report).
    extra = json.loads(connections["echo_http_default"]["extra"])
    assert extra["api_key"] == "***"
    text = json.dumps(demo_run["ui"])
    for service in DEMO_CREDENTIALS.values():
        for key, value in service.items():
            if "password" in key or "api_key" in key:
                assert value not in text


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_providers_page_entry_and_its_documentation(demo_run: dict[str, Any]) -> None:
    """The Providers page's entry says what the provider does; the documentation its
    ``documentation-url`` names is served by the deployment (checked while it ran)."""
    provider = demo_run["ui"]["provider"]
    assert provider is not None
    assert provider["description"].startswith("Bazefield, CCEE Dados Abertos")
    for word in ("pull", "deferrable", "sensors", "asset-watcher trigger", "hooks"):
        assert word in provider["description"], word
    # Airflow 3.3 links the provider to its distribution's Project-URL "Documentation"
    assert provider["documentation_url"] == DOCS_PATH
    docs = demo_run["ui"]["docs"]
    assert docs["path"] == DOCS_PATH
    assert docs["status_code"] == 200
    assert "echo-connhandler" in docs["text"].lower()


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_the_integrity_drill_fails_the_pull_and_writes_nothing(demo_run: dict[str, Any]) -> None:
    """The demo's drill: the yearly CCEE pull against a sandbox that ignores offset (a cache in
    front of CKAN) fails in its first try with DataConsistencyError, nothing at the output."""
    drill = demo_run["integrity_drill"]
    assert drill["state"] in ("up_for_retry", "failed"), drill
    assert "does not follow the page before it" in drill["error"], drill
    assert drill["output_written"] is False
    assert drill["ok"] is True


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_services_listen_on_loopback_on_free_ports(demo_run: dict[str, Any]) -> None:
    """Every socket the deployment's processes listen on is on loopback; the log server is the
    runner's own (one, on a free port), not Airflow's two on 8793/8794 on every interface."""
    listening = [tuple(x) for x in demo_run["listening"]]
    assert listening, "no listening socket seen"
    assert {address for _, address, _ in listening} <= {"127.0.0.1", "::1"}, listening
    assert not {port for _, _, port in listening} & {8793, 8794}, listening
    assert {"api-server", "log-server"} <= {name for name, _, _ in listening}, listening


@pytest.mark.deployment
@pytest.mark.xdist_group("deployment")
def test_quiet_logs_and_a_readable_table(demo_run: dict[str, Any]) -> None:
    """No ``InsecureKeyLengthWarning`` (the JWT secrets are long enough for HS512); the table
    and the lines around it fit a 120-column terminal; no sandbox URL is cut."""
    assert demo_run["log_marks"]["InsecureKeyLengthWarning"] == 0
    lines = demo_run["stdout"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("DAG / task"))
    table = lines[start : lines.index("", start)]
    assert len(table) >= 2 + 7 + len(demo_run["tasks"])  # header, rule, DAGs, tasks
    assert all(len(line) <= TABLE_WIDTH for line in table), table
    assert not [
        line for line in demo_run["stdout"].splitlines() if "sandbox up" in line and "..." in line
    ]
    for service in ("Bazefield", "CCEE", "ONS SAGER", "ONS SINAPSE", "ONS login"):
        assert any(
            line.strip().startswith(service) and "http://127.0.0.1:" in line
            for line in demo_run["stdout"].splitlines()
        ), service


# -- the UI's Test button, the table ------------------------------------------------------------
def _ui_bundle() -> str:
    """The installed Airflow UI's JavaScript bundle (where the Test button is)."""
    import airflow

    (bundle,) = (Path(airflow.__file__).parent / "ui" / "dist" / "assets").glob("index-*.js")
    return bundle.read_text(encoding="utf-8")


def test_ui_test_body_is_the_one_of_the_installed_ui() -> None:
    """``ui_test_body`` mirrors the Test button of the installed UI: the same keys in the same
    order, and ``port: Number(connection.port)`` (0 for a connection without a port)."""
    import re

    bundle = _ui_bundle()
    pattern = r"\{" + r",".join(rf"{k}:(\w+)" for k in UI_TEST_BODY_KEYS) + r"\}"
    matches = re.findall(pattern, bundle)
    assert len(matches) == 1, "the UI's Test button body changed: update ui_test_body"
    port_var = dict(zip(UI_TEST_BODY_KEYS, matches[0], strict=True))["port"]
    assert re.search(rf"\b{port_var}=Number\(\w+\.port\)", bundle)

    listed = {
        "connection_id": "c",
        "conn_type": "ccee",
        "description": None,
        "host": "https://dadosabertos.ccee.org.br",
        "login": None,
        "password": None,
        "schema": None,
        "port": None,
        "extra": None,
    }
    body = ui_test_body(listed)
    assert tuple(body) == UI_TEST_BODY_KEYS
    assert body["port"] == 0  # what 3.3.2 refuses for a connection stored without a port
    assert body["extra"] == "{}"
    assert ui_test_body({**listed, "port": 8443})["port"] == 8443


def test_table_fits_a_120_column_terminal() -> None:
    """The demo's longest names and outputs fit in 120 columns, outputs relative to the lake;
    an output too long for that is cut from the left (its end is what tells)."""
    lake = "/home/someone/projects/echo-connhandler-provider/.local-airflow/data_lake"
    published = "ccee/pld_horario_published/20260106T010203.parquet"
    rows = [
        TaskRow(
            "bazefield_site_timeseries",
            "pull_site_10min",
            "success",
            True,
            123456,
            None,
            f"{lake}/bazefield/site_10min/2026-01-01.jsonl.gz",
            12.3,
            "r1",
        ),
        TaskRow(
            "ccee_on_publication",
            "pull_published",
            "success",
            True,
            35136,
            None,
            f"{lake}/{published}",
            8.0,
            "r2",
        ),
        TaskRow(
            "ons_sinapse_export",
            "export_sinapse_requests",
            "success",
            True,
            None,
            3,
            f"{lake}/ons/sinapse/" + "x" * 200,
            4.0,
            "r3",
        ),
    ]
    table = format_table(rows, lake)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    assert lake not in table
    assert "bazefield_site_timeseries" in lines
    assert any(
        "pull_site_10min" in line and "bazefield/site_10min/2026-01-01.jsonl.gz" in line
        for line in lines
    )
    assert any("35,136" in line and published in line for line in lines)
    assert any("3 files" in line and line.endswith("xxx  4") and "…" in line for line in lines)


# -- the scanner finds what is there -------------------------------------------------------------
SECRET = "planted-secret-value-42"


def _home_with(tmp_path: Path, fernet_key: str) -> Path:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "clean.log").write_text("nothing to see\n")
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("CREATE TABLE xcom (key TEXT, value BLOB)")
        db.execute("CREATE TABLE trigger (id INTEGER, kwargs TEXT)")
        db.execute("INSERT INTO xcom VALUES ('return_value', '{\"rows\": 3}')")
        db.execute(
            "INSERT INTO trigger VALUES (1, ?)",
            (Fernet(fernet_key.encode()).encrypt(b'{"conn_id": "x"}').decode(),),
        )
    return home


def test_scan_is_clean_when_nothing_leaked(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    report = scan_for_secrets(_home_with(tmp_path, key), [SECRET], fernet_key=key)
    assert report.leaks == []
    assert (report.files, report.tables, report.db_rows) == (1, 2, 2)


def test_scan_finds_a_secret_in_a_log(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    home = _home_with(tmp_path, key)
    (home / "logs" / "task.log").write_text(f"token={SECRET}\n")
    report = scan_for_secrets(home, [SECRET], fernet_key=key)
    assert report.leaks == [f"secret #1 ({len(SECRET)} chars) in logs/task.log"]
    assert SECRET not in " ".join(report.leaks)


def test_scan_finds_a_secret_in_a_database_cell(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    home = _home_with(tmp_path, key)
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("INSERT INTO xcom VALUES ('return_value', ?)", (f'{{"t": "{SECRET}"}}',))
    report = scan_for_secrets(home, [SECRET], fernet_key=key)
    assert len(report.leaks) == 1
    assert "table xcom.value" in report.leaks[0]


def test_scan_decrypts_trigger_kwargs(tmp_path: Path) -> None:
    """Trigger kwargs are Fernet-encrypted in the database: the scan reads them decrypted,
    in the table and in the rows captured while the deployment ran."""
    key = Fernet.generate_key().decode()
    home = _home_with(tmp_path, key)
    encrypted = Fernet(key.encode()).encrypt(f'{{"password": "{SECRET}"}}'.encode()).decode()
    assert SECRET not in encrypted
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("INSERT INTO trigger VALUES (2, ?)", (encrypted,))
    report = scan_for_secrets(home, [SECRET], fernet_key=key, trigger_rows={"7": encrypted})
    assert len(report.leaks) == 2
    assert any("table trigger.kwargs" in leak for leak in report.leaks)
    assert any("trigger 7 kwargs" in leak for leak in report.leaks)


def test_scan_skips_the_deployments_own_key_store(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    home = _home_with(tmp_path, key)
    store = home / "deployment.json"
    store.write_text(json.dumps({"fernet_key": key, "password": SECRET}))
    assert scan_for_secrets(home, [SECRET], fernet_key=key, skip_files=[store]).leaks == []
    assert scan_for_secrets(home, [SECRET], fernet_key=key).leaks != []


def test_capture_keeps_two_triggers_that_shared_an_id(tmp_path: Path) -> None:
    """SQLite hands the id of a deleted newest row to the next row: the capture keeps both
    triggers (the secret scan reads each), and a row read twice once."""
    deployment = Deployment(tmp_path / "home")
    database = deployment.home / "airflow.db"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("CREATE TABLE trigger (id INTEGER PRIMARY KEY, kwargs TEXT)")
        db.execute("INSERT INTO trigger (kwargs) VALUES ('token-a')")
    deployment.capture_triggers()
    deployment.capture_triggers()
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("DELETE FROM trigger")
        db.execute("INSERT INTO trigger (kwargs) VALUES ('token-b')")
        assert db.execute("SELECT id FROM trigger").fetchall() == [(1,)]  # the id, again
    deployment.capture_triggers()
    assert deployment.trigger_rows == {"1": "token-a", "1.2": "token-b"}
