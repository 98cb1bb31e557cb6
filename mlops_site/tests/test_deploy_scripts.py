"""Tests of the scripts behind `make run`, `make test` and the container health check."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "SECRET_KEY",
    "DJANGO_ADMIN_USERNAME",
    "DJANGO_ADMIN_PASSWORD",
)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own http:// URL
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.worker
def test_run_serves_the_site_with_a_worker_and_leaves_no_process_behind_on_sigterm(tmp_path):
    port = _free_port()
    environment = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    environment.update(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "WORKER_CONCURRENCY": "1",
            "DEBUG": "False",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "deploy/run.py"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while not any("is running at" in line for line in lines):
            assert process.poll() is None, "".join(lines)[-4000:]
            assert time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.3)
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}/" in output
        # The banner comes last, framed, after the worker's start-up output rather than inside it.
        running = next(i for i, line in enumerate(lines) if "is running at" in line)
        ready = next(i for i, line in enumerate(lines) if line.startswith("worker") and "ready." in line)
        assert ready < running
        assert set(lines[running - 1].strip()) == {"="}
        # The demo model was queued on this first start and says so in the banner.
        assert "Demo model breast-cancer-demo: training run" in "".join(lines[running:])
        assert re.search(r"Admin login: admin / \S+", output)
        assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0

        assert _get(f"http://127.0.0.1:{port}/accounts/login/")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/static/css/site.css")[0] == 200
        deadline = time.monotonic() + 60
        while True:
            status, body = _get(f"http://127.0.0.1:{port}/readyz")
            ready = json.loads(body)
            if status == 200 and ready["workers"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        assert ready["workers"][0]["hostname"].startswith("worker@")
        children = _descendants(process.pid)
        assert len(children) >= 4  # gunicorn master and worker, the Celery worker and its pool child, beat
    finally:
        children |= _descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    reader.join(timeout=5)

    assert exit_code == 0, "".join(lines)[-4000:]
    assert [pid for pid in children if _alive(pid)] == []


def test_test_services_uses_services_already_in_the_environment_and_returns_the_command_s_code():
    environment = {
        **os.environ,
        "DATABASE_URL": "postgres://given@127.0.0.1:1/given",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "AWS_STORAGE_BUCKET_NAME": "given-bucket",
    }
    environment.pop("CELERY_BROKER_URL", None)
    show = "import os, sys; print(os.environ['CELERY_BROKER_URL'], os.environ['DATABASE_URL']); sys.exit(7)"

    result = subprocess.run(
        [sys.executable, "deploy/test_services.py", "--", sys.executable, "-c", show],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 7
    assert "redis://127.0.0.1:1/0 postgres://given@127.0.0.1:1/given" in result.stdout
    for name in ("postgres", "redis", "s3"):
        assert re.search(rf"test_services: {name} +used: \w+ is set in the environment", result.stdout)


def test_test_services_needs_a_command():
    result = subprocess.run(
        [sys.executable, "deploy/test_services.py", "--"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "give the command to run" in result.stderr


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (["gunicorn", "mlops_site.wsgi:application", "--bind", "0.0.0.0:8000"], "web"),
        (
            ["/usr/local/bin/python", "/usr/local/bin/celery", "-A", "mlops_site", "worker", "-n", "w@%h"],
            "worker",
        ),
        (["celery", "-A", "mlops_site", "beat", "--loglevel=INFO"], "beat"),
        (["sh", "-c", "sleep 1"], "unknown"),
    ],
)
def test_the_container_health_check_recognises_what_the_container_runs(cmdline, role):
    assert _load("healthcheck").role(cmdline) == role


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        ("mlops.example.com,web", "mlops.example.com"),
        (".example.com", "example.com"),
        ("*", "localhost"),
        ("", "localhost"),
    ],
)
def test_the_web_health_check_sends_a_host_django_accepts(monkeypatch, allowed, host):
    monkeypatch.setenv("ALLOWED_HOSTS", allowed)

    assert _load("healthcheck").allowed_host() == host


def test_the_beat_health_check_wants_a_recently_saved_schedule(tmp_path, monkeypatch):
    healthcheck = _load("healthcheck")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    (tmp_path / "celery").mkdir()

    assert healthcheck.beat_healthy() is False
    schedule = tmp_path / "celery" / "beat-schedule.db"
    schedule.write_bytes(b"")
    assert healthcheck.beat_healthy() is True
    old = time.time() - healthcheck.BEAT_STALE_AFTER - 60
    os.utime(schedule, (old, old))
    assert healthcheck.beat_healthy() is False


def test_run_generates_the_secret_key_once_and_keeps_it_private(tmp_path, monkeypatch):
    run = _load("run")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    # setenv, not delenv: monkeypatch then also removes the value ensure_secret_key sets.
    monkeypatch.setenv("SECRET_KEY_FILE", "")

    run.ensure_secret_key(tmp_path)
    first = (tmp_path / "secret_key").read_text()
    run.ensure_secret_key(tmp_path)

    assert (tmp_path / "secret_key").read_text() == first
    assert len(first) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert os.environ["SECRET_KEY_FILE"] == str(tmp_path / "secret_key")


def test_run_leaves_a_given_secret_key_alone(tmp_path, monkeypatch):
    run = _load("run")
    monkeypatch.setenv("SECRET_KEY", "x" * 50)
    monkeypatch.setenv("SECRET_KEY_FILE", "")

    run.ensure_secret_key(tmp_path)

    assert not (tmp_path / "secret_key").exists()
    assert os.environ["SECRET_KEY_FILE"] == ""


def test_make_mlflow_serves_the_app_s_own_store_or_says_why_not(tmp_path):
    mlflow_ui = _load("mlflow_ui")
    data = tmp_path / "data"

    assert "make run" in mlflow_ui.command({"DATA_DIR": str(data)})  # no store yet
    data.mkdir()
    (data / "mlflow.db").touch()
    argv = mlflow_ui.command({"DATA_DIR": str(data), "MLFLOW_UI_PORT": "5055"})
    assert argv[1:4] == ["-m", "mlflow", "server"]
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{data.resolve() / 'mlflow.db'}"
    assert argv[argv.index("--default-artifact-root") + 1] == (data.resolve() / "mlflow-artifacts").as_uri()
    assert argv[argv.index("--port") + 1] == "5055"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    # A tracking server has its own UI; its credentials are never printed.
    said = mlflow_ui.command({"MLFLOW_TRACKING_URI": "https://robot:s3cret@mlflow.example.org"})
    assert "open its own UI" in said
    assert "s3cret" not in said


@pytest.mark.parametrize(
    ("value", "wanted"), [(None, True), ("True", True), ("false", False), ("0", False), (" off ", False)]
)
def test_demo_model_false_skips_the_demo_model_on_start(value, wanted):
    prepare = _load("prepare")

    assert prepare.demo_wanted({} if value is None else {"DEMO_MODEL": value}) is wanted


@pytest.mark.postgres
@pytest.mark.parametrize(("durable", "expected"), [(False, "off"), (True, "on")])
def test_test_services_postgresql_waits_for_the_disk_only_when_asked(durable, expected):
    import shutil
    import tempfile

    import psycopg

    sys.path.insert(0, str(ROOT))
    from deploy import test_services

    # Not under pytest's tmp_path: the postgres account must reach the folder (see Services).
    root = Path(tempfile.mkdtemp(prefix="mlops-durable-pg-"))
    services = test_services.Services(root, durable_postgres=durable)
    try:
        try:
            services.start_postgres()
        except test_services.ServiceUnavailable as exc:
            pytest.skip(f"PostgreSQL cannot be started here: {exc}")
        with psycopg.connect(services.env["DATABASE_URL"]) as connection:
            shown = {
                name: connection.execute(f"SHOW {name}").fetchone()[0]
                for name in ("fsync", "synchronous_commit")
            }
    finally:
        services.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    assert shown == {"fsync": expected, "synchronous_commit": expected}
