"""PostgreSQL restarted under load: errors only while it is down; web and worker recover without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from kombu import Connection

from mlops_site.celery import app
from monitoring.tasks import worker_heartbeat_task
from tests.faults.conftest import free_port, wait_for

# It starts its own PostgreSQL, site and worker: the same proof in either run, so it runs once.
pytestmark = pytest.mark.deployment

START_TIMEOUT = 90


class Site:
    """gunicorn and a Celery worker on the test's own PostgreSQL, and an embedded broker in a folder."""

    def __init__(self, folder: Path, database_url: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(folder),
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_TASK_ALWAYS_EAGER": "False",
            "PYTHONPATH": str(settings.BASE_DIR),
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        }
        for name in ("REDIS_URL", "AWS_STORAGE_BUCKET_NAME"):
            self.env.pop(name, None)
        self.processes: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
            env=self.env, capture_output=True, text=True, check=False, timeout=START_TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def spawn(self, name: str, argv: list[str]) -> Path:
        log = self.folder / f"{name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.folder,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return log

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)


def _get(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})  # noqa: S310 - http
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback URL
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def site(tmp_path, postgres_server):
    site = Site(tmp_path / "site", postgres_server.url)
    site.folder.mkdir()
    for folder in ("queue", "processed", "control"):
        (site.folder / "celery" / folder).mkdir(parents=True)
    yield site
    site.stop()


def test_a_postgresql_restart_under_load_fails_requests_only_while_it_is_down(
    site, postgres_server, figures, monkeypatch
):
    site.manage("migrate", "--no-input")
    token = site.manage(
        "shell", "-c",
        "from rest_framework.authtoken.models import Token; from tests.factories import make_user; "
        "print(Token.objects.create(user=make_user('loader')).key)",
    ).split()[-1]  # fmt: skip
    web_log = site.spawn(
        "web",
        [sys.executable, "-m", "gunicorn", "mlops_site.wsgi:application", "--bind", f"127.0.0.1:{site.port}",
         "--workers", "1", "--threads", "4", "--timeout", "30", "--no-control-socket"],
    )  # fmt: skip
    worker_log = site.spawn(
        "worker",
        [sys.executable, "-m", "celery", "-A", "mlops_site", "worker", "--pool=solo", "-n", "faults@%h",
         "--without-mingle", "--without-gossip", "--loglevel=INFO"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{site.port}/api/batch-jobs/"
    wait_for(lambda: _get(url, token) == 200, "gunicorn", timeout=START_TIMEOUT, log=web_log.read_text)
    wait_for(
        lambda: " ready." in worker_log.read_text(),
        "the worker",
        timeout=START_TIMEOUT,
        log=worker_log.read_text,
    )

    # (when each request was sent, when it was answered, its status): one that overlaps the outage may fail.
    answers: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            sent_at = time.monotonic()
            code = _get(url, token)
            answers.append((sent_at, time.monotonic(), code))
            time.sleep(0.02)

    loaders = [threading.Thread(target=load) for _ in range(3)]
    for thread in loaders:
        thread.start()
    time.sleep(1)
    down_at = time.monotonic()
    postgres_server.stop()
    time.sleep(2)
    postgres_server.start()
    up_at = time.monotonic()
    # From here on every request must succeed: the web process reconnects on its own.
    time.sleep(2)
    stop.set()
    for thread in loaders:
        thread.join(timeout=30)

    before = [code for sent, answered, code in answers if answered < down_at]
    after = [code for sent, answered, code in answers if sent >= up_at]
    during = [code for sent, answered, code in answers if answered >= down_at and sent < up_at]
    assert before
    assert after
    assert set(before) == {200}
    assert set(after) == {200}
    # While it is down, requests are refused as retryable (503 with Retry-After), never a 500.
    assert set(during) <= {200, 503}

    # The worker, never restarted, writes to the database again: its heartbeat task runs.
    sent_at = time.time()
    transport_options = {
        "data_folder_in": str(site.folder / "celery" / "queue"),
        "data_folder_out": str(site.folder / "celery" / "queue"),
        "control_folder": str(site.folder / "celery" / "control"),
    }
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    with Connection("filesystem://", transport_options=transport_options) as conn:
        worker_heartbeat_task.apply_async(connection=conn)

    def heartbeat_after_restart() -> bool:
        with psycopg.connect(postgres_server.url.replace("postgres://", "postgresql://")) as db:
            row = db.execute("SELECT max(last_seen) FROM monitoring_workerheartbeat").fetchone()
        return row[0] is not None and row[0].timestamp() >= sent_at

    wait_for(
        heartbeat_after_restart,
        "the worker's heartbeat after the restart",
        timeout=60,
        log=worker_log.read_text,
    )
    assert all(process.poll() is None for process in site.processes)
    figures(
        requests=len(answers),
        failed_while_down=sum(code != 200 for code in during),
        answers_while_down=sorted(set(during)),
        failed_outside_the_outage=0,
        seconds_down=round(up_at - down_at, 1),
    )
