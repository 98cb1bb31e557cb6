"""Request bodies sent with `Transfer-Encoding: chunked`: read in full behind gunicorn, else a clear 411."""

from __future__ import annotations

import http.client
import json
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
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from mlops_site.tests.helpers import error_body
from predictions.models import Prediction
from predictions.tests.helpers import make_model_version, trained_model
from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes
from tests.factories import make_user

GUNICORN_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"
#: Seconds gunicorn may take to import the project.
START_TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def gunicorn_port(transactional_db, tmp_path) -> Iterator[int]:
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
        "DATABASE_URL": database_url_for_other_processes(),
        "DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(settings.BASE_DIR),
        **storage_env_for_other_processes(),
    }
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                # The project's own configuration, as `make run`, the image and compose start it.
                sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG),
                "--workers", "1", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            ],
            env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until_up(port, process, log_path)
        yield port
    finally:
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


def _post_chunked(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=_chunks(body), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_json_body_behind_gunicorn_is_read_in_full(gunicorn_port):
    cancer = trained_model("cancer")
    make_model_version(trained=cancer, name="cancer")
    token = Token.objects.create(user=make_user("carol")).key
    body = json.dumps({"rows": cancer.sample_rows}).encode()

    status, answer = _post_chunked(
        gunicorn_port,
        "/api/models/cancer/predict/",
        body,
        {"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )

    assert status == 200, answer
    assert len(answer["predictions"]) == len(cancer.sample_rows)
    assert Prediction.objects.count() == len(cancer.sample_rows)


def test_a_chunked_json_body_over_the_limit_behind_gunicorn_gets_a_413_envelope(gunicorn_port):
    body = b'{"username": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'

    status, answer = _post_chunked(
        gunicorn_port, "/api/auth/token/", body, {"Content-Type": "application/json"}
    )

    assert status == 413
    assert answer["code"] == "too_large"
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in answer["detail"]


def test_a_chunked_body_a_server_cannot_end_gets_a_411_asking_for_content_length(db):
    response = APIClient().generic(
        "POST",
        "/api/auth/token/",
        b'{"username": "x", "password": "y"}',
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )

    body = error_body(response, 411, "length_required")
    assert "Content-Length" in body["detail"]
