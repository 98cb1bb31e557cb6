"""A user uploads a CSV file in chromium, watches the progress bar reach 100% and downloads the result."""

from __future__ import annotations

import csv
import io
import os
import threading
import time

import pytest
from django.db import connection

from predictions.batch import chunks as batch_chunks
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import services as batch_services
from predictions.models import BatchPredictionJob, Prediction
from predictions.tests.batch_helpers import cancer_rows, csv_bytes

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def background_worker(monkeypatch):
    """Jobs run on a thread after the upload's response, a chunk every 0.4 s, like a busy worker."""
    original = batch_chunks.chunk_compute

    def slow(attempt, model, *, job, chunk):
        time.sleep(0.4)
        return original(attempt, model, job=job, chunk=chunk)

    def run(job_id: int) -> None:
        try:
            time.sleep(0.5)
            batch_services.batch_prediction_run(job_id=job_id)
        finally:
            connection.close()

    monkeypatch.setattr(batch_chunks, "chunk_compute", slow)
    monkeypatch.setattr(
        batch_job_specs, "job_enqueue", lambda job_id: threading.Thread(target=run, args=(job_id,)).start()
    )


def test_a_user_uploads_a_file_watches_the_progress_and_downloads_the_result(
    logged_in_page, live_server, alice, cancer_v1, background_worker, tmp_path
):
    rows = cancer_rows(45)
    rows[7]["mean radius"] = "n/a?"
    page = logged_in_page(alice)

    page.goto(f"{live_server.url}/predict/cancer/")
    page.click("#batch-link a")
    page.wait_for_url(f"{live_server.url}/predict/cancer/batch/")
    page.set_input_files(
        "input[type=file]",
        files=[{"name": "patients.csv", "mimeType": "text/csv", "buffer": csv_bytes(rows)}],
    )
    page.click("form.batch-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/batch/*/")

    bar = page.locator("progress[data-progress-bar]")
    assert int(bar.get_attribute("value")) < 100
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen.add(int(page.evaluate("document.querySelector('progress[data-progress-bar]').value")))
        if 100 in seen:
            break
        time.sleep(0.1)
    assert 100 in seen
    assert len(seen) >= 3, seen
    page.locator("[data-downloads]:not([hidden])").wait_for()
    assert page.inner_text("[data-status]") == "Succeeded"
    assert page.inner_text("[data-progress-percent]") == "100%"
    assert page.inner_text("[data-rows-failed]") == "1"
    assert page.inner_text("[data-attempts]") == "1"
    assert page.inner_text("[data-finished]") != "—"
    assert page.locator("[data-estimate]").is_hidden()
    if os.environ.get("BATCH_SCREENSHOT"):
        page.screenshot(path=os.environ["BATCH_SCREENSHOT"], full_page=True)

    with page.expect_download() as download_info:
        page.click("#download-result")
    download = download_info.value
    assert download.suggested_filename == "patients-predictions.csv"
    saved = tmp_path / "result.csv"
    download.save_as(saved)
    result = list(csv.DictReader(io.StringIO(saved.read_text())))
    job = BatchPredictionJob.objects.get()
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert [r["row"] for r in result if not r["prediction"]] == ["8"]
    stored = Prediction.objects.filter(batch_job=job).order_by("row_index")
    assert [int(r["prediction_id"]) for r in result if r["prediction_id"]] == [p.pk for p in stored]
