"""Tests of the batch Celery tasks (run eagerly): idempotent runs, transient retries, failure marking."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from jobs import policy as leased_tasks
from mlops_site import storage
from predictions import tasks
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import outputs as batch_outputs
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob, Prediction
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start, stored_csv


@pytest.fixture
def job(alice, cancer_v1, monkeypatch):
    monkeypatch.setattr(batch_job_specs, "job_enqueue", lambda job_id: None)
    return job_start(alice, csv_bytes(cancer_rows(25)))


def test_running_the_task_twice_predicts_and_stores_every_row_once(job):
    first = tasks.batch_prediction_run_task.apply(args=[job.pk]).get()
    result = stored_csv(BatchPredictionJob.objects.get(pk=job.pk).result_key)
    second = tasks.batch_prediction_run_task.apply(args=[job.pk]).get()

    job.refresh_from_db()
    assert (first, second) == ("succeeded", "skipped")
    assert (job.status, job.rows_done, job.attempts) == ("succeeded", 25, 1)
    assert Prediction.objects.filter(batch_job=job).count() == 25
    assert stored_csv(job.result_key) == result


def test_a_transient_error_is_retried_and_the_retry_resumes_the_job(job, monkeypatch):
    original = batch_outputs.object_replace
    failures = {"left": 1}

    def flaky(key, content):
        if "result-000001" in key and failures["left"]:
            failures["left"] -= 1
            raise storage.StorageError("storage write failed: connection reset")
        return original(key, content)

    monkeypatch.setattr(batch_outputs, "object_replace", flaky)

    with (
        mock.patch.object(tasks.batch_prediction_run_task, "retry", side_effect=Retry) as retry,
        pytest.raises(Retry),
    ):
        tasks.batch_prediction_run_task.apply(args=[job.pk], throw=True)
    assert retry.call_args.kwargs["countdown"] == 30
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.attempts) == ("running", 1, 0)

    assert tasks.batch_prediction_run_task.apply(args=[job.pk], retries=1).get() == "succeeded"
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.attempts) == ("succeeded", 25, 1)
    assert Prediction.objects.filter(batch_job=job).count() == 25


def test_it_gives_up_after_the_last_transient_retry_and_fails_the_job(job, monkeypatch):
    def down(*, job_id):
        raise storage.StorageError("storage is down")

    monkeypatch.setattr(batch_services, "batch_prediction_run", down)

    for retries in range(leased_tasks.TRANSIENT_MAX_RETRIES):
        with pytest.raises(Retry):
            tasks.batch_prediction_run_task.apply(args=[job.pk], retries=retries, throw=True)
    result = tasks.batch_prediction_run_task.apply(args=[job.pk], retries=leased_tasks.TRANSIENT_MAX_RETRIES)

    assert result.get() == "failed"
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "Gave up after 7 attempts; the last one failed with: storage is down"


def test_a_job_held_by_another_attempt_is_checked_again_later(job):
    BatchPredictionJob.objects.filter(pk=job.pk).update(
        status="running", attempts=1, lease_expires_at=timezone.now() + dt.timedelta(seconds=30)
    )

    with (
        mock.patch.object(tasks.batch_prediction_run_task, "retry", side_effect=Retry) as retry,
        pytest.raises(Retry),
    ):
        tasks.batch_prediction_run_task.apply(args=[job.pk], throw=True)

    assert 30 <= retry.call_args.kwargs["countdown"] <= 36
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("running", 1)


def test_an_error_escaping_the_service_marks_the_job_failed(job, monkeypatch):
    def broken(*, job_id):
        raise RuntimeError("bug outside the service's handling")

    monkeypatch.setattr(batch_services, "batch_prediction_run", broken)

    result = tasks.batch_prediction_run_task.apply(args=[job.pk], throw=False)

    assert isinstance(result.result, RuntimeError)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "The worker task failed (RuntimeError): bug outside the service's handling"


def test_the_stale_requeue_task_sends_lost_jobs_again(job, monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(batch_job_specs, "job_enqueue", sent.append)
    BatchPredictionJob.objects.filter(pk=job.pk).update(status="running", lease_expires_at=timezone.now())

    assert tasks.batch_prediction_jobs_stale_requeue_task.delay().get() == 1
    assert tasks.batch_prediction_jobs_stale_requeue_task.delay().get() == 1
    assert sent == [job.pk, job.pk]
