"""A worker on another machine needs only the broker, database and storage addresses.

The "other machine" is a copy of what the image holds (the build context less .dockerignore) in a folder of
its own, started with an empty data folder and nothing but the database, broker, storage, MLflow and
SECRET_KEY variables. The test process is the first machine: it submits a batch job through the service
layer and reads the result back from S3.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery.signals import after_task_publish
from django.conf import settings

from tests.build_context import build_context_copy
from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BATCH_TASK = "predictions.tasks.batch_prediction_run_task"
START_TIMEOUT = 120
JOB_TIMEOUT = 90
ROWS = 23


def on_the_services(test: Any) -> Any:
    """The worker's test: the other machine shares the service run's PostgreSQL, Redis and S3."""
    for mark in (pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3, pytest.mark.worker):
        test = mark(test)
    return test


# ------------------------------------------------------------------------------
# The worker on the other machine
# ------------------------------------------------------------------------------
@dataclass
class RemoteWorker:
    code: Path
    data_dir: Path
    started_at: float
    nodename: str
    environment: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def remote_environment(*, code: Path, data_dir: Path) -> dict[str, str]:
    """What the other machine is given: the services' addresses and keys, the shared SECRET_KEY and MLflow,
    its own data folder. PATH finds the installed requirements (the venv here, the image's python there)."""
    environment = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(code),
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url_for_other_processes(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "AWS_STORAGE_BUCKET_NAME": settings.AWS_STORAGE_BUCKET_NAME,
        "AWS_S3_ENDPOINT_URL": settings.AWS_S3_ENDPOINT_URL,
        "AWS_S3_REGION_NAME": settings.AWS_S3_REGION_NAME,
        "AWS_S3_ADDRESSING_STYLE": settings.AWS_S3_ADDRESSING_STYLE,
        "AWS_ACCESS_KEY_ID": settings.AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": settings.AWS_SECRET_ACCESS_KEY,
        # The tracking store of this test (the root conftest's); a batch job does not write to it.
        "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
        "MLFLOW_ARTIFACT_ROOT": settings.MLFLOW_ARTIFACT_ROOT,
        "MLFLOW_EXPERIMENT_NAME": settings.MLFLOW_EXPERIMENT_NAME,
        # The root conftest gives each test a key prefix of its own in the shared bucket.
        **storage_env_for_other_processes(),
    }
    for name in ("HOME", "LANG", "LC_ALL", "TMPDIR"):
        if name in os.environ:
            environment[name] = os.environ[name]
    return environment


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _wait_for(what: str, worker: RemoteWorker, done: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if worker.process.poll() is not None:
            pytest.fail(f"the remote worker exited with {worker.process.returncode}:\n{worker.log()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f}s:\n{worker.log()[-4000:]}")
        time.sleep(0.2)


@pytest.fixture
def remote_worker(transactional_db, tmp_path) -> Iterator[RemoteWorker]:
    """A worker started from a copy of the code in its own folder, named remote-…@host."""
    code = tmp_path / "other-machine" / "app"
    data_dir = tmp_path / "other-machine" / "data"
    build_context_copy(ROOT, code)
    data_dir.mkdir(parents=True)
    name = f"remote-{uuid.uuid4().hex[:8]}"
    environment = remote_environment(code=code, data_dir=data_dir)
    log_path = tmp_path / "remote-worker.log"
    started_at = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "celery",
                "-A",
                "mlops_site",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                "-n",
                f"{name}@%h",
            ],
            env=environment,
            cwd=code,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    worker = RemoteWorker(
        code, data_dir, started_at, f"{name}@{socket.gethostname()}", environment, process, log_path
    )
    try:
        _wait_for("the remote worker's ready line", worker, lambda: " ready." in worker.log(), START_TIMEOUT)
        yield worker
    finally:
        _stop(process)


@pytest.fixture
def published_batch_tasks() -> Iterator[list[str]]:
    """The ids of the batch tasks this process (the first machine) sends to the broker."""
    ids: list[str] = []

    def record(sender: object = None, headers: dict[str, object] | None = None, **kwargs: object) -> None:
        if sender == BATCH_TASK and headers is not None:
            ids.append(str(headers["id"]))

    after_task_publish.connect(record, weak=False)
    yield ids
    after_task_publish.disconnect(record)


# ------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------
def test_the_copy_holds_the_image_s_files_and_leaves_out_what_dockerignore_excludes(tmp_path):
    (tmp_path / "src" / "app" / "__pycache__").mkdir(parents=True)
    (tmp_path / "src" / "data").mkdir()
    (tmp_path / "src" / "app" / "code.py").write_text("")
    (tmp_path / "src" / "app" / "__pycache__" / "code.pyc").write_text("")
    (tmp_path / "src" / "data" / "db.sqlite3").write_text("")
    (tmp_path / "src" / ".env").write_text("")
    (tmp_path / "src" / ".env.staging").write_text("")
    (tmp_path / "src" / ".env.example").write_text("")
    (tmp_path / "src" / ".dockerignore").write_text("data\n**/__pycache__\n.env\n.env.*\n!.env.example\n")

    build_context_copy(tmp_path / "src", tmp_path / "copy")

    copied = {
        p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*") if p.is_file()
    }
    assert copied == {"app/code.py", ".env.example", ".dockerignore"}


@on_the_services
def test_a_worker_from_a_separate_copy_runs_a_job_the_first_machine_submitted(
    remote_worker, published_batch_tasks, alice
):
    from mlops_site.celery import app
    from monitoring.models import WorkerHeartbeat
    from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start, stored_csv
    from predictions.tests.helpers import make_model_version, trained_model

    make_model_version(trained=trained_model("cancer"), name="cancer")
    app.conf.task_always_eager = False
    rows = cancer_rows(ROWS)

    job = job_start(alice, csv_bytes(rows))

    _wait_for(
        "the job's end",
        remote_worker,
        lambda: job.refresh_from_db() or job.is_terminal,
        JOB_TIMEOUT,
    )
    assert job.status == "succeeded", f"{job.error_message}\n{remote_worker.log()[-4000:]}"
    assert job.rows_done == ROWS
    [task_id] = published_batch_tasks
    assert f"{BATCH_TASK}[{task_id}] received" in remote_worker.log()
    # The task logs its end just after the job's row says so.
    _wait_for(
        "the task's end in the remote worker's log",
        remote_worker,
        lambda: re.search(rf"{re.escape(BATCH_TASK)}\[{task_id}\] succeeded", remote_worker.log()),
        JOB_TIMEOUT,
    )
    # It announced itself in the shared database under its own name (the status page's worker list).
    assert WorkerHeartbeat.objects.filter(hostname=remote_worker.nodename).exists()
    # The result went through S3: the first machine reads it; the other machine kept no file of it.
    assert [row["id"] for row in stored_csv(job.result_key)] == [row["id"] for row in rows]
    kept = [p for p in remote_worker.data_dir.rglob("*") if p.is_file() and p.suffix in (".csv", ".skops")]
    assert kept == []
    _assert_it_ran_the_copy_with_only_the_service_variables(remote_worker)


def _assert_it_ran_the_copy_with_only_the_service_variables(remote_worker: RemoteWorker) -> None:
    code = remote_worker.code
    assert not (code / ".venv").exists()
    assert not (code / "data").exists()
    assert not (code / ".git").exists()
    # Bytecode written in the copy after the worker started: the worker imported the copy's modules.
    for module in (code / "mlops_site" / "celery.py", code / "predictions" / "tasks.py"):
        compiled = list((module.parent / "__pycache__").glob(f"{module.stem}.*.pyc"))
        assert compiled, f"nothing imported {module}"
        assert compiled[0].stat().st_mtime >= remote_worker.started_at - 1
    assert Path(os.readlink(f"/proc/{remote_worker.process.pid}/cwd")) == code
    given = set(remote_worker.environment) - {"PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    assert {name for name in given if not name.startswith(("AWS_", "MLFLOW_"))} == {
        "DATA_DIR",
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
    }
