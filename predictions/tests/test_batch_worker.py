"""Batch jobs outside a test transaction: chunk tasks sent on commit, and real Celery workers."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time

import pytest
from django.utils import timezone
from kombu import Connection

from mlops_site.celery import app
from predictions import tasks
from predictions.batch import chunk_runs as batch_chunk_runs
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import rows as batch_rows
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob, Prediction
from predictions.tests.batch_helpers import Killed, cancer_rows, csv_bytes, job_run, job_start, stored_csv
from predictions.tests.helpers import make_model_version, trained_model

#: A chunk task's log line when it stored its chunk (not skipped, busy or failed).
CHUNK_STORED = re.compile(r"batch chunk ([0-9]+) stored")
#: Seconds a worker may take to pick the job up and finish it.
JOB_TIMEOUT = 90


def _worker_storage(settings, tmp_path) -> None:
    """Without S3, the worker's file storage is the media folder under its DATA_DIR: the test stores the
    model and the upload there too."""
    if not settings.AWS_STORAGE_BUCKET_NAME:
        media = tmp_path / "worker-data" / "media"
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
        }
        settings.MEDIA_ROOT = media


@pytest.fixture
def no_worker(monkeypatch):
    monkeypatch.setattr(batch_job_specs, "job_enqueue", lambda job_id: None)


@pytest.mark.django_db(transaction=True)
def test_outside_a_test_transaction_each_chunk_is_sent_to_its_task_and_counted_once(
    alice, cancer_v1, no_worker, monkeypatch
):
    sent: list[int] = []
    original = batch_chunk_runs.batch_chunk_run

    def recording(*, chunk_id):
        sent.append(chunk_id)
        return original(chunk_id=chunk_id)

    # The chunk tasks run eagerly as each chunk is committed, before the job works on any chunk itself.
    monkeypatch.setattr(batch_chunk_runs, "batch_chunk_run", recording)
    rows = cancer_rows(35)
    rows[21]["id"] = "has, a comma"
    job = job_run(job_start(alice, csv_bytes(rows)))

    assert sorted(sent) == sorted(job.chunks.values_list("pk", flat=True))
    assert set(job.chunks.values_list("status", "claimed_by_job", "attempts")) == {("succeeded", False, 1)}
    assert (job.status, job.chunks_done, job.rows_done) == ("succeeded", 4, 35)
    result = stored_csv(job.result_key)
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    stored = Prediction.objects.filter(batch_job=job).order_by("row_index")
    assert [int(r["prediction_id"]) for r in result] == [p.pk for p in stored]
    assert job.timings["store"] > 0


@pytest.mark.django_db(transaction=True)
def test_a_crash_inside_a_chunks_transaction_stores_nothing_of_it_and_the_retry_redoes_it(
    alice, cancer_v1, no_worker, monkeypatch
):
    original = batch_rows.ids_read
    state = {"crashed": False}

    def crashing(job, *, row_indexes, **counted):
        if row_indexes[0] == 20 and not state["crashed"]:
            state["crashed"] = True
            raise Killed("chunk transaction")
        return original(job, row_indexes=row_indexes, **counted)

    monkeypatch.setattr(batch_rows, "ids_read", crashing)
    job = job_start(alice, csv_bytes(cancer_rows(35)))

    with pytest.raises(Killed):
        batch_services.batch_prediction_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.rows_done) == ("running", 2, 20)
    assert Prediction.objects.filter(batch_job=job).count() == 20
    expired = timezone.now() - dt.timedelta(seconds=1)
    BatchPredictionJob.objects.filter(pk=job.pk).update(lease_expires_at=expired)
    job.chunks.filter(status="running").update(lease_expires_at=expired)

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
    _worker_storage(settings, tmp_path)
    make_model_version(trained=trained_model("cancer"), name="cancer")
    worker = start_celery_worker("filesystem://")
    app.conf.task_always_eager = False

    _send_to(worker, monkeypatch)
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


def _send_to(worker, monkeypatch) -> None:
    """Send the job's and its chunks' tasks to the worker's broker."""

    def send(task, object_id: int) -> None:
        with Connection(worker.broker_url, transport_options=worker.transport_options) as conn:
            task.apply_async(args=[object_id], connection=conn)

    monkeypatch.setattr(
        batch_job_specs, "job_enqueue", lambda job_id: send(tasks.batch_prediction_run_task, job_id)
    )
    monkeypatch.setattr(
        batch_job_specs, "chunk_enqueue", lambda chunk_id: send(tasks.batch_chunk_run_task, chunk_id)
    )


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
    _worker_storage(settings, tmp_path)
    make_model_version(trained=trained_model("cancer"), name="cancer")
    app.conf.task_always_eager = False
    first = start_celery_worker("filesystem://")
    _send_to(first, monkeypatch)
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
    # The dead worker's leases (the job's, the chunk it was predicting) would run out after LEASE_SECONDS;
    # the sweeper then sends the job and that chunk again.
    BatchPredictionJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    job.chunks.filter(status="running").update(lease_expires_at=timezone.now())
    second = start_celery_worker("filesystem://")
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


@pytest.mark.worker
def test_two_workers_share_the_chunks_of_one_job_and_store_each_row_once(
    start_celery_worker, alice, settings, tmp_path, monkeypatch
):
    _worker_storage(settings, tmp_path)
    make_model_version(trained=trained_model("cancer"), name="cancer")
    app.conf.task_always_eager = False
    # Both consume the same embedded broker (one DATA_DIR).
    first = start_celery_worker("filesystem://")
    second = start_celery_worker("filesystem://")
    _send_to(first, monkeypatch)
    send_chunk = batch_job_specs.chunk_enqueue
    cut: list[int] = []
    monkeypatch.setattr(batch_job_specs, "chunk_enqueue", cut.append)
    monkeypatch.setattr(batch_job_specs, "job_enqueue", lambda job_id: None)
    rows = cancer_rows(1500)
    rows[777]["mean texture"] = "rough"
    job = job_start(alice, csv_bytes(rows))
    # The job's attempt runs here: it cuts the file into 150 chunks of 10 rows, but finds every chunk
    # taken (as when the workers are quicker than the cut), so it leaves them all to the two workers and
    # waits; the worker storing the last chunk finishes the job.
    original = batch_chunk_runs.chunks_walk

    def taken(spec, **walk):
        return None if spec is batch_job_specs.CHUNKS_IN_JOB else original(spec, **walk)

    monkeypatch.setattr(batch_chunk_runs, "chunks_walk", taken)
    assert batch_services.batch_prediction_run(job_id=job.pk).status == "waiting"
    # The tasks of chunks 0 and 75 go first: a worker takes one message at a time, so each worker gets
    # one of them and walks on from there; the other tasks follow and find their chunks stored. (Sent in
    # file order, the first worker's walk could store every chunk of 10 rows before the second polled.)
    assert len(cut) == 150
    for chunk_id in [cut[0], cut[75], *cut[1:75], *cut[76:]]:
        send_chunk(chunk_id)

    job = _wait_for(job, first, lambda j: j.is_terminal, "end of the job")

    assert job.status == "succeeded", job.error_message
    assert (job.chunks_total, job.chunks_done, job.rows_done, job.rows_failed) == (150, 150, 1500, 1)
    assert job.attempts == 1  # the finishing worker's claim (the waiting attempt handed its own back)
    # Each worker logs every chunk it stored: its tasks' own, and the free ones it went on with.
    stored_by = [CHUNK_STORED.findall(w.log()) for w in (first, second)]
    assert all(stored_by), (stored_by, [w.log()[-2000:] for w in (first, second)])
    chunk_ids = sorted(job.chunks.values_list("pk", flat=True))
    assert sorted(int(c) for c in stored_by[0] + stored_by[1]) == chunk_ids
    assert set(job.chunks.values_list("status", "attempts", "claimed_by_job")) == {("succeeded", 1, False)}
    stored = Prediction.objects.filter(batch_job=job)
    assert stored.count() == 1499
    assert len(set(stored.values_list("row_index", flat=True))) == 1499
    result = stored_csv(job.result_key)
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert [e["row"] for e in stored_csv(job.errors_key)] == ["778"]
