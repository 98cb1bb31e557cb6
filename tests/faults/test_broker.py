"""Redis, the broker, restarted or down: no job is lost, no submission answers 500, consumption resumes."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import engine
from mlops_site.celery import waiting_job_ids
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start, upload
from predictions.tests.helpers import make_model_version, trained_model
from tests.faults.conftest import wait_for
from tests.faults.test_workers import BATCH_TASK, JOB_TIMEOUT, LONG_JOB_ROWS, assert_stored_once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cancer_model(settings, shared_media):
    settings.BATCH_CHUNK_ROWS = 10
    make_model_version(trained=trained_model("cancer"), name="cancer")


def _sweep_after_grace() -> list[int]:
    """The stale sweep as beat runs it once QUEUED_GRACE_SECONDS have passed (here without the wait)."""
    later = timezone.now() + timedelta(seconds=engine.QUEUED_GRACE_SECONDS + 1)
    return batch_services.batch_prediction_jobs_stale_requeue(now=later)


def _all_finished(ids: list[int], worker) -> None:
    def finished() -> bool:
        return BatchPredictionJob.objects.filter(
            pk__in=ids, status__in=["succeeded", "failed"]
        ).count() == len(ids)

    wait_for(finished, "every job's end", timeout=JOB_TIMEOUT, log=worker.log)


@pytest.mark.parametrize("persistent", [False, True], ids=["without-persistence", "with-appendonly"])
def test_redis_restarted_with_jobs_queued_loses_none_and_the_running_worker_consumes_again(
    persistent, cancer_model, alice, redis_server, broker_in_test, start_celery_worker, figures
):
    redis = redis_server(persistent=persistent)
    broker_in_test(redis.url)
    worker = start_celery_worker(redis.url)
    long_rows = cancer_rows(LONG_JOB_ROWS)
    running = job_start(alice, csv_bytes(long_rows))
    wait_for(
        lambda: BatchPredictionJob.objects.get(pk=running.pk).chunks_done >= 5,
        "progress on the first job",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )
    rows = cancer_rows(25)
    queued = [job_start(alice, csv_bytes(rows)).pk for _ in range(3)]
    assert waiting_job_ids(BATCH_TASK) == set(queued)

    redis.kill()
    redis.start()
    restarted_at = time.monotonic()
    survived = waiting_job_ids(BATCH_TASK)
    resent = _sweep_after_grace()

    assert survived == (set(queued) if persistent else set())
    assert sorted(resent) == sorted(set(queued) - survived)
    _all_finished([running.pk, *queued], worker)
    drained = time.monotonic() - restarted_at
    stored = assert_stored_once(BatchPredictionJob.objects.get(pk=running.pk), long_rows)
    for job_id in queued:
        job = BatchPredictionJob.objects.get(pk=job_id)
        stored += assert_stored_once(job, rows)
        assert job.attempts == 1
    assert worker.process.poll() is None
    figures(
        messages_queued=len(queued),
        messages_lost=len(queued) - len(survived),
        resent_by_sweep=len(resent),
        seconds_from_restart_to_drained=round(drained, 1),
        rows_stored=stored,
        rows_sent=len(long_rows) + 3 * len(rows),
    )


def test_submissions_while_redis_is_down_are_accepted_and_run_once_it_returns(
    cancer_model, alice, redis_server, broker_in_test, start_celery_worker, figures
):
    redis = redis_server()
    broker_in_test(redis.url)
    redis.kill()
    client = APIClient()
    client.force_authenticate(alice)
    rows = cancer_rows(25)

    answers, seconds = [], []
    for _ in range(3):
        started = time.monotonic()
        response = client.post(
            "/api/models/cancer/batch/", {"file": upload(csv_bytes(rows))}, format="multipart"
        )
        seconds.append(time.monotonic() - started)
        answers.append(response.status_code)
    assert answers == [202, 202, 202]
    jobs = list(BatchPredictionJob.objects.order_by("pk"))
    assert [job.status for job in jobs] == ["queued"] * 3

    redis.start()
    returned_at = time.monotonic()
    worker = start_celery_worker(redis.url)
    assert sorted(_sweep_after_grace()) == [job.pk for job in jobs]
    _all_finished([job.pk for job in jobs], worker)
    ran = time.monotonic() - returned_at

    for job in jobs:
        job.refresh_from_db()
        assert_stored_once(job, rows)
        assert job.attempts == 1
    figures(
        answers=sorted(set(answers)),
        max_seconds_per_submission=round(max(seconds), 2),
        seconds_from_return_to_all_run=round(ran, 1),
    )
