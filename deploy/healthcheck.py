"""Container health check shared by web, worker and beat: it checks whichever of them PID 1 is.

web: /healthz answers 200. worker: the worker answers a Celery ping. beat: its schedule file was
written recently (beat saves it every few minutes while it runs). Exit 0 when healthy, 1 otherwise.
"""

from __future__ import annotations

import glob
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

#: Seconds without a schedule write after which beat counts as stuck (it syncs every 3 minutes).
BEAT_STALE_AFTER = 600


def allowed_host() -> str:
    """A Host header Django accepts: ALLOWED_HOSTS may name only the public host."""
    for host in os.environ.get("ALLOWED_HOSTS", "").split(","):
        host = host.strip().lstrip(".")
        if host and host != "*":
            return host
    return "localhost"


def web_healthy() -> bool:
    request = urllib.request.Request("http://127.0.0.1:8000/healthz", headers={"Host": allowed_host()})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - a fixed http:// URL
        return response.status == 200


def worker_healthy() -> bool:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")
    import django

    django.setup()
    from mlops_site.celery import app

    replies = app.control.ping(destination=[f"worker@{socket.gethostname()}"], timeout=5.0)
    return bool(replies)


def beat_healthy() -> bool:
    data_dir = Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / "data")
    # The shelve module may add a suffix (.db, .dat) to the name, depending on the dbm available.
    files = glob.glob(str(data_dir / "celery" / "beat-schedule*"))
    if not files:
        return False
    return time.time() - max(os.path.getmtime(name) for name in files) < BEAT_STALE_AFTER


def role(cmdline: list[str]) -> str:
    joined = " ".join(cmdline)
    if "gunicorn" in joined:
        return "web"
    if " worker" in joined:
        return "worker"
    if " beat" in joined:
        return "beat"
    return "unknown"


def main() -> int:
    cmdline = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    checks = {"web": web_healthy, "worker": worker_healthy, "beat": beat_healthy}
    name = role(cmdline)
    if name not in checks:
        print(f"unhealthy: PID 1 is none of web, worker, beat: {' '.join(cmdline)}")
        return 1
    try:
        healthy = checks[name]()
    except Exception as exc:  # any failure to check means unhealthy, with the reason in `docker inspect`
        print(f"{name} unhealthy: {type(exc).__name__}: {exc}")
        return 1
    print(f"{name} {'healthy' if healthy else 'unhealthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
