"""Reads of the monitoring app: readiness of each outside system and the workers' heartbeats."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from kombu import Connection

from mlops_site import storage
from monitoring.models import WorkerHeartbeat

#: Seconds each readiness probe may take, so /readyz answers before a load balancer gives up on it.
CHECK_TIMEOUT = 3.0


@dataclass
class Readiness:
    checks: dict[str, dict[str, str]] = field(default_factory=dict)
    workers: list[dict[str, Any]] | dict[str, str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(check["status"] == "ok" for check in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if check["status"] != "ok"]


def _database_check() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _writable_folder_check(folder: Path) -> None:
    if not folder.is_dir():
        raise OSError(f"folder {folder} does not exist")
    # os.access ignores read-only mounts, so really write a file.
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-"):
        pass


def _broker_check() -> str:
    url = settings.CELERY_BROKER_URL
    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    if url.startswith("filesystem://"):
        # The filesystem transport "connects" without touching the disk; the queue folder is what matters.
        for key in ("data_folder_in", "data_folder_out"):
            _writable_folder_check(Path(str(options.get(key, "data_in"))))
        return "filesystem"
    with Connection(url, transport_options=options, connect_timeout=CHECK_TIMEOUT) as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0.5, interval_max=0.5, timeout=CHECK_TIMEOUT
        )
    return url.split("://", 1)[0]


def _storage_check() -> str:
    storage.check()
    location = getattr(default_storage, "location", None)
    if location and not getattr(default_storage, "bucket_name", None):
        folder = Path(location)
        # FileSystemStorage creates its folder on the first write; only the nearest existing parent matters.
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            raise storage.StorageError(f"folder {location} is not writable")
    return storage.backend_name()


CHECKS = {"database": _database_check, "broker": _broker_check, "storage": _storage_check}


def readiness_get() -> Readiness:
    """Probe every outside system once; a failure is reported, never raised."""
    readiness = Readiness()
    for name, check in CHECKS.items():
        try:
            backend = check()
        except Exception as exc:  # any error means "not ready", and the message says which
            readiness.checks[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        else:
            readiness.checks[name] = {"status": "ok", "backend": backend}
    if readiness.checks["database"]["status"] != "ok":
        readiness.workers = {"status": "unknown", "error": "the database is not reachable"}
        return readiness
    try:
        beats = worker_heartbeat_list()
    except Exception as exc:  # e.g. migrations not applied yet: informational, so never a failure
        readiness.workers = {"status": "unknown", "error": f"{type(exc).__name__}: {exc}"}
        return readiness
    now = timezone.now()
    readiness.workers = [
        {
            "hostname": beat.hostname,
            "last_seen": beat.last_seen.isoformat(),
            "seconds_ago": round((now - beat.last_seen).total_seconds()),
        }
        for beat in beats
    ]
    return readiness


def worker_heartbeat_list(*, limit: int = 20) -> list[WorkerHeartbeat]:
    return list(WorkerHeartbeat.objects.order_by("-last_seen")[:limit])
