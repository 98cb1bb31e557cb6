"""S3 down or stalled during an upload, a model load and a batch output: a clear 503, nothing orphaned."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
from rest_framework.test import APIClient

from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import unique_csv
from mlops_site import storage
from predictions import model_cache
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import outputs as batch_outputs
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob, Prediction, PredictionRequest
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start, storage_keys, stored_csv
from predictions.tests.helpers import make_model_version, trained_model
from tests.faults.conftest import TcpProxy

pytestmark = [pytest.mark.s3, pytest.mark.django_db(transaction=True)]

# Short bounds, so a stalled server fails the test's calls in seconds; production reads them from
# AWS_S3_CONNECT_TIMEOUT, AWS_S3_READ_TIMEOUT and AWS_S3_MAX_ATTEMPTS.
READ_TIMEOUT = 2
MAX_ATTEMPTS = 2


@pytest.fixture
def s3_proxy(settings):
    """The test's S3 calls go through a proxy that can play the server down or stalled."""
    from botocore.config import Config

    options = settings.STORAGES["default"]["OPTIONS"]
    endpoint = urlsplit(options["endpoint_url"])
    proxy = TcpProxy(endpoint.hostname, endpoint.port)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {
                **options,
                "endpoint_url": f"http://127.0.0.1:{proxy.port}",
                # settings.py's own bounds (AWS_S3_*), shortened.
                "client_config": options["client_config"].merge(
                    Config(
                        connect_timeout=READ_TIMEOUT,
                        read_timeout=READ_TIMEOUT,
                        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                    )
                ),
            },
        },
    }
    yield proxy
    proxy.close()


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_dataset_upload_while_s3_is_unavailable_answers_503_and_stores_nothing(
    mode, s3_proxy, staff, figures
):
    content = unique_csv()
    s3_proxy.set(mode)
    started = time.monotonic()

    response = _client(staff).post(
        "/api/datasets/",
        {"name": "churn", "target_column": "label", "file": _named(content)},
        format="multipart",
    )
    took = time.monotonic() - started

    assert response.status_code == 503, response.content
    assert response.json()["code"] == "storage_unavailable"
    assert "Retry-After" in response
    assert not Dataset.objects.exists()
    assert not DatasetVersion.objects.exists()
    s3_proxy.set("up")
    assert storage_keys("datasets") == set()
    figures(answer=503, seconds_to_answer=round(took, 1), rows_left=0, objects_left=0)


def _named(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("upload.csv", content, content_type="text/csv")


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_prediction_whose_model_cannot_be_loaded_from_s3_answers_503_and_stores_nothing(
    mode, s3_proxy, alice, figures
):
    make_model_version(trained=trained_model("cancer"), name="cancer")
    model_cache.predictors.clear()
    model_cache.resolutions.clear()
    s3_proxy.set(mode)
    started = time.monotonic()

    response = _client(alice).post(
        "/api/models/cancer/predict/",
        json.dumps({"inputs": trained_model("cancer").sample_rows[0]}),
        content_type="application/json",
    )
    took = time.monotonic() - started

    assert response.status_code == 503, response.content
    assert response.json()["code"] in ("storage_unavailable", "model_unavailable")
    assert not PredictionRequest.objects.exists()
    assert not Prediction.objects.exists()
    s3_proxy.set("up")
    response = _client(alice).post(
        "/api/models/cancer/predict/",
        json.dumps({"inputs": trained_model("cancer").sample_rows[0]}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    figures(answer=503, seconds_to_answer=round(took, 1), then_after_recovery=200)


def test_a_batch_job_whose_output_fails_on_s3_is_handed_back_and_finished_once_s3_returns(
    settings, s3_proxy, alice, monkeypatch, figures
):
    settings.BATCH_CHUNK_ROWS = 10
    monkeypatch.setattr(batch_job_specs, "job_enqueue", lambda job_id: None)
    make_model_version(trained=trained_model("cancer"), name="cancer")
    rows = cancer_rows(35)
    job = job_start(alice, csv_bytes(rows))
    real_assemble = batch_outputs.files_assemble

    def assemble_while_s3_stalls(*args, **kwargs):
        s3_proxy.set("slow")
        return real_assemble(*args, **kwargs)

    monkeypatch.setattr(batch_outputs, "files_assemble", assemble_while_s3_stalls)
    started = time.monotonic()
    with pytest.raises(storage.StorageError):
        batch_services.batch_prediction_run(job_id=job.pk)
    took = time.monotonic() - started
    job.refresh_from_db()
    assert (job.status, job.attempts, job.chunks_done) == ("running", 0, 4)

    s3_proxy.set("up")
    monkeypatch.setattr(batch_outputs, "files_assemble", real_assemble)
    outcome = batch_services.batch_prediction_run(job_id=job.pk)

    job = BatchPredictionJob.objects.get(pk=job.pk)
    assert outcome.status == "succeeded"
    assert Prediction.objects.filter(batch_job=job).count() == 35
    assert len(stored_csv(job.result_key)) == 35
    left = storage_keys(f"batch/{job.uuid}")
    assert job.result_key in left
    assert left <= {job.result_key, job.errors_key, job.input_key}
    figures(seconds_until_handed_back=round(took, 1), rows_stored=35, rows_sent=35, objects_left_over=0)
