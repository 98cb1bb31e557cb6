"""The feedback import task (run eagerly): harmless twice, resumes after a crash without counting twice."""

from __future__ import annotations

import datetime as dt
import threading
from unittest import mock

import pytest
from celery.exceptions import Retry
from django.contrib.auth import get_user_model
from django.db import OperationalError
from django.utils import timezone

from feedback import reconcile, tasks
from feedback import services as feedback_services
from feedback.imports import chunks as import_chunks
from feedback.imports import services as import_services
from feedback.models import Feedback, FeedbackChange, FeedbackImport, QualityHourly
from feedback.tests.import_helpers import csv_bytes, import_start, predictions_of
from mlops_site import storage
from tests.factories import make_user

pytestmark = pytest.mark.django_db

User = get_user_model()


class Killed(BaseException):
    """The worker dying mid-import: not an Exception, so the service neither catches nor records it."""


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    monkeypatch.setattr(import_services, "_enqueue", lambda import_id: None)


@pytest.fixture
def job(cancer_v1, alice, staff, settings):
    settings.FEEDBACK_IMPORT_CHUNK_ROWS = 2
    predictions = predictions_of(alice, 5)
    rows = [[p.pk, "benign"] for p in predictions] + [[999_999, "benign"]]
    return import_start(staff, csv_bytes(["prediction_id", "true_label"], rows))


def fail_store_on_chunk(monkeypatch, chunk: int, error: BaseException) -> None:
    """Storing the chunk's outcomes raises `error` once, on the given chunk (counted from 0)."""
    original = feedback_services.feedback_store
    calls = {"n": 0, "raised": False}

    def store(checked, **kwargs):
        if calls["n"] == chunk and not calls["raised"]:
            calls["raised"] = True
            raise error
        calls["n"] += 1
        return original(checked, **kwargs)

    monkeypatch.setattr(feedback_services, "feedback_store", store)


def assert_imported_once(job: FeedbackImport) -> None:
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed, job.rows_total) == ("succeeded", 6, 1, 6)
    assert (job.rows_created, job.rows_updated, job.rows_unchanged) == (5, 0, 0)
    assert Feedback.objects.count() == 5
    assert not FeedbackChange.objects.exists()
    assert sum(QualityHourly.objects.values_list("n", flat=True)) == 5
    assert reconcile.quality_reconcile().differences == []


def test_running_the_task_twice_stores_and_counts_every_row_once(job):
    first = tasks.feedback_import_run_task.apply(args=[job.pk]).get()
    second = tasks.feedback_import_run_task.apply(args=[job.pk]).get()

    assert (first, second) == ("succeeded", "skipped")
    assert_imported_once(job)
    assert job.attempts == 1


def test_a_worker_killed_mid_import_resumes_after_the_last_committed_chunk(job, monkeypatch):
    fail_store_on_chunk(monkeypatch, 1, Killed())

    with pytest.raises(Killed):
        tasks.feedback_import_run_task.apply(args=[job.pk], throw=True)
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.rows_done, job.rows_created) == ("running", 1, 2, 2)
    assert Feedback.objects.count() == 2
    # The lease of the dead worker runs out (or its pool child's death ends it).
    FeedbackImport.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))

    assert tasks.feedback_import_run_task.apply(args=[job.pk]).get() == "succeeded"
    assert_imported_once(job)
    assert job.attempts == 2


def test_a_transient_error_is_retried_and_the_retry_resumes_the_import(job, monkeypatch):
    fail_store_on_chunk(monkeypatch, 2, OperationalError("the database went away"))

    with (
        mock.patch.object(tasks.feedback_import_run_task, "retry", side_effect=Retry) as retry,
        pytest.raises(Retry),
    ):
        tasks.feedback_import_run_task.apply(args=[job.pk], throw=True)
    assert retry.call_args.kwargs["countdown"] == 30
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.attempts) == ("running", 2, 0)

    assert tasks.feedback_import_run_task.apply(args=[job.pk], retries=1).get() == "succeeded"
    assert_imported_once(job)


def test_an_unexpected_error_fails_the_import_and_keeps_the_chunks_stored_before(job, monkeypatch):
    fail_store_on_chunk(monkeypatch, 1, ValueError("a bug"))

    assert tasks.feedback_import_run_task.apply(args=[job.pk]).get() == "failed"

    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.rows_created) == ("failed", 1, 2)
    assert job.error_message == "Unexpected error (ValueError): a bug"
    assert Feedback.objects.count() == 2
    assert reconcile.quality_reconcile().differences == []


def test_the_sweep_sends_again_an_import_whose_worker_died(job, monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(import_services, "_enqueue", sent.append)
    FeedbackImport.objects.filter(pk=job.pk).update(
        status="running", attempts=1, lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    assert tasks.feedback_imports_stale_requeue_task.apply().get() == 1
    assert sent == [job.pk]


def test_the_task_gives_up_after_the_last_transient_retry_and_fails_the_import(job, monkeypatch):
    def down(*, import_id):
        raise OperationalError("the database is down")

    monkeypatch.setattr(import_services, "feedback_import_run", down)

    result = tasks.feedback_import_run_task.apply(args=[job.pk], retries=6)

    assert result.get() == "failed"
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "Gave up after 7 attempts; the last one failed with: the database is down"


def test_a_retry_drops_the_errors_an_earlier_attempt_wrote_for_rows_it_now_accepts(
    cancer_v1, alice, monkeypatch
):
    uploader = make_user("sam", staff=True)
    (theirs,) = predictions_of(alice, 1)
    job = import_start(uploader, csv_bytes(["prediction_id", "true_label"], [[theirs.pk, "benign"]]))
    User.objects.filter(pk=uploader.pk).update(is_staff=False)
    fail_store_on_chunk(monkeypatch, 0, Killed())
    with pytest.raises(Killed):
        tasks.feedback_import_run_task.apply(args=[job.pk], throw=True)
    assert storage.exists(import_chunks.part_key(job, 0))
    User.objects.filter(pk=uploader.pk).update(is_staff=True)
    FeedbackImport.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))

    assert tasks.feedback_import_run_task.apply(args=[job.pk]).get() == "succeeded"

    job.refresh_from_db()
    assert (job.rows_failed, job.rows_created, job.errors_key) == (0, 1, "")
    assert not storage.exists(import_chunks.part_key(job, 0))


@pytest.mark.django_db(transaction=True)
def test_the_store_thread_stores_chunks_in_order_and_hands_its_error_to_the_import(job, monkeypatch):
    fail_store_on_chunk(monkeypatch, 2, ValueError("a bug"))
    threads = []
    original = import_chunks.chunk_store

    def store(attempt, checked):
        threads.append(threading.current_thread().name)
        return original(attempt, checked)

    monkeypatch.setattr(import_chunks, "chunk_store", store)

    assert import_services.feedback_import_run(import_id=job.pk).status == "failed"

    job.refresh_from_db()
    assert threads == [f"feedback-import-{job.pk}-store"] * 3
    assert (job.status, job.chunks_done, job.rows_created) == ("failed", 2, 4)
    assert job.error_message == "Unexpected error (ValueError): a bug"
    assert Feedback.objects.count() == 4
