"""Slow and idle clients against a real gunicorn started with deploy/gunicorn.conf.py on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.gunicorn_worker import READ_AHEAD_LIMIT, request_is_ready

ROOT = Path(__file__).resolve().parent.parent.parent
THREADS = 2
WORKERS = 1
READ_TIMEOUT = 10
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
)
PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"
PARTIAL_BODY = (
    b"POST /api/models/any/predict/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 2000\r\n\r\n{"inputs": {"age": '
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def _gunicorn(tmp_path: Path, **variables: str) -> Iterator[str]:
    port = _free_port()
    environment = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATA_DIR": str(tmp_path),
            "DEBUG": "False",
            "WEB_CONCURRENCY": str(WORKERS),
            "WEB_THREADS": str(THREADS),
            "WEB_READ_TIMEOUT": str(READ_TIMEOUT),
            **variables,
        }
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            with contextlib.suppress(OSError):
                # The first answers import every view module: the server is warm after them.
                if _get(f"{url}/healthz", timeout=30)[0] == 200 and _get(f"{url}/accounts/login/")[0] == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _slow_sockets(url: str, count: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    sockets = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        # A third send nothing at all, a third stop inside their headers, a third inside their body.
        start = (b"", PARTIAL_HEADERS, PARTIAL_BODY)[index % 3]
        if start:
            sock.sendall(start)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        answer = sock.recv(4096)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    # Either the connection ends at once or it gets a 408 first and then ends.
    if answer and not answer.startswith(b"HTTP/1.1 408 "):
        return False
    return answer == b"" or sock.recv(4096) == b""


def test_the_site_answers_while_more_slow_clients_than_threads_are_connected_and_drops_them(tmp_path):
    with _gunicorn(tmp_path) as url:
        slow = _slow_sockets(url, count=2 * THREADS * WORKERS + 6)
        try:
            assert _get(f"{url}/healthz") == (200, b'{"status": "ok"}')
            status, page = _get(f"{url}/accounts/login/")
            assert status == 200
            assert b"<form" in page
            # Those answers came while every slow client was still connected: none has been closed yet.
            readable, _, _ = select.select(slow, [], [], 0)
            assert readable == []

            assert all(_closed_by_server(sock, wait=READ_TIMEOUT + 60) for sock in slow)
            assert _get(f"{url}/healthz")[0] == 200
        finally:
            for sock in slow:
                sock.close()


def test_a_body_larger_than_the_read_ahead_and_a_chunked_body_still_reach_the_application(tmp_path):
    body = b"x" * (READ_AHEAD_LIMIT * 3)
    with _gunicorn(tmp_path) as url:
        plain = urllib.request.Request(f"{url}/healthz", data=body, method="POST")  # noqa: S310 - loopback
        chunks = iter([body[:1000], body[1000:]])
        chunked = urllib.request.Request(f"{url}/healthz", data=chunks, method="POST")  # noqa: S310 - loopback
        chunked.add_header("Transfer-Encoding", "chunked")
        for request in (plain, chunked):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(request, timeout=60)  # noqa: S310 - our own loopback URL
            # Django's CSRF check answered, so the whole request reached it.
            assert answer.value.code == 403


def test_with_log_format_json_every_line_gunicorn_writes_is_a_json_object(tmp_path):
    def fetch(url, **headers):
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - our own loopback URL
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own loopback URL
            return response.headers["X-Request-ID"]

    with _gunicorn(tmp_path, LOG_FORMAT="json") as url:
        fetch(f"{url}/healthz?probe=1", **{"X-Request-ID": "follow-me-7", "User-Agent": "u" * 5000})
        replaced = fetch(f"{url}/healthz", **{"X-Request-ID": "x" * 65})
    lines = [line for line in (tmp_path / "gunicorn.log").read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, gunicorn's own included

    access = [line for line in parsed if line["logger"] == "gunicorn.access"]
    probe = next(line for line in access if line.get("query") == "probe=1")
    assert (probe["method"], probe["path"], probe["status_code"]) == ("GET", "/healthz", 200)
    assert probe["request_id"] == "follow-me-7"
    assert probe["duration_ms"] >= 0
    assert probe["bytes_sent"] > 0
    assert len(probe["user_agent"]) <= 513
    # A forged id is replaced by the application; the access line logs the replacement.
    assert replaced != "x" * 65
    assert any(line["request_id"] == replaced for line in access)
    assert any(line["logger"] == "gunicorn.error" for line in parsed)


@pytest.mark.parametrize(
    ("buffered", "ready"),
    [
        (b"", False),
        (PARTIAL_HEADERS, False),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
        (PARTIAL_BODY, False),
        (b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", True),
        (b"POST / HTTP/1.1\r\ncontent-length:  2 \r\nHost: a\r\n\r\n{", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" + b"x" * READ_AHEAD_LIMIT, True),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"x" * READ_AHEAD_LIMIT, True),
    ],
)
def test_a_request_goes_to_a_thread_only_once_it_has_arrived_or_fills_the_read_ahead(buffered, ready):
    assert request_is_ready(buffered) is ready


def test_make_run_the_image_and_compose_start_gunicorn_with_the_one_settings_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web = compose["services"]["web"]["command"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    run = (ROOT / "deploy" / "run.py").read_text()

    assert web[web.index("gunicorn") :] == [
        "gunicorn",
        "-c",
        "deploy/gunicorn.conf.py",
        "--bind",
        "0.0.0.0:8000",
    ]
    assert 'CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]' in dockerfile
    assert '"gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind"' in run
    # Compose hands the settings file the variables it reads, from .env.
    assert {item.split("=")[0] for item in web[1 : web.index("gunicorn")]} == {
        "WEB_CONCURRENCY",
        "WEB_THREADS",
        "WEB_READ_TIMEOUT",
    }
