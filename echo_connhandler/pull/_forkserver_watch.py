"""Imported only by the decode pool's fork server (``set_forkserver_preload``): it leaves as
soon as the process that started it is gone.

A fork server outlives a killed owner (a triggerer's SIGKILL) and keeps the owner's stdout and
stderr open; a process reading them (a supervisor, a test) would then wait forever. Never import
this module anywhere else: it would end its importer when that one's parent changes.
"""

from __future__ import annotations

import os
import threading
import time

__all__: list[str] = []


def _watch(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


threading.Thread(target=_watch, args=(os.getppid(),), name="exit-with-owner", daemon=True).start()
