"""Tests of the batch pages: upload form, refusals, job list and detail, status JSON, downloads, access."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from mlops_site import errors, storage
from predictions.batch import job_specs as batch_job_specs
from predictions.models import BatchPredictionJob
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_run, job_start, upload
from predictions.tests.helpers import make_model_version, trained_model


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def no_worker(monkeypatch):
    """Jobs stay queued: the tests run them by hand when they need them finished."""
    sent: list[int] = []
    monkeypatch.setattr(batch_job_specs, "job_enqueue", sent.append)
    return sent


def test_the_pages_need_a_login(alice, cancer_v1):
    job = job_start(alice, csv_bytes(cancer_rows(2)))
    for url in (
        "/predict/cancer/batch/",
        "/batch/",
        f"/batch/{job.uuid}/",
        f"/batch/{job.uuid}/status/",
        f"/batch/{job.uuid}/result/",
    ):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/")


def test_the_predict_page_links_to_the_upload_form(alice, cancer_v1):
    response = client_for(alice).get("/predict/cancer/")

    assert b'href="/predict/cancer/batch/"' in response.content


def test_the_upload_form_offers_the_stages_and_every_version(alice, cancer_v1):
    make_model_version(trained=trained_model("cancer"), name="cancer", version=2, stage="staging")

    response = client_for(alice).get("/predict/cancer/batch/")

    assert response.status_code == 200
    choices = response.context["form"].fields["version"].choices
    assert choices == [
        ("production", "Production (now v1)"),
        ("staging", "Staging (now v2)"),
        ("2", "v2 (pinned)"),
        ("1", "v1 (pinned)"),
    ]
    assert b'enctype="multipart/form-data"' in response.content


def test_uploading_a_file_queues_a_job_and_opens_its_page(
    alice, cancer_v1, no_worker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            "/predict/cancer/batch/", {"file": upload(csv_bytes(cancer_rows(5))), "version": "1"}
        )

    job = BatchPredictionJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/batch/{job.uuid}/"
    assert no_worker == [job.pk]
    assert (job.user, job.model_version, job.stage, job.original_filename) == (
        alice,
        cancer_v1,
        "",
        "patients.csv",
    )


def test_the_form_stores_each_prediction_unless_the_result_file_only_is_chosen(alice, cancer_v1, no_worker):
    client = client_for(alice)
    form = client.get("/predict/cancer/batch/").content.decode()
    assert re.search(r'<input[^>]*name="store_predictions"[^>]*value="yes"[^>]*checked', form)
    # A group of radio buttons is named by a fieldset's legend, not a label pointing at no input.
    assert re.search(r'<fieldset class="field choices">\s*<legend>Predictions</legend>', form)
    assert 'for=""' not in form

    for choice, stored in ((None, True), ("yes", True), ("no", False)):
        data = {"file": upload(csv_bytes(cancer_rows(3)))}
        if choice is not None:
            data["store_predictions"] = choice
        response = client.post("/predict/cancer/batch/", data)
        assert response.status_code == 302
        job = BatchPredictionJob.objects.get(uuid=response["Location"].split("/")[-2])
        assert job.store_predictions is stored

        page = client.get(response["Location"]).content.decode()
        shown = re.search(r'<dd id="batch-stored">([^<]*)</dd>', page).group(1)
        assert shown.startswith("Each one stored" if stored else "Result file only")

    listed = client.get("/batch/").content.decode()
    assert listed.count("(result file only)") == 1


def test_an_unknown_choice_for_storing_is_refused_by_the_form_and_nothing_is_stored(
    alice, cancer_v1, new_batch_objects
):
    response = client_for(alice).post(
        "/predict/cancer/batch/", {"file": upload(csv_bytes(cancer_rows(2))), "store_predictions": "maybe"}
    )

    assert response.status_code == 400
    assert response.context["form"].errors["store_predictions"] == [
        "Select a valid choice. maybe is not one of the available choices."
    ]
    assert not BatchPredictionJob.objects.exists()
    assert new_batch_objects() == set()


def test_a_refused_file_shows_every_problem_and_stores_nothing(alice, cancer_v1, new_batch_objects):
    features = [c["name"] for c in trained_model("cancer").feature_schema]
    rows = [{k: v for k, v in row.items() if k != features[0]} for row in cancer_rows(3)]

    response = client_for(alice).post("/predict/cancer/batch/", {"file": upload(csv_bytes(rows))})

    assert response.status_code == 400
    assert response.context["problems"][0].startswith("The file lacks 1 feature column of cancer v1")
    assert b"nothing was stored" in response.content
    assert not BatchPredictionJob.objects.exists()
    assert new_batch_objects() == set()


def test_an_upload_without_a_file_is_refused_by_the_form(alice, cancer_v1):
    response = client_for(alice).post("/predict/cancer/batch/", {})

    assert response.status_code == 400
    assert response.context["form"].errors["file"] == ["This field is required."]


def test_a_model_without_a_production_version_answers_409(alice, db):
    make_model_version(trained=trained_model("cancer"), name="cancer", stage="staging")

    response = client_for(alice).post("/predict/cancer/batch/", {"file": upload(csv_bytes(cancer_rows(2)))})

    assert response.status_code == 409
    assert "has no production version yet" in response.context["problems"][0]


def test_an_unknown_model_is_a_404(alice, db):
    assert client_for(alice).get("/predict/nope/batch/").status_code == 404


def test_the_list_shows_ones_own_jobs_and_staff_see_everyones(alice, bob, staff, cancer_v1, no_worker):
    mine = job_start(alice, csv_bytes(cancer_rows(2)))
    theirs = job_start(bob, csv_bytes(cancer_rows(2)))

    own = client_for(alice).get("/batch/")
    everyone = client_for(staff).get("/batch/")

    assert own.context["jobs"] == [mine]
    assert f"/batch/{theirs.uuid}/" not in own.content.decode()
    assert everyone.context["jobs"] == [theirs, mine]
    assert everyone.context["show_user"] is True


def test_the_list_page_runs_a_fixed_number_of_queries(
    alice, cancer_v1, no_worker, django_assert_max_num_queries
):
    for _ in range(4):
        job_start(alice, csv_bytes(cancer_rows(2)))
    client = client_for(alice)

    with django_assert_max_num_queries(4):
        response = client.get("/batch/")

    assert len(response.context["jobs"]) == 4


def test_the_detail_page_polls_the_status_until_done_then_offers_downloads(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(12)))
    client = client_for(alice)

    queued = client.get(f"/batch/{job.uuid}/")
    status = client.get(f"/batch/{job.uuid}/status/").json()

    assert queued.status_code == 200
    assert f'data-status-url="/batch/{job.uuid}/status/"' in queued.content.decode()
    assert 'data-terminal="false"' in queued.content.decode()
    assert status == {
        "id": str(job.uuid),
        "status": "queued",
        "status_label": "Queued",
        "is_terminal": False,
        "progress": 0,
        "rows_total": 12,
        "rows_done": 0,
        "rows_failed": 0,
        "rows_predicted": 0,
        "error_message": "",
        "attempts": 0,
        "started_at": None,
        "finished_at": None,
        "result_url": None,
        "errors_url": None,
    }

    job_run(job)
    done = client.get(f"/batch/{job.uuid}/status/").json()
    page = client.get(f"/batch/{job.uuid}/").content.decode()

    assert (done["status"], done["progress"], done["rows_done"], done["is_terminal"]) == (
        "succeeded",
        100,
        12,
        True,
    )
    assert done["result_url"] == f"/batch/{job.uuid}/result/"
    assert done["errors_url"] == f"/batch/{job.uuid}/errors/"
    assert f'href="/batch/{job.uuid}/result/"' in page


def test_progress_counts_committed_rows_against_the_estimate(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(40)))
    BatchPredictionJob.objects.filter(pk=job.pk).update(status="running", rows_done=10, chunks_done=1)

    status = client_for(alice).get(f"/batch/{job.uuid}/status/").json()

    assert (status["rows_done"], status["rows_total"], status["progress"]) == (10, 40, 25)


def test_the_owner_downloads_the_result_and_the_errors_file(alice, cancer_v1, no_worker):
    rows = cancer_rows(12)
    rows[4]["id"] = "Doe, Jane"
    job = job_run(job_start(alice, csv_bytes(rows)))
    client = client_for(alice)

    result = client.get(f"/batch/{job.uuid}/result/")
    errors = client.get(f"/batch/{job.uuid}/errors/")

    assert result.status_code == 200
    assert result["Content-Type"] == "text/csv; charset=utf-8"
    assert result["Content-Disposition"] == 'attachment; filename="patients-predictions.csv"'
    body = b"".join(result.streaming_content)
    assert int(result["Content-Length"]) == len(body)
    assert body.startswith(b"id,")
    assert body.count(b"\n") == 13
    assert b"".join(errors.streaming_content) == b"row,field,code,message,value\n"
    assert errors["Content-Disposition"] == 'attachment; filename="patients-errors.csv"'


def test_downloads_wait_until_the_job_has_succeeded(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(2)))

    response = client_for(alice).get(f"/batch/{job.uuid}/result/")

    # A page: the error page of the one mapping, with the same sentence the API's envelope gives.
    assert response.status_code == 409
    assert response.templates[0].name == "error.html"
    assert "The job is queued; its files are ready once it has succeeded." in response.content.decode()


def test_another_users_job_is_a_404_everywhere_and_staff_see_it(alice, charlie, staff, cancer_v1, no_worker):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(3))))
    urls = [
        f"/batch/{job.uuid}/",
        f"/batch/{job.uuid}/status/",
        f"/batch/{job.uuid}/result/",
        f"/batch/{job.uuid}/errors/",
    ]

    for url in urls:
        assert client_for(charlie).get(url).status_code == 404, url
        assert client_for(staff).get(url).status_code == 200, url
    assert client_for(charlie).get("/batch/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_a_batch_prediction_page_links_back_to_its_job(alice, cancer_v1, no_worker):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(3))))
    prediction = job.predictions.get(row_index=1)

    response = client_for(alice).get(f"/predictions/{prediction.pk}/")

    html = response.content.decode()
    assert f'href="/batch/{job.uuid}/"' in html
    assert "row 2" in html
    assert 'id="batch-inputs"' in html


def test_an_upload_while_storage_is_down_is_a_503_with_the_form_kept(alice, cancer_v1, monkeypatch):
    def unavailable(key, content):
        raise storage.StorageError(f"storage write of {key!r} failed: connection refused")

    monkeypatch.setattr(storage, "put", unavailable)

    response = client_for(alice).post("/predict/cancer/batch/", {"file": upload(csv_bytes(cancer_rows(2)))})

    assert response.status_code == 503
    assert response.context["problems"] == [errors.STORAGE_UNAVAILABLE]
    assert response.context["form"] is not None
    html = response.content.decode()
    assert "connection refused" not in html
    # The site's fault, not the file's: it is not called refused.
    assert "The file could not be taken right now; nothing was stored." in html
    panel = html.split('id="batch-problems"')[1].split("</div>")[0]
    assert "refused" not in panel
    assert not BatchPredictionJob.objects.exists()


def test_a_download_while_storage_is_down_is_the_503_page(alice, cancer_v1, no_worker, monkeypatch):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(3))))

    def unavailable(key):
        raise storage.StorageError(f"storage lookup of {key!r} failed: timed out")

    monkeypatch.setattr(storage, "exists", unavailable)

    response = client_for(alice).get(f"/batch/{job.uuid}/result/")

    assert response.status_code == 503
    assert response.templates[0].name == "error.html"
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert errors.STORAGE_UNAVAILABLE in response.content.decode()


def test_a_finished_job_offers_the_errors_file_only_when_a_row_was_refused(alice, cancer_v1, no_worker):
    clean = job_run(job_start(alice, csv_bytes(cancer_rows(3))))
    rows = cancer_rows(3)
    feature = trained_model("cancer").feature_schema[0]["name"]
    rows[1][feature] = "not a number"
    flawed = job_run(job_start(alice, csv_bytes(rows)))
    client = client_for(alice)

    clean_page = client.get(f"/batch/{clean.uuid}/").content.decode()
    flawed_page = client.get(f"/batch/{flawed.uuid}/").content.decode()

    assert (clean.status, clean.rows_failed, flawed.status, flawed.rows_failed) == (
        "succeeded",
        0,
        "succeeded",
        1,
    )
    assert f'href="/batch/{clean.uuid}/result/"' in clean_page
    assert "Download the errors file" not in clean_page
    assert f'href="/batch/{clean.uuid}/errors/"' not in clean_page
    assert f'href="/batch/{flawed.uuid}/errors/"' in flawed_page
    assert "Download the errors file" in flawed_page


def test_a_running_job_keeps_the_hidden_downloads_for_the_progress_script(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(3)))

    page = client_for(alice).get(f"/batch/{job.uuid}/").content.decode()

    assert re.search(r"data-downloads\s+hidden>", page)
    assert "data-errors-link" in page
