"""Batch jobs outside a test transaction: the store thread beside the main one, and a real Celery worker."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest
from django.utils import timezone
from kombu import Connection

from mlops_site.celery import app
from predictions import tasks
from predictions.batch import rows as batch_rows
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob, Prediction
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_run, job_start, stored_csv
from predictions.tests.helpers import make_model_version, trained_model

#: Seconds a worker may take to pick the job up and finish it.
JOB_TIMEOUT = 90


class Killed(BaseException):
    """The worker dying mid-job."""


@pytest.fixture
def no_worker(monkeypatch):
    monkeypatch.setattr(batch_services, "_enqueue", lambda job_id: None)


@pytest.mark.django_db(transaction=True)
def test_the_store_thread_stores_every_chunk_in_order(alice, cancer_v1, no_worker, monkeypatch):
    threads: set[str] = set()
    original = batch_rows.rows_insert

    def recording(rows):
        import threading

        threads.add(threading.current_thread().name)
        return original(rows)

    monkeypatch.setattr(batch_rows, "rows_insert", recording)
    rows = cancer_rows(35)
    rows[21]["id"] = "has, a comma"
    job = job_run(job_start(alice, csv_bytes(rows)))

    assert threads == {f"batch-job-{job.pk}-store"}
    assert (job.status, job.chunks_done, job.rows_done) == ("succeeded", 4, 35)
    result = stored_csv(job.result_key)
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    stored = Prediction.objects.filter(batch_job=job).order_by("row_index")
    assert [int(r["prediction_id"]) for r in result] == [p.pk for p in stored]
    assert job.timings["store"] > 0


@pytest.mark.django_db(transaction=True)
def test_a_crash_on_the_store_thread_is_raised_and_the_retry_resumes(
    alice, cancer_v1, no_worker, monkeypatch
):
    original = batch_rows.ids_read
    state = {"crashed": False}

    def crashing(job, *, row_indexes):
        if row_indexes[0] == 20 and not state["crashed"]:
            state["crashed"] = True
            raise Killed("store thread")
        return original(job, row_indexes=row_indexes)

    monkeypatch.setattr(batch_rows, "ids_read", crashing)
    job = job_start(alice, csv_bytes(cancer_rows(35)))

    with pytest.raises(Killed):
        batch_services.batch_prediction_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.rows_done) == ("running", 2, 20)
    assert Prediction.objects.filter(batch_job=job).count() == 20
    BatchPredictionJob.objects.filter(pk=job.pk).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    job = job_run(job)

    assert (job.status, job.rows_done, job.attempts) == ("succeeded", 35, 2)
    assert Prediction.objects.filter(batch_job=job).count() == 35
    assert [r["row"] for r in stored_csv(job.result_key)] == [str(i) for i in range(1, 36)]


@pytest.mark.worker
def test_a_real_worker_runs_a_job_submitted_through_the_service(
    start_celery_worker,
    alice,
    settings,
    tmp_path,
    monkeypatch,
):
    if not settings.AWS_STORAGE_BUCKET_NAME:
        # The worker's file storage is the media folder under its DATA_DIR: store the model and upload there.
        media = tmp_path / "worker-data" / "media"
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
        }
        settings.MEDIA_ROOT = media
    make_model_version(trained=trained_model("cancer"), name="cancer")
    worker = start_celery_worker("filesystem://")
    app.conf.task_always_eager = False

    def send(job_id: int) -> None:
        with Connection(worker.broker_url, transport_options=worker.transport_options) as conn:
            tasks.batch_prediction_run_task.apply_async(args=[job_id], connection=conn)

    monkeypatch.setattr(batch_services, "_enqueue", send)
    rows = cancer_rows(23)
    rows[4]["mean radius"] = "wide"

    job = job_start(alice, csv_bytes(rows))

    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_terminal:
            break
        if worker.process.poll() is not None:
            pytest.fail(f"the worker died:\n{worker.log()[-3000:]}")
        time.sleep(0.2)
    assert job.status == "succeeded", f"{job.status} {job.error_message}\n{worker.log()[-3000:]}"
    assert (job.rows_done, job.rows_failed, job.chunks_done) == (23, 1, 3)
    assert Prediction.objects.filter(batch_job=job).count() == 22
    assert [e["row"] for e in stored_csv(job.errors_key)] == ["5"]
    assert len(stored_csv(job.result_key)) == 23


def _wait_for(job: BatchPredictionJob, worker, done, what: str) -> BatchPredictionJob:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if done(job):
            return job
        if worker.process.poll() is not None:
            pytest.fail(f"the worker died:\n{worker.log()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(
        f"no {what} in {JOB_TIMEOUT}s ({job.status}, {job.chunks_done} chunks):\n{worker.log()[-3000:]}"
    )


@pytest.mark.worker
def test_a_job_whose_worker_was_killed_is_finished_by_another_without_duplicates(
    start_celery_worker, alice, settings, tmp_path, monkeypatch
):
    if not settings.AWS_STORAGE_BUCKET_NAME:
        media = tmp_path / "worker-data" / "media"
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
        }
        settings.MEDIA_ROOT = media
    make_model_version(trained=trained_model("cancer"), name="cancer")
    app.conf.task_always_eager = False
    current: dict[str, object] = {}

    def send(job_id: int) -> None:
        worker = current["worker"]
        with Connection(worker.broker_url, transport_options=worker.transport_options) as conn:
            tasks.batch_prediction_run_task.apply_async(args=[job_id], connection=conn)

    monkeypatch.setattr(batch_services, "_enqueue", send)
    first = current["worker"] = start_celery_worker("filesystem://")
    rows = cancer_rows(2000)
    rows[1234]["mean texture"] = "rough"
    # 200 chunks of 10 rows: long enough to kill the worker in the middle.
    job = job_start(alice, csv_bytes(rows))
    _wait_for(job, first, lambda j: j.chunks_done >= 10, "progress on the first worker")

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    job.refresh_from_db()
    assert job.status == "running"
    assert 10 <= job.chunks_done < 200
    assert Prediction.objects.filter(batch_job=job).count() == job.rows_done - job.rows_failed
    # The dead worker's lease would run out after LEASE_SECONDS; the sweeper then sends the job again.
    BatchPredictionJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    second = current["worker"] = start_celery_worker("filesystem://")
    assert batch_services.batch_prediction_jobs_stale_requeue() == [job.pk]

    job = _wait_for(job, second, lambda j: j.is_terminal, "end of the job on the second worker")
    assert job.status == "succeeded", job.error_message
    assert (job.attempts, job.rows_done, job.rows_failed) == (2, 2000, 1)
    stored = Prediction.objects.filter(batch_job=job)
    assert stored.count() == 1999
    assert len(set(stored.values_list("row_index", flat=True))) == 1999
    result = stored_csv(job.result_key)
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert sorted(int(r["prediction_id"]) for r in result if r["prediction_id"]) == sorted(
        stored.values_list("pk", flat=True)
    )
    assert [e["row"] for e in stored_csv(job.errors_key)] == ["1235"]
