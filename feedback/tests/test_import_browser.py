"""A staff member uploads a file of outcomes in chromium, watches the progress and downloads the errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from feedback.imports import chunks as import_chunks
from feedback.imports import services as import_services
from feedback.models import Feedback
from feedback.tests.import_helpers import csv_bytes, predictions_of

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def background_worker(monkeypatch, settings):
    """Imports run on a thread after the upload's response, a chunk of 5 rows every 0.4 s."""
    settings.FEEDBACK_IMPORT_CHUNK_ROWS = 5
    original = import_chunks.chunk_prepare

    def slow(attempt, chunk, **kwargs):
        time.sleep(0.4)
        return original(attempt, chunk, **kwargs)

    def run(import_id: int) -> None:
        try:
            time.sleep(0.5)
            import_services.feedback_import_run(import_id=import_id)
        finally:
            connection.close()

    monkeypatch.setattr(import_chunks, "chunk_prepare", slow)
    monkeypatch.setattr(
        import_services, "_enqueue", lambda import_id: threading.Thread(target=run, args=(import_id,)).start()
    )


def test_staff_upload_outcomes_watch_the_progress_and_download_the_errors(
    logged_in_page, live_server, staff, alice, cancer_v1, background_worker
):
    predictions = predictions_of(alice, 24)
    rows = [[p.pk, "benign"] for p in predictions] + [[10**9, "benign"]]
    page = logged_in_page(staff)

    page.goto(f"{live_server.url}/feedback/imports/new/?model=cancer")
    page.set_input_files(
        "input[type=file]",
        files=[
            {
                "name": "outcomes.csv",
                "mimeType": "text/csv",
                "buffer": csv_bytes(["prediction_id", "true_label"], rows),
            }
        ],
    )
    page.click("form.import-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/feedback/imports/*/")

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
    assert page.inner_text("[data-rows-created]") == "24"
    assert page.inner_text("[data-rows-failed]") == "1"
    assert page.inner_text("[data-rows-total]") == "25"
    with page.expect_download() as download:
        page.click("#download-errors")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert (
        text.splitlines()[1] == "25,prediction_id,not_found,There is no prediction 1000000000 you may label."
    )
    assert Feedback.objects.count() == 24
