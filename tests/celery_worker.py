"""A real Celery worker process on the current test database, for any app's tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

#: Seconds a worker may take to import Django and every app before the test gives up on it.
WORKER_START_TIMEOUT = 90


@dataclass
class WorkerProcess:
    nodename: str
    broker_url: str
    transport_options: dict[str, object]
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def storage_env_for_other_processes() -> dict[str, str]:
    """Variables under which another process sees the same object storage as the current test."""
    options = settings.STORAGES["default"].get("OPTIONS", {})
    if settings.STORAGES["default"]["BACKEND"].endswith("S3Storage"):
        # The root conftest gives every test its own key prefix in the shared bucket.
        return {"AWS_LOCATION": options.get("location", "")}
    return {}


def database_url_for_other_processes() -> str:
    """The URL under which another process (a worker, gunicorn) opens the current test database."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        if connection.is_in_memory_db():
            pytest.fail(
                "the SQLite test database is in memory, so another process cannot open it: "
                "settings.py must give DATABASES['default']['TEST'] a file NAME",
                pytrace=False,
            )
        return f"sqlite:///{db['NAME']}"
    if "postgresql" in db["ENGINE"]:
        credentials = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            credentials += ":" + quote(db["PASSWORD"], safe="")
        host = db["HOST"] or "localhost"
        port = f":{db['PORT']}" if db["PORT"] else ""
        return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"
    pytest.fail(f"no multi-process test support for database engine {db['ENGINE']}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture
def start_celery_worker(transactional_db, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Returns a function that starts `celery worker` on the given broker URL and waits until it is ready.

    The worker writes to the current test database (committed data only, hence transactional_db) and is
    always stopped at teardown, with its whole process group.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(
        broker_url: str,
        *,
        extra_env: dict[str, str] | None = None,
        pool: str = "solo",
        concurrency: int = 1,
        app: str = "mlops_site",
    ) -> WorkerProcess:
        """`pool="prefork"` runs tasks in child processes; `app` names another Celery app module."""
        data_dir = tmp_path / "worker-data"
        transport_options: dict[str, object] = {}
        if broker_url == "filesystem://":
            # The same folders settings.py derives from DATA_DIR for the embedded broker.
            queue = data_dir / "celery" / "queue"
            processed = data_dir / "celery" / "processed"
            queue.mkdir(parents=True, exist_ok=True)
            processed.mkdir(parents=True, exist_ok=True)
            transport_options = {
                "data_folder_in": str(queue),
                "data_folder_out": str(queue),
                "processed_folder": str(processed),
                "store_processed": False,
                # kombu's default is a "control" folder in the current directory.
                "control_folder": str(data_dir / "celery" / "control"),
            }
        nodename = f"test-worker-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATABASE_URL": database_url_for_other_processes(),
            "DATA_DIR": str(data_dir),
            "CELERY_BROKER_URL": broker_url,
            "CELERY_TASK_ALWAYS_EAGER": "False",
            "PYTHONPATH": str(settings.BASE_DIR),
            # The same MLflow store as the test process, which the root conftest puts in tmp_path.
            "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
            "MLFLOW_ARTIFACT_ROOT": settings.MLFLOW_ARTIFACT_ROOT,
            **storage_env_for_other_processes(),
            **(extra_env or {}),
        }
        log_path = tmp_path / f"{nodename}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", app, "worker",
                    f"--pool={pool}", f"--concurrency={concurrency}", "-Q", "celery", "-n", f"{nodename}@%h",
                    "--without-mingle", "--without-gossip", "--loglevel=INFO",
                ],
                env=env,
                cwd=data_dir.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started.append(process)
        worker = WorkerProcess(
            nodename=f"{nodename}@{socket.gethostname()}",
            broker_url=broker_url,
            transport_options=transport_options,
            log_path=log_path,
            process=process,
        )
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while " ready." not in worker.log():
            if process.poll() is not None:
                pytest.fail(f"the worker exited with {process.returncode}:\n{worker.log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the worker was not ready in {WORKER_START_TIMEOUT}s:\n{worker.log()[-3000:]}")
            time.sleep(0.2)
        return worker

    yield start
    for process in started:
        _stop(process)
