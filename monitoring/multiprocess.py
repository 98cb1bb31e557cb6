"""The PROMETHEUS_MULTIPROC_DIR folder's upkeep, for gunicorn's master and the Celery worker's main process.

Standard library only: gunicorn's config imports it before Django is set up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# prometheus_client names each process's file <kind>_<pid>.db (gauges: gauge_<mode>_<pid>.db).
_PID = re.compile(r"_(\d+)\.db\Z")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def multiprocess_dir_prepare(path: str) -> list[str]:
    """Create the folder and delete the files of processes that are gone; returns the names deleted.

    Files of live processes stay: on one host the web's master and the Celery worker start in any order
    and share the folder, and deleting a live process's file would lose its counts from then on. Counters
    of a previous run vanish, which Prometheus reads as a counter reset.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    deleted = []
    for file in folder.glob("*.db"):
        match = _PID.search(file.name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            file.unlink()
        except FileNotFoundError:  # another process cleaned it up first
            continue
        deleted.append(file.name)
    return deleted
