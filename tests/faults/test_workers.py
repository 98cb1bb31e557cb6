"""Workers killed, stopped and crashed mid-job: every job ends once, every row is stored once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone
from mlflow import MlflowClient

from mlops_site.celery import waiting_job_ids
from models_registry.models import ModelVersion
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob, Prediction
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start, stored_csv, upload
from predictions.tests.helpers import make_model_version, trained_model
from tests.faults.conftest import pool_children, wait_for
from training import services as training_services
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload

JOB_TIMEOUT = 120
BATCH_TASK = "predictions.tasks.batch_prediction_run_task"
# 100 chunks of 10 rows: long enough to hit the worker in the middle.
LONG_JOB_ROWS = 1000


@pytest.fixture
def batch_site(settings, shared_media, alice, broker_in_test, redis_server):
    """A 'cancer' model, batch files cut in chunks of 10 rows, and messages sent to a Redis of the test's."""
    settings.BATCH_CHUNK_ROWS = 10
    make_model_version(trained=trained_model("cancer"), name="cancer")
    redis = redis_server()
    broker_in_test(redis.url)
    return redis


def _job(job_id: int) -> BatchPredictionJob:
    return BatchPredictionJob.objects.get(pk=job_id)


def _finished(job_id: int, worker, what: str = "the job's end") -> BatchPredictionJob:
    return wait_for(lambda: (j := _job(job_id)).is_terminal and j, what, timeout=JOB_TIMEOUT, log=worker.log)


def assert_stored_once(job: BatchPredictionJob, rows: list[dict]) -> int:
    assert job.status == "succeeded", job.error_message
    stored = Prediction.objects.filter(batch_job=job)
    assert stored.count() == job.rows_done - job.rows_failed == len(rows) - job.rows_failed
    assert len(set(stored.values_list("row_index", flat=True))) == stored.count()
    assert [r["id"] for r in stored_csv(job.result_key)] == [r["id"] for r in rows]
    return stored.count()


def test_a_batch_job_whose_pool_child_is_killed_resumes_at_once_on_a_new_child(
    batch_site, start_celery_worker, alice, figures
):
    worker = start_celery_worker(batch_site.url, pool="prefork")
    rows = cancer_rows(LONG_JOB_ROWS)
    job = job_start(alice, csv_bytes(rows))
    wait_for(lambda: _job(job.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=worker.log)

    (child,) = pool_children(worker.process.pid)
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    done_at_kill = _job(job.pk).chunks_done
    wait_for(
        lambda: _job(job.pk).attempts == 2 and _job(job.pk).chunks_done > done_at_kill,
        "the job's resumption on a new pool child",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )
    resumed = time.monotonic() - killed_at
    job = _finished(job.pk, worker)

    stored = assert_stored_once(job, rows)
    assert job.attempts == 2
    assert "its worker process died" in worker.log()
    figures(seconds_to_resume=round(resumed, 1), rows_stored=stored, rows_sent=len(rows), attempts=2)


def test_a_training_run_whose_pool_child_is_killed_is_finished_once(
    settings, shared_media, broker_in_test, redis_server, start_celery_worker, figures
):
    redis = redis_server()
    broker_in_test(redis.url)
    worker = start_celery_worker(redis.url, pool="prefork")
    version = dataset_upload(cancer_frame(rows=400), name="cancer", target="diagnosis")
    run = training_services.training_run_create(
        dataset_version=version,
        model_name="cancer",
        algorithm="random_forest",
        params={"n_estimators": 400, "max_depth": 12},
        created_by=None,
    )
    wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, status="running", progress__gte=15).exists(),
        "the run's start",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )

    (child,) = pool_children(worker.process.pid)
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, attempts=2).exists(),
        "a second claim of the run",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )
    reclaimed = time.monotonic() - killed_at
    done = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, status__in=["succeeded", "failed"]).first(),
        "the run's end",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )

    assert done.status == "succeeded", done.error_message
    assert done.attempts == 2
    model_version = ModelVersion.objects.get(training_run=done)
    in_mlflow = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI).search_model_versions("name='cancer'")
    assert [int(v.version) for v in in_mlflow] == [model_version.mlflow_version]
    figures(seconds_to_reclaim=round(reclaimed, 1), model_versions=1, mlflow_versions=len(in_mlflow))


def test_a_killed_worker_leaves_no_queued_job_behind_and_its_running_one_is_finished_once(
    batch_site, start_celery_worker, alice, figures
):
    first = start_celery_worker(batch_site.url)
    long_rows = cancer_rows(LONG_JOB_ROWS)
    running = job_start(alice, csv_bytes(long_rows))
    queued_rows = cancer_rows(25)
    queued = [job_start(alice, csv_bytes(queued_rows)) for _ in range(3)]
    wait_for(lambda: _job(running.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=first.log)

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()
    assert {j.pk for j in queued} <= waiting_job_ids(BATCH_TASK)
    # Nothing is left to end the dead worker's lease: it runs out after LEASE_SECONDS, then the sweep
    # (every minute, on beat) sends the job again. Here the lease is ended by hand.
    BatchPredictionJob.objects.filter(pk=running.pk).update(lease_expires_at=timezone.now())
    second = start_celery_worker(batch_site.url)
    assert batch_services.batch_prediction_jobs_stale_requeue() == [running.pk]

    for job in [running, *queued]:
        _finished(job.pk, second, "every job's end")
    drained = time.monotonic() - killed_at

    stored = assert_stored_once(_job(running.pk), long_rows)
    for job in queued:
        assert_stored_once(_job(job.pk), queued_rows)
        assert _job(job.pk).attempts == 1
    figures(
        seconds_to_drain_after_restart=round(drained, 1),
        jobs=4,
        rows_stored=stored + 3 * len(queued_rows),
        rows_sent=len(long_rows) + 3 * len(queued_rows),
    )


def test_a_worker_told_to_stop_hands_its_batch_job_back_at_once(
    batch_site, start_celery_worker, alice, figures
):
    first = start_celery_worker(batch_site.url, pool="prefork")
    rows = cancer_rows(LONG_JOB_ROWS)
    job = job_start(alice, csv_bytes(rows))
    wait_for(lambda: _job(job.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=first.log)

    # What `docker stop` and `make run`'s supervisor send: SIGTERM to the worker's main process only.
    os.kill(first.process.pid, signal.SIGTERM)
    asked_at = time.monotonic()
    first.process.wait(timeout=JOB_TIMEOUT)
    stopped = time.monotonic() - asked_at
    handed_back = _job(job.pk)
    assert handed_back.status == "running"
    assert handed_back.lease_expires_at <= timezone.now()
    assert handed_back.attempts == 0
    assert handed_back.chunks_done < LONG_JOB_ROWS // 10
    assert waiting_job_ids(BATCH_TASK) == {job.pk}

    second = start_celery_worker(batch_site.url, pool="prefork")
    job = wait_for(
        lambda: (j := _job(job.pk)).is_terminal and j, "the job's end", timeout=JOB_TIMEOUT, log=second.log
    )
    stored = assert_stored_once(job, rows)
    assert job.attempts == 1
    figures(
        seconds_until_worker_exit=round(stopped, 1),
        chunks_done_when_handed_back=handed_back.chunks_done,
        rows_stored=stored,
        rows_sent=len(rows),
    )


def test_a_job_that_kills_its_worker_every_time_is_failed_after_a_bounded_number_of_deliveries(
    batch_site, start_celery_worker, alice, figures
):
    worker = start_celery_worker(batch_site.url, pool="prefork", app="tests.faults.poison_app")
    rows = cancer_rows(25)
    poison = batch_services.batch_prediction_start(
        registered_model_name="cancer",
        input_file=upload(csv_bytes(rows)),
        filename="poison.csv",
        requested_by=alice,
    )
    started = time.monotonic()

    poison = wait_for(
        lambda: (j := _job(poison.pk)).is_terminal and j,
        "the poison job's end",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )
    given_up = time.monotonic() - started

    assert poison.status == "failed"
    assert "interrupted 3 times" in poison.error_message
    assert poison.attempts == batch_job_specs.MAX_ATTEMPTS + 1
    assert not Prediction.objects.filter(batch_job=poison).exists()
    healthy = job_start(alice, csv_bytes(rows))
    healthy = wait_for(
        lambda: (j := _job(healthy.pk)).is_terminal and j, "the next job's end", timeout=JOB_TIMEOUT
    )
    assert_stored_once(healthy, rows)
    figures(deliveries=poison.attempts, seconds_until_failed=round(given_up, 1), reason=poison.error_message)
