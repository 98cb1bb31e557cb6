"""The feedback import pages: upload form, refusals, the list, an import's progress, errors file, access."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from feedback.imports import services as import_services
from feedback.models import FeedbackImport
from feedback.tests.import_helpers import csv_bytes, import_run, import_start, predictions_of, upload
from mlops_site import errors, storage

pytestmark = pytest.mark.django_db

IDS = ["prediction_id", "true_label"]


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    """Imports stay queued: the tests run them by hand when they need them finished."""
    queued: list[int] = []
    monkeypatch.setattr(import_services, "_enqueue", queued.append)
    return queued


def urls(job) -> list[str]:
    base = f"/feedback/imports/{job.uuid}/"
    return ["/feedback/imports/", "/feedback/imports/new/", base, f"{base}status/", f"{base}errors/"]


def test_the_pages_need_a_login_and_staff(cancer_v1, alice, staff):
    job = import_start(staff, b"prediction_id,true_label\n1,benign\n")
    for url in urls(job):
        anonymous = Client().get(url)
        assert anonymous.status_code == 302, url
        assert anonymous["Location"].startswith("/accounts/login/")
        assert client_for(alice).get(url).status_code == 403, url
    assert client_for(alice).post("/feedback/imports/new/", {"file": upload(b"x")}).status_code == 403
    assert FeedbackImport.objects.count() == 1


def test_the_upload_form_lists_the_models_and_takes_one_from_the_address(cancer_v1, iris_v1, staff):
    response = client_for(staff).get("/feedback/imports/new/?model=iris")

    assert response.status_code == 200
    form = response.context["form"]
    assert [value for value, _ in form.fields["model"].choices] == ["", "cancer", "iris"]
    assert form["model"].value() == "iris"
    assert b"prediction_id" in response.content


def test_an_upload_opens_the_import_page(cancer_v1, staff, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(staff).post(
            "/feedback/imports/new/",
            {"file": upload(b"key,true_label\nk-1,benign\n", "labels.csv"), "model": "cancer"},
        )

    job = FeedbackImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/feedback/imports/{job.uuid}/"
    assert (job.registered_model.name, job.original_filename, sent) == ("cancer", "labels.csv", [job.pk])


def test_a_refused_upload_shows_every_problem_above_the_form(cancer_v1, staff):
    response = client_for(staff).post("/feedback/imports/new/", {"file": upload(b"key,score\nk,1\n")})

    assert response.status_code == 400
    assert response.context["problems"] == [
        "Unknown column 'score'. A feedback file has these columns: 'prediction_id', 'key', 'batch_job', "
        "'row', 'true_label', 'true_value', 'correct', 'comment'.",
        "A file of keys must name its model (keys are unique per model): choose the model.",
        "The file gives no outcomes: add a 'true_label' column (classification) or a 'true_value' column "
        "(regression).",
    ]
    assert b'id="import-problems"' in response.content
    assert not FeedbackImport.objects.exists()


def test_an_upload_while_storage_is_down_is_a_503_that_does_not_blame_the_file(cancer_v1, staff, monkeypatch):
    def unavailable(key, content):
        raise storage.StorageError(f"storage write of {key!r} failed: connection refused")

    monkeypatch.setattr(storage, "put", unavailable)

    response = client_for(staff).post(
        "/feedback/imports/new/",
        {"file": upload(b"key,true_label\nk-1,benign\n", "labels.csv"), "model": "cancer"},
    )

    assert response.status_code == 503
    assert response.context["problems"] == [errors.STORAGE_UNAVAILABLE]
    html = response.content.decode()
    assert "The file could not be taken right now; nothing was stored." in html
    panel = html.split('id="import-problems"')[1].split("</div>")[0]
    assert "refused" not in panel
    assert not FeedbackImport.objects.exists()


def test_a_form_without_a_file_is_refused(staff):
    response = client_for(staff).post("/feedback/imports/new/", {"model": ""})

    assert response.status_code == 400
    assert response.context["form"].errors["file"]


def test_the_list_shows_each_import_with_its_counts(cancer_v1, alice, staff):
    (a,) = predictions_of(alice, 1)
    job = import_run(import_start(staff, csv_bytes(IDS, [[a.pk, "benign"], [0, "benign"]]), name="march.csv"))

    response = client_for(staff).get("/feedback/imports/")

    assert response.status_code == 200
    assert response.context["imports"] == [job]
    assert f'href="/feedback/imports/{job.uuid}/"'.encode() in response.content
    assert b"march.csv" in response.content


def test_a_running_import_shows_its_progress_and_polls_its_status(cancer_v1, staff):
    job = import_start(staff, csv_bytes(IDS, [[1, "benign"]] * 4))
    FeedbackImport.objects.filter(pk=job.pk).update(
        status="running", rows_done=2, rows_created=1, rows_failed=1
    )
    client = client_for(staff)

    page = client.get(f"/feedback/imports/{job.uuid}/")
    status = client.get(f"/feedback/imports/{job.uuid}/status/").json()

    assert page.status_code == 200
    assert f'data-status-url="/feedback/imports/{job.uuid}/status/"'.encode() in page.content
    assert b'data-terminal="false"' in page.content
    assert b"import_progress.js" in page.content
    assert b'id="download-errors"' in page.content  # present but hidden until the errors file is ready
    assert page.context["state"]["errors_url"] is None
    assert (status["status"], status["progress"], status["rows_done"], status["rows_total"]) == (
        "running",
        50,
        2,
        4,
    )
    assert (status["rows_created"], status["rows_failed"], status["is_terminal"]) == (1, 1, False)


def test_a_finished_import_offers_its_errors_file_only_when_a_row_failed(cancer_v1, alice, staff):
    a, b = predictions_of(alice, 2)
    clean = import_run(import_start(staff, csv_bytes(IDS, [[a.pk, "benign"]])))
    flawed = import_run(
        import_start(staff, csv_bytes(IDS, [[b.pk, "benign"], ["x", "benign"]]), name="m.csv")
    )
    client = client_for(staff)

    assert client.get(f"/feedback/imports/{clean.uuid}/").context["state"]["errors_url"] is None
    assert client.get(f"/feedback/imports/{clean.uuid}/errors/").status_code == 409
    state = client.get(f"/feedback/imports/{flawed.uuid}/").context["state"]
    assert state["errors_url"] == f"/feedback/imports/{flawed.uuid}/errors/"
    assert (state["progress"], state["rows_created"], state["rows_failed"]) == (100, 1, 1)
    download = client.get(state["errors_url"])
    assert download.status_code == 200
    assert 'filename="m-errors.csv"' in download["Content-Disposition"]
    assert b"".join(download.streaming_content).decode().splitlines() == [
        "row,field,code,message",
        "2,prediction_id,invalid,\"'prediction' must be a prediction id (1, 2, ...); got 'x'.\"",
    ]


def test_an_unknown_import_is_a_404(staff):
    assert client_for(staff).get("/feedback/imports/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_the_errors_link_appears_only_on_an_import_with_refused_rows(cancer_v1, alice, staff):
    a, b = predictions_of(alice, 2)
    clean = import_run(import_start(staff, csv_bytes(IDS, [[a.pk, "benign"]])))
    flawed = import_run(
        import_start(staff, csv_bytes(IDS, [[b.pk, "benign"], ["x", "benign"]]), name="m.csv")
    )
    client = client_for(staff)

    clean_page = client.get(f"/feedback/imports/{clean.uuid}/").content.decode()
    flawed_page = client.get(f"/feedback/imports/{flawed.uuid}/").content.decode()

    assert "Download the errors file" not in clean_page
    assert "data-downloads" not in clean_page
    assert f'href="/feedback/imports/{flawed.uuid}/errors/"' in flawed_page
    assert re.search(r"data-downloads\s*>", flawed_page)  # shown: not hidden
