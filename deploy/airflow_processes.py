"""The Airflow processes of the deployment: ``airflow db migrate``, then api-server, scheduler,
dag-processor, triggerer and a log server in the background, each in its own session (process
group), each writing to its own log under ``<home>/logs/processes/``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["LOG_SERVER", "SERVICE_ARGS", "Processes", "tail"]

#: Arguments the runner always adds: the scheduler and the triggerer would each start a log
#: server on every interface; the runner starts one on loopback instead (``LOG_SERVER``).
SERVICE_ARGS: Mapping[str, tuple[str, ...]] = {
    "scheduler": ("--skip-serve-logs",),
    "triggerer": ("--skip-serve-logs",),
    "celery worker": ("--skip-serve-logs",),
}
#: Airflow's log server (what ``serve_logs`` runs) bound to loopback, on the configured port.
LOG_SERVER = """
import uvicorn
from airflow.configuration import conf
uvicorn.run(
    "airflow.utils.serve_logs.log_server:get_app",
    factory=True,
    host="127.0.0.1",
    port=conf.getint("logging", "worker_log_server_port"),
    log_config=None,
    access_log=False,
)
"""


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Processes:
    """The Airflow processes of the deployment, each in its own session (process group)."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.log_dir = home / "logs" / "processes"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        #: Where each log was when this deployment started (the logs of a reused home grow).
        self.log_offsets: dict[str, int] = {}
        self.airflow = str(Path(sys.executable).with_name("airflow"))

    def run(self, *args: str, timeout: float = 300.0) -> None:
        """Run ``airflow <args>`` to completion (e.g. ``db migrate``); its output to a log."""
        log_path = self.log_dir / f"{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        with log_path.open("ab") as log:
            done = subprocess.run(  # noqa: S603 - our own venv's airflow, fixed arguments
                [self.airflow, *args],
                env=self.env,
                stdout=log,
                stderr=log,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed; see {log_path}\n{tail(log_path)}")

    def start(self, name: str, *args: str, label: str | None = None) -> None:
        """Start ``airflow <name> <args>`` in the background, its output to ``<label>.log``
        (``log-server``: Airflow's log server on loopback). ``label`` (default: ``name``) names
        the process here: two of one kind (the scale-out mode's triggerers, ``celery worker``)
        each get their own, and their own PID file (Airflow refuses a second process of a kind
        whose PID file names a live one)."""
        label = label or name
        if name == "log-server":
            command = [sys.executable, "-c", LOG_SERVER]
        else:
            command = [self.airflow, *name.split(), *args, *SERVICE_ARGS.get(name, ())]
            if label != name:
                command += ["--pid", str(self.log_dir / f"{label}.pid")]
        log = (self.log_dir / f"{label}.log").open("ab")
        # A restarted process (the drills) keeps the offset of the first start: the log of
        # this deployment is everything since then.
        self.log_offsets.setdefault(label, log.tell())
        self.running[label] = subprocess.Popen(  # noqa: S603 - our own venv's airflow
            command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
        )
        log.close()

    def log_since_start(self, label: str) -> str:
        """What the process ``label`` logged since this deployment first started it."""
        with (self.log_dir / f"{label}.log").open("rb") as log:
            log.seek(self.log_offsets.get(label, 0))
            return log.read().decode(errors="replace")

    def check_alive(self) -> None:
        """Raise if a process ended on its own (with the end of its log)."""
        for name, process in self.running.items():
            if process.poll() is not None:
                log_path = self.log_dir / f"{name}.log"
                raise RuntimeError(
                    f"airflow {name} exited with code {process.returncode}; see {log_path}\n"
                    f"{tail(log_path)}"
                )

    def kill(self, name: str) -> None:
        """SIGKILL one process and its children (for restart drills)."""
        process = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process group, then SIGKILL what is still there after ``grace_s``."""
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.running.values():
            # The group too: LocalExecutor's workers and task processes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.running.clear()
