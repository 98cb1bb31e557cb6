"""The project's gunicorn, started with its own configuration on a free loopback port for a test."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes

GUNICORN_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"
#: Seconds gunicorn may take to import the project.
START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gunicorn_serving(*, data_dir: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Serve the test database with one gunicorn worker (the project's config); yields the port."""
    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
        "DATABASE_URL": database_url_for_other_processes(),
        "DATA_DIR": str(data_dir),
        "PYTHONPATH": str(settings.BASE_DIR),
        **storage_env_for_other_processes(),
        **(env or {}),
    }
    log_path = data_dir / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG),
                "--workers", "1", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            ],
            env=environment, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until_up(port, process, log_path)
        yield port
    finally:
        process_group_stop(process)


def process_group_stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started with start_new_session=True and every process it forked: TERM, then KILL."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _wait_until_up(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return
        except OSError:  # refused or reset while the worker starts
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
