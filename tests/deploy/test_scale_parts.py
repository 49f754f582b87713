"""The parts of the scale-out mode that need no process: binaries found, command lines, the
processes' environment, the drills' verdict on a pull, the secret scan of PostgreSQL's tables."""

from __future__ import annotations

import ast
import shutil
import stat
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from deploy.airflow_home import HomeSecrets, airflow_env
from deploy.airflow_processes import SERVICE_ARGS, Processes
from deploy.deployment import Deployment
from deploy.pull_drills import DatastorePages, expected_chunks
from deploy.scale_drills import (
    FANOUT_YEARS,
    PullCheck,
    check_pull,
    drill_dag_file,
)
from deploy.scale_out import (
    EXECUTOR,
    HEARTBEAT_ENV,
    ScaleOut,
    ScaleSettings,
    triggerer_label,
    worker_command,
)
from deploy.secret_scan import scan_for_secrets
from deploy.services import (
    Binaries,
    MotoS3,
    Postgres,
    Redis,
    find_binaries,
    find_binary,
    missing_packages,
    postgres_account,
    searchable_by_others,
)

BINARIES = Binaries(initdb="/pg/bin/initdb", postgres="/pg/bin/postgres", redis_server="/r/redis")


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- binaries ------------------------------------------------------------------------------------
def test_a_binary_on_path_is_found_first(tmp_path: Path) -> None:
    on_path = _executable(tmp_path / "bin" / "initdb")
    _executable(tmp_path / "lib" / "15" / "bin" / "initdb")
    found = find_binary("initdb", str(tmp_path / "bin"), [str(tmp_path / "lib" / "*" / "bin")])
    assert found == str(on_path)


def test_off_path_the_newest_postgres_version_wins(tmp_path: Path) -> None:
    for version in ("9", "13", "15"):
        _executable(tmp_path / "lib" / version / "bin" / "initdb")
    found = find_binary("initdb", str(tmp_path / "empty"), [str(tmp_path / "lib" / "*" / "bin")])
    assert found == str(tmp_path / "lib" / "15" / "bin" / "initdb")


def test_postgres_is_taken_next_to_initdb(tmp_path: Path) -> None:
    """One PostgreSQL version: the server beside the initdb that made the cluster."""
    _executable(tmp_path / "lib" / "13" / "bin" / "initdb")
    beside = _executable(tmp_path / "lib" / "13" / "bin" / "postgres")
    _executable(tmp_path / "bin" / "postgres")  # another one on PATH
    found = find_binaries(str(tmp_path / "bin"), [str(tmp_path / "lib" / "*" / "bin")])
    assert found["postgres"] == str(beside)


def test_missing_binaries_name_their_packages(tmp_path: Path) -> None:
    found = find_binaries(str(tmp_path), [str(tmp_path / "none" / "*")])
    assert found == {"initdb": None, "postgres": None, "redis-server": None}
    assert missing_packages(found) == ["postgresql", "redis-server"]
    assert missing_packages({"initdb": "/x", "postgres": "/y", "redis-server": None}) == [
        "redis-server"
    ]


def test_postgres_runs_as_this_user_unless_root() -> None:
    assert postgres_account(euid=1000) is None
    account = postgres_account(euid=0)
    assert account is not None
    assert account.pw_uid != 0


# -- command lines -------------------------------------------------------------------------------
def test_postgres_listens_on_loopback_tcp_only(tmp_path: Path) -> None:
    pg = Postgres(BINARIES, tmp_path / "pg", 5999, "pw-123456", tmp_path / "logs")
    command = pg.command()
    assert command[:3] == ["/pg/bin/postgres", "-D", str(tmp_path / "pg" / "data")]
    assert "listen_addresses=127.0.0.1" in command
    assert "unix_socket_directories=" in command
    assert pg.url == "postgresql+psycopg2://airflow:pw-123456@127.0.0.1:5999/airflow"
    init = pg.initdb_command(tmp_path / "pwfile")
    assert "--auth-host=scram-sha-256" in init
    assert "pw-123456" not in " ".join(init), "the password goes through a file, not argv"


def test_postgres_needs_its_binaries_first(tmp_path: Path) -> None:
    pg = Postgres(None, tmp_path / "pg", 5999, "pw", tmp_path / "logs")
    with pytest.raises(RuntimeError, match="require_binaries"):
        pg.command()


def test_redis_keeps_nothing_on_disk_and_binds_loopback(tmp_path: Path) -> None:
    redis = Redis("/r/redis", 6399, tmp_path)
    command = redis.command()
    assert command[command.index("--bind") + 1] == "127.0.0.1"
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"
    assert redis.url == "redis://127.0.0.1:6399/0"


def test_moto_env_points_at_loopback_with_made_up_credentials(tmp_path: Path) -> None:
    s3 = MotoS3(7001, "bucket", tmp_path, tmp_path / "logs")
    env = s3.env()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:7001"
    assert env["AWS_ACCESS_KEY_ID"].startswith("moto-")
    assert env["AWS_CONFIG_FILE"].startswith(str(tmp_path)), "no profile of this machine"
    assert "127.0.0.1" in s3.command()


def test_each_worker_has_its_own_celery_node_name() -> None:
    first, second = worker_command(0, 4), worker_command(1, 4)
    name = first.index("--celery-hostname") + 1
    assert (first[name], second[name]) == ("worker-a@127.0.0.1", "worker-b@127.0.0.1")
    assert first[first.index("--concurrency") + 1] == "4"
    assert [triggerer_label(i) for i in range(2)] == ["triggerer-a", "triggerer-b"]
    # The runner's log server serves the workers' task logs, not one of their own each.
    assert "--skip-serve-logs" in SERVICE_ARGS["celery worker"]


# -- the processes' environment ------------------------------------------------------------------
def test_airflow_env_takes_executor_and_database(tmp_path: Path) -> None:
    secrets = HomeSecrets.load_or_create(tmp_path)
    default = airflow_env(tmp_path, secrets, 8080, "lake")
    assert default["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert default["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    scaled = airflow_env(
        tmp_path, secrets, 8080, "lake", executor=EXECUTOR, database_url="postgresql+psycopg2://x"
    )
    assert scaled["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert scaled["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://x"


def test_home_secrets_include_a_database_password_kept_across_loads(tmp_path: Path) -> None:
    first = HomeSecrets.load_or_create(tmp_path)
    assert len(first.database_password) >= 24
    assert HomeSecrets.load_or_create(tmp_path).database_password == first.database_password


def test_scale_deployment_environment(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path / "home", scale=ScaleSettings())
    try:
        env = deployment.env
        scale = deployment.scale
        assert scale is not None
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == scale.postgres.url
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + scale.postgres.url
        assert env["AIRFLOW__CELERY__BROKER_URL"] == scale.redis.url
        assert env["AIRFLOW_VAR_ECHO_DATA_LAKE"] == deployment.data_lake
        assert deployment.data_lake.startswith("s3://echo-scale-lake/")
        for key, value in HEARTBEAT_ENV.items():
            assert env[key] == value
        assert env["AWS_ENDPOINT_URL"] == scale.s3.endpoint
        assert deployment.secrets.database_password in deployment.secret_values()
    finally:
        deployment.api.close()


# -- the drills' verdict -------------------------------------------------------------------------
PLAN = [("r1", 0), ("r1", 50), ("r1", 100)]


def _check(killed: bool = True, done: list[int] | None = None) -> PullCheck:
    check = PullCheck("t", (2021,), "out.jsonl", plan=list(PLAN), killed=killed)
    check.done_at_kill = done if done is not None else [0]
    return check


def _verdict(check: PullCheck, counts: dict[tuple[str, int], int], out: bytes = b"x") -> PullCheck:
    return check_pull(check, Counter(counts), out, b"x", expected=len(PLAN))


def test_a_resumed_pull_refetching_only_chunks_in_flight_is_exact() -> None:
    check = _verdict(_check(), {("r1", 0): 1, ("r1", 50): 2, ("r1", 100): 1})
    assert check.ok, check.problems
    assert check.refetched == [1]


def test_a_chunk_done_before_the_kill_fetched_again_is_caught() -> None:
    check = _verdict(_check(), {("r1", 0): 2, ("r1", 50): 1, ("r1", 100): 1})
    assert any("recorded before the kill" in p for p in check.problems)


def test_refetches_without_a_kill_other_bytes_and_stray_pages_are_caught() -> None:
    check = _verdict(
        _check(killed=False, done=[]),
        {("r1", 0): 1, ("r1", 50): 2, ("r1", 100): 1, ("r1", 150): 1},
        out=b"y",
    )
    text = " ".join(check.problems)
    assert "without a kill" in text
    assert "differs" in text
    assert "outside the plan" in text


def test_pages_are_counted_apart_from_planning_probes() -> None:
    pages = DatastorePages(counting=True)
    path = "/api/3/action/datastore_search"
    pages.count(path, b"resource_id=r1&limit=50&offset=100")
    pages.count(path, b"resource_id=r1&limit=0")
    pages.count(path, b"resource_id=r1&limit=1&fields=_id")
    pages.count("/api/3/action/package_show", b"id=x")
    assert pages.pages == Counter({("r1", 100): 1})
    assert pages.probes == Counter({"r1": 2})
    pages.counting = False
    pages.count(path, b"resource_id=r1&limit=50&offset=0")
    assert sum(pages.pages.values()) == 1


def test_the_drill_dags_parse_and_the_fanout_has_one_resource_per_pull() -> None:
    tree = ast.parse(drill_dag_file())
    names = [
        c.args[0].value
        for c in ast.walk(tree)
        if isinstance(c, ast.Call)
        and getattr(c.func, "id", "") == "DAG"
        and isinstance(c.args[0], ast.Constant)
    ]
    assert names == ["scale_drill_triggerer", "scale_drill_worker", "scale_drill_fanout"]
    assert len(set(FANOUT_YEARS)) == 20
    assert expected_chunks((2024,)) == 30  # 366 days x 4 submarkets, 50 rows a page


# -- the secret scan of PostgreSQL's tables ------------------------------------------------------
def test_scan_reads_given_tables_and_decrypts_trigger_kwargs(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    secret = "a-secret-value-123"
    encrypted = Fernet(key).encrypt(f'{{"token": "{secret}"}}'.encode()).decode()
    tables = [
        ("trigger", ["id", "kwargs"], [(1, encrypted)]),
        ("log", ["id", "extra"], [(1, memoryview(b"nothing here")), (2, None)]),
    ]
    report = scan_for_secrets(tmp_path, [secret], fernet_key=key.decode(), tables=tables)
    assert report.tables == 2
    assert report.db_rows == 3
    assert report.leaks == ["secret #1 (18 chars) in table trigger.kwargs"]
    assert "a-secret" not in " ".join(report.leaks)


def test_a_scan_without_the_database_or_the_bucket_is_not_clean(tmp_path: Path) -> None:
    """PostgreSQL or moto gone before the stop read them: the scan reads no table and no object,
    and says so (``unread``) instead of reporting clean."""
    scale = ScaleOut(tmp_path, HomeSecrets.load_or_create(tmp_path))
    scale.stop_services()  # never started
    assert scale.capture_errors == [
        "the PostgreSQL tables (RuntimeError)",
        "the S3 objects (RuntimeError)",
    ]
    key = Fernet.generate_key().decode()
    report = scan_for_secrets(
        tmp_path, ["a-secret-value-123"], fernet_key=key, tables=[], unread=scale.capture_errors
    )
    assert (report.leaks, report.tables, report.unread) == ([], 0, scale.capture_errors)
    # The SQLite mode: no metadata database under the home is no clean scan either.
    sqlite = scan_for_secrets(tmp_path / "no-home", ["a-secret-value-123"], fernet_key=key)
    assert sqlite.unread == ["the metadata database (airflow.db is missing)"]


def test_triggerer_jobs_are_named_by_their_label(tmp_path: Path) -> None:
    scale = ScaleOut(tmp_path, HomeSecrets.load_or_create(tmp_path))
    assert scale.label_of_job(None) == "unassigned"
    assert scale.label_of_job(42) == "job 42"
    scale.triggerer_jobs["triggerer-a"] = 42
    assert scale.label_of_job(42) == "triggerer-a"


def test_postgres_cluster_moves_out_of_a_private_home(tmp_path: Path) -> None:
    """Found in CI's checkout (a 0700 temporary folder): the unprivileged user could not reach
    a cluster under it. Such a home gets its cluster in the system's temporary folder, removed
    at the stop; a home others can search keeps it."""
    account = postgres_account(euid=0)
    assert account is not None
    tmp_path.chmod(0o700)
    private = Postgres(BINARIES, tmp_path / "pg", 5999, "pw", tmp_path / "logs", account)
    assert private.outside_home
    assert private.folder.parent == Path(tempfile.gettempdir())
    assert searchable_by_others(private.folder)
    assert private.command()[2] == str(private.folder / "data")
    open_home = Path(tempfile.mkdtemp())
    try:
        open_home.chmod(0o755)
        public = Postgres(BINARIES, open_home / "pg", 5999, "pw", tmp_path / "logs", account)
        assert not public.outside_home
        assert public.folder == open_home / "pg"
    finally:
        shutil.rmtree(open_home)


def test_restart_takes_only_a_triggerer_or_worker_label(tmp_path: Path) -> None:
    scale = ScaleOut(tmp_path, HomeSecrets.load_or_create(tmp_path))
    with pytest.raises(ValueError, match="not a triggerer or worker label: 'postgres-a'"):
        scale.restart(Processes(tmp_path, {}), "postgres-a")
