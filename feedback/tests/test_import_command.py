"""manage.py feedback_import: queue a file as a staff member, wait for it, report the counts and errors."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from feedback import services as feedback_services
from feedback.imports import services as import_services
from feedback.models import Feedback, FeedbackImport
from feedback.tests.import_helpers import csv_bytes, predictions_of


def run(*args: str) -> str:
    out = StringIO()
    call_command("feedback_import", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def outcomes(tmp_path, cancer_v1, alice):
    """A file of three outcomes, one of them for a prediction that does not exist."""
    predictions_of(alice, 2, keys=["k-1", "k-2"])
    path = tmp_path / "outcomes.csv"
    path.write_bytes(
        csv_bytes(["key", "true_label"], [["k-1", "benign"], ["k-2", "malignant"], ["k-3", "benign"]])
    )
    return path


def test_it_imports_a_file_waits_for_it_and_writes_the_errors_file(
    transactional_db, outcomes, staff, tmp_path
):
    # Celery runs eagerly in the tests: the import is done when its transaction commits.
    errors = tmp_path / "errors.csv"

    out = run(str(outcomes), "--model", "cancer", "--user", "staff", "--errors", str(errors))

    job = FeedbackImport.objects.get()
    assert f"Queued feedback import {job.uuid} of outcomes.csv (about 3 rows)" in out
    assert (
        f"Feedback import {job.uuid} succeeded: 3 rows: 2 created, 0 updated, 0 unchanged, 1 refused." in out
    )
    assert f"Errors file: /feedback/imports/{job.uuid}/errors/" in out
    assert errors.read_text().splitlines() == [
        "row,field,code,message",
        "3,key,not_found,Model 'cancer' has no prediction with key 'k-3' that you may label.",
    ]
    assert Feedback.objects.filter(source="file", labelled_by=staff).count() == 2


def test_no_wait_only_queues_the_import(db, outcomes, staff, monkeypatch):
    monkeypatch.setattr(import_services, "_enqueue", lambda import_id: None)

    out = run(str(outcomes), "--model", "cancer", "--user", "staff", "--no-wait")

    job = FeedbackImport.objects.get()
    assert out.strip().startswith(f"Queued feedback import {job.uuid}")
    assert job.status == "queued"


def test_waiting_gives_up_after_the_timeout_when_no_worker_runs(db, outcomes, staff, monkeypatch):
    monkeypatch.setattr(import_services, "_enqueue", lambda import_id: None)

    with pytest.raises(CommandError, match=r"is still queued after 0 s; is a Celery worker running\?"):
        run(str(outcomes), "--model", "cancer", "--user", "staff", "--timeout", "0")


def test_a_failed_import_is_an_error(transactional_db, outcomes, staff, monkeypatch):
    def broken(checked, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(feedback_services, "feedback_store", broken)

    with pytest.raises(CommandError, match=r"failed after 0 rows: .*Unexpected error \(ValueError\): a bug"):
        run(str(outcomes), "--model", "cancer", "--user", "staff")


def test_a_refused_file_lists_every_problem(db, outcomes, staff):
    with pytest.raises(CommandError) as caught:
        run(str(outcomes), "--user", "staff")

    assert str(caught.value) == (
        "The file was refused; nothing was stored:\n"
        "- A file of keys must name its model (keys are unique per model): choose the model."
    )
    assert not FeedbackImport.objects.exists()


@pytest.mark.parametrize(
    ("user", "message"),
    [("nobody", "No user named 'nobody'."), ("alice", "Only staff members may import feedback files.")],
)
def test_the_user_must_exist_and_be_staff(db, outcomes, user, message):
    with pytest.raises(CommandError, match=message):
        run(str(outcomes), "--model", "cancer", "--user", user)


def test_a_missing_file_is_an_error(db, staff, tmp_path):
    with pytest.raises(CommandError, match=r"Cannot read .*missing\.csv: No such file or directory"):
        run(str(tmp_path / "missing.csv"), "--user", "staff")
