"""In chromium: a user predicts, marks the prediction wrong with the true label, and sees the model's live
accuracy and labelled count change."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from feedback.models import Feedback
from predictions.models import Prediction
from predictions.tests.helpers import trained_model

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_a_user_marks_a_prediction_wrong_and_the_model_page_counts_it(
    logged_in_page, live_server, alice, cancer_v1
):
    page = logged_in_page(alice)
    live_row = "#live-quality-table tr[data-live-version='1']"

    page.goto(f"{live_server.url}/models/cancer/")
    assert page.inner_text(f"{live_row} [data-live-n]") == "0"
    assert page.inner_text(f"{live_row} [data-live-accuracy]") == "—"

    page.goto(f"{live_server.url}/predict/cancer/")
    for name, value in trained_model("cancer").sample_rows[0].items():
        page.fill(f"input[data-feature='{name}']", str(value))
    page.click("form.predict-form button[type=submit]")
    result = page.locator("#prediction-result")
    result.wait_for()
    prediction = Prediction.objects.get()
    true_label = next(str(c) for c in cancer_v1.classes if str(c) != str(prediction.prediction))
    result.locator("select[name=true_label]").select_option(true_label)
    result.locator("button[data-verdict=wrong]").click()

    page.wait_for_url(f"{live_server.url}/predictions/{prediction.pk}/")
    assert "Feedback saved." in page.inner_text(".messages")
    assert page.inner_text("#current-outcome [data-outcome]") == f"Wrong: {true_label}"
    feedback = Feedback.objects.get()
    assert (feedback.true_label, feedback.correct, feedback.source) == (true_label, False, "page")

    page.goto(f"{live_server.url}/models/cancer/")
    assert page.inner_text(f"{live_row} [data-live-n]") == "1"
    assert page.inner_text(f"{live_row} [data-live-accuracy]") == "0.0%"
    assert page.inner_text(f"{live_row} [data-live-interval]") == "(0.0% to 79.3%)"
    # plotly drew the holdout diamond and the live dot with its interval.
    expect(page.locator("#live-quality-chart .main-svg").first).to_be_visible()
    assert page.locator("#live-quality-chart g.errorbar").count() >= 1
    if os.environ.get("FEEDBACK_SCREENSHOT"):
        page.screenshot(path=os.environ["FEEDBACK_SCREENSHOT"], full_page=True)
