"""Tests of the batch API: submitting a file (202, 400, 404, 409), reading jobs, downloads, access."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from mlops_site.tests.helpers import error_body, messages_of
from predictions.batch import job_specs as batch_job_specs
from predictions.models import BatchPredictionJob
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_run, job_start, upload
from predictions.tests.helpers import make_model_version, trained_model

URL = "/api/models/cancer/batch/"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def no_worker(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(batch_job_specs, "job_enqueue", sent.append)
    return sent


def test_posting_a_file_with_a_token_answers_202_with_the_queued_job(alice, cancer_v1, no_worker):
    token = Token.objects.create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.post(URL, {"file": upload(csv_bytes(cancer_rows(5)))}, format="multipart")

    assert response.status_code == 202, response.content
    job = BatchPredictionJob.objects.get()
    body = response.json()
    assert body["id"] == str(job.uuid)
    assert response["Location"] == body["url"] == f"http://testserver/api/batch-jobs/{job.uuid}/"
    assert (body["model"], body["model_version"], body["stage"], body["status"]) == (
        "cancer",
        1,
        "production",
        "queued",
    )
    assert (body["user"], body["rows_total"], body["progress"], body["result_url"]) == ("alice", 5, 0, None)


def test_a_version_or_the_staging_stage_can_be_asked_for(alice, cancer_v1, no_worker):
    make_model_version(trained=trained_model("cancer"), name="cancer", version=2, stage="staging")
    client = client_for(alice)

    pinned = client.post(URL, {"file": upload(csv_bytes(cancer_rows(2))), "version": "1"}, format="multipart")
    staging = client.post(
        URL, {"file": upload(csv_bytes(cancer_rows(2))), "stage": "staging"}, format="multipart"
    )

    assert (pinned.json()["model_version"], pinned.json()["stage"]) == (1, "")
    assert (staging.json()["model_version"], staging.json()["stage"]) == (2, "staging")


@pytest.mark.parametrize(
    ("given", "stored"), [(None, True), ("true", True), ("false", False), ("0", False), ("1", True)]
)
def test_a_client_may_ask_for_the_result_file_only(alice, cancer_v1, no_worker, given, stored):
    data = {"file": upload(csv_bytes(cancer_rows(2)))}
    if given is not None:
        data["store_predictions"] = given

    response = client_for(alice).post(URL, data, format="multipart")

    assert response.status_code == 202, response.content
    assert response.json()["store_predictions"] is stored
    assert BatchPredictionJob.objects.get().store_predictions is stored


def test_a_refused_file_answers_400_naming_each_problem_and_stores_nothing(
    alice, cancer_v1, new_batch_objects
):
    features = [c["name"] for c in trained_model("cancer").feature_schema]
    rows = [{k: v for k, v in row.items() if k not in features[:3]} for row in cancer_rows(3)]

    response = client_for(alice).post(URL, {"file": upload(csv_bytes(rows))}, format="multipart")

    body = error_body(response, 400, "invalid")
    assert body["detail"] == "The file was refused (1 problem); nothing was stored."
    [problem] = messages_of(body)
    assert problem.startswith(
        f"The file lacks 3 feature columns of cancer v1: {features[0]!r}, {features[1]!r}, {features[2]!r}."
    )
    assert not BatchPredictionJob.objects.exists()
    assert new_batch_objects() == set()


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({}, "file", "No file was submitted."),
        ({"version": "two"}, "version", "A valid integer is required."),
        ({"version": "0"}, "version", "'version' must be a version number (1, 2, ...); got 0."),
        ({"stage": "archived"}, "stage", "'stage' must be one of: production, staging; got 'archived'."),
        (
            {"version": "1", "stage": "staging"},
            "stage",
            'Give either "version" (pin a version) or "stage", not both.',
        ),
        ({"store_predictions": "maybe"}, "store_predictions", "Must be a valid boolean."),
    ],
)
def test_bad_form_fields_answer_400(alice, cancer_v1, new_batch_objects, data, field, expected):
    if data:
        data = {"file": upload(csv_bytes(cancer_rows(2))), **data}

    response = client_for(alice).post(URL, data, format="multipart")

    assert messages_of(error_body(response, 400, "invalid"), field) == [expected]
    assert new_batch_objects() == set()


def test_a_json_body_is_refused_as_an_unsupported_media_type(alice, cancer_v1):
    response = client_for(alice).post(URL, {"rows": []}, format="json")

    error_body(response, 415, "unsupported_media_type")


def test_no_production_version_is_409_and_an_unknown_model_404(alice, db, new_batch_objects):
    make_model_version(trained=trained_model("cancer"), name="cancer", stage="staging")
    client = client_for(alice)

    conflict = client.post(URL, {"file": upload(csv_bytes(cancer_rows(2)))}, format="multipart")
    missing = client.post(
        "/api/models/nope/batch/", {"file": upload(csv_bytes(cancer_rows(2)))}, format="multipart"
    )

    assert "has no production version yet" in error_body(conflict, 409, "no_version_in_stage")["detail"]
    error_body(missing, 404, "not_found")
    assert new_batch_objects() == set()


def test_anonymous_clients_are_refused(cancer_v1):
    response = APIClient().post(URL, {"file": upload(csv_bytes(cancer_rows(2)))}, format="multipart")

    error_body(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_users_list_their_own_jobs_and_staff_everyones_in_fixed_queries(
    alice, bob, staff, cancer_v1, no_worker, django_assert_max_num_queries
):
    mine = [job_start(alice, csv_bytes(cancer_rows(2))) for _ in range(3)]
    job_start(bob, csv_bytes(cancer_rows(2)))

    with django_assert_max_num_queries(3):
        own = client_for(alice).get("/api/batch-jobs/")
    everyone = client_for(staff).get("/api/batch-jobs/")

    assert [j["id"] for j in own.json()["results"]] == [str(j.uuid) for j in reversed(mine)]
    assert everyone.json()["count"] == 4


def test_a_finished_job_links_its_files_and_the_owner_downloads_them(alice, cancer_v1, no_worker):
    rows = cancer_rows(12)
    rows[3]["mean radius"] = "big"
    job = job_run(job_start(alice, csv_bytes(rows)))
    client = client_for(alice)

    body = client.get(f"/api/batch-jobs/{job.uuid}/").json()
    result = client.get(body["result_url"])
    errors = client.get(body["errors_url"])

    assert (body["status"], body["progress"], body["rows_done"], body["rows_failed"]) == (
        "succeeded",
        100,
        12,
        1,
    )
    assert body["rows_predicted"] == 11
    assert body["result_url"] == f"http://testserver/api/batch-jobs/{job.uuid}/result/"
    assert result.status_code == 200
    assert result["Content-Type"] == "text/csv; charset=utf-8"
    assert b"".join(result.streaming_content).count(b"\n") == 13
    error_lines = b"".join(errors.streaming_content).decode().splitlines()
    assert error_lines[1].startswith("4,mean radius,wrong_type,")


def test_another_users_job_and_its_files_are_404_and_staff_reach_them(
    alice, charlie, staff, cancer_v1, no_worker
):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(3))))
    urls = [
        f"/api/batch-jobs/{job.uuid}/",
        f"/api/batch-jobs/{job.uuid}/result/",
        f"/api/batch-jobs/{job.uuid}/errors/",
    ]

    for url in urls:
        assert error_body(client_for(charlie).get(url), 404, "not_found")["detail"] == "No such batch job."
        assert client_for(staff).get(url).status_code == 200, url
    assert client_for(charlie).get("/api/batch-jobs/").json()["count"] == 0
    assert client_for(charlie).get("/api/batch-jobs/not-a-uuid/").status_code == 404


def test_downloads_of_an_unfinished_job_answer_409(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(3)))

    response = client_for(alice).get(f"/api/batch-jobs/{job.uuid}/result/")

    assert error_body(response, 409, "conflict")["detail"] == (
        "The job is queued; its files are ready once it has succeeded."
    )


def test_the_schema_documents_the_batch_endpoints(alice, db):
    response = client_for(alice).get("/api/schema/", {"format": "json"})

    paths = response.json()["paths"]
    assert "multipart/form-data" in paths["/api/models/{name}/batch/"]["post"]["requestBody"]["content"]
    assert "/api/batch-jobs/{job_uuid}/result/" in paths
