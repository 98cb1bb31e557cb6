"""Builders for the batch tests: CSV files of the trained models' rows, jobs submitted and run."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from sklearn.datasets import load_breast_cancer

from mlops_site import storage
from predictions import model_cache
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob
from predictions.tests.helpers import trained_model


def cancer_rows(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """`count` rows of the breast-cancer data with the 'cancer' model's features and an 'id' column."""
    frame = load_breast_cancer(as_frame=True).frame
    features = [c["name"] for c in trained_model("cancer").feature_schema]
    rows = []
    for position in range(start, start + count):
        source = frame.iloc[position % len(frame)]
        rows.append({"id": f"p-{position}", **{name: repr(float(source[name])) for name in features}})
    return rows


def csv_bytes(rows: list[dict[str, Any]], *, header: list[str] | None = None, newline: str = "\n") -> bytes:
    header = header or list(rows[0])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, "") for name in header])
    return out.getvalue().encode("utf-8")


def upload(data: bytes, name: str = "patients.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/csv")


def job_start(user: Any, data: bytes, *, name: str = "cancer", **options: Any) -> BatchPredictionJob:
    return batch_services.batch_prediction_start(
        registered_model_name=name,
        input_file=upload(data),
        filename="patients.csv",
        requested_by=user,
        **options,
    )


def job_run(job: BatchPredictionJob) -> BatchPredictionJob:
    outcome = batch_services.batch_prediction_run(job_id=job.pk)
    job.refresh_from_db()
    assert outcome.status in ("succeeded", "failed"), outcome
    return job


def stored_csv(key: str) -> list[dict[str, str]]:
    data = storage.read_bytes(key)
    assert data is not None, key
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def expected_predictions(job: BatchPredictionJob, rows: list[dict[str, Any]]) -> tuple[list[Any], Any]:
    """What the job's version predicts for these rows through the single-prediction path."""
    version = job.model_version
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(version))
    features = [c["name"] for c in version.feature_schema]
    return predictor.predict([{name: float(row[name]) for name in features} for row in rows])


def storage_keys(prefix: str = "batch") -> set[str]:
    """Every stored object under `prefix`, in filesystem storage or an S3 bucket shared by the tests."""
    from django.core.files.storage import default_storage

    def walk(folder: str) -> set[str]:
        try:
            folders, files = default_storage.listdir(folder)
        except FileNotFoundError:
            return set()
        found = {f"{folder}/{name}" for name in files}
        for name in folders:
            found |= walk(f"{folder}/{name}")
        return found

    return walk(prefix)


class Killed(BaseException):
    """The worker dying mid-job: not an Exception, so no handler of the code under test catches it."""
