"""In chromium: staff go from a dataset version to a training run, watch it end, and get its results.

The run page reloads once when the run ends, so its final state, task and charts are drawn and the
"submitted" flash is gone; the charts keep a readable height, and fit the width, on a desktop and a phone.
"""

from __future__ import annotations

from unittest import mock

import pytest
from playwright.sync_api import expect

from training.models import TrainingRun
from training.tasks import training_run_execute_task
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_run_started_from_a_dataset_version_ends_on_its_results(logged_in_page, live_server, staff):
    dataset_upload(cancer_frame(120), name="cancer", target="diagnosis", user=staff)
    page = logged_in_page(staff)
    page.goto(f"{live_server.url}/datasets/cancer/versions/1/")
    page.click("#train-on-version")
    page.fill("#id_model_name", "cancer")
    page.select_option("#id_algorithm", "infer:random_forest")
    page.fill("#id_params", '{"n_estimators": 10, "max_depth": 4}')
    # The worker is held back, so the page opens on a queued run and has to follow it.
    with mock.patch("training.services._enqueue"):
        page.click("#new-run button[type=submit]")
        page.wait_for_url(f"{live_server.url}/training/*/")
    run = TrainingRun.objects.get()
    expect(page.locator(".message.run-submitted")).to_have_text(f"Training run {run.pk} was submitted.")
    expect(page.locator("[data-task]")).to_have_text("Inferred from the target column when the run starts")

    training_run_execute_task.apply(args=[run.pk])

    expect(page.locator("#results")).to_contain_text("Registered as cancer v1", timeout=20_000)
    expect(page.locator("[data-status]")).to_have_text("Succeeded")
    expect(page.locator("[data-task]")).to_have_text("Classification")
    expect(page.locator(".message")).to_have_count(0)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.reload()
        for name in ("confusion_matrix", "feature_importances"):
            plot = page.locator(f"#chart-{name} .main-svg").first
            expect(plot).to_be_visible()
            box = plot.bounding_box()
            assert box is not None
            assert box["height"] >= 320, (width, name, box)
            assert box["x"] + box["width"] <= width, (width, name, box)
