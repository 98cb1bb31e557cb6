"""Starting feedback imports: the upload's checks, each refusal with nothing stored, and the queued job."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import PermissionDenied

from feedback.imports import services as import_services
from feedback.models import FeedbackImport
from feedback.tests.import_helpers import csv_bytes, import_start, upload
from mlops_site import storage
from predictions.tests.batch_helpers import storage_keys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr(import_services, "_enqueue", queued.append)
    return queued


def refusal(user, data: bytes, *, model: str | None = None) -> list[tuple[str | None, str]]:
    with pytest.raises(import_services.FeedbackImportInvalid) as caught:
        import_start(user, data, model=model)
    assert caught.value.detail.endswith("nothing was stored.")
    return [(p["field"], p["message"]) for p in caught.value.errors]


def assert_nothing_stored() -> None:
    assert not FeedbackImport.objects.exists()
    assert storage_keys("feedback-imports") == set()


def test_an_accepted_file_is_stored_and_queued_once_committed(
    cancer_v1, staff, sent, django_capture_on_commit_callbacks
):
    data = csv_bytes(["Prediction_ID ", "true_label"], [[1, "benign"], [2, "malignant"]], newline="\r\n")

    with django_capture_on_commit_callbacks(execute=True):
        job = import_start(staff, data, model="cancer", name="../outcomes.csv")

    assert sent == [job.pk]
    assert (job.status, job.user, job.registered_model.name) == ("queued", staff, "cancer")
    assert (job.original_filename, job.input_size_bytes, job.rows_total) == ("outcomes.csv", len(data), 2)
    assert job.chunk_rows == 20_000
    assert storage.read_bytes(job.input_key) == data
    assert job.input_key == f"feedback-imports/{job.uuid}/input.csv"


HEADER_REFUSALS = [
    (b"", "The file is empty."),
    (b"prediction_id,true_label\n", "The file has a header row but no data rows."),
    (
        b"prediction_id,true_label,score\n1,a,2\n",
        "Unknown column 'score'. A feedback file has these columns: ",
    ),
    (b"true_label\nbenign\n", "The file does not name predictions: give a 'prediction_id' column, "),
    (b"prediction_id,comment\n1,hi\n", "The file gives no outcomes: add a 'true_label' column"),
    (b"prediction_id,batch_job,row,true_label\n1,x,1,a\n", "Name the predictions one way: "),
    (
        b"batch_job,true_label\nx,a\n",
        "A file of batch rows needs both 'batch_job' and 'row' columns; it lacks 'row'.",
    ),
    (
        b"prediction_id,Prediction_id,true_label\n1,1,a\n",
        "Column names must be unique; these appear more than once",
    ),
    (b"prediction_id;true_label\n1;a\n", "The file seems to separate fields with semicolons"),
    (b"prediction_id,true_label\n1,\xe9t\xe9\n", "The file is not valid UTF-8: byte 0xE9 at offset 27"),
    (b"PK\x03\x04 not a csv", "This is not a CSV file: it looks like a ZIP archive"),
]


@pytest.mark.parametrize(("data", "message"), HEADER_REFUSALS)
def test_a_file_with_a_bad_header_or_bytes_is_refused_with_a_clear_message(cancer_v1, staff, data, message):
    found = refusal(staff, data)

    assert any(text.startswith(message) for _, text in found), found
    assert_nothing_stored()


def test_a_file_of_keys_must_name_its_model(cancer_v1, staff):
    assert refusal(staff, b"key,true_label\nk-1,benign\n") == [
        ("model", "A file of keys must name its model (keys are unique per model): choose the model.")
    ]
    assert_nothing_stored()


def test_an_unknown_model_is_refused(cancer_v1, staff):
    assert refusal(staff, b"key,true_label\nk-1,benign\n", model="nope") == [
        ("model", "There is no registered model named 'nope'.")
    ]
    assert_nothing_stored()


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(cancer_v1, staff, settings):
    settings.FEEDBACK_IMPORT_MAX_UPLOAD_MB = 1
    data = b"prediction_id,true_label\n" + b"1,benign\n" * 120_000

    assert refusal(staff, data) == [("file", "The file is 1.0 MB; at most 1 MB are accepted.")]
    assert_nothing_stored()


def test_a_stream_larger_than_the_limit_is_refused_while_it_is_read(cancer_v1, staff, settings):
    settings.FEEDBACK_IMPORT_MAX_UPLOAD_MB = 1
    stream = io.BytesIO(b"prediction_id,true_label\n" + b"1,benign\n" * 120_000)

    with pytest.raises(import_services.FeedbackImportInvalid) as caught:
        import_services.feedback_import_start(user=staff, file=stream, filename="big.csv")

    assert caught.value.problems == ["The file is larger than the upload limit of 1 MB."]
    assert_nothing_stored()


def test_only_staff_may_import(cancer_v1, alice):
    with pytest.raises(PermissionDenied):
        import_services.feedback_import_start(
            user=alice, file=upload(b"prediction_id,true_label\n1,benign\n"), filename="x.csv"
        )
    assert_nothing_stored()


def test_a_storage_outage_stores_nothing(cancer_v1, staff, monkeypatch):
    def down(key, content):
        raise storage.StorageError("storage is down")

    monkeypatch.setattr(storage, "put", down)

    with pytest.raises(storage.StorageError):
        import_start(staff, b"prediction_id,true_label\n1,benign\n")
    assert not FeedbackImport.objects.exists()
