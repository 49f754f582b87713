"""The secret scan: every credential, token and session id a deployment used, looked for in
everything it left (files, every table of its metadata database, trigger rows seen while it ran).

This is the one part of the runner that reads the SQLite file directly rather than through the
REST API: the scan must see every cell of every table as stored (the API shows a few tables, and
masks or leaves out what matters here, such as a trigger's encrypted kwargs).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox

__all__ = ["ScanReport", "read_trigger_rows", "scan_for_secrets", "secret_values"]


@dataclass
class ScanReport:
    """What the secret scan looked at and found (never the secrets themselves)."""

    secrets: int = 0
    files: int = 0
    tables: int = 0
    db_rows: int = 0
    triggers: int = 0
    leaks: list[str] = field(default_factory=list)
    #: What the scan was to read and could not (a scan that read nothing is not clean).
    unread: list[str] = field(default_factory=list)


def secret_values(sandbox: Sandbox, deployment_secrets: Iterable[str]) -> list[str]:
    """Every credential, token and session id of a run: the sandbox's demo credentials and
    what it issued, and the deployment's own secrets (``deployment_secrets``)."""
    values = [
        value
        for service in DEMO_CREDENTIALS.values()
        for key, value in service.items()
        if "password" in key or "api_key" in key
    ]
    values += sandbox.issued_secrets()
    values += list(deployment_secrets)
    return values


def read_trigger_rows(home: Path) -> dict[int, str]:
    """The trigger rows in the metadata database now: id and kwargs as stored (encrypted).

    Read from the database file, read-only: the REST API does not give a trigger's kwargs, and
    the rows are deleted once their task resumes, so the scan keeps what it saw during the run.
    """
    database = home / "airflow.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
        return {
            int(trigger_id): str(kwargs)
            for trigger_id, kwargs in db.execute("SELECT id, kwargs FROM trigger")
        }


def _needles(values: Iterable[str]) -> dict[str, bytes]:
    """Each secret as text and its label (``secret #n``): labels never reveal the value."""
    unique = sorted({v for v in values if len(v) >= 5})
    return {f"secret #{i + 1} ({len(v)} chars)": v.encode() for i, v in enumerate(unique)}


def scan_for_secrets(
    home: Path,
    secret_values: Iterable[str],
    *,
    fernet_key: str,
    trigger_rows: Mapping[str, str] | None = None,
    extra_texts: Mapping[str, str] | None = None,
    skip_files: Iterable[Path] = (),
    tables: Iterable[tuple[str, Sequence[str], Iterable[Sequence[Any]]]] | None = None,
    unread: Iterable[str] = (),
) -> ScanReport:
    """Look for every secret in what a deployment left.

    Scanned: every file under ``home`` (task logs, trigger logs, the processes' logs, outputs)
    except ``skip_files`` (the deployment's own key and password stores); every cell of every
    table of ``home/airflow.db``, with the Fernet-encrypted ``trigger.kwargs`` and encrypted
    ``variable.val`` decrypted (``connection`` rows stay encrypted: that is where credentials
    belong); the trigger kwargs captured during the run (``trigger_rows``: rows are deleted once
    their task resumes); and ``extra_texts`` (e.g. the runner's own output).

    ``tables`` (name, columns, rows) replaces the SQLite file: the scale-out mode's PostgreSQL
    tables, read before the database stopped. Its cluster's files under ``home`` are scanned as
    files too (as stored: the same rows, still encrypted where Airflow encrypts).

    ``unread``: what the caller could not capture for the scan (it goes into the report's
    ``unread``, as does a missing ``home/airflow.db`` when ``tables`` is None).
    """
    from cryptography.fernet import Fernet, InvalidToken

    needles = _needles(secret_values)
    report = ScanReport(secrets=len(needles), unread=list(unread))
    fernet = Fernet(fernet_key.encode())

    def check(where: str, blob: bytes) -> None:
        for label, needle in needles.items():
            if needle in blob:
                report.leaks.append(f"{label} in {where}")

    def decrypt(value: str) -> bytes:
        try:
            return fernet.decrypt(value.encode())
        except (InvalidToken, ValueError):
            return value.encode()

    skipped = {p.resolve() for p in skip_files}
    database = home / "airflow.db"
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.resolve() in skipped or path.name.startswith("airflow.db"):
            continue
        report.files += 1
        check(str(path.relative_to(home)), path.read_bytes())

    def check_table(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        report.tables += 1
        for row in rows:
            report.db_rows += 1
            for column, value in zip(columns, row, strict=True):
                if value is None or isinstance(value, int | float):
                    continue
                if isinstance(value, memoryview):
                    value = value.tobytes()
                blob = value if isinstance(value, bytes) else str(value).encode()
                if (table, column) in {("trigger", "kwargs"), ("variable", "val")}:
                    blob += b"\n" + decrypt(blob.decode(errors="replace"))
                check(f"table {table}.{column}", blob)

    if tables is not None:
        for table, columns, rows in tables:
            check_table(table, columns, rows)
    elif database.is_file():
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in names:
                cursor = db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite_master
                check_table(table, [c[0] for c in cursor.description], cursor)
    else:
        report.unread.append(f"the metadata database ({database.name} is missing)")
    for trigger_id, kwargs in (trigger_rows or {}).items():
        report.triggers += 1
        check(f"trigger {trigger_id} kwargs (captured during the run)", decrypt(kwargs))
    for where, text in (extra_texts or {}).items():
        check(where, text.encode())
    return report
