"""Workers killed mid feedback import: the import resumes and every outcome and rollup is counted once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone

from feedback import reconcile
from feedback.imports import services as import_services
from feedback.models import DelayHourly, Feedback, FeedbackChange, FeedbackImport, QualityHourly
from feedback.tests.import_helpers import csv_bytes, import_start, predictions_of
from predictions.tests.helpers import make_model_version, trained_model
from tests.faults.conftest import pool_children, wait_for

JOB_TIMEOUT = 120
# 200 chunks of 10 rows: long enough to hit the worker in the middle.
PREDICTIONS = 2000
CHUNK_ROWS = 10


@pytest.fixture
def feedback_site(transactional_db, settings, shared_media, broker_in_test, redis_server):
    """A 'cancer' model, import files cut in chunks of 10 rows, and messages sent to a Redis of the test's."""
    settings.FEEDBACK_IMPORT_CHUNK_ROWS = CHUNK_ROWS
    make_model_version(trained=trained_model("cancer"), name="cancer")
    redis = redis_server()
    broker_in_test(redis.url)
    return redis


@pytest.fixture
def outcomes(feedback_site, alice, staff) -> tuple[bytes, int, int]:
    """A file of outcomes for every prediction, with a refused row every 100 (unknown, or named before).

    Returns the file, the rows to store and the rows to refuse.
    """
    predictions = [p for _ in range(PREDICTIONS // 1000) for p in predictions_of(alice, 1000)]
    rows: list[list[object]] = []
    for position, prediction in enumerate(predictions):
        rows.append([prediction.pk, "benign" if position % 3 else "malignant"])
        if position % 100 == 50:
            # An unknown id, then (in another chunk) a prediction named on an earlier row.
            rows.append(
                [10**12 + position, "benign"] if position % 200 == 50 else [predictions[0].pk, "benign"]
            )
    return csv_bytes(["prediction_id", "true_label"], rows), len(predictions), len(rows) - len(predictions)


def _job(job_id: int) -> FeedbackImport:
    return FeedbackImport.objects.get(pk=job_id)


def assert_counted_once(job: FeedbackImport, *, stored: int, refused: int) -> None:
    assert job.status == "succeeded", job.error_message
    assert (job.rows_done, job.rows_failed, job.rows_total) == (stored + refused, refused, stored + refused)
    assert (job.rows_created, job.rows_updated, job.rows_unchanged) == (stored, 0, 0)
    assert Feedback.objects.count() == stored
    assert not FeedbackChange.objects.exists()
    assert sum(QualityHourly.objects.values_list("n", flat=True)) == stored
    assert sum(DelayHourly.objects.values_list("n", flat=True)) == stored
    assert reconcile.quality_reconcile().differences == []


def test_a_feedback_import_whose_pool_child_is_killed_resumes_and_counts_every_row_once(
    outcomes, start_celery_worker, feedback_site, staff, figures
):
    data, stored, refused = outcomes
    worker = start_celery_worker(feedback_site.url, pool="prefork")
    job = import_start(staff, data)
    wait_for(lambda: _job(job.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=worker.log)

    (child,) = pool_children(worker.process.pid)
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    done_at_kill = _job(job.pk).chunks_done
    wait_for(
        lambda: _job(job.pk).attempts == 2 and _job(job.pk).chunks_done > done_at_kill,
        "the import's resumption on a new pool child",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )
    resumed = time.monotonic() - killed_at
    job = wait_for(
        lambda: (j := _job(job.pk)).is_terminal and j, "the end", timeout=JOB_TIMEOUT, log=worker.log
    )

    assert_counted_once(job, stored=stored, refused=refused)
    assert job.attempts == 2
    assert done_at_kill < job.chunks_done
    figures(seconds_to_resume=round(resumed, 1), chunks_done_at_kill=done_at_kill, rows_stored=stored)


def test_a_feedback_import_whose_worker_is_killed_is_finished_once_by_another_worker(
    outcomes, start_celery_worker, feedback_site, staff, figures
):
    data, stored, refused = outcomes
    first = start_celery_worker(feedback_site.url)
    job = import_start(staff, data)
    wait_for(lambda: _job(job.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=first.log)

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()
    at_kill = _job(job.pk)
    assert at_kill.status == "running"
    assert at_kill.rows_created == Feedback.objects.count() < stored
    # Nothing is left to end the dead worker's lease: it runs out after LEASE_SECONDS, then the sweep
    # (every minute, on beat) sends the import again. Here the lease is ended by hand.
    FeedbackImport.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    second = start_celery_worker(feedback_site.url)
    assert import_services.feedback_imports_stale_requeue() == [job.pk]

    job = wait_for(
        lambda: (j := _job(job.pk)).is_terminal and j, "the end", timeout=JOB_TIMEOUT, log=second.log
    )
    drained = time.monotonic() - killed_at

    assert_counted_once(job, stored=stored, refused=refused)
    assert job.attempts == 2
    figures(
        seconds_to_finish_after_kill=round(drained, 1),
        chunks_done_at_kill=at_kill.chunks_done,
        rows_stored=stored,
        rows_refused=refused,
    )
