"""A promotion and a rollback reach every gunicorn worker process within one second, without a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from models_registry import mlflow_gateway, transition_services
from predictions import model_cache
from predictions.models import Prediction
from predictions.tests.helpers import make_model_version, trained_model
from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes
from tests.factories import make_user

#: Seconds gunicorn may take to import the project in both workers.
START_TIMEOUT = 60
WORKERS = 2
ROW = trained_model("cancer").sample_rows[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Answer:
    pid: int
    version: int
    sent_at: float
    received_at: float


@dataclass
class Server:
    url: str
    token: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def predict(self) -> Answer:
        request = urllib.request.Request(  # noqa: S310 (our own local server)
            f"{self.url}/api/models/cancer/predict/",
            data=json.dumps({"inputs": ROW}).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        sent_at = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our own local server)
            body = json.loads(response.read())
            pid = int(response.headers["X-Worker-Pid"])
        return Answer(pid=pid, version=body["model_version"], sent_at=sent_at, received_at=time.monotonic())

    def predict_concurrently(self, count: int) -> list[Answer]:
        # Sync workers serve one request at a time, so concurrent requests spread over both workers.
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(lambda _: self.predict(), range(count)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def gunicorn_server(transactional_db, tmp_path) -> Iterator[callable]:
    started: list[subprocess.Popen[bytes]] = []

    def start(token: str) -> Server:
        port = _free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATABASE_URL": database_url_for_other_processes(),
            # The same media folder as this test's storage (the root conftest puts it under tmp_path).
            "DATA_DIR": str(tmp_path),
            "PYTHONPATH": str(settings.BASE_DIR),
            **storage_env_for_other_processes(),
        }
        if settings.STORAGES["default"]["BACKEND"].endswith("FileSystemStorage"):
            assert Path(settings.STORAGES["default"]["OPTIONS"]["location"]) == tmp_path / "media"
        log_path = tmp_path / "gunicorn.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "gunicorn", "predictions.tests.wsgi_probe:application",
                    "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", "--timeout", "60",
                    "--log-level", "warning",
                ],
                env=env,
                cwd=settings.BASE_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started.append(process)
        server = Server(url=f"http://127.0.0.1:{port}", token=token, log_path=log_path, process=process)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/healthz", timeout=5):  # noqa: S310
                    return server
            except OSError:  # refused, reset or timed out while the workers start
                if process.poll() is not None:
                    pytest.fail(f"gunicorn exited with {process.returncode}:\n{server.log()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not answer in {START_TIMEOUT}s:\n{server.log()[-3000:]}")
                time.sleep(0.2)

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def _answers_until_every_worker_says(server: Server, version: int, *, timeout: float) -> list[Answer]:
    answers: list[Answer] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers += server.predict_concurrently(4)
        workers = {a.pid for a in answers if a.version == version}
        if len(workers) == WORKERS:
            return answers
    pytest.fail(f"not every worker answered with version {version}: {answers}")


def _switch_times(answers: list[Answer], version: int, *, since: float) -> dict[int, float]:
    """Seconds from `since` until each worker first answered with `version`; it never went back after."""
    first = {
        pid: min(a.received_at for a in answers if a.pid == pid and a.version == version)
        for pid in {a.pid for a in answers}
    }
    late_old = [a for a in answers if a.version != version and a.sent_at > first[a.pid]]
    assert late_old == [], "a worker went back to the old version"
    return {pid: moment - since for pid, moment in first.items()}


def test_a_promotion_and_a_rollback_reach_every_worker_within_one_second(gunicorn_server, monkeypatch):
    user = make_user("client")
    staff = make_user("release-manager", staff=True)
    current = make_model_version(trained=trained_model("cancer"), name="cancer", version=1, stage="none")
    candidate = make_model_version(
        trained=trained_model("cancer", algorithm="logistic_regression"),
        name="cancer",
        version=2,
        stage="staging",
    )
    # These versions are not in MLflow; the alias sync after commit must not cost seconds in this process.
    monkeypatch.setattr(
        mlflow_gateway, "aliases_get", lambda **kwargs: (_ for _ in ()).throw(mlflow_gateway.ModelNotFound())
    )
    transition_services.model_version_transition(model_version=current, to_stage="production", user=staff)
    server = gunicorn_server(Token.objects.create(user=user).key)
    # Both workers have loaded version 1 and serve it from their caches.
    before = _answers_until_every_worker_says(server, 1, timeout=30)
    assert {a.version for a in before} == {1}
    workers = {a.pid for a in before}

    promoted_at = time.monotonic()
    transition_services.model_version_transition(
        model_version=candidate, to_stage="production", user=staff, reason="better recall"
    )
    after = _answers_until_every_worker_says(server, 2, timeout=5)
    after += server.predict_concurrently(4)

    switched = _switch_times(after, 2, since=promoted_at)
    assert set(switched) == workers, "the same two worker processes, never restarted"
    assert max(switched.values()) < 1.0, switched
    # Stale answers only within the resolution TTL, never later.
    late = [
        a for a in after if a.version == 1 and a.sent_at - promoted_at > model_cache.RESOLUTION_TTL_SECONDS
    ]
    assert late == []

    rolled_back_at = time.monotonic()
    transition_services.model_version_rollback(registered_model=current.registered_model, user=staff)
    back = _answers_until_every_worker_says(server, 1, timeout=5)
    back += server.predict_concurrently(4)

    switched_back = _switch_times(back, 1, since=rolled_back_at)
    assert set(switched_back) == workers
    assert max(switched_back.values()) < 1.0, switched_back
    answers = before + after + back
    stored = Prediction.objects.filter(user=user)
    assert stored.count() == len(answers)
    assert stored.filter(model_version=candidate).count() == sum(1 for a in answers if a.version == 2)
