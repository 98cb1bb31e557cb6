"""Tests of batch_prediction_start: cheap upload checks, refusals that store nothing, the queued job."""

from __future__ import annotations

import pytest

from mlops_site import storage
from predictions.batch import job_specs as batch_job_specs
from predictions.errors import BatchUploadInvalid, ModelNotFound, NoVersionInStage
from predictions.models import BatchPredictionJob, PredictionRequest
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start, storage_keys
from predictions.tests.helpers import make_model_version, trained_model

FEATURES = [c["name"] for c in trained_model("cancer").feature_schema]


def refused(user, data: bytes, **options) -> list[str]:
    before = storage_keys()
    with pytest.raises(BatchUploadInvalid) as caught:
        job_start(user, data, **options)
    assert not BatchPredictionJob.objects.exists()
    assert not PredictionRequest.objects.exists()
    assert storage_keys() == before
    return caught.value.problems


def test_it_stores_the_file_and_queues_a_job_for_the_production_version(
    alice, cancer_v1, django_capture_on_commit_callbacks, monkeypatch
):
    sent: list[int] = []
    monkeypatch.setattr(batch_job_specs, "job_enqueue", sent.append)
    data = csv_bytes(cancer_rows(25))
    before = storage_keys()

    with django_capture_on_commit_callbacks(execute=True):
        job = job_start(alice, data)

    assert sent == [job.pk]
    assert (job.status, job.user, job.model_version, job.stage) == ("queued", alice, cancer_v1, "production")
    assert (job.original_filename, job.input_size_bytes, job.chunk_rows) == ("patients.csv", len(data), 10)
    assert job.rows_total == 25
    assert storage.read_bytes(job.input_key) == data
    assert storage_keys() - before == {job.input_key}
    request = job.prediction_request
    assert (request.channel, request.user, request.model_version, request.n_rows) == (
        "batch",
        alice,
        cancer_v1,
        0,
    )
    assert request.request_id == f"batch-{job.uuid.hex}"


def test_a_pinned_version_or_the_staging_version_can_be_asked_for(alice, cancer_v1):
    make_model_version(trained=trained_model("cancer"), name="cancer", version=2, stage="staging")
    data = csv_bytes(cancer_rows(3))

    pinned = job_start(alice, data, version=1)
    staging = job_start(alice, data, stage="staging")

    assert (pinned.model_version.version, pinned.stage) == (1, "")
    assert (staging.model_version.version, staging.stage) == (2, "staging")


def test_it_names_every_missing_feature_column(alice, cancer_v1):
    rows = [{k: v for k, v in row.items() if k not in FEATURES[:2]} for row in cancer_rows(3)]

    problems = refused(alice, csv_bytes(rows))

    assert len(problems) == 1
    assert problems[0].startswith(
        f"The file lacks 2 feature columns of cancer v1: {FEATURES[0]!r}, {FEATURES[1]!r}."
    )


def test_extra_columns_are_allowed_but_not_names_the_result_adds(alice, cancer_v1):
    rows = [{**row, "prediction": "x", "row": "1"} for row in cancer_rows(3)]

    problems = refused(alice, csv_bytes(rows))

    assert problems == [
        "The file already has columns named 'prediction', 'row', which the result adds with the predictions. "
        "Rename or remove them."
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "The file is empty."),
        (b"PK\x03\x04\x14\x00\x06\x00", "This is not a CSV file: it looks like a ZIP archive"),
        (b"%PDF-1.7\n", "This is not a CSV file: it looks like a PDF document"),
        ("name,value\nJos\xe9,1\n".encode("latin-1"), "The file is not valid UTF-8: byte 0xE9 at offset 14"),
        (b"\n\n  \n", "The file is empty: it has no header row and no data."),
        (b"1,2,3\n4,5,6\n", "The first row does not look like a header"),
    ],
)
def test_it_refuses_files_that_are_not_csv_text(alice, cancer_v1, data, expected):
    problems = refused(alice, data)

    assert problems[0].startswith(expected), problems


def test_it_refuses_a_header_without_data_rows(alice, cancer_v1):
    problems = refused(alice, ",".join(FEATURES).encode() + b"\n\n")

    assert problems == ["The file has a header row but no data rows."]


def test_it_refuses_duplicate_or_blank_column_names(alice, cancer_v1):
    header = ["id", "id", *FEATURES, ""]
    data = csv_bytes(cancer_rows(2), header=header)

    problems = refused(alice, data)

    assert problems == [
        f"Column {len(header)} has no name in the header row; every column needs one.",
        "Column names must be unique; these appear more than once: 'id'.",
    ]


def test_it_refuses_semicolon_separated_files_with_a_hint(alice, cancer_v1):
    data = (";".join(FEATURES) + "\n" + ";".join(["1"] * len(FEATURES)) + "\n").encode()

    problems = refused(alice, data)

    assert (
        "The file seems to separate fields with semicolons; only comma-separated files are accepted."
        in problems
    )


def test_it_refuses_a_file_over_the_size_limit_naming_the_limit(alice, cancer_v1, settings):
    settings.BATCH_MAX_UPLOAD_MB = 1
    row = cancer_rows(1)[0]
    data = csv_bytes([{**row, "id": "x" * 2000} for _ in range(600)])
    assert len(data) > 1024 * 1024

    problems = refused(alice, data)

    assert problems == [f"The file is {len(data) / 1024 / 1024:.1f} MB; at most 1 MB are accepted."]


def test_a_model_without_a_production_version_is_a_conflict_and_stores_nothing(alice, db):
    make_model_version(trained=trained_model("cancer"), name="cancer", stage="staging")
    before = storage_keys()

    with pytest.raises(NoVersionInStage, match="has no production version yet"):
        job_start(alice, csv_bytes(cancer_rows(3)))
    assert not BatchPredictionJob.objects.exists()
    assert storage_keys() == before


def test_an_unknown_model_or_version_is_not_found(alice, cancer_v1):
    before = storage_keys()
    with pytest.raises(ModelNotFound, match="no registered model named 'nope'"):
        job_start(alice, csv_bytes(cancer_rows(3)), name="nope")
    with pytest.raises(ModelNotFound, match="has no version 7"):
        job_start(alice, csv_bytes(cancer_rows(3)), version=7)
    assert storage_keys() == before


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"version": 0}, "'version' must be a version number (1, 2, ...); got 0."),
        ({"version": True}, "'version' must be a version number (1, 2, ...); got True."),
        ({"stage": "archived"}, "'stage' must be one of: production, staging; got 'archived'."),
        ({"version": 1, "stage": "staging"}, 'Give either "version" (pin a version) or "stage", not both.'),
    ],
)
def test_it_refuses_bad_options(alice, cancer_v1, options, expected):
    assert refused(alice, csv_bytes(cancer_rows(3)), **options) == [expected]


def test_a_database_failure_after_storing_removes_the_stored_file(alice, cancer_v1, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(BatchPredictionJob.objects, "create", broken)
    before = storage_keys()

    with pytest.raises(RuntimeError):
        job_start(alice, csv_bytes(cancer_rows(3)))
    assert storage_keys() == before
