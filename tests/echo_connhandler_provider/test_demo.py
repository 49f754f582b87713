"""The demo (``python -m echo_connhandler_provider.demo``) runs every handler on both paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: The demo's connections, by the handler they drive.
HANDLER_OF = {
    "demo_bazefield": "BazeHttpHandler",
    "demo_ccee": "CceeHttpHandler",
    "demo_ons_sager": "OnsHttpHandler",
    "demo_ons_sinapse": "OnsHttpHandler",
    "demo_http": "HttpHandler",
}


def test_demo_runs_each_handler_on_both_paths(tmp_path: Path, airflow_home: str) -> None:
    """Every handler appears in the demo's table on the sync and on the async path."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": airflow_home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "echo_connhandler_provider.demo", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] in HANDLER_OF and words[1] in ("sync", "async"):
            paths.setdefault(HANDLER_OF[words[0]], set()).add(words[1])
    assert paths == {handler: {"sync", "async"} for handler in HANDLER_OF.values()}, paths
    assert (tmp_path / "sager_report_sync.xlsx").exists()
    assert (tmp_path / "sager_report_async.xlsx").exists()
    assert (tmp_path / "sinapse_export.csv").exists()
