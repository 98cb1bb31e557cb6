"""Training runs on a real Celery worker process, including one that is killed halfway."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.utils import timezone
from kombu import Connection
from mlflow import MlflowClient

from mlops_site.celery import app
from models_registry.models import ModelVersion
from training import services as training_services
from training.models import TrainingRun
from training.tasks import training_run_execute_task
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = pytest.mark.worker

RUN_TIMEOUT = 120
# Big enough that the worker is still fitting when the test kills it.
SLOW_FOREST = {"n_estimators": 400, "max_depth": 12}


def _wait_for(condition: Callable[[], TrainingRun | None], what: str, worker) -> TrainingRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen in {RUN_TIMEOUT}s:\n{worker.log()[-3000:]}")


def _send_through(worker, monkeypatch) -> None:
    """Messages the services send go to this worker's broker, not to the process-wide default."""
    app.conf.task_always_eager = False

    def delay(run_id: int) -> None:
        with Connection(worker.broker_url, transport_options=worker.transport_options) as conn:
            training_run_execute_task.apply_async((run_id,), connection=conn)

    monkeypatch.setattr(training_run_execute_task, "delay", delay)


def _start(start_celery_worker, settings_fixture, tmp_path, broker_url: str):
    worker_data = tmp_path / "worker-data"
    if not settings.AWS_STORAGE_BUCKET_NAME:
        # The worker's file storage is DATA_DIR/media; the test must read and write the same files.
        settings_fixture.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(worker_data / "media")}},
        }
    return start_celery_worker(broker_url)


def _status(run_id: int, *statuses: str) -> Callable[[], TrainingRun | None]:
    return lambda: TrainingRun.objects.filter(pk=run_id, status__in=statuses).first()


def _train_on_a_worker(start_celery_worker, settings_fixture, tmp_path, monkeypatch, broker_url: str) -> None:
    worker = _start(start_celery_worker, settings_fixture, tmp_path, broker_url)
    _send_through(worker, monkeypatch)
    version = dataset_upload(cancer_frame(), name="cancer", target="diagnosis")

    run = training_services.training_run_create(
        dataset_version=version,
        model_name="cancer",
        algorithm="random_forest",
        params={"n_estimators": 10, "max_depth": 4},
        created_by=None,
    )

    done = _wait_for(_status(run.pk, "succeeded", "failed"), "the run's end", worker)
    assert done.status == "succeeded", done.error_message
    assert ModelVersion.objects.filter(training_run=done).count() == 1


def test_a_real_worker_on_the_embedded_broker_trains_and_registers_a_model(
    start_celery_worker, settings, tmp_path, monkeypatch
):
    _train_on_a_worker(start_celery_worker, settings, tmp_path, monkeypatch, "filesystem://")


@pytest.mark.redis
def test_a_real_worker_on_redis_trains_and_registers_a_model(
    start_celery_worker, settings, tmp_path, monkeypatch
):
    _train_on_a_worker(start_celery_worker, settings, tmp_path, monkeypatch, settings.REDIS_URL)


def test_a_run_whose_worker_was_killed_is_finished_by_another_worker_once(
    start_celery_worker, settings, tmp_path, monkeypatch
):
    first = _start(start_celery_worker, settings, tmp_path, "filesystem://")
    _send_through(first, monkeypatch)
    version = dataset_upload(cancer_frame(rows=400), name="cancer", target="diagnosis")
    run = training_services.training_run_create(
        dataset_version=version,
        model_name="cancer",
        algorithm="random_forest",
        params=SLOW_FOREST,
        created_by=None,
    )
    _wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, status="running", progress__gte=15).first(),
        "the first worker's start on the run",
        first,
    )

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert TrainingRun.objects.get(pk=run.pk).status == "running"
    # The dead worker's lease would run out after LEASE_SECONDS; the sweeper then sends the run again.
    TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now())
    second = start_celery_worker("filesystem://")
    _send_through(second, monkeypatch)
    assert training_services.training_runs_stale_requeue() == [run.pk]

    done = _wait_for(_status(run.pk, "succeeded", "failed"), "the second worker's end of the run", second)
    assert done.status == "succeeded", done.error_message
    assert done.attempts == 2
    model_version = ModelVersion.objects.get(training_run=done)
    in_mlflow = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI).search_model_versions("name='cancer'")
    assert [int(v.version) for v in in_mlflow] == [model_version.mlflow_version]
