"""A real local Airflow deployment running the example DAGs against the sandbox.

``python -m deploy.local_airflow demo`` (``make demo``, the main job):

1. prepares ``AIRFLOW_HOME`` (``.local-airflow/`` by default; a second run reuses it): its own
   Fernet key, JWT secret and UI password, generated once; the metadata database (SQLite)
   migrated;
2. starts the sandbox (emulators of Bazefield, CCEE and ONS) on loopback ports, and a real
   Airflow: ``api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``
   as separate processes, with ``dags_examples/`` as the DAGs folder, and waits until the API
   answers and the scheduler, dag-processor and triggerer have heartbeated (as ``airflow
   standalone`` does);
3. writes one connection per id the DAGs use (``ccee_default``, ``bazefield_default``,
   ``ons_sager``, ``ons_sinapse``, ``echo_http_default``) through the REST API, pointing at the
   sandbox with its made-up credentials;
4. triggers every example DAG (the asset-scheduled one is started by a CCEE publication), waits
   for the runs, and prints a table: DAG, task, state, deferred or not (the audit log), rows,
   output, seconds;
5. stops every process it started (also on Ctrl-C or a failure), then scans what the deployment
   left (task and trigger logs, the processes' logs, every table of the metadata database with
   the trigger rows seen during the run decrypted) for every credential, token and session id
   used: none may appear.

``python -m deploy.local_airflow demo --scale`` (``make demo-scale``): the same on production's
shape (PostgreSQL, CeleryExecutor with Redis and two workers, two triggerers, the data lake on
S3), then the failover drills: ``deploy.scale_out`` and ``deploy.scale_drills``.

``python -m deploy.local_airflow up`` (``make airflow``): the same stack left running with the
UI on http://localhost:8080 (``--port``), the connections ready and the connection test
enabled, until Ctrl-C.

The runner, by concern (this module is only the command line):

- ``deploy.airflow_home``: the AIRFLOW_HOME, its secrets, the Airflow processes' settings;
- ``deploy.airflow_processes``: starting and stopping the Airflow processes;
- ``deploy.rest_api``: the REST API client, readiness by heartbeats, the UI's Test button;
- ``deploy.sandbox_connections``: the example DAGs' connections on the sandbox;
- ``deploy.deployment``: the deployment (sandbox, processes, API) and what it reads of runs;
- ``deploy.secret_scan``: the secret scan;
- ``deploy.demo``: the example DAGs' knowledge, the table, the integrity drill, the commands;
- ``deploy.services``, ``deploy.scale_out``, ``deploy.scale_drills``: the scale-out mode.

It is the project's own tooling (outside the two packages): it imports Airflow only in the
processes it starts, never itself.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from deploy.airflow_home import DAGS_FOLDER, DEFAULT_HOME
from deploy.demo import demo, up
from deploy.deployment import Deployment, say
from deploy.sandbox_connections import connections_for
from deploy.scale_drills import demo_scale
from deploy.scale_out import DEFAULT_SCALE_HOME

# The names other code imports from here (the example DAGs' tests: the DAGs folder and the
# connections on the sandbox).
__all__ = ["DAGS_FOLDER", "DEFAULT_HOME", "Deployment", "connections_for", "main"]


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local_airflow", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("command", choices=["demo", "up"])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help=f"AIRFLOW_HOME (reused; default {DEFAULT_HOME.name}/, "
        f"{DEFAULT_SCALE_HOME.name}/ with --scale)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale-out mode (demo): PostgreSQL, CeleryExecutor with Redis and two workers, "
        "two triggerers, the data lake on S3 (moto), then its drills",
    )
    parser.add_argument(
        "--no-drills", action="store_true", help="with --scale: the example DAGs only"
    )
    parser.add_argument("--port", type=int, default=8080, help="API server / UI port (up)")
    parser.add_argument("--report", type=Path, default=None, help="write the demo's report (JSON)")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both stop everything (SIGINT explicitly: a shell may have started us
    # with it ignored, in the background).
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, _raise_on_sigterm)
    if args.scale and args.command != "demo":
        parser.error("--scale goes with demo")
    home = args.home or (DEFAULT_SCALE_HOME if args.scale else DEFAULT_HOME)
    try:
        if args.scale:
            return demo_scale(home, args.report, drills=not args.no_drills)
        if args.command == "demo":
            return demo(home, args.report)
        return up(home, args.port)
    except KeyboardInterrupt:
        say("stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
