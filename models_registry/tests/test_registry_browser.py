"""In chromium: staff start a training run from the page, watch it finish, and promote the version after
its confirmation page."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from playwright.sync_api import expect

from models_registry.models import ModelVersion, StageTransition
from training.models import TrainingRun
from training.tasks import training_run_execute_task
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_train_a_model_watch_the_run_finish_and_promote_the_version(logged_in_page, live_server, staff):
    dataset = dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)
    page = logged_in_page(staff)
    # Status polls wait in the browser until this thread talks to Playwright again, so the page and
    # the training below never use the database at the same moment.
    page.route(re.compile(r".*/training/\d+/status$"), lambda route: route.continue_())
    queued: list[int] = []

    page.goto(f"{live_server.url}/training/")
    page.select_option("#id_dataset_version", str(dataset.pk))
    page.fill("#id_model_name", "cancer")
    page.select_option("#id_algorithm", "classification:random_forest")
    page.fill("#id_params", '{"n_estimators": 10, "max_depth": 4}')
    # The worker is not started yet: the run stays queued until this test executes its task.
    with mock.patch.object(training_run_execute_task, "delay", side_effect=queued.append):
        page.click("#new-run button[type=submit]")
        page.wait_for_url(re.compile(r".*/training/\d+/$"))

    run = TrainingRun.objects.get()
    assert queued == [run.pk]
    assert page.locator("[data-status]").inner_text() == "Queued"
    with page.expect_response(re.compile(r".*/status$")) as polled:
        pass
    assert polled.value.json()["status"] == "queued"

    training_run_execute_task.apply(args=[run.pk])

    expect(page.locator("[data-status]")).to_have_text("Succeeded", timeout=10_000)
    expect(page.locator("[data-progress-percent]")).to_have_text("100%")
    assert page.locator("[data-progress-bar]").get_attribute("value") == "100"
    assert page.locator("[data-error]").is_hidden()
    page.click("[data-result] a:has-text('Open cancer v1')")

    page.wait_for_url(f"{live_server.url}/models/cancer/versions/1/")
    assert page.locator("h1 .badge").inner_text() == "None"
    expect(page.locator("#chart-confusion_matrix .main-svg").first).to_be_visible()
    page.click("button[data-action=production]")

    # Nothing changes until the confirmation page, which shows the change and the gate, is confirmed.
    expect(page.locator("h1")).to_have_text("cancer: Promote v1 to production?")
    assert page.locator("[data-current]").inner_text() == "none"
    assert page.locator("[data-gate] .badge").inner_text() == "passes"
    assert ModelVersion.objects.get().stage == "none"
    page.fill("#id_reason", "first model")
    page.click("button[data-confirm]")

    page.wait_for_url(f"{live_server.url}/models/cancer/versions/1/")
    assert "cancer v1 promoted to production." in page.inner_text(".messages")
    assert page.locator("h1 .badge").inner_text() == "Production"
    version = ModelVersion.objects.get()
    assert version.stage == "production"
    recorded = StageTransition.objects.get()
    assert (recorded.user, recorded.reason) == (staff, "first model")

    page.click(".muted a:has-text('cancer')")
    page.wait_for_url(f"{live_server.url}/models/cancer/")
    expect(page.locator("#comparison-chart .main-svg").first).to_be_visible()
    assert page.locator('tr[data-version="1"] .badge.stage-production').is_visible()
