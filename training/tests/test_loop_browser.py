"""In chromium: staff click "Retrain now" on the model page, see a guardrail's refusal, then watch the
retraining go through the event log, and open the model's retraining page with its figures."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from training.models import Retraining
from training.tests.test_retraining import _traffic

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_retrain_from_the_model_page_and_follow_it_in_the_event_log(
    logged_in_page, live_server, staff, alice, champion
):
    page = logged_in_page(staff)
    model_url = f"{live_server.url}/models/concept/"

    page.goto(model_url)
    panel = page.locator("#retraining")
    expect(panel.locator("#retraining-policy")).to_contain_text(
        "Off: nothing retrains this model automatically"
    )
    expect(panel).to_contain_text("This model has not been retrained yet.")
    # No outcomes yet: a guardrail refuses, and says why.
    with page.expect_navigation(url=f"{model_url}#retraining"):
        panel.locator("#retrain-form button[type=submit]").click()
    expect(page.locator(".messages .message.error")).to_have_text(
        "Model 'concept' has 0 labelled predictions; the policy needs 100."
    )
    assert not Retraining.objects.exists()

    _traffic(alice, n=160, drifted=True, seed=51)
    # Celery runs eagerly here: the click returns once the retraining has derived, trained and compared.
    with page.expect_navigation(url=f"{model_url}#retraining", timeout=180_000):
        panel.locator("#retrain-form button[type=submit]").click()

    retraining = Retraining.objects.get()
    assert retraining.status == Retraining.Status.SUCCEEDED, retraining.error_message
    assert retraining.requested_by == staff
    expect(page.locator(".messages")).to_contain_text(f"Retraining {retraining.pk} of concept started.")
    expect(panel.locator("#retraining-latest")).to_contain_text(f"Retraining {retraining.pk}")
    events = panel.locator("#retraining-events")
    for kind in ("Triggered", "Dataset derived", "Trained"):
        expect(events.locator("[data-kind]", has_text=kind)).to_have_count(1)
    decided = "Compared" if retraining.decision == Retraining.Decision.SHADOWING else "Held back"
    expect(events.locator("[data-kind]", has_text=decided)).to_have_count(1)
    expect(panel.locator('tr[data-figures="recent"] [data-n]')).to_have_text(
        str(retraining.figures["holdout"]["recent"]["n"])
    )

    if os.environ.get("LOOP_SCREENSHOT"):
        panel.screenshot(path=os.environ["LOOP_SCREENSHOT"].replace(".png", "-panel.png"))
    panel.locator("#retraining-page-link").click()
    page.wait_for_url(f"{live_server.url}/training/models/concept/retraining/")
    row = page.locator(f"#retraining-{retraining.pk}")
    expect(row.locator("[data-challenger]")).to_have_text(f"v{retraining.challenger.version}")
    expect(row.locator("[data-lineage]")).to_contain_text("outcomes, ids")
    expect(page.locator("#retraining-events [data-kind]", has_text="Refused")).to_have_count(1)
    if os.environ.get("LOOP_SCREENSHOT"):
        page.screenshot(path=os.environ["LOOP_SCREENSHOT"], full_page=True)
