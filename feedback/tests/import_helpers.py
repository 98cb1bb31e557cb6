"""Builders for the feedback import tests: predictions to label, CSV files of outcomes, imports run."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from feedback.imports import services as import_services
from feedback.models import FeedbackImport
from mlops_site import storage
from predictions import services as prediction_services
from predictions.tests.helpers import trained_model


def predictions_of(
    user: Any, count: int, *, name: str = "cancer", keys: list[str] | None = None
) -> list[Any]:
    """`count` stored predictions by `user` with the production version of `name`."""
    rows = (trained_model(name).sample_rows * count)[:count]
    outcome = prediction_services.prediction_make(
        registered_model_name=name, rows=rows, user=user, channel="api", keys=keys
    )
    return outcome.predictions


def other_label(prediction: Any, classes: list[Any]) -> str:
    return next(str(c) for c in classes if str(c) != str(prediction.prediction))


def csv_bytes(header: list[str], rows: list[list[Any]], *, newline: str = "\n") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def upload(data: bytes, name: str = "outcomes.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/csv")


def import_start(
    user: Any, data: bytes, *, model: str | None = None, name: str = "outcomes.csv"
) -> FeedbackImport:
    return import_services.feedback_import_start(
        user=user, file=upload(data, name), filename=name, registered_model_name=model
    )


def import_run(job: FeedbackImport) -> FeedbackImport:
    outcome = import_services.feedback_import_run(import_id=job.pk)
    job.refresh_from_db()
    assert outcome.status in ("succeeded", "failed"), outcome
    return job


def imported(user: Any, data: bytes, *, model: str | None = None) -> FeedbackImport:
    """Start and run an import; it must succeed."""
    job = import_run(import_start(user, data, model=model))
    assert job.status == "succeeded", job.error_message
    return job


def errors_rows(job: FeedbackImport) -> list[dict[str, str]]:
    data = storage.read_bytes(job.errors_key)
    assert data is not None, job.errors_key
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
