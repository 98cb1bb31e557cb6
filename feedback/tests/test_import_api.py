"""The feedback import API: upload (multipart), list, one import, its errors file, and who may use it."""

from __future__ import annotations

import csv
import io

import pytest

from feedback.imports import services as import_services
from feedback.models import Feedback, FeedbackImport
from feedback.tests.import_helpers import csv_bytes, import_run, import_start, predictions_of, upload
from tests.factories import make_api_client

pytestmark = pytest.mark.django_db

URL = "/api/feedback-imports/"


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr(import_services, "_enqueue", queued.append)
    return queued


def post(user, data: bytes, **fields):
    return make_api_client(user).post(URL, {"file": upload(data), **fields}, format="multipart")


def test_staff_upload_a_file_and_get_the_queued_import(cancer_v1, alice, staff, sent):
    predictions_of(alice, 1, keys=["k-1"])

    response = post(staff, csv_bytes(["key", "true_label"], [["k-1", "benign"]]), model="cancer")

    assert response.status_code == 202, response.json()
    body = response.json()
    job = FeedbackImport.objects.get()
    assert response["Location"] == body["url"] == f"http://testserver{URL}{job.uuid}/"
    assert body["id"] == str(job.uuid)
    assert (body["status"], body["model"], body["user"], body["rows_total"]) == (
        "queued",
        "cancer",
        "staff",
        1,
    )
    assert body["errors_url"] is None


def test_a_refused_file_answers_400_with_every_problem_and_stores_nothing(cancer_v1, staff):
    response = post(staff, b"key,score\nk,1\n")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert [(e["field"], e["code"]) for e in body["errors"]] == [
        ("file", "unknown_column"),
        ("model", "required"),
        ("file", "missing_column"),
    ]
    assert not FeedbackImport.objects.exists()


def test_an_upload_without_a_file_is_refused(staff):
    response = make_api_client(staff).post(URL, {"model": "cancer"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "file"


@pytest.mark.parametrize(("user", "status"), [(None, 401), ("alice", 403)])
def test_only_staff_may_use_the_api(cancer_v1, alice, staff, user, status):
    job = import_start(staff, b"prediction_id,true_label\n1,benign\n")
    client = make_api_client(alice if user else None)

    assert client.get(URL).status_code == status
    assert client.get(f"{URL}{job.uuid}/").status_code == status
    assert client.get(f"{URL}{job.uuid}/errors/").status_code == status
    assert client.post(URL, {"file": upload(b"prediction_id,true_label\n1,a\n")}).status_code == status
    assert FeedbackImport.objects.count() == 1


def test_the_list_shows_every_import_in_a_fixed_number_of_queries(
    cancer_v1, staff, admin_user, django_assert_num_queries
):
    for user in (staff, admin_user, admin_user):
        import_start(user, b"prediction_id,true_label\n1,benign\n")
    client = make_api_client(staff)

    # The token, the count and the page of imports with their users and models.
    with django_assert_num_queries(3):
        response = client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [item["user"] for item in body["results"]] == ["root-admin", "root-admin", "staff"]


def test_a_finished_import_links_its_errors_file_only_when_a_row_failed(cancer_v1, alice, staff):
    a, b = predictions_of(alice, 2)
    clean = import_run(import_start(staff, csv_bytes(["prediction_id", "true_label"], [[a.pk, "benign"]])))
    flawed = import_run(
        import_start(
            staff, csv_bytes(["prediction_id", "true_label"], [[b.pk, "benign"], [b.pk, "malignant"]])
        )
    )
    client = make_api_client(staff)

    assert client.get(f"{URL}{clean.uuid}/").json()["errors_url"] is None
    assert client.get(f"{URL}{clean.uuid}/errors/").status_code == 409
    body = client.get(f"{URL}{flawed.uuid}/").json()
    assert (body["rows_done"], body["rows_failed"], body["rows_created"], body["progress"]) == (2, 1, 1, 100)
    assert body["errors_url"] == f"http://testserver{URL}{flawed.uuid}/errors/"
    response = client.get(f"{URL}{flawed.uuid}/errors/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="outcomes-errors.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["row"], r["field"], r["code"]) for r in rows] == [("2", "prediction_id", "duplicate")]
    assert Feedback.objects.count() == 2


def test_an_unknown_import_is_a_404(staff):
    client = make_api_client(staff)

    assert client.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404
    assert client.get(f"{URL}00000000-0000-0000-0000-000000000000/errors/").status_code == 404
